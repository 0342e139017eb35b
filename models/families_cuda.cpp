// Where the model families' GPU runners are registered (the GPU twin of models/families.cpp).
#include "models/device_runner.hpp"
#include "models/gpt2/cuda/device_runner.hpp"
#include "models/gpt2/family.hpp"
#include "models/llama/cuda/device_model.hpp"
#include "models/llama/family.hpp"

#include "runtime/core/error.hpp"

namespace orthoshard {

std::unique_ptr<UnitRunner> make_device_runner(const Model& model, cuda::Blas& blas, cudaStream_t stream,
                                               const DeviceRunnerOptions& opt) {
  if (const auto* gpt2 = dynamic_cast<const Gpt2*>(&model))
    return make_gpt2_device_runner(gpt2->config(), blas, stream, opt);
  if (const auto* llama = dynamic_cast<const Llama*>(&model))
    return make_llama_device_runner(llama->config(), blas, stream, opt.dtype, opt.attention, opt.checkpoint_blocks);
  throw UsageError(fmt::format("runtime.backend = cuda: {} has no GPU implementation", model.family().title()));
}

}  // namespace orthoshard
