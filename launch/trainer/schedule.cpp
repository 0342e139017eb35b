// Warm-up + constant / cosine / linear learning-rate multiplier (formulas in schedule.hpp).
#include "launch/trainer/schedule.hpp"

#include "runtime/core/error.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace orthoshard {

double lr_multiplier(const TrainConfig& c, std::int64_t step) {
  OS_CHECK(step >= 0, "lr_multiplier: step {} is negative", step);
  const std::int64_t warmup = c.train.warmup_steps;
  if (step < warmup) return static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (c.train.schedule == LrSchedule::Constant) return 1.0;
  const std::int64_t decay_steps = c.train.steps - 1 - warmup;
  const double p = decay_steps <= 0 ? 1.0
                                    : std::clamp(static_cast<double>(step - warmup) / static_cast<double>(decay_steps),
                                                 0.0, 1.0);
  const double r = c.train.min_lr_ratio;
  if (c.train.schedule == LrSchedule::Cosine) return r + (1.0 - r) * 0.5 * (1.0 + std::cos(std::numbers::pi * p));
  return r + (1.0 - r) * (1.0 - p);
}

}  // namespace orthoshard
