// Causal multi-head self-attention over packed qkv (B, T, 3C) as models/layers/attention.hpp, on the GPU:
// heads split to (B, NH, T, hs), scores and products by cuBLAS strided-batched GEMMs (batch B·NH), the
// causal softmax and its backward by kernels (fp32 math). Scale 1/sqrt(hs).
#pragma once

#include "runtime/cuda/gemm.hpp"

#include <cstddef>
#include <cstdint>

namespace orthoshard::cuda {

// Elements of T the caller provides as `workspace` (contents need not survive between calls).
std::size_t attention_forward_workspace(std::int64_t B, std::int64_t Tn, std::int64_t C, std::int64_t NH);
std::size_t attention_backward_workspace(std::int64_t B, std::int64_t Tn, std::int64_t C, std::int64_t NH);

// out (B, T, C) from qkv (B, T, 3C); att (B, NH, T, T) receives the probabilities (zeros above the diagonal),
// which the backward reuses.
template <typename T>
void attention_forward(Blas& blas, T* out, T* att, T* workspace, const T* qkv, std::int64_t B, std::int64_t Tn,
                       std::int64_t C, std::int64_t NH, cudaStream_t stream);

// dqkv (B, T, 3C) = the gradient w.r.t. qkv (overwritten) from dout (B, T, C), given the forward's qkv and att.
template <typename T>
void attention_backward(Blas& blas, T* dqkv, T* workspace, const T* dout, const T* qkv, const T* att, std::int64_t B,
                        std::int64_t Tn, std::int64_t C, std::int64_t NH, cudaStream_t stream);

// Grouped-query attention over packed rows (B, T, (NH + 2·NKV)·hs) as ops::gqa_attention_forward/backward: out
// (B, T, NH·hs), att (B, NH, T, T); K and V are never repeated (one GEMM per key/value head covers its group).
std::size_t gqa_attention_forward_workspace(std::int64_t B, std::int64_t Tn, std::int64_t NH, std::int64_t NKV,
                                            std::int64_t hs);
std::size_t gqa_attention_backward_workspace(std::int64_t B, std::int64_t Tn, std::int64_t NH, std::int64_t NKV,
                                             std::int64_t hs);
template <typename T>
void gqa_attention_forward(Blas& blas, T* out, T* att, T* workspace, const T* qkv, std::int64_t B, std::int64_t Tn,
                           std::int64_t NH, std::int64_t NKV, std::int64_t hs, cudaStream_t stream);
template <typename T>
void gqa_attention_backward(Blas& blas, T* dqkv, T* workspace, const T* dout, const T* qkv, const T* att,
                            std::int64_t B, std::int64_t Tn, std::int64_t NH, std::int64_t NKV, std::int64_t hs,
                            cudaStream_t stream);

}  // namespace orthoshard::cuda
