// SwiGLU kernels: elementwise, vectorized through fast_exp.
#include "models/layers/swiglu.hpp"

#include "models/layers/fast_exp.hpp"
#include "models/layers/parallel.hpp"

namespace orthoshard::ops {

template <typename T> void swiglu_forward(T* out, const T* gate, const T* up, std::int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMinWork)
  for (std::int64_t i = 0; i < n; ++i) {
    const T g = gate[i];
    out[i] = g / (T(1) + fast_exp(-g)) * up[i];
  }
}

template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, std::int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMinWork)
  for (std::int64_t i = 0; i < n; ++i) {
    const T g = gate[i], u = up[i], d = dout[i];
    const T s = T(1) / (T(1) + fast_exp(-g));
    const T silu = g * s;
    dgate[i] = d * u * s * (T(1) + g * (T(1) - s));
    dup[i] = d * silu;
  }
}

template void swiglu_forward<float>(float*, const float*, const float*, std::int64_t);
template void swiglu_forward<double>(double*, const double*, const double*, std::int64_t);
template void swiglu_backward<float>(float*, float*, const float*, const float*, const float*, std::int64_t);
template void swiglu_backward<double>(double*, double*, const double*, const double*, const double*, std::int64_t);

}  // namespace orthoshard::ops
