// Data loader: each optimizer step reads one window of K·G sequences of T tokens (+1 for the shifted targets),
// G = the global batch of a micro-step (W·B by default); micro-step j of rank r takes sequences
// [j·G + ⌊r·G/W⌋, j·G + ⌊(r+1)·G/W⌋) of the window, so results do not depend on W (with G = W·B: B each).
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
  std::int64_t B = 4;           // sequences per micro-batch, per rank (when global_B = 0)
  std::int64_t T = 1024;        // tokens per sequence
  int world_size = 1;           // W data-parallel ranks
  int rank = 0;                 // r
  int grad_accum = 1;           // K micro-steps per step
  DataOrder order = DataOrder::Sequential;
  std::uint64_t seed = 0;       // shuffled order only
  std::int64_t vocab_size = 0;  // > 0: tokens >= V are errors naming the file
  std::int64_t global_B = 0;    // > 0: sequences per micro-batch over all ranks, G (>= W), split as evenly as can be
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
  std::int64_t steps_per_epoch() const { return steps_per_epoch_; }     // ⌊sequences / (K·G)⌋
  std::int64_t global_batch() const { return global_; }                 // G
  std::int64_t rank_batch() const { return end_ - begin_; }            // this rank's sequences per micro-batch
  // First token of the b-th sequence of micro-step j on this rank, in the current step (tests, logs).
  std::int64_t sequence_start(int micro_step, std::int64_t b) const;

  // inputs, targets: i32 (rank_batch(), T) of micro-step j (0 <= j < K) of the current step, for this rank.
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
  std::int64_t global_ = 0, begin_ = 0, end_ = 0;  // G; this rank's sequences [begin_, end_) of each micro-step
  DataPosition pos_;
  std::vector<std::int64_t> perm_;  // shuffled: sequence order of the current epoch
  mutable std::vector<std::int32_t> scratch_;
};

}  // namespace orthoshard
