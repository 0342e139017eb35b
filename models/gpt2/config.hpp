// GPT-2 hyperparameters (llm.c's header fields) and the derived sizes the model and the files need.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace orthoshard {

struct Gpt2Config {
  std::int64_t L = 12;       // transformer blocks
  std::int64_t C = 768;      // channels
  std::int64_t NH = 12;      // attention heads (C % NH == 0)
  std::int64_t V = 50257;    // vocabulary
  std::int64_t Vp = 50304;   // padded vocabulary (rows of wte, columns of the logits), Vp >= V
  std::int64_t maxT = 1024;  // context length (rows of wpe)
  std::string origin;        // where it came from (a file path), for error messages; "" when built in code

  std::int64_t head_size() const { return C / NH; }
  std::int64_t num_parameters() const;  // all 16 tensors, padded vocabulary rows included
  // Throws UsageError naming `origin` when a size is not positive, C % NH != 0 or Vp < V.
  void validate() const;
  // Throws UsageError when a batch of sequence length T cannot run on this model (T > maxT).
  void check_sequence_length(std::int64_t T) const;
  std::string describe() const;  // "L=2 C=64 NH=4 V=256 Vp=256 maxT=64"
};

}  // namespace orthoshard
