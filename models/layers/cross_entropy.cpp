// Fused softmax + cross-entropy kernels, parallel over rows.
#include "models/layers/cross_entropy.hpp"

#include "models/layers/fast_exp.hpp"
#include "models/layers/parallel.hpp"

#include <algorithm>
#include <cmath>

namespace orthoshard::ops {

template <typename T>
void cross_entropy_forward(T* losses, T* lse, const T* logits, const std::int32_t* targets, std::int64_t N,
                           std::int64_t V, std::int64_t Vp) {
#pragma omp parallel for schedule(static) if (N * V > kParallelMinWork)
  for (std::int64_t n = 0; n < N; ++n) {
    const T* z = logits + n * Vp;
    T mx = z[0];
#pragma omp simd reduction(max : mx)
    for (std::int64_t j = 0; j < V; ++j) mx = std::max(mx, z[j]);
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (std::int64_t j = 0; j < V; ++j) sum += fast_exp(z[j] - mx);
    lse[n] = mx + std::log(sum);
    if (targets) losses[n] = lse[n] - z[targets[n]];
  }
}

template <typename T>
void cross_entropy_backward_inplace(T* logits, const T* lse, const std::int32_t* targets, T scale, std::int64_t N,
                                    std::int64_t V, std::int64_t Vp) {
#pragma omp parallel for schedule(static) if (N * V > kParallelMinWork)
  for (std::int64_t n = 0; n < N; ++n) {
    T* z = logits + n * Vp;
    const T m = lse[n];
#pragma omp simd
    for (std::int64_t j = 0; j < V; ++j) z[j] = scale * fast_exp(z[j] - m);
    z[targets[n]] -= scale;
    std::fill(z + V, z + Vp, T(0));
  }
}

template void cross_entropy_forward<float>(float*, float*, const float*, const std::int32_t*, std::int64_t,
                                           std::int64_t, std::int64_t);
template void cross_entropy_forward<double>(double*, double*, const double*, const std::int32_t*, std::int64_t,
                                            std::int64_t, std::int64_t);
template void cross_entropy_backward_inplace<float>(float*, const float*, const std::int32_t*, float, std::int64_t,
                                                    std::int64_t, std::int64_t);
template void cross_entropy_backward_inplace<double>(double*, const double*, const std::int32_t*, double,
                                                     std::int64_t, std::int64_t, std::int64_t);

}  // namespace orthoshard::ops
