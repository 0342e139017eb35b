// `orthoshard bench gpu`: on one GPU, the bf16/f32 GEMM rates of this device (the reference), Newton-Schulz
// (bf16 and f32) against them with the CPU benchmark's flop count, causal attention (forward and backward) by
// the fused kernels against cuBLAS GEMMs + softmax kernels, and GPT-2 training steps in bf16 (forward, backward,
// AdamW with fp32 master weights) with either attention: tokens/s and MFU. Prints numbers, asserts nothing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace orthoshard {

struct GpuBenchOptions {
  std::vector<std::string> what = {"gemm", "ns", "attention", "model"};
  std::vector<int> ns_sizes = {768, 1024, 2048, 4096};
  int gemm_size = 8192;
  int layers = 12, channels = 768, seq_len = 1024, batch = 8;  // GPT-2 124M, llm.c's usual B and T
  std::int64_t vocab = 50257, vocab_padded = 50304;
  int repeats = 10;  // timed runs (median) after warm-ups
  std::string json_path;
};

int run_gpu_bench(const GpuBenchOptions& opt);

}  // namespace orthoshard
