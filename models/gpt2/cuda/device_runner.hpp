// GPT-2's units on the GPU (DeviceGpt2Model<T> behind the UnitRunner interface).
#pragma once

#include "models/device_runner.hpp"
#include "models/gpt2/config.hpp"

#include <memory>

namespace orthoshard {

std::unique_ptr<UnitRunner> make_gpt2_device_runner(const Gpt2Config& cfg, cuda::Blas& blas, cudaStream_t stream,
                                                    const DeviceRunnerOptions& opt);

}  // namespace orthoshard
