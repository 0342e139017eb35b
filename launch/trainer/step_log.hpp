// The training loop's bookkeeping: the data loader's configuration, the NaN policy, the losses, the metrics
// file and the log lines.
#pragma once

#include "launch/trainer/metrics.hpp"
#include "launch/trainer/train.hpp"
#include "launch/trainer/train_config.hpp"
#include "models/data/loader.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace orthoshard {

// Rank `rank` of `world_size` reads its blocks of each step's window.
LoaderConfig loader_config(const TrainConfig& cfg, int world_size, int rank, std::int64_t vocab);

std::string mib(std::uint64_t bytes);  // "12.3 MiB"
std::string eta(double seconds);       // "3m07s", "1h02m"

// The per-step bookkeeping of the loop: the NaN policy, the losses and gradient norms, the metrics file
// (rank 0), the log line every train.log_every steps, and tokens/s and the share of time blocked in
// collectives over the steps after the first.
class StepLog {
 public:
  // talk: this rank prints; metrics_rank: this rank writes train.metrics (when set).
  // flops_per_token: the model's training flops per token (for the FLOP/s in the log line); peak_flops: the
  // job's nominal peak (the sum over its GPUs; 0 = none, no MFU printed).
  StepLog(const TrainConfig& cfg, std::int64_t first_step, std::int64_t tokens_per_step, bool talk,
          bool metrics_rank, double flops_per_token = 0, double peak_flops = 0);
  // Whether step `step` (0-based) may apply its update: true when loss and gradient norm are finite; else
  // throws (train.nan_policy = stop, or the train.max_skipped_steps-th skip in a row) or warns and returns
  // false (skip). A finite loss above train.loss_limit (> 0) throws too.
  bool update_allowed(std::int64_t step, double loss, double grad_norm);
  // Step `step` took dt seconds (the slowest rank's); comm_wait_ms: the engine's running total of time
  // blocked in collectives.
  // val_loss: the validation loss after the step, when it ran.
  void record(std::int64_t step, double loss, double grad_norm, double lr, double dt, double comm_wait_ms,
              std::optional<double> val_loss = std::nullopt);
  // The result, with tokens/s and the blocked share filled in from the steps after the first.
  TrainResult finish(double comm_wait_ms);
  double tokens_per_step() const { return static_cast<double>(tokens_per_step_); }

 private:
  const TrainConfig& cfg_;
  std::int64_t first_step_, tokens_per_step_;
  bool talk_;
  std::unique_ptr<MetricsWriter> metrics_;
  TrainResult result_;
  double timed_s_ = 0, wait_at_first_ = 0;
  double flops_per_token_ = 0, peak_flops_ = 0;
  // Since the last log line: the losses' sum, the steps and their time; and the run's start.
  double interval_loss_ = 0, interval_s_ = 0;
  std::int64_t interval_steps_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::int64_t skipped_in_a_row_ = 0;
};

}  // namespace orthoshard
