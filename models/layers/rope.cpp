// Rotary embeddings: a table of cos/sin, and the rotation of head pairs (i, i + hs/2).
#include "models/layers/rope.hpp"

#include "models/layers/parallel.hpp"

#include <cmath>

namespace orthoshard::ops {

template <typename T>
RopeTable<T>::RopeTable(std::int64_t maxT_, std::int64_t hs, double theta) : maxT(maxT_), half(hs / 2) {
  cos.resize(static_cast<std::size_t>(maxT * half));
  sin.resize(cos.size());
  for (std::int64_t i = 0; i < half; ++i) {
    const double inv_freq = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(hs));
    for (std::int64_t t = 0; t < maxT; ++t) {
      const double a = static_cast<double>(t) * inv_freq;
      cos[static_cast<std::size_t>(t * half + i)] = static_cast<T>(std::cos(a));
      sin[static_cast<std::size_t>(t * half + i)] = static_cast<T>(std::sin(a));
    }
  }
}

template <typename T>
void rope_apply(T* x, const RopeTable<T>& table, std::int64_t B, std::int64_t Tn, std::int64_t stride,
                std::int64_t heads, std::int64_t hs, bool inverse, std::int64_t pos0) {
  const std::int64_t half = hs / 2;
  const T sign = inverse ? T(-1) : T(1);
#pragma omp parallel for collapse(2) schedule(static) if (B * Tn * heads * hs > kParallelMinWork)
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < Tn; ++t) {
      const T* c = table.cos.data() + (pos0 + t) * half;
      const T* s = table.sin.data() + (pos0 + t) * half;
      T* row = x + (b * Tn + t) * stride;
      for (std::int64_t h = 0; h < heads; ++h) {
        T* lo = row + h * hs;
        T* hi = lo + half;
#pragma omp simd
        for (std::int64_t i = 0; i < half; ++i) {
          const T a = lo[i], d = hi[i], sn = sign * s[i];
          lo[i] = a * c[i] - d * sn;
          hi[i] = d * c[i] + a * sn;
        }
      }
    }
}

template struct RopeTable<float>;
template struct RopeTable<double>;
template void rope_apply<float>(float*, const RopeTable<float>&, std::int64_t, std::int64_t, std::int64_t,
                                std::int64_t, std::int64_t, bool, std::int64_t);
template void rope_apply<double>(double*, const RopeTable<double>&, std::int64_t, std::int64_t, std::int64_t,
                                 std::int64_t, std::int64_t, bool, std::int64_t);

}  // namespace orthoshard::ops
