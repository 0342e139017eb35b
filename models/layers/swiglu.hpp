// SwiGLU's gate (LLaMA's MLP): out = SiLU(gate) ⊙ up, SiLU(g) = g · sigmoid(g).
#pragma once

#include <cstdint>

namespace orthoshard::ops {

// out (n) = silu(gate) · up.
template <typename T> void swiglu_forward(T* out, const T* gate, const T* up, std::int64_t n);
// dgate (n) = dout · up · silu'(gate), dup (n) = dout · silu(gate) (both overwritten; either may alias dout).
template <typename T> void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, std::int64_t n);

}  // namespace orthoshard::ops
