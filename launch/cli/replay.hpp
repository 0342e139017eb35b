// `orthoshard replay TRACE.h5`: runs a recorded optimizer trace through our optimizer and reports the
// worst relative error per parameter against the reference implementation's parameters.
#pragma once

#include "optim/optimizer.hpp"
#include "runtime/comm/communicator.hpp"

#include <memory>
#include <string>
#include <vector>

namespace orthoshard {

struct ReplayOptions {
  std::string trace;
  std::string precision = "f32";  // f32 | f64 (cpu) | bf16 (cuda: Newton-Schulz in bf16, fp32 state)
  double tolerance = -1;          // < 0: 1e-4 for f32, 1e-10 for f64, 2e-2 for bf16
  std::string ortho_scheme = "auto";  // auto | owner | gram (how matrices are orthogonalized across ranks)
  std::string backend = "cpu";        // cpu | cuda (the GPU optimizer, one GPU per rank)
  std::string comm = "nccl";          // with cuda: nccl | mpi (MPI through host staging)
};

int run_replay(Communicator& comm, const ReplayOptions& opt);

// One optimizer step of a replay on this rank's rows: params (host, in and out) and grads (host).
class ReplayStepper {
 public:
  virtual ~ReplayStepper() = default;
  virtual void step(std::vector<Tensor>& params, const std::vector<Tensor>& grads) = 0;
  virtual const OrthoPlan& plan() const = 0;
};

}  // namespace orthoshard
