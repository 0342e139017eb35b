// `orthoshard bench comm`: collective time, algbw and busbw (nccl-tests formulas) for our layer and the
// raw MPI call on the same buffers, plus memcpy bandwidth, so our overhead shows as a ratio.
#pragma once

#include "runtime/comm/communicator.hpp"

#include <cstddef>
#include <string>
#include <vector>

namespace orthoshard {

struct CommBenchOptions {
  std::size_t min_bytes = 1 << 10;
  std::size_t max_bytes = 256u << 20;
  int iters = 20;        // upper bound of timed iterations per size (fewer for large sizes)
  int warmup = 2;
  int repeats = 3;       // ours/raw alternate this many times; medians are reported
  std::vector<std::string> ops{"all_gather", "reduce_scatter", "all_reduce", "all_to_all"};
  std::string json_path;  // empty: no JSON
  bool overlap = false;   // instead of the bandwidth sweep: how much of each collective hides behind compute
  std::size_t overlap_bytes = 32u << 20;
};

int run_comm_bench(Communicator& comm, const CommBenchOptions& opt);
// `bench comm --overlap` (bench/overlap_bench.cpp).
int run_overlap_bench(Communicator& comm, const CommBenchOptions& opt);

}  // namespace orthoshard
