// Softmax cross-entropy over the first V of Vp logit columns (padded vocabulary columns never enter the
// loss), with the softmax, the loss and its gradient fused: no probability buffer is ever materialised.
#pragma once

#include <cstdint>

namespace orthoshard::ops {

// For each row n of logits (N, Vp): lse[n] = log Σ_{j<V} exp(logits[n, j]) (max-shifted), and, when
// targets is non-null, losses[n] = lse[n] − logits[n, targets[n]].
template <typename T>
void cross_entropy_forward(T* losses, T* lse, const T* logits, const std::int32_t* targets, std::int64_t N,
                           std::int64_t V, std::int64_t Vp);

// In place: logits[n, j] ← scale · (softmax_j − [j = targets[n]]) for j < V, and 0 for V <= j < Vp:
// the gradient of scale · Σ_n losses[n].
template <typename T>
void cross_entropy_backward_inplace(T* logits, const T* lse, const std::int32_t* targets, T scale, std::int64_t N,
                                    std::int64_t V, std::int64_t Vp);

}  // namespace orthoshard::ops
