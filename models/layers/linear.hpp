// Fully connected layer y = x·Wᵀ + b with W stored (OC, IC) as in llm.c and PyTorch; the GEMMs go to BLAS.
#pragma once

#include <cstdint>

namespace orthoshard::ops {

// out (N, OC) = [residual (N, OC) +] inp (N, IC) · wᵀ + bias (OC). `residual` and `bias` may be null;
// a residual fuses the skip connection into the GEMM's accumulation.
template <typename T>
void linear_forward(T* out, const T* inp, const T* w, const T* bias, const T* residual, std::int64_t N,
                    std::int64_t IC, std::int64_t OC);

// dinp (N, IC) = dout·w (overwritten), dw (OC, IC) += doutᵀ·inp, dbias (OC) += Σ_n dout (when non-null).
template <typename T>
void linear_backward(T* dinp, T* dw, T* dbias, const T* dout, const T* inp, const T* w, std::int64_t N,
                     std::int64_t IC, std::int64_t OC);

// out (C) += Σ_n x (N, C) rows, summed in row order whatever the thread count.
template <typename T> void add_column_sums(T* out, const T* x, std::int64_t N, std::int64_t C);

}  // namespace orthoshard::ops
