// `orthoshard bench model`: GPT-2 forward+backward on the CPU at a given size; tokens/s and where the time
// goes (the GEMM share first). With --arch llama: LLaMA's 60M and 130M shapes through the family's CPU runner
// (what the trainer runs), each next to a GPT-2 of the same L, C, NH and V (about the same flops), as shares of
// the sgemm rate measured in the same run. Prints numbers, asserts nothing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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
  std::string arch = "gpt2";                        // gpt2: the profile above; llama: the comparison
  std::vector<std::string> shapes = {"60m", "130m"};  // --arch llama: 60m, 130m, tiny (L=2 C=64 V=256)
};

int run_model_bench(const ModelBenchOptions& opt);

}  // namespace orthoshard
