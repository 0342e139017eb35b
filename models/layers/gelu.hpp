// GELU, tanh approximation (GPT-2's): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
#pragma once

#include <cstdint>

namespace orthoshard::ops {

// out (n) = gelu(inp); out may alias inp.
template <typename T> void gelu_forward(T* out, const T* inp, std::int64_t n);
// dinp (n) = gelu'(inp) · dout; dinp may alias dout.
template <typename T> void gelu_backward(T* dinp, const T* inp, const T* dout, std::int64_t n);

}  // namespace orthoshard::ops
