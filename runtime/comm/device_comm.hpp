// Choosing this rank's GPU and building its communicator for runtime.backend = cuda: NCCL (one GPU per rank)
// or MPI through host staging (runtime.comm = mpi; the only way for several ranks sharing one GPU).
#pragma once

#include "runtime/comm/device_communicator.hpp"
#include "runtime/comm/mpi_communicator.hpp"

#include <memory>
#include <string>
#include <utility>

namespace orthoshard {

// Auto: NCCL where this build has it and no two ranks of the group run on one GPU, MPI with host staging
// otherwise (decided collectively, so every rank makes the same choice).
enum class DeviceCommKind { Auto, Nccl, MpiStaged };

// The GPU for a rank: with one visible GPU (the usual srun/CUDA_VISIBLE_DEVICES setup), that one; else the
// rank's index on its node modulo the number of visible GPUs.
int pick_device(int local_rank, int visible_devices);

// Collective over `comm`: the first pair of ranks (a < b) whose `device`s are one GPU (same UUID), or {-1, -1}.
std::pair<int, int> ranks_sharing_a_gpu(MpiCommunicator& comm, int device);

// Collective over `world`. Selects the device (cudaSetDevice) and returns a communicator over a duplicate of
// `world`. Fails with one line (UsageError) when this rank sees no GPU, when NCCL is asked for but not built,
// or when NCCL would put two ranks on one GPU.
std::unique_ptr<DeviceCommunicator> make_device_communicator(const MpiCommunicator& world, DeviceCommKind kind,
                                                             DeviceCommOptions opt = {});

}  // namespace orthoshard
