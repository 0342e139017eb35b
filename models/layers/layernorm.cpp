// LayerNorm kernels: one pass per row for the forward and for dx; dw/db by channel blocks.
#include "models/layers/layernorm.hpp"

#include "models/layers/parallel.hpp"

#include <algorithm>
#include <cmath>

namespace orthoshard::ops {

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* w, const T* b, std::int64_t N,
                       std::int64_t C) {
#pragma omp parallel for schedule(static) if (N * C > kParallelMinWork)
  for (std::int64_t n = 0; n < N; ++n) {
    const T* xr = x + n * C;
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (std::int64_t c = 0; c < C; ++c) s += xr[c];
    const T m = s / static_cast<T>(C);
    T v = 0;
#pragma omp simd reduction(+ : v)
    for (std::int64_t c = 0; c < C; ++c) v += (xr[c] - m) * (xr[c] - m);
    const T r = T(1) / std::sqrt(v / static_cast<T>(C) + static_cast<T>(kLayerNormEps));
    T* o = out + n * C;
#pragma omp simd
    for (std::int64_t c = 0; c < C; ++c) o[c] = (xr[c] - m) * r * w[c] + b[c];
    mean[n] = m;
    rstd[n] = r;
  }
}

template <typename T>
void layernorm_backward(T* dx, T* dw, T* db, const T* dout, const T* x, const T* w, const T* mean, const T* rstd,
                        std::int64_t N, std::int64_t C) {
  // dx = rstd · (dnorm − mean(dnorm) − x̂ · mean(dnorm · x̂)), dnorm = dout · w.
#pragma omp parallel for schedule(static) if (N * C > kParallelMinWork)
  for (std::int64_t n = 0; n < N; ++n) {
    const T* xr = x + n * C;
    const T* dr = dout + n * C;
    const T m = mean[n], r = rstd[n];
    T sum_d = 0, sum_dx = 0;
#pragma omp simd reduction(+ : sum_d, sum_dx)
    for (std::int64_t c = 0; c < C; ++c) {
      const T dn = dr[c] * w[c];
      sum_d += dn;
      sum_dx += dn * (xr[c] - m) * r;
    }
    sum_d /= static_cast<T>(C);
    sum_dx /= static_cast<T>(C);
    T* o = dx + n * C;
#pragma omp simd
    for (std::int64_t c = 0; c < C; ++c) o[c] += r * (dr[c] * w[c] - sum_d - (xr[c] - m) * r * sum_dx);
  }
  constexpr std::int64_t kBlock = 16;
  const std::int64_t blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (N * C > kParallelMinWork)
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t c0 = blk * kBlock, c1 = std::min(C, c0 + kBlock);
    T sw[kBlock] = {}, sb[kBlock] = {};
    for (std::int64_t n = 0; n < N; ++n) {
      const T* xr = x + n * C;
      const T* dr = dout + n * C;
      const T m = mean[n], r = rstd[n];
      for (std::int64_t c = c0; c < c1; ++c) {
        sw[c - c0] += dr[c] * (xr[c] - m) * r;
        sb[c - c0] += dr[c];
      }
    }
    for (std::int64_t c = c0; c < c1; ++c) {
      dw[c] += sw[c - c0];
      db[c] += sb[c - c0];
    }
  }
}

template void layernorm_forward<float>(float*, float*, float*, const float*, const float*, const float*, std::int64_t,
                                       std::int64_t);
template void layernorm_forward<double>(double*, double*, double*, const double*, const double*, const double*,
                                        std::int64_t, std::int64_t);
template void layernorm_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                        const float*, const float*, std::int64_t, std::int64_t);
template void layernorm_backward<double>(double*, double*, double*, const double*, const double*, const double*,
                                         const double*, const double*, std::int64_t, std::int64_t);

}  // namespace orthoshard::ops
