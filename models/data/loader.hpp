// Data loader: each optimizer step reads one window of W·K·B·T (+1) tokens; micro-step j of rank r takes
// the (j·W + r)-th block of B·T tokens (+1 for the shifted targets), so results do not depend on W.
// `shuffled` applies the same rule to a seeded per-epoch permutation of the T-token sequences.
#pragma once

#include "models/data/token_stream.hpp"
#include "runtime/core/tensor.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace orthoshard {

enum class DataOrder { Sequential, Shuffled };
DataOrder parse_data_order(const std::string& s);  // "sequential" | "shuffled", else UsageError
std::string_view data_order_name(DataOrder o);

struct LoaderConfig {
  std::int64_t B = 4;           // sequences per micro-batch, per rank
  std::int64_t T = 1024;        // tokens per sequence
  int world_size = 1;           // W data-parallel ranks
  int rank = 0;                 // r
  int grad_accum = 1;           // K micro-steps per step
  DataOrder order = DataOrder::Sequential;
  std::uint64_t seed = 0;       // shuffled order only
  std::int64_t vocab_size = 0;  // > 0: tokens >= V are errors naming the file
};

// Where the loader stands; saved in checkpoints, restored to resume exactly.
struct DataPosition {
  std::int64_t epoch = 0;
  std::int64_t step = 0;  // step within the epoch
};

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const TokenStream> stream, LoaderConfig cfg);

  const LoaderConfig& config() const { return cfg_; }
  std::int64_t sequences_per_epoch() const { return num_sequences_; }  // ⌊(N − 1) / T⌋
  std::int64_t steps_per_epoch() const { return steps_per_epoch_; }     // ⌊sequences / (W·K·B)⌋
  // First token of the b-th sequence of micro-step j on this rank, in the current step (tests, logs).
  std::int64_t sequence_start(int micro_step, std::int64_t b) const;

  // inputs, targets: i32 (B, T) of micro-step j (0 <= j < K) of the current step, for this rank.
  void load(int micro_step, Tensor& inputs, Tensor& targets) const;
  // Next step; after the last step of an epoch, the first of the next (reshuffled when shuffled).
  void advance();

  DataPosition position() const { return pos_; }
  void restore(const DataPosition& pos);  // throws when out of range for this stream and batch

 private:
  void build_permutation();
  std::shared_ptr<const TokenStream> stream_;
  LoaderConfig cfg_;
  std::int64_t num_sequences_ = 0, steps_per_epoch_ = 0;
  DataPosition pos_;
  std::vector<std::int64_t> perm_;  // shuffled: sequence order of the current epoch
  mutable std::vector<std::int32_t> scratch_;
};

}  // namespace orthoshard
