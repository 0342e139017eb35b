// Learning-rate schedule of the trainer: the multiplier applied to every learning rate (optim.lr and
// optim.adam_lr alike) at a step, from [train] schedule, warmup_steps, min_lr_ratio and steps.
#pragma once

#include "launch/trainer/train_config.hpp"

#include <cstdint>

namespace orthoshard {

// Multiplier m(s) for step s counted from 0 (s = 0 is the first optimizer step). With W = warmup_steps,
// S = steps, r = min_lr_ratio:
//   warm-up, s < W:           m = (s + 1) / W                      (reaches 1 at s = W − 1)
//   after warm-up, s >= W:    p = (s − W) / (S − 1 − W), clamped to [0, 1]; p = 1 when S − 1 − W <= 0
//     constant:               m = 1
//     cosine:                 m = r + (1 − r) · (1 + cos(π·p)) / 2  (1 at s = W, r at the last step s = S − 1)
//     linear:                 m = r + (1 − r) · (1 − p)             (1 at s = W, r at the last step s = S − 1)
// Steps past the end (s >= S, e.g. a run resumed with fewer steps) keep the last value (p = 1).
// Throws Error for s < 0.
double lr_multiplier(const TrainConfig& c, std::int64_t step);

}  // namespace orthoshard
