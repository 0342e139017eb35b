// Attention kernels written as loops (attention is a few percent of GPT-2's FLOPs at T <= 1024): the forward
// is parallel over (b, h, t), the backward over (b, h), so every head's gradient slice has one writer.
#include "models/layers/attention.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace orthoshard::ops {

template <typename T>
void attention_forward(T* out, T* att, const T* qkv, std::int64_t B, std::int64_t Tn, std::int64_t C,
                       std::int64_t NH) {
  const std::int64_t hs = C / NH, C3 = 3 * C;
  const T scale = T(1) / std::sqrt(static_cast<T>(hs));
#pragma omp parallel for collapse(3) schedule(dynamic, 8) if (B * NH * Tn * Tn * hs > (1 << 16))
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < NH; ++h)
      for (std::int64_t t = 0; t < Tn; ++t) {
        const T* q = qkv + (b * Tn + t) * C3 + h * hs;
        T* p = att + ((b * NH + h) * Tn + t) * Tn;
        T mx = -INFINITY;
        for (std::int64_t j = 0; j <= t; ++j) {
          const T* k = qkv + (b * Tn + j) * C3 + C + h * hs;
          T d = 0;
#pragma omp simd reduction(+ : d)
          for (std::int64_t i = 0; i < hs; ++i) d += q[i] * k[i];
          p[j] = d * scale;
          mx = std::max(mx, p[j]);
        }
        T sum = 0;
        for (std::int64_t j = 0; j <= t; ++j) {
          p[j] = std::exp(p[j] - mx);
          sum += p[j];
        }
        const T inv = T(1) / sum;
        for (std::int64_t j = 0; j <= t; ++j) p[j] *= inv;
        std::fill(p + t + 1, p + Tn, T(0));
        T* o = out + (b * Tn + t) * C + h * hs;
        std::fill(o, o + hs, T(0));
        for (std::int64_t j = 0; j <= t; ++j) {
          const T* v = qkv + (b * Tn + j) * C3 + 2 * C + h * hs;
          const T pj = p[j];
#pragma omp simd
          for (std::int64_t i = 0; i < hs; ++i) o[i] += pj * v[i];
        }
      }
}

template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* att, std::int64_t B, std::int64_t Tn,
                        std::int64_t C, std::int64_t NH) {
  const std::int64_t hs = C / NH, C3 = 3 * C;
  const T scale = T(1) / std::sqrt(static_cast<T>(hs));
#pragma omp parallel if (B * NH * Tn * Tn * hs > (1 << 16))
  {
    std::vector<T> dp(static_cast<std::size_t>(Tn));
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t h = 0; h < NH; ++h) {
        for (std::int64_t t = 0; t < Tn; ++t)
          for (int part = 0; part < 3; ++part) {
            T* d = dqkv + (b * Tn + t) * C3 + part * C + h * hs;
            std::fill(d, d + hs, T(0));
          }
        for (std::int64_t t = 0; t < Tn; ++t) {
          const T* p = att + ((b * NH + h) * Tn + t) * Tn;
          const T* dy = dout + (b * Tn + t) * C + h * hs;
          const T* q = qkv + (b * Tn + t) * C3 + h * hs;
          T* dq = dqkv + (b * Tn + t) * C3 + h * hs;
          // dP = dY·Vᵀ, dV += Pᵀ·dY
          T dot = 0;
          for (std::int64_t j = 0; j <= t; ++j) {
            const T* v = qkv + (b * Tn + j) * C3 + 2 * C + h * hs;
            T* dv = dqkv + (b * Tn + j) * C3 + 2 * C + h * hs;
            T d = 0;
            const T pj = p[j];
#pragma omp simd reduction(+ : d)
            for (std::int64_t i = 0; i < hs; ++i) {
              d += dy[i] * v[i];
              dv[i] += pj * dy[i];
            }
            dp[j] = d;
            dot += pj * d;
          }
          // softmax backward: dS = P ⊙ (dP − Σ P dP); then through the scaled scores to q and k.
          for (std::int64_t j = 0; j <= t; ++j) {
            const T ds = p[j] * (dp[j] - dot) * scale;
            const T* k = qkv + (b * Tn + j) * C3 + C + h * hs;
            T* dk = dqkv + (b * Tn + j) * C3 + C + h * hs;
#pragma omp simd
            for (std::int64_t i = 0; i < hs; ++i) {
              dq[i] += ds * k[i];
              dk[i] += ds * q[i];
            }
          }
        }
      }
  }
}

template void attention_forward<float>(float*, float*, const float*, std::int64_t, std::int64_t, std::int64_t,
                                       std::int64_t);
template void attention_forward<double>(double*, double*, const double*, std::int64_t, std::int64_t, std::int64_t,
                                        std::int64_t);
template void attention_backward<float>(float*, const float*, const float*, const float*, std::int64_t,
                                        std::int64_t, std::int64_t, std::int64_t);
template void attention_backward<double>(double*, const double*, const double*, const double*, std::int64_t,
                                         std::int64_t, std::int64_t, std::int64_t);

}  // namespace orthoshard::ops
