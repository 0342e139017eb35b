// `orthoshard bench model`: GPT-2 forward+backward on the CPU at a given size; tokens/s and where the time
// goes (the GEMM share first). Prints numbers, asserts nothing.
#pragma once

#include <cstdint>
#include <string>

namespace orthoshard {

struct ModelBenchOptions {
  int layers = 4;
  int channels = 256;
  int heads = 0;  // 0: C / 64
  int seq_len = 256;
  int batch = 4;
  std::int64_t vocab = 50257;
  std::int64_t vocab_padded = 50304;
  int steps = 5;  // timed steps after one warm-up (median)
  std::string json_path;
};

int run_model_bench(const ModelBenchOptions& opt);

}  // namespace orthoshard
