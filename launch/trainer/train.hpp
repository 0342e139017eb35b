// `orthoshard train`: sharded training of a model family's model on the ranks of the job (FSDP engine + sharded
// optimizer), on the CPU or on GPUs.
#pragma once

#include "launch/trainer/train_config.hpp"
#include "runtime/comm/communicator.hpp"

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

namespace orthoshard {

struct TrainResult {
  std::vector<double> losses;      // per step: mean loss of the global batch before its update
  std::vector<double> grad_norms;  // per step, before clipping
  double tokens_per_s = 0;         // over the steps after the first
  double comm_wait_fraction = 0;   // time blocked in collectives / step time (after the first step)
  std::int64_t first_step = 0;     // steps done before this run (resumed checkpoint): losses[i] is step first_step+i+1
  std::vector<std::pair<std::int64_t, double>> val_losses;  // (step, validation loss) of every validation
  std::int64_t val_sequences = 0;                            // how many sequences a validation averages
  // Memory per rank: the largest max RSS over the ranks, and this rank's accounting (the sharded part, the most
  // full-size bytes in flight at once, the activations); on a GPU also its memory in use at the end.
  std::uint64_t max_rss_bytes = 0, sharded_bytes = 0, transient_bytes = 0, activation_bytes = 0, device_bytes = 0;
  // The signal that stopped the run early after a checkpoint (launch/trainer/stop_signals.hpp), or 0.
  int stop_signal = 0;
  // Rank 0: (step, generated token ids) of every sample ([eval] sample_every); empty elsewhere.
  std::vector<std::pair<std::int64_t, std::vector<std::int32_t>>> samples;
};

struct TrainOptions {
  bool quiet = false;              // no log lines (tests)
  // Overrides runtime.overlap when set (bench train runs both); false: every collective completes where it
  // is issued.
  std::optional<bool> overlap;
  // Evaluate instead of training: load checkpoint.resume, run the validation once ([eval], data.path being any
  // token file with enough tokens for one step's loader) and return its loss in val_losses (orthoshard eval).
  bool evaluate_only = false;
};

// Trains with `cfg` on the ranks of `world`. Collective; every rank returns the same losses.
TrainResult train(Communicator& world, const TrainConfig& cfg, const TrainOptions& opt = {});

}  // namespace orthoshard
