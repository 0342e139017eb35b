// GELU (tanh) kernels, elementwise and vectorizable.
#include "models/layers/gelu.hpp"

#include "models/layers/fast_exp.hpp"
#include "models/layers/parallel.hpp"

#include <cmath>

namespace orthoshard::ops {

namespace {
constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr double kCubic = 0.044715;
}  // namespace

template <typename T> void gelu_forward(T* out, const T* inp, std::int64_t n) {
  const T s = static_cast<T>(kSqrt2OverPi), k = static_cast<T>(kCubic);
#pragma omp parallel for simd schedule(static) if (n > kParallelMinWork)
  for (std::int64_t i = 0; i < n; ++i) {
    const T x = inp[i];
    out[i] = T(0.5) * x * (T(1) + fast_tanh(s * (x + k * x * x * x)));
  }
}

template <typename T> void gelu_backward(T* dinp, const T* inp, const T* dout, std::int64_t n) {
  const T s = static_cast<T>(kSqrt2OverPi), k = static_cast<T>(kCubic);
#pragma omp parallel for simd schedule(static) if (n > kParallelMinWork)
  for (std::int64_t i = 0; i < n; ++i) {
    const T x = inp[i];
    const T th = fast_tanh(s * (x + k * x * x * x));
    const T sech2 = T(1) - th * th;
    const T grad = T(0.5) * (T(1) + th) + T(0.5) * x * sech2 * s * (T(1) + T(3) * k * x * x);
    dinp[i] = grad * dout[i];
  }
}

template void gelu_forward<float>(float*, const float*, std::int64_t);
template void gelu_forward<double>(double*, const double*, std::int64_t);
template void gelu_backward<float>(float*, const float*, const float*, std::int64_t);
template void gelu_backward<double>(double*, const double*, const double*, std::int64_t);

}  // namespace orthoshard::ops
