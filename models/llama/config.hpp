// LLaMA hyperparameters ([model] arch = "llama", or a Hugging Face config.json) and the derived sizes.
#pragma once

#include <cstdint>
#include <string>

namespace orthoshard {

struct LlamaConfig {
  std::int64_t L = 12;          // decoder layers
  std::int64_t C = 768;         // hidden size
  std::int64_t NH = 12;         // query heads (C % NH == 0; head size C/NH, even for the rotary embedding)
  std::int64_t NKV = 12;        // key/value heads (NH % NKV == 0; NKV < NH is grouped-query attention)
  std::int64_t FF = 2048;       // SwiGLU intermediate size
  std::int64_t V = 32000;       // vocabulary
  std::int64_t Vp = 32000;      // padded vocabulary (rows of the embedding and the head), Vp >= V; never exported
  std::int64_t maxT = 1024;     // context length (the rotary table's positions)
  double norm_eps = 1e-5;       // RMSNorm epsilon
  double rope_theta = 10000.0;  // rotary base
  bool tie_embeddings = false;  // the head is the embedding
  std::string origin;           // where it came from (a file), for errors; "" when built in code

  std::int64_t head_size() const { return C / NH; }
  std::int64_t kv_dim() const { return NKV * head_size(); }
  std::int64_t qkv_width() const { return C + 2 * kv_dim(); }  // a packed q | k | v row
  std::int64_t num_parameters() const;  // every tensor, padded vocabulary rows included
  // Throws UsageError naming `origin` and the field when a size is not positive or the sizes do not fit together.
  void validate() const;
  void check_sequence_length(std::int64_t T) const;  // T > maxT is an error
  std::string describe() const;  // "L=2 C=64 NH=4 NKV=2 FF=176 V=256 Vp=256 maxT=64 untied"
};

// Meta's default intermediate size for width C: 8C/3 rounded up to a multiple of 256.
std::int64_t llama_default_ff(std::int64_t C);

}  // namespace orthoshard
