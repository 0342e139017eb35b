// The GPU side of the model-family interface: a UnitRunner that runs a model's units on the current GPU with
// the kernels of its family (CUDA builds only; the registry is models/families_cuda.cpp).
#pragma once

#include "models/family.hpp"
#include "runtime/cuda/gemm.hpp"

#include <cuda_runtime.h>

#include <memory>

namespace orthoshard {

struct DeviceRunnerOptions : RunnerOptions {
  DType dtype = DType::BF16;  // compute dtype of parameters and activations: f32 or bf16 (fp32 statistics, losses)
  AttentionKernels attention = AttentionKernels::Auto;
};

// Work is queued on `stream`; `blas` serves that stream only (see cuda::Blas). UsageError when the family has no
// GPU implementation or the options do not apply (flash attention on an f32 model, ...).
std::unique_ptr<UnitRunner> make_device_runner(const Model& model, cuda::Blas& blas, cudaStream_t stream,
                                               const DeviceRunnerOptions& opt);

}  // namespace orthoshard
