// Reductions and elementwise updates over device vectors: the deterministic sum of squares (gradient norm,
// Frobenius norms), accumulation and in-place scaling. T is float or __nv_bfloat16.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace orthoshard::cuda {

using bf16 = __nv_bfloat16;

// ---- deterministic sum of squares ----
// Doubles of scratch sum_squares needs (a fixed number of per-block partials).
inline constexpr std::size_t kSumSquaresScratch = 1024;
// out[0] (device double) = [out[0] +] Σ x² accumulated in double, in a fixed order that depends only on n
// (two passes: a fixed grid of partials, then one block). Summing several tensors with accumulate = true in
// a fixed order gives a bitwise reproducible global gradient norm².
template <typename T>
void sum_squares(double* out, const T* x, std::int64_t n, double* scratch, bool accumulate, cudaStream_t stream);

// acc[i] += src[i] in fp32, i < n (S float or __nv_bfloat16).
template <typename S> void add_inplace(float* acc, const S* src, std::int64_t n, cudaStream_t stream);

// x ← x · f (f rounded to float first).
template <typename T> void scale_inplace(T* x, std::int64_t n, double f, cudaStream_t stream);

}  // namespace orthoshard::cuda
