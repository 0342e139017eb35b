// `orthoshard bench ns` (Newton-Schulz rate vs the machine's sgemm rate, measured in the same run) and
// `orthoshard bench optim` (one optimizer step over a GPT-2 124M-shaped parameter set, per optimizer).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace orthoshard {

struct NsBenchOptions {
  std::vector<std::int64_t> sizes{256, 512, 1024, 2048};
  std::string shape;  // "MxN": one rectangular case instead of the square sizes
  int repeats = 5;
  std::string json_path;
  std::string dump_dir;  // write each case's input and output as raw little-endian f32 (for peer checks)
};
int run_ns_bench(const NsBenchOptions& opt);

class Communicator;

struct OptimBenchOptions {
  std::vector<std::string> optimizers{"adamw", "muon", "normuon", "conda"};
  int layers = 12;  // GPT-2 124M: 12 layers, C = 768, vocab 50304, context 1024
  int channels = 768;
  int steps = 3;    // timed steps after one warm-up step (median reported)
  std::string scheme = "auto";  // distributed orthogonalization: auto | owner | gram
  std::string json_path;
};
// Runs on the ranks of `comm` with every parameter row-sharded over them.
int run_optim_bench(Communicator& comm, const OptimBenchOptions& opt);

// The GPT-2 parameter set by name and shape (llm.c names per layer), used by the bench and the tests.
std::vector<std::pair<std::string, std::vector<std::int64_t>>> gpt2_parameter_shapes(int layers, int channels,
                                                                                      std::int64_t vocab_padded,
                                                                                      std::int64_t max_t);

}  // namespace orthoshard
