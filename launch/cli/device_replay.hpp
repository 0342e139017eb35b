// The GPU half of `orthoshard replay --backend cuda` (built with the CUDA backend only).
#pragma once

#include "launch/cli/replay.hpp"

namespace orthoshard {

// The trace's parameters on this rank's GPU, stepped by DeviceOptimizer (Newton-Schulz in bf16 or f32),
// communicating through NCCL or staged MPI (comm: "nccl" | "mpi"). Collective over world; UsageError when a
// rank has no GPU. params: this rank's initial rows (host f32).
std::unique_ptr<ReplayStepper> make_cuda_replay(Communicator& world, const OptimConfig& cfg,
                                                const std::vector<ParamSpec>& specs,
                                                const std::vector<Tensor>& params, bool bf16,
                                                const std::string& comm);

}  // namespace orthoshard
