// exp for the float kernels as straight-line arithmetic, so loops over it vectorize (libm's expf would be a
// call per element): range reduction by ln 2 and a degree-7 polynomial, relative error < 3e-7 on
// [-87, 88]; inputs are clamped to that range (exp(-inf) gives ~1e-38, not 0). double uses std::exp.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace orthoshard::ops {

inline float fast_exp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float t = x * 1.44269504088896341f;               // x / ln 2
  const float n = (t + 12582912.0f) - 12582912.0f;        // round to nearest (1.5·2^23 trick)
  const float f = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;  // |f| <= ln2/2, Cody-Waite
  float p = 1.0f / 5040.0f;
  p = p * f + 1.0f / 720.0f;
  p = p * f + 1.0f / 120.0f;
  p = p * f + 1.0f / 24.0f;
  p = p * f + 1.0f / 6.0f;
  p = p * f + 0.5f;
  p = p * f + 1.0f;
  p = p * f + 1.0f;
  const std::int32_t e = (static_cast<std::int32_t>(n) + 127) << 23;  // 2^n
  return p * std::bit_cast<float>(e);
}
inline double fast_exp(double x) { return std::exp(x); }

// tanh through fast_exp: 1 − 2 / (e^{2u} + 1) (absolute error ~1e-7, enough for GELU).
inline float fast_tanh(float u) { return 1.0f - 2.0f / (fast_exp(2.0f * u) + 1.0f); }
inline double fast_tanh(double u) { return std::tanh(u); }

}  // namespace orthoshard::ops
