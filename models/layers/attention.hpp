// Causal multi-head self-attention over packed qkv (q | k | v, each C = NH·hs wide), scale 1/sqrt(hs).
#pragma once

#include <cstdint>

namespace orthoshard::ops {

// out (B, T, C) from qkv (B, T, 3C); att (B, NH, T, T) receives the softmax probabilities (row t holds
// columns 0..t, the rest is zero), which the backward reuses.
template <typename T>
void attention_forward(T* out, T* att, const T* qkv, std::int64_t B, std::int64_t Tn, std::int64_t C,
                       std::int64_t NH);

// dqkv (B, T, 3C) = gradient w.r.t. qkv (overwritten) from dout (B, T, C), given the forward's qkv and att.
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* att, std::int64_t B, std::int64_t Tn,
                        std::int64_t C, std::int64_t NH);

}  // namespace orthoshard::ops
