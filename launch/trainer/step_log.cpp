#include "launch/trainer/step_log.hpp"

#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <utility>

namespace orthoshard {

LoaderConfig loader_config(const TrainConfig& cfg, int world_size, int rank, std::int64_t vocab) {
  LoaderConfig lc;
  lc.B = cfg.train.batch_size;
  lc.global_B = cfg.train.global_batch_size;
  lc.T = cfg.train.seq_len;
  lc.world_size = world_size;
  lc.rank = rank;
  lc.grad_accum = cfg.train.grad_accum;
  lc.order = cfg.data.order;
  lc.seed = cfg.data.seed;
  lc.vocab_size = vocab;
  return lc;
}

std::string mib(std::uint64_t bytes) { return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20)); }

std::string eta(double seconds) {
  const auto s = static_cast<std::int64_t>(seconds + 0.5);
  return s >= 3600 ? fmt::format("{}h{:02}m", s / 3600, (s / 60) % 60) : fmt::format("{}m{:02}s", s / 60, s % 60);
}

StepLog::StepLog(const TrainConfig& cfg, std::int64_t first_step, std::int64_t tokens_per_step, bool talk,
                 bool metrics_rank, double flops_per_token, double peak_flops)
    : cfg_(cfg), first_step_(first_step), tokens_per_step_(tokens_per_step), talk_(talk),
      flops_per_token_(flops_per_token), peak_flops_(peak_flops) {
  if (!cfg.train.metrics.empty() && metrics_rank)
    metrics_ = std::make_unique<MetricsWriter>(cfg.train.metrics, first_step);  // resumed: keeps steps <= first_step
  result_.first_step = first_step;
}

bool StepLog::update_allowed(std::int64_t step, double loss, double grad_norm) {
  const auto& tc = cfg_.train;
  if (std::isfinite(loss) && std::isfinite(grad_norm)) {
    if (tc.loss_limit > 0 && loss > tc.loss_limit)
      throw Error(fmt::format("step {}: loss {} exceeds train.loss_limit = {}: the run diverged; stopping (the "
                              "newest checkpoint is from before this step)",
                              step + 1, loss, tc.loss_limit));
    skipped_in_a_row_ = 0;
    return true;
  }
  const std::string what = fmt::format("step {}: {} is not finite (loss {}, gradient norm {})", step + 1,
                                       std::isfinite(loss) ? "the gradient" : "the loss", loss, grad_norm);
  if (tc.nan_policy == NanPolicy::Stop) throw Error(what + "; stopping (train.nan_policy = stop)");
  if (++skipped_in_a_row_ >= tc.max_skipped_steps)
    throw Error(fmt::format("{}; {} steps in a row skipped (train.max_skipped_steps = {}): the run diverged; "
                            "stopping", what, skipped_in_a_row_, tc.max_skipped_steps));
  if (talk_) log::warn("{}; update skipped (train.nan_policy = skip)", what);
  return false;
}

void StepLog::record(std::int64_t step, double loss, double grad_norm, double lr, double dt, double comm_wait_ms,
                     std::optional<double> val_loss) {
  if (step == first_step_) wait_at_first_ = comm_wait_ms;
  if (step > first_step_) timed_s_ += dt;
  result_.losses.push_back(loss);
  result_.grad_norms.push_back(grad_norm);
  if (val_loss) result_.val_losses.emplace_back(step + 1, *val_loss);
  const double tps = tokens_per_step() / dt;
  if (metrics_) metrics_->write(step + 1, loss, lr, grad_norm, tps, val_loss);
  const auto& tc = cfg_.train;
  interval_loss_ += loss;
  interval_s_ += dt;
  ++interval_steps_;
  if (talk_ && ((step + 1) % tc.log_every == 0 || step + 1 == tc.steps)) {
    // Over the steps since the last line: the mean loss, tokens/s and the model's FLOP/s (6N + attention per token).
    const double n = static_cast<double>(interval_steps_);
    const double rate = tokens_per_step() * n / interval_s_;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    // MFU: the model's FLOP/s over the job's nominal peak (its GPUs' dense bf16 rate), on a GPU it knows.
    const double flops = rate * flops_per_token_;
    log::info("step {:>5}/{} | loss {:.6f}{} | lr {:.3e} | grad norm {:.4f} | {:>8.0f} tok/s | {:.3g} TFLOP/s{} | "
              "{:>7.1f} ms/step | {} elapsed, ETA {}",
              step + 1, tc.steps, interval_loss_ / n, interval_steps_ > 1 ? fmt::format(" (mean of {})", interval_steps_) : "",
              lr, grad_norm, rate, flops / 1e12,
              peak_flops_ > 0 ? fmt::format(" ({:.1f}% MFU)", 100.0 * flops / peak_flops_) : std::string(),
              interval_s_ / n * 1e3, eta(elapsed), eta(interval_s_ / n * static_cast<double>(tc.steps - step - 1)));
    interval_loss_ = interval_s_ = 0;
    interval_steps_ = 0;
  }
  if (talk_ && val_loss) log::info("step {:>5}/{} | val loss {:.6f}", step + 1, tc.steps, *val_loss);
}

TrainResult StepLog::finish(double comm_wait_ms) {
  if (talk_ && !result_.val_losses.empty()) {
    const auto best = std::min_element(result_.val_losses.begin(), result_.val_losses.end(),
                                       [](const auto& a, const auto& b) { return a.second < b.second; });
    log::info("validation: best val loss {:.6f} at step {}, last {:.6f} at step {}", best->second, best->first,
              result_.val_losses.back().second, result_.val_losses.back().first);
  }
  const auto timed_steps = static_cast<std::int64_t>(result_.losses.size()) - 1;  // fewer when stopped early
  if (timed_steps > 0) {
    result_.tokens_per_s = tokens_per_step() * static_cast<double>(timed_steps) / timed_s_;
    result_.comm_wait_fraction = (comm_wait_ms - wait_at_first_) / 1e3 / timed_s_;
  }
  return std::move(result_);
}

}  // namespace orthoshard
