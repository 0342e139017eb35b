// `orthoshard replay TRACE.h5`: runs a recorded optimizer trace through our optimizer and reports the
// worst relative error per parameter against the reference implementation's parameters.
#pragma once

#include "runtime/comm/communicator.hpp"

#include <string>

namespace orthoshard {

struct ReplayOptions {
  std::string trace;
  std::string precision = "f32";  // f32 | f64
  double tolerance = -1;          // < 0: 1e-4 for f32, 1e-10 for f64
  std::string ortho_scheme = "auto";  // auto | owner | gram (how matrices are orthogonalized across ranks)
};

int run_replay(Communicator& comm, const ReplayOptions& opt);

}  // namespace orthoshard
