// Fused causal self-attention for bf16 models (FlashAttention-2's schedule): the T x T scores never reach
// global memory. Each block keeps a tile of query rows and streams the key/value tiles through shared memory;
// products run on tensor cores through WMMA (bf16 operands, fp32 accumulation), the online softmax in fp32.
// The backward recomputes the probabilities from the forward's row statistics, in two deterministic kernels
// (dQ per query tile; dK and dV per key tile), so no atomics and no (T x T) buffer are needed.
//
// Layouts as attention.hpp: qkv (B, T, 3C) with q, k, v at columns [0, C), [C, 2C), [2C, 3C) and head h at
// h·hs inside each; out (B, T, C). Heads are read and written in place (no split/merge copies). Grouped-query
// attention (the overloads with NKV): rows (B, T, C + 2·NKV·hs) of q | k | v heads, query head h reading key/value
// head h / (NH/NKV) in place (K and V never repeated); the dK/dV kernel runs per key/value head over its group.
// Scale 1/sqrt(hs). Needs compute capability 8.0 or later (bf16 WMMA).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace orthoshard::cuda {

// Whether the fused kernels take C and NH: head size hs = C / NH of 16, 32, 64 or 128.
bool flash_attention_supported(std::int64_t C, std::int64_t NH);

// Floats of the row statistics the forward leaves for the backward: (B, NH, T).
std::size_t flash_attention_stats_floats(std::int64_t B, std::int64_t Tn, std::int64_t NH);

// out (B, T, C) = softmax(scale · Q Kᵀ, causal) V per head; stats (B, NH, T) receives each row's log2-domain
// log-sum-exp of the scaled scores (log2 Σ_j 2^(s_j · scale · log2 e)), which the backward needs.
void flash_attention_forward(__nv_bfloat16* out, float* stats, const __nv_bfloat16* qkv, std::int64_t B,
                             std::int64_t Tn, std::int64_t C, std::int64_t NH, cudaStream_t stream);

void flash_attention_forward(__nv_bfloat16* out, float* stats, const __nv_bfloat16* qkv, std::int64_t B,
                             std::int64_t Tn, std::int64_t C, std::int64_t NH, std::int64_t NKV, cudaStream_t stream);

// dqkv (B, T, 3C) = the gradient w.r.t. qkv (overwritten) from dout (B, T, C), given the forward's qkv, its
// output `out` and `stats`. `workspace` holds flash_attention_stats_floats(B, T, NH) floats (row sums of
// dout ⊙ out; contents need not survive between calls).
void flash_attention_backward(__nv_bfloat16* dqkv, float* workspace, const __nv_bfloat16* dout,
                              const __nv_bfloat16* qkv, const __nv_bfloat16* out, const float* stats, std::int64_t B,
                              std::int64_t Tn, std::int64_t C, std::int64_t NH, cudaStream_t stream);
void flash_attention_backward(__nv_bfloat16* dqkv, float* workspace, const __nv_bfloat16* dout,
                              const __nv_bfloat16* qkv, const __nv_bfloat16* out, const float* stats, std::int64_t B,
                              std::int64_t Tn, std::int64_t C, std::int64_t NH, std::int64_t NKV, cudaStream_t stream);

}  // namespace orthoshard::cuda
