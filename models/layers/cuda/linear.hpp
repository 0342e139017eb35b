// The linear layer on the GPU (y = x·Wᵀ + b, W stored (OC, IC)), with the semantics of models/layers/linear.hpp:
// cuBLASLt with the bias and GELU fused where it can, else a GEMM and the layer kernels. bf16 operands use fp32
// accumulation (see runtime/cuda/gemm.hpp).
#pragma once

#include "runtime/cuda/gemm.hpp"

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace orthoshard::cuda {

// out (N, OC) = inp (N, IC) · wᵀ + bias (OC; may be null). With pre_gelu non-null: pre_gelu = that value and
// out = gelu_tanh(pre_gelu) (cuBLASLt's GELU_AUX_BIAS epilogue, else a GEMM then kernels). IC = 0 gives
// out = bias (or 0) broadcast over the rows (then the GELU).
template <typename T>
void linear_forward(Blas& blas, T* out, T* pre_gelu, const T* inp, const T* w, const T* bias, std::int64_t N,
                    std::int64_t IC, std::int64_t OC, cudaStream_t stream);

// Floats of scratch linear_backward needs when dbias is non-null.
std::size_t linear_backward_scratch_floats(std::int64_t N, std::int64_t OC);

// dinp (N, IC) = dout · w (overwritten), times gelu'(gelu_pre) elementwise when gelu_pre (N, IC) is non-null
// (the backward through the GELU that produced this layer's input: cuBLASLt's DGELU epilogue);
// dw (OC, IC) += doutᵀ · inp; dbias (OC) += Σ_n dout (deterministic column sums; may be null). Any of
// dinp, dw may be null to skip it.
template <typename T>
void linear_backward(Blas& blas, T* dinp, T* dw, T* dbias, float* scratch, const T* dout, const T* inp, const T* w,
                     const T* gelu_pre, std::int64_t N, std::int64_t IC, std::int64_t OC, cudaStream_t stream);

}  // namespace orthoshard::cuda
