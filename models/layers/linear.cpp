// Linear layer: bias/residual initialisation then one BLAS GEMM (beta = 1) forward; two GEMMs backward.
#include "models/layers/linear.hpp"

#include "models/layers/parallel.hpp"
#include "runtime/core/blas.hpp"

#include <algorithm>

namespace orthoshard::ops {

template <typename T>
void linear_forward(T* out, const T* inp, const T* w, const T* bias, const T* residual, std::int64_t N,
                    std::int64_t IC, std::int64_t OC) {
  const bool init = bias != nullptr || residual != nullptr;
  if (init) {
#pragma omp parallel for schedule(static) if (N * OC > kParallelMinWork)
    for (std::int64_t n = 0; n < N; ++n) {
      T* o = out + n * OC;
      const T* r = residual ? residual + n * OC : nullptr;
      if (r && bias) {
#pragma omp simd
        for (std::int64_t c = 0; c < OC; ++c) o[c] = r[c] + bias[c];
      } else if (r) {
        std::copy(r, r + OC, o);
      } else {
        std::copy(bias, bias + OC, o);
      }
    }
  }
  linalg::gemm<T>(false, true, N, OC, IC, T(1), inp, IC, w, IC, init ? T(1) : T(0), out, OC);
}

template <typename T> void add_column_sums(T* out, const T* x, std::int64_t N, std::int64_t C) {
  constexpr std::int64_t kBlock = 16;
  const std::int64_t blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (N * C > kParallelMinWork)
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t c0 = blk * kBlock, c1 = std::min(C, c0 + kBlock);
    T s[kBlock] = {};
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t c = c0; c < c1; ++c) s[c - c0] += x[n * C + c];
    for (std::int64_t c = c0; c < c1; ++c) out[c] += s[c - c0];
  }
}

template <typename T>
void linear_backward(T* dinp, T* dw, T* dbias, const T* dout, const T* inp, const T* w, std::int64_t N,
                     std::int64_t IC, std::int64_t OC) {
  linalg::gemm<T>(false, false, N, IC, OC, T(1), dout, OC, w, IC, T(0), dinp, IC);
  linalg::gemm<T>(true, false, OC, IC, N, T(1), dout, OC, inp, IC, T(1), dw, IC);
  if (dbias) add_column_sums(dbias, dout, N, OC);
}

#define ORTHOSHARD_LINEAR(T)                                                                                \
  template void linear_forward<T>(T*, const T*, const T*, const T*, const T*, std::int64_t, std::int64_t,  \
                                  std::int64_t);                                                            \
  template void linear_backward<T>(T*, T*, T*, const T*, const T*, const T*, std::int64_t, std::int64_t,   \
                                   std::int64_t);                                                           \
  template void add_column_sums<T>(T*, const T*, std::int64_t, std::int64_t);
ORTHOSHARD_LINEAR(float)
ORTHOSHARD_LINEAR(double)

}  // namespace orthoshard::ops
