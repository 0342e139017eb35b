// Transformer layer kernels shared by the model families, in llm.c's layout (activations (B, T, C), weights
// row-major (out, in)), with the semantics of models/layers/*.hpp. T is float or __nv_bfloat16; statistics, softmax and losses are fp32.
// Every function queues work on `stream` and returns; arguments are checked, launches too (CudaError).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace orthoshard::cuda {

using bf16 = __nv_bfloat16;

// ---- layernorm (eps 1e-5) ----
// out (N, C) = (x - mean) * rstd * w + b; mean, rstd (N) in fp32 for the backward.
template <typename T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* x, const T* w, const T* b, std::int64_t N,
                       std::int64_t C, cudaStream_t stream);

// Floats of scratch that layernorm_backward, bias_backward need (partial column sums over row chunks).
std::size_t column_sums_scratch_floats(std::int64_t N, std::int64_t C, int sums_per_column = 2);

// dx (N, C) += ∂/∂x; dw (C) += Σ_n dout·x̂; db (C) += Σ_n dout (fixed-order two-pass sums, fp32). dx must not
// overlap dout, x or w.
template <typename T>
void layernorm_backward(T* dx, T* dw, T* db, float* scratch, const T* dout, const T* x, const T* w,
                        const float* mean, const float* rstd, std::int64_t N, std::int64_t C, cudaStream_t stream);

// ---- elementwise ----
// GELU (tanh approximation). out may alias inp; dinp may alias dout.
template <typename T> void gelu_forward(T* out, const T* inp, std::int64_t n, cudaStream_t stream);
template <typename T> void gelu_backward(T* dinp, const T* inp, const T* dout, std::int64_t n, cudaStream_t stream);
// out (N, OC) += bias (OC) broadcast over rows.
template <typename T> void bias_add(T* out, const T* bias, std::int64_t N, std::int64_t OC, cudaStream_t stream);
// dbias (OC) += Σ_n dout (N, OC), fixed-order fp32 sums; scratch: column_sums_scratch_floats(N, OC, 1).
template <typename T>
void bias_backward(T* dbias, float* scratch, const T* dout, std::int64_t N, std::int64_t OC, cudaStream_t stream);
// out (n) = a + b (out may alias either).
template <typename T> void residual_add(T* out, const T* a, const T* b, std::int64_t n, cudaStream_t stream);

// ---- softmax cross-entropy over the first V of Vp logit columns ----
// lse[n] = log Σ_{j<V} exp(logits[n, j]); losses[n] = lse[n] - logits[n, targets[n]] when targets is non-null.
template <typename T>
void cross_entropy_forward(float* losses, float* lse, const T* logits, const std::int32_t* targets, std::int64_t N,
                           std::int64_t V, std::int64_t Vp, cudaStream_t stream);
// In place: logits[n, j] <- scale·softmax_j - scale·[j = target] for j < V, 0 for V <= j < Vp.
template <typename T>
void cross_entropy_backward_inplace(T* logits, const float* lse, const std::int32_t* targets, float scale,
                                    std::int64_t N, std::int64_t V, std::int64_t Vp, cudaStream_t stream);
// Both in one pass over each row: losses (N) and logits -> dlogits (the gradient of scale·Σ losses).
template <typename T>
void softmax_cross_entropy_fused(float* losses, T* logits, const std::int32_t* targets, float scale,
                                 std::int64_t N, std::int64_t V, std::int64_t Vp, cudaStream_t stream);

// ---- causal self-attention pieces (attention.hpp strings them together with cuBLAS) ----
// In place over att (B·NH rows blocks of T x T scores, already scaled): row t becomes the softmax of columns
// 0..t (fp32 math), columns > t become 0.
template <typename T> void causal_softmax_inplace(T* att, std::int64_t BNH, std::int64_t Tn, cudaStream_t stream);
// In place over datt (dP): dS = P ⊙ (dP − Σ_j P dP) · scale on the causal part, 0 above the diagonal.
template <typename T>
void causal_softmax_backward_inplace(T* datt, const T* att, float scale, std::int64_t BNH, std::int64_t Tn,
                                     cudaStream_t stream);
// qkv (B, T, (NH + 2·NKV)·hs) packed q | k | v heads -> q (B, NH, T, hs), k and v (B, NKV, T, hs); and the
// inverse (overwriting qkv). GPT-2 is NKV = NH.
template <typename T>
void split_heads(T* q, T* k, T* v, const T* qkv, std::int64_t B, std::int64_t Tn, std::int64_t NH, std::int64_t NKV,
                 std::int64_t hs, cudaStream_t stream);
template <typename T>
void merge_qkv_heads(T* qkv, const T* q, const T* k, const T* v, std::int64_t B, std::int64_t Tn, std::int64_t NH,
                     std::int64_t NKV, std::int64_t hs, cudaStream_t stream);
// y (B, NH, T, hs) <-> out (B, T, NH·hs).
template <typename T>
void merge_heads(T* out, const T* y, std::int64_t B, std::int64_t Tn, std::int64_t NH, std::int64_t hs,
                 cudaStream_t stream);
template <typename T>
void split_heads_one(T* y, const T* out, std::int64_t B, std::int64_t Tn, std::int64_t NH, std::int64_t hs,
                     cudaStream_t stream);

// ---- LLaMA's layers (models/layers/rmsnorm.hpp, rope.hpp, swiglu.hpp) ----
// out (N, C) = x · rstd · w, rstd (N) = 1 / sqrt(mean(x²) + eps) in fp32.
template <typename T>
void rmsnorm_forward(T* out, float* rstd, const T* x, const T* w, std::int64_t N, std::int64_t C, float eps,
                     cudaStream_t stream);
// dx (N, C) += ∂/∂x (may be null); dw (C) += Σ_n dout·x̂ (fixed-order sums; scratch: column_sums_scratch_floats(N,
// C, 2)). dx must not overlap dout, x or w.
template <typename T>
void rmsnorm_backward(T* dx, T* dw, float* scratch, const T* dout, const T* x, const T* w, const float* rstd,
                      std::int64_t N, std::int64_t C, cudaStream_t stream);
// Rotates `heads` heads of size hs in place in rows (B, T) of stride `stride` elements, with cos/sin tables
// (maxT, hs/2) on the device (fp32); inverse rotates back (the backward).
template <typename T>
void rope_apply(T* x, const float* cosv, const float* sinv, std::int64_t B, std::int64_t Tn, std::int64_t stride,
                std::int64_t heads, std::int64_t hs, bool inverse, cudaStream_t stream);
// out = SiLU(gate) ⊙ up (out may alias gate or up); dgate, dup from dout (either may alias dout).
template <typename T> void swiglu_forward(T* out, const T* gate, const T* up, std::int64_t n, cudaStream_t stream);
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, std::int64_t n, cudaStream_t stream);

}  // namespace orthoshard::cuda
