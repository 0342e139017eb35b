// The validation loss ([eval]): the mean next-token loss over the same sequences every time, split over the ranks so
// that any world size gives the same number (up to the order of a floating-point sum).
//
// The set: S = eval.batches × train.batch_size sequences of T = train.seq_len tokens, sequence i being tokens
// [i·T, i·T + T] of the validation stream (inputs and their next tokens), S cut to what the stream holds. Rank r of W
// takes sequences r, r + W, r + 2W, ... and runs them one at a time (batch 1); every rank runs the same number of
// forwards (a rank out of sequences repeats one and drops its loss), since each forward gathers the units
// collectively. The loss is the sum of the sequences' mean losses over the ranks, divided by S.
#pragma once

#include "launch/trainer/train_config.hpp"
#include "models/data/token_stream.hpp"
#include "models/family.hpp"
#include "runtime/comm/communicator.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace orthoshard {

// Where the validation tokens come from for `cfg` (eval.path, "auto" resolved against data.path), or "" for none.
std::string validation_path(const TrainConfig& cfg);

class Validation {
 public:
  // Opens the stream (tokens checked against `vocab`) and fixes the set. Throws UsageError naming the path when it
  // holds fewer than T + 1 tokens.
  Validation(const std::string& path, const TrainConfig& cfg, std::int64_t vocab, int rank, int world);

  // The validation loss of the model as it is now: `forward` runs every unit's forward on the runner's tokens and
  // leaves nothing gathered. The runner is left sized for one sequence (the caller sizes it back for training).
  // Collective.
  double run(Communicator& world, UnitRunner& runner, const std::function<void()>& forward);

  std::int64_t sequences() const { return sequences_; }
  std::string describe() const;  // "'spec': 16 sequences of 64 tokens"

 private:
  std::shared_ptr<const TokenStream> stream_;
  std::int64_t T_, B_, sequences_;
  int rank_, world_;
};

}  // namespace orthoshard
