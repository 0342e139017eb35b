// RMSNorm kernels: one pass per row for the forward and for dx; dw by channel blocks.
#include "models/layers/rmsnorm.hpp"

#include "models/layers/parallel.hpp"

#include <algorithm>
#include <cmath>

namespace orthoshard::ops {

template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, std::int64_t N, std::int64_t C, double eps) {
#pragma omp parallel for schedule(static) if (N * C > kParallelMinWork)
  for (std::int64_t n = 0; n < N; ++n) {
    const T* xr = x + n * C;
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (std::int64_t c = 0; c < C; ++c) s += xr[c] * xr[c];
    const T r = T(1) / std::sqrt(s / static_cast<T>(C) + static_cast<T>(eps));
    T* o = out + n * C;
#pragma omp simd
    for (std::int64_t c = 0; c < C; ++c) o[c] = xr[c] * r * w[c];
    rstd[n] = r;
  }
}

template <typename T>
void rmsnorm_backward(T* dx, T* dw, const T* dout, const T* x, const T* w, const T* rstd, std::int64_t N,
                      std::int64_t C) {
  // dx = rstd · (dnorm − x̂ · mean(dnorm · x̂)), dnorm = dout · w, x̂ = x · rstd.
#pragma omp parallel for schedule(static) if (N * C > kParallelMinWork)
  for (std::int64_t n = 0; n < N; ++n) {
    const T* xr = x + n * C;
    const T* dr = dout + n * C;
    const T r = rstd[n];
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (std::int64_t c = 0; c < C; ++c) sum += dr[c] * w[c] * xr[c] * r;
    sum /= static_cast<T>(C);
    T* o = dx + n * C;
#pragma omp simd
    for (std::int64_t c = 0; c < C; ++c) o[c] += r * (dr[c] * w[c] - xr[c] * r * sum);
  }
  constexpr std::int64_t kBlock = 16;
  const std::int64_t blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (N * C > kParallelMinWork)
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t c0 = blk * kBlock, c1 = std::min(C, c0 + kBlock);
    T sw[kBlock] = {};
    for (std::int64_t n = 0; n < N; ++n) {
      const T* xr = x + n * C;
      const T* dr = dout + n * C;
      const T r = rstd[n];
      for (std::int64_t c = c0; c < c1; ++c) sw[c - c0] += dr[c] * xr[c] * r;
    }
    for (std::int64_t c = c0; c < c1; ++c) dw[c] += sw[c - c0];
  }
}

template void rmsnorm_forward<float>(float*, float*, const float*, const float*, std::int64_t, std::int64_t, double);
template void rmsnorm_forward<double>(double*, double*, const double*, const double*, std::int64_t, std::int64_t,
                                      double);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*, const float*,
                                      std::int64_t, std::int64_t);
template void rmsnorm_backward<double>(double*, double*, const double*, const double*, const double*, const double*,
                                       std::int64_t, std::int64_t);

}  // namespace orthoshard::ops
