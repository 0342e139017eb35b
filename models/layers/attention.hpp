// Causal self-attention over packed q | k | v rows, scale 1/sqrt(hs), with grouped-query heads: NH query heads
// of size hs share NKV key/value heads (NH % NKV == 0; query head h reads key/value head h / (NH/NKV)), without
// repeating K and V. A row of qkv holds q (NH·hs), then k (NKV·hs), then v (NKV·hs). GPT-2 is NKV = NH.
#pragma once

#include <cstdint>

namespace orthoshard::ops {

// out (B, T, NH·hs) from qkv (B, T, (NH + 2·NKV)·hs); att (B, NH, T, T) receives the softmax probabilities
// (row t holds columns 0..t, the rest is zero), which the backward reuses.
template <typename T>
void gqa_attention_forward(T* out, T* att, const T* qkv, std::int64_t B, std::int64_t Tn, std::int64_t NH,
                           std::int64_t NKV, std::int64_t hs);

// dqkv (B, T, (NH + 2·NKV)·hs) = gradient w.r.t. qkv (overwritten) from dout (B, T, NH·hs), given the forward's
// qkv and att. Parallel over (b, key/value head), so every gradient slice has one writer.
template <typename T>
void gqa_attention_backward(T* dqkv, const T* dout, const T* qkv, const T* att, std::int64_t B, std::int64_t Tn,
                            std::int64_t NH, std::int64_t NKV, std::int64_t hs);

// One query row attending to n cached positions (generation): out (NH·hs) from q (NH·hs) and keys, values
// (n, NKV·hs) with row stride `stride`.
void decode_attention(float* out, const float* q, const float* keys, const float* values, std::int64_t n,
                      std::int64_t stride, std::int64_t NH, std::int64_t NKV, std::int64_t hs);

// Multi-head attention (GPT-2): qkv (B, T, 3C), C = NH·hs.
template <typename T>
void attention_forward(T* out, T* att, const T* qkv, std::int64_t B, std::int64_t Tn, std::int64_t C,
                       std::int64_t NH) {
  gqa_attention_forward(out, att, qkv, B, Tn, NH, NH, C / NH);
}
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* att, std::int64_t B, std::int64_t Tn,
                        std::int64_t C, std::int64_t NH) {
  gqa_attention_backward(dqkv, dout, qkv, att, B, Tn, NH, NH, C / NH);
}

}  // namespace orthoshard::ops
