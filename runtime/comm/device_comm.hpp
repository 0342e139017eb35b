// Choosing this rank's GPU and building its communicator for runtime.backend = cuda: NCCL (one GPU per rank)
// or MPI through host staging (runtime.comm = mpi; the only way for several ranks sharing one GPU).
#pragma once

#include "runtime/comm/device_communicator.hpp"
#include "runtime/comm/mpi_communicator.hpp"

#include <memory>
#include <string>

namespace orthoshard {

enum class DeviceCommKind { Nccl, MpiStaged };

// The GPU for a rank: with one visible GPU (the usual srun/CUDA_VISIBLE_DEVICES setup), that one; else the
// rank's index on its node modulo the number of visible GPUs.
int pick_device(int local_rank, int visible_devices);

// Collective over `world`. Selects the device (cudaSetDevice) and returns a communicator over a duplicate of
// `world`. Fails with one line (UsageError) when this rank sees no GPU, when NCCL is asked for but not built,
// or when NCCL would put two ranks on one GPU.
std::unique_ptr<DeviceCommunicator> make_device_communicator(const MpiCommunicator& world, DeviceCommKind kind,
                                                             DeviceCommOptions opt = {});

}  // namespace orthoshard
