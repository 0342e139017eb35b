// `mpirun -np N orthoshard bench ckpt`: checkpoint save and load throughput of a GPT-2 (124M by default)
// with its optimizer state, at 1, 2, 4 ... ranks of the job, next to a plain sequential write and read of
// the same number of bytes on the same filesystem in the same run. Prints numbers, asserts nothing.
#pragma once

#include "runtime/comm/communicator.hpp"

#include <string>
#include <vector>

namespace orthoshard {

struct CkptBenchOptions {
  std::vector<int> ranks;            // rank counts to measure (each <= the job's); empty: 1, 2, 4 and the job's
  int layers = 12;
  int channels = 768;
  std::string optimizer = "normuon";
  std::string dir;                   // filesystem to measure ("" = TMPDIR); a fresh subdirectory, removed after
  int repeats = 3;                   // best of
  bool collective_buffering = false;  // MPI-IO two-phase aggregation instead of each rank writing its bytes
  bool drop_cache = true;            // evict the files from the page cache before reading (posix_fadvise)
  std::string json_path;
  std::string keep_path;             // copy the last checkpoint written at the largest rank count here
};

int run_ckpt_bench(Communicator& world, const CkptBenchOptions& opt);

}  // namespace orthoshard
