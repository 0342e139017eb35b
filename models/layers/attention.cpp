// Attention kernels written as loops (attention is a few percent of GPT-2's FLOPs at T <= 1024): the forward
// is parallel over (b, h, t), the backward over (b, key/value head), so every gradient slice has one writer.
#include "models/layers/attention.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace orthoshard::ops {

template <typename T>
void gqa_attention_forward(T* out, T* att, const T* qkv, std::int64_t B, std::int64_t Tn, std::int64_t NH,
                           std::int64_t NKV, std::int64_t hs) {
  const std::int64_t CQ = NH * hs, CKV = NKV * hs, W = CQ + 2 * CKV, group = NH / NKV;
  const T scale = T(1) / std::sqrt(static_cast<T>(hs));
#pragma omp parallel for collapse(3) schedule(dynamic, 8) if (B * NH * Tn * Tn * hs > (1 << 16))
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < NH; ++h)
      for (std::int64_t t = 0; t < Tn; ++t) {
        const std::int64_t kvh = h / group;
        const T* q = qkv + (b * Tn + t) * W + h * hs;
        T* p = att + ((b * NH + h) * Tn + t) * Tn;
        T mx = -INFINITY;
        for (std::int64_t j = 0; j <= t; ++j) {
          const T* k = qkv + (b * Tn + j) * W + CQ + kvh * hs;
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
        T* o = out + (b * Tn + t) * CQ + h * hs;
        std::fill(o, o + hs, T(0));
        for (std::int64_t j = 0; j <= t; ++j) {
          const T* v = qkv + (b * Tn + j) * W + CQ + CKV + kvh * hs;
          const T pj = p[j];
#pragma omp simd
          for (std::int64_t i = 0; i < hs; ++i) o[i] += pj * v[i];
        }
      }
}

template <typename T>
void gqa_attention_backward(T* dqkv, const T* dout, const T* qkv, const T* att, std::int64_t B, std::int64_t Tn,
                            std::int64_t NH, std::int64_t NKV, std::int64_t hs) {
  const std::int64_t CQ = NH * hs, CKV = NKV * hs, W = CQ + 2 * CKV, group = NH / NKV;
  const T scale = T(1) / std::sqrt(static_cast<T>(hs));
#pragma omp parallel if (B * NH * Tn * Tn * hs > (1 << 16))
  {
    std::vector<T> dp(static_cast<std::size_t>(Tn));
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t kvh = 0; kvh < NKV; ++kvh) {
        for (std::int64_t t = 0; t < Tn; ++t) {
          T* row = dqkv + (b * Tn + t) * W;
          for (std::int64_t h = kvh * group; h < (kvh + 1) * group; ++h) std::fill_n(row + h * hs, hs, T(0));
          std::fill_n(row + CQ + kvh * hs, hs, T(0));
          std::fill_n(row + CQ + CKV + kvh * hs, hs, T(0));
        }
        for (std::int64_t h = kvh * group; h < (kvh + 1) * group; ++h)
          for (std::int64_t t = 0; t < Tn; ++t) {
            const T* p = att + ((b * NH + h) * Tn + t) * Tn;
            const T* dy = dout + (b * Tn + t) * CQ + h * hs;
            const T* q = qkv + (b * Tn + t) * W + h * hs;
            T* dq = dqkv + (b * Tn + t) * W + h * hs;
            // dP = dY·Vᵀ, dV += Pᵀ·dY
            T dot = 0;
            for (std::int64_t j = 0; j <= t; ++j) {
              const T* v = qkv + (b * Tn + j) * W + CQ + CKV + kvh * hs;
              T* dv = dqkv + (b * Tn + j) * W + CQ + CKV + kvh * hs;
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
              const T* k = qkv + (b * Tn + j) * W + CQ + kvh * hs;
              T* dk = dqkv + (b * Tn + j) * W + CQ + kvh * hs;
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

void decode_attention(float* out, const float* q, const float* keys, const float* values, std::int64_t n,
                      std::int64_t stride, std::int64_t NH, std::int64_t NKV, std::int64_t hs) {
  const std::int64_t group = NH / NKV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  std::vector<float> p(static_cast<std::size_t>(n));
  for (std::int64_t h = 0; h < NH; ++h) {
    const std::int64_t kvh = h / group;
    const float* qh = q + h * hs;
    float mx = -INFINITY;
    for (std::int64_t j = 0; j < n; ++j) {
      const float* k = keys + j * stride + kvh * hs;
      float d = 0;
#pragma omp simd reduction(+ : d)
      for (std::int64_t i = 0; i < hs; ++i) d += qh[i] * k[i];
      p[static_cast<std::size_t>(j)] = d * scale;
      mx = std::max(mx, d * scale);
    }
    float sum = 0;
    for (auto& x : p) sum += (x = std::exp(x - mx));
    float* o = out + h * hs;
    std::fill(o, o + hs, 0.0f);
    for (std::int64_t j = 0; j < n; ++j) {
      const float* v = values + j * stride + kvh * hs;
      const float pj = p[static_cast<std::size_t>(j)] / sum;
#pragma omp simd
      for (std::int64_t i = 0; i < hs; ++i) o[i] += pj * v[i];
    }
  }
}

template void gqa_attention_forward<float>(float*, float*, const float*, std::int64_t, std::int64_t, std::int64_t,
                                           std::int64_t, std::int64_t);
template void gqa_attention_forward<double>(double*, double*, const double*, std::int64_t, std::int64_t,
                                            std::int64_t, std::int64_t, std::int64_t);
template void gqa_attention_backward<float>(float*, const float*, const float*, const float*, std::int64_t,
                                            std::int64_t, std::int64_t, std::int64_t, std::int64_t);
template void gqa_attention_backward<double>(double*, const double*, const double*, const double*, std::int64_t,
                                             std::int64_t, std::int64_t, std::int64_t, std::int64_t);

}  // namespace orthoshard::ops
