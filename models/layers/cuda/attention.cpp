// Attention as batched GEMMs around the causal softmax kernels. Scores are computed for the whole T x T
// square (the causal half is wasted work, as in llm.c's cuBLAS path); the softmax zeroes the upper part.
#include "models/layers/cuda/attention.hpp"

#include "runtime/cuda/check.hpp"
#include "models/layers/cuda/layer_kernels.hpp"

#include <cmath>

namespace orthoshard::cuda {

namespace {
void check_shape(std::int64_t B, std::int64_t Tn, std::int64_t C, std::int64_t NH) {
  OS_CUDA_REQUIRE(B >= 0 && Tn >= 0 && C > 0 && NH > 0, "attention: bad shape");
  OS_CUDA_REQUIRE(C % NH == 0, "attention: C must be a multiple of NH");
}
}  // namespace

std::size_t attention_forward_workspace(std::int64_t B, std::int64_t Tn, std::int64_t C, std::int64_t) {
  return static_cast<std::size_t>(4 * B * Tn * C);  // q, k, v, y
}
std::size_t attention_backward_workspace(std::int64_t B, std::int64_t Tn, std::int64_t C, std::int64_t NH) {
  return static_cast<std::size_t>(7 * B * Tn * C + B * NH * Tn * Tn);  // q, k, v, dq, dk, dv, dy, dS
}

template <typename T>
void attention_forward(Blas& blas, T* out, T* att, T* workspace, const T* qkv, std::int64_t B, std::int64_t Tn,
                       std::int64_t C, std::int64_t NH, cudaStream_t stream) {
  check_shape(B, Tn, C, NH);
  if (B * Tn == 0) return;
  const std::int64_t hs = C / NH, BNH = B * NH, n = B * Tn * C, sq = Tn * hs, st = Tn * Tn;
  T* q = workspace;
  T* k = q + n;
  T* v = k + n;
  T* y = v + n;
  split_heads<T>(q, k, v, qkv, B, Tn, NH, hs, stream);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  // S (T x T) = scale · Q Kᵀ per head.
  gemm_strided_batched<T>(blas, false, true, Tn, Tn, hs, scale, q, hs, sq, k, hs, sq, 0.f, att, Tn, st, BNH, stream);
  causal_softmax_inplace<T>(att, BNH, Tn, stream);
  // Y (T x hs) = P V.
  gemm_strided_batched<T>(blas, false, false, Tn, hs, Tn, 1.f, att, Tn, st, v, hs, sq, 0.f, y, hs, sq, BNH, stream);
  merge_heads<T>(out, y, B, Tn, NH, hs, stream);
}

template <typename T>
void attention_backward(Blas& blas, T* dqkv, T* workspace, const T* dout, const T* qkv, const T* att, std::int64_t B,
                        std::int64_t Tn, std::int64_t C, std::int64_t NH, cudaStream_t stream) {
  check_shape(B, Tn, C, NH);
  if (B * Tn == 0) return;
  const std::int64_t hs = C / NH, BNH = B * NH, n = B * Tn * C, sq = Tn * hs, st = Tn * Tn;
  T* q = workspace;
  T* k = q + n;
  T* v = k + n;
  T* dq = v + n;
  T* dk = dq + n;
  T* dv = dk + n;
  T* dy = dv + n;
  T* ds = dy + n;  // (BNH, T, T): dP, then dS in place
  split_heads<T>(q, k, v, qkv, B, Tn, NH, hs, stream);
  split_heads_one<T>(dy, dout, B, Tn, NH, hs, stream);
  // dP = dY Vᵀ; dV = Pᵀ dY.
  gemm_strided_batched<T>(blas, false, true, Tn, Tn, hs, 1.f, dy, hs, sq, v, hs, sq, 0.f, ds, Tn, st, BNH, stream);
  gemm_strided_batched<T>(blas, true, false, Tn, hs, Tn, 1.f, att, Tn, st, dy, hs, sq, 0.f, dv, hs, sq, BNH, stream);
  // dS = P ⊙ (dP − Σ P dP) · scale (causal part only).
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  causal_softmax_backward_inplace<T>(ds, att, scale, BNH, Tn, stream);
  // dQ = dS K; dK = dSᵀ Q.
  gemm_strided_batched<T>(blas, false, false, Tn, hs, Tn, 1.f, ds, Tn, st, k, hs, sq, 0.f, dq, hs, sq, BNH, stream);
  gemm_strided_batched<T>(blas, true, false, Tn, hs, Tn, 1.f, ds, Tn, st, q, hs, sq, 0.f, dk, hs, sq, BNH, stream);
  merge_qkv_heads<T>(dqkv, dq, dk, dv, B, Tn, NH, hs, stream);
}

template void attention_forward<float>(Blas&, float*, float*, float*, const float*, std::int64_t, std::int64_t,
                                       std::int64_t, std::int64_t, cudaStream_t);
template void attention_forward<bf16>(Blas&, bf16*, bf16*, bf16*, const bf16*, std::int64_t, std::int64_t,
                                      std::int64_t, std::int64_t, cudaStream_t);
template void attention_backward<float>(Blas&, float*, float*, const float*, const float*, const float*,
                                        std::int64_t, std::int64_t, std::int64_t, std::int64_t, cudaStream_t);
template void attention_backward<bf16>(Blas&, bf16*, bf16*, const bf16*, const bf16*, const bf16*, std::int64_t,
                                       std::int64_t, std::int64_t, std::int64_t, cudaStream_t);

}  // namespace orthoshard::cuda
