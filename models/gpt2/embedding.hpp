// Token + position embedding: x[b, t] = wte[token[b, t]] + wpe[t].
#pragma once

#include <cstdint>

namespace orthoshard::ops {

// out (B, T, C); tokens (B, T) must lie in [0, rows of wte) (the caller checks).
template <typename T>
void embedding_forward(T* out, const std::int32_t* tokens, const T* wte, const T* wpe, std::int64_t B,
                       std::int64_t Tn, std::int64_t C);

// dwte (rows, C) += scatter of dout (B, T, C) by token, dwpe (T, C) += Σ_b dout. Parallel over channel
// blocks, so repeated tokens never race and sums run in (b, t) order.
template <typename T>
void embedding_backward(T* dwte, T* dwpe, const T* dout, const std::int32_t* tokens, std::int64_t B,
                        std::int64_t Tn, std::int64_t C);

}  // namespace orthoshard::ops
