// LayerNorm over the last dimension (eps 1e-5), forward and backward, for rows of C channels.
#pragma once

#include <cstdint>

namespace orthoshard::ops {

inline constexpr double kLayerNormEps = 1e-5;

// out (N, C) = (x - mean) * rstd * w + b per row; mean, rstd (N) are kept for the backward.
template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* w, const T* b, std::int64_t N, std::int64_t C);

// dx (N, C) += ∂/∂x, dw (C) += Σ_n dout·x̂, db (C) += Σ_n dout. The weight sums run over rows in a fixed
// order whatever the thread count (parallel over channels), so results do not depend on it.
template <typename T>
void layernorm_backward(T* dx, T* dw, T* db, const T* dout, const T* x, const T* w, const T* mean, const T* rstd,
                        std::int64_t N, std::int64_t C);

}  // namespace orthoshard::ops
