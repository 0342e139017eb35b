// `mpirun -np N orthoshard eval CKPT --data FILE [--batches K] [--batch-size B] [--seq-len T]`: the mean loss of a
// checkpoint's model on a token file, the validation of `train` ([eval], launch/trainer/validation.hpp) run once on
// the checkpoint's weights, so it is the same at any N and equal to the trainer's val loss on the same sequences.
#pragma once

#include "runtime/comm/communicator.hpp"

#include <cstdint>
#include <string>

namespace orthoshard {

struct EvalOptions {
  std::string checkpoint;  // step_<N>.h5, a checkpoint directory (its latest) or its `latest`
  std::string data;        // token file (glob or builtin spec)
  std::int64_t batches = 8;
  std::int64_t batch_size = 0;  // 0: the checkpoint's train.batch_size
  std::int64_t seq_len = 0;     // 0: the checkpoint's train.seq_len
};

// Prints one line on rank 0 and returns 0. Errors (a missing or corrupt checkpoint, a missing file) throw.
int run_eval(Communicator& world, const EvalOptions& opt);

}  // namespace orthoshard
