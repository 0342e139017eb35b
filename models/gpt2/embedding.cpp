// Embedding kernels.
#include "models/gpt2/embedding.hpp"

#include "models/layers/parallel.hpp"

#include <algorithm>

namespace orthoshard::ops {

template <typename T>
void embedding_forward(T* out, const std::int32_t* tokens, const T* wte, const T* wpe, std::int64_t B,
                       std::int64_t Tn, std::int64_t C) {
#pragma omp parallel for schedule(static) if (B * Tn * C > kParallelMinWork)
  for (std::int64_t n = 0; n < B * Tn; ++n) {
    const T* e = wte + static_cast<std::int64_t>(tokens[n]) * C;
    const T* p = wpe + (n % Tn) * C;
    T* o = out + n * C;
#pragma omp simd
    for (std::int64_t c = 0; c < C; ++c) o[c] = e[c] + p[c];
  }
}

template <typename T>
void embedding_backward(T* dwte, T* dwpe, const T* dout, const std::int32_t* tokens, std::int64_t B,
                        std::int64_t Tn, std::int64_t C) {
  constexpr std::int64_t kBlock = 32;
  const std::int64_t blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (B * Tn * C > kParallelMinWork)
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t c0 = blk * kBlock, c1 = std::min(C, c0 + kBlock);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < Tn; ++t) {
        const std::int64_t n = b * Tn + t;
        const T* d = dout + n * C;
        T* e = dwte + static_cast<std::int64_t>(tokens[n]) * C;
        T* p = dwpe + t * C;
        for (std::int64_t c = c0; c < c1; ++c) {
          e[c] += d[c];
          p[c] += d[c];
        }
      }
  }
}

template void embedding_forward<float>(float*, const std::int32_t*, const float*, const float*, std::int64_t,
                                       std::int64_t, std::int64_t);
template void embedding_forward<double>(double*, const std::int32_t*, const double*, const double*, std::int64_t,
                                        std::int64_t, std::int64_t);
template void embedding_backward<float>(float*, float*, const float*, const std::int32_t*, std::int64_t,
                                        std::int64_t, std::int64_t);
template void embedding_backward<double>(double*, double*, const double*, const std::int32_t*, std::int64_t,
                                         std::int64_t, std::int64_t);

}  // namespace orthoshard::ops
