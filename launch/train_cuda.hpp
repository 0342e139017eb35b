// `orthoshard train` with runtime.backend = cuda (built with the CUDA backend only).
#pragma once

#include "launch/train.hpp"

namespace orthoshard {

// Collective over world (an MPI communicator); one GPU per rank, or ranks sharing GPUs with runtime.comm = mpi.
// Fails on every rank with one line when a rank has no GPU.
TrainResult train_cuda(Communicator& world, const TrainConfig& cfg, const TrainOptions& opt);

}  // namespace orthoshard
