// RMSNorm over the last dimension (LLaMA's): y = x / sqrt(mean(x²) + eps) · w, no mean subtraction, no bias.
#pragma once

#include <cstdint>

namespace orthoshard::ops {

// out (N, C) = x · rstd · w per row; rstd (N) = 1 / sqrt(mean(x²) + eps) is kept for the backward.
template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, std::int64_t N, std::int64_t C, double eps);

// dx (N, C) += ∂/∂x, dw (C) += Σ_n dout·x̂. The weight sums run over rows in a fixed order whatever the thread
// count (parallel over channels), so results do not depend on it.
template <typename T>
void rmsnorm_backward(T* dx, T* dw, const T* dout, const T* x, const T* w, const T* rstd, std::int64_t N,
                      std::int64_t C);

}  // namespace orthoshard::ops
