// Attention as batched GEMMs around the causal softmax kernels. Scores are computed for the whole T x T
// square (the causal half is wasted work, as in llm.c's cuBLAS path); the softmax zeroes the upper part.
// Grouped-query heads without repeating K and V: the NH/NKV query heads of a group are contiguous in
// (B, NH, T, hs), so one GEMM per (b, key/value head) takes them as (group·T) rows against that head's keys.
#include "models/layers/cuda/attention.hpp"

#include "runtime/cuda/check.hpp"
#include "models/layers/cuda/layer_kernels.hpp"

#include <cmath>

namespace orthoshard::cuda {

namespace {
void check_shape(std::int64_t B, std::int64_t Tn, std::int64_t NH, std::int64_t NKV, std::int64_t hs) {
  OS_CUDA_REQUIRE(B >= 0 && Tn >= 0 && NH > 0 && NKV > 0 && hs > 0, "attention: bad shape");
  OS_CUDA_REQUIRE(NH % NKV == 0, "attention: NH must be a multiple of NKV");
}
}  // namespace

std::size_t gqa_attention_forward_workspace(std::int64_t B, std::int64_t Tn, std::int64_t NH, std::int64_t NKV,
                                            std::int64_t hs) {
  return static_cast<std::size_t>(B * Tn * hs * (2 * NH + 2 * NKV));  // q, k, v, y
}
std::size_t gqa_attention_backward_workspace(std::int64_t B, std::int64_t Tn, std::int64_t NH, std::int64_t NKV,
                                             std::int64_t hs) {
  return static_cast<std::size_t>(B * Tn * hs * (3 * NH + 4 * NKV) + B * NH * Tn * Tn);  // q, k, v, dq, dk, dv, dy, dS
}
std::size_t attention_forward_workspace(std::int64_t B, std::int64_t Tn, std::int64_t C, std::int64_t NH) {
  return gqa_attention_forward_workspace(B, Tn, NH, NH, C / NH);
}
std::size_t attention_backward_workspace(std::int64_t B, std::int64_t Tn, std::int64_t C, std::int64_t NH) {
  return gqa_attention_backward_workspace(B, Tn, NH, NH, C / NH);
}

template <typename T>
void gqa_attention_forward(Blas& blas, T* out, T* att, T* workspace, const T* qkv, std::int64_t B, std::int64_t Tn,
                           std::int64_t NH, std::int64_t NKV, std::int64_t hs, cudaStream_t stream) {
  check_shape(B, Tn, NH, NKV, hs);
  if (B * Tn == 0) return;
  const std::int64_t G = NH / NKV, BKV = B * NKV, nq = B * NH * Tn * hs, nkv = B * NKV * Tn * hs;
  const std::int64_t sq = G * Tn * hs, skv = Tn * hs, st = G * Tn * Tn;  // batch strides per (b, kv head)
  T* q = workspace;
  T* k = q + nq;
  T* v = k + nkv;
  T* y = v + nkv;
  split_heads<T>(q, k, v, qkv, B, Tn, NH, NKV, hs, stream);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  // S (G·T x T) = scale · Q Kᵀ per (b, kv head).
  gemm_strided_batched<T>(blas, false, true, G * Tn, Tn, hs, scale, q, hs, sq, k, hs, skv, 0.f, att, Tn, st, BKV,
                          stream);
  causal_softmax_inplace<T>(att, B * NH, Tn, stream);
  // Y (G·T x hs) = P V.
  gemm_strided_batched<T>(blas, false, false, G * Tn, hs, Tn, 1.f, att, Tn, st, v, hs, skv, 0.f, y, hs, sq, BKV, stream);
  merge_heads<T>(out, y, B, Tn, NH, hs, stream);
}

template <typename T>
void gqa_attention_backward(Blas& blas, T* dqkv, T* workspace, const T* dout, const T* qkv, const T* att,
                            std::int64_t B, std::int64_t Tn, std::int64_t NH, std::int64_t NKV, std::int64_t hs,
                            cudaStream_t stream) {
  check_shape(B, Tn, NH, NKV, hs);
  if (B * Tn == 0) return;
  const std::int64_t G = NH / NKV, BKV = B * NKV, nq = B * NH * Tn * hs, nkv = B * NKV * Tn * hs;
  const std::int64_t sq = G * Tn * hs, skv = Tn * hs, st = G * Tn * Tn;
  T* q = workspace;
  T* k = q + nq;
  T* v = k + nkv;
  T* dq = v + nkv;
  T* dk = dq + nq;
  T* dv = dk + nkv;
  T* dy = dv + nkv;
  T* ds = dy + nq;  // (B·NH, T, T): dP, then dS in place
  split_heads<T>(q, k, v, qkv, B, Tn, NH, NKV, hs, stream);
  split_heads_one<T>(dy, dout, B, Tn, NH, hs, stream);
  // dP = dY Vᵀ; dV = Pᵀ dY (summed over the group's query heads by the GEMM's depth G·T).
  gemm_strided_batched<T>(blas, false, true, G * Tn, Tn, hs, 1.f, dy, hs, sq, v, hs, skv, 0.f, ds, Tn, st, BKV, stream);
  gemm_strided_batched<T>(blas, true, false, Tn, hs, G * Tn, 1.f, att, Tn, st, dy, hs, sq, 0.f, dv, hs, skv, BKV,
                          stream);
  // dS = P ⊙ (dP − Σ P dP) · scale (causal part only).
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  causal_softmax_backward_inplace<T>(ds, att, scale, B * NH, Tn, stream);
  // dQ = dS K; dK = dSᵀ Q.
  gemm_strided_batched<T>(blas, false, false, G * Tn, hs, Tn, 1.f, ds, Tn, st, k, hs, skv, 0.f, dq, hs, sq, BKV, stream);
  gemm_strided_batched<T>(blas, true, false, Tn, hs, G * Tn, 1.f, ds, Tn, st, q, hs, sq, 0.f, dk, hs, skv, BKV, stream);
  merge_qkv_heads<T>(dqkv, dq, dk, dv, B, Tn, NH, NKV, hs, stream);
}

template <typename T>
void attention_forward(Blas& blas, T* out, T* att, T* workspace, const T* qkv, std::int64_t B, std::int64_t Tn,
                       std::int64_t C, std::int64_t NH, cudaStream_t stream) {
  OS_CUDA_REQUIRE(NH > 0 && C % NH == 0, "attention: C must be a multiple of NH");
  gqa_attention_forward(blas, out, att, workspace, qkv, B, Tn, NH, NH, C / NH, stream);
}

template <typename T>
void attention_backward(Blas& blas, T* dqkv, T* workspace, const T* dout, const T* qkv, const T* att, std::int64_t B,
                        std::int64_t Tn, std::int64_t C, std::int64_t NH, cudaStream_t stream) {
  OS_CUDA_REQUIRE(NH > 0 && C % NH == 0, "attention: C must be a multiple of NH");
  gqa_attention_backward(blas, dqkv, workspace, dout, qkv, att, B, Tn, NH, NH, C / NH, stream);
}

#define ORTHOSHARD_ATTENTION(T)                                                                                      \
  template void gqa_attention_forward<T>(Blas&, T*, T*, T*, const T*, std::int64_t, std::int64_t, std::int64_t,    \
                                         std::int64_t, std::int64_t, cudaStream_t);                                \
  template void gqa_attention_backward<T>(Blas&, T*, T*, const T*, const T*, const T*, std::int64_t, std::int64_t, \
                                          std::int64_t, std::int64_t, std::int64_t, cudaStream_t);                 \
  template void attention_forward<T>(Blas&, T*, T*, T*, const T*, std::int64_t, std::int64_t, std::int64_t,        \
                                     std::int64_t, cudaStream_t);                                                  \
  template void attention_backward<T>(Blas&, T*, T*, const T*, const T*, const T*, std::int64_t, std::int64_t,     \
                                      std::int64_t, std::int64_t, cudaStream_t);
ORTHOSHARD_ATTENTION(float)
ORTHOSHARD_ATTENTION(bf16)

}  // namespace orthoshard::cuda
