// The GPU side of the model-family interface: a UnitRunner that runs a model's units on the current GPU with
// the kernels of its family (CUDA builds only; the registry is models/families_cuda.cpp).
#pragma once

#include "models/family.hpp"
#include "runtime/core/error.hpp"
#include "runtime/cuda/check.hpp"
#include "runtime/cuda/device.hpp"
#include "runtime/cuda/gemm.hpp"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <memory>
#include <string>

namespace orthoshard {

struct DeviceRunnerOptions : RunnerOptions {
  DType dtype = DType::BF16;  // compute dtype of parameters and activations: f32 or bf16 (fp32 statistics, losses)
  AttentionKernels attention = AttentionKernels::Auto;
};

// The pointer of a device tensor of the compute dtype T and the expected shape; throws naming the model, unit and
// field otherwise.
template <typename T>
T* device_tensor(const Tensor& t, const Shape& shape, std::string_view model, const std::string& unit,
                 const char* field) {
  constexpr DType dt = std::is_same_v<T, float> ? DType::F32 : DType::BF16;
  if (!t.defined() || t.device() != Device::CUDA || t.dtype() != dt || t.shape() != shape || !t.is_contiguous())
    throw Error(fmt::format("{} (cuda) {}: {} must be a contiguous {} {} tensor on the GPU, got {}", model, unit, field,
                            dtype_name(dt), shape_str(shape), t.defined() ? t.describe() : "nothing"));
  return static_cast<T*>(t.raw());
}

// The per-token losses of a step's micro-batches in pinned host memory: each head forward queues a copy into the
// next slot without waiting; take_sum() waits for the stream once and sums the micro-batches' mean losses.
class DeviceLossSlots {
 public:
  void resize(std::int64_t tokens, int micro_batches) {
    tokens_ = tokens;
    const auto bytes = static_cast<std::size_t>(tokens * micro_batches) * sizeof(float);
    if (buf_.bytes() < bytes) buf_ = cuda::PinnedBuffer(bytes);
    slots_ = micro_batches;
  }
  float* next(std::string_view model) {
    OS_CHECK(filled_ < slots_, "{} (cuda): more micro-batches than set_batch sized ({})", model, slots_);
    return slot(filled_++);
  }
  double take_sum(cudaStream_t stream) {
    OS_CUDA_CHECK(cudaStreamSynchronize(stream));  // the loss copies have landed
    double sum = 0;
    for (int j = 0; j < filled_; ++j) {
      double s = 0;
      for (std::int64_t i = 0; i < tokens_; ++i) s += static_cast<double>(slot(j)[i]);
      sum += s / static_cast<double>(tokens_);
    }
    filled_ = 0;
    return sum;
  }

 private:
  float* slot(int j) { return static_cast<float*>(buf_.data()) + j * tokens_; }
  cuda::PinnedBuffer buf_;  // (micro-batches, B·T)
  std::int64_t tokens_ = 0;
  int slots_ = 0, filled_ = 0;
};

// Work is queued on `stream`; `blas` serves that stream only (see cuda::Blas). UsageError when the family has no
// GPU implementation or the options do not apply (flash attention on an f32 model, ...).
std::unique_ptr<UnitRunner> make_device_runner(const Model& model, cuda::Blas& blas, cudaStream_t stream,
                                               const DeviceRunnerOptions& opt);

}  // namespace orthoshard
