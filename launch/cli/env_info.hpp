// `orthoshard env`: what this build was compiled with and what it sees at run time.
#pragma once

#include <string>

namespace orthoshard {

std::string version_string();  // "orthoshard 0.1.0 (C++20, mpi, cuda+nccl)"
int run_env();

}  // namespace orthoshard
