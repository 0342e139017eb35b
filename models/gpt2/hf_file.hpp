// GPT-2 in Hugging Face's layout (transformers' GPT2LMHeadModel): config.json (model_type "gpt2") and
// safetensors whose Conv1D weights are stored (in, out), the transpose of this runtime's (out, in). Import
// (model.init_from = the directory) reads a parameter's rows from the file, transposing where needed; export
// (ckpt export --format hf) writes what from_pretrained loads.
#pragma once

#include "models/family.hpp"
#include "models/gpt2/config.hpp"
#include "models/hf_config.hpp"
#include "models/safetensors.hpp"

#include <map>
#include <memory>
#include <string>

namespace orthoshard {

// A GPT-2 config.json, checked: only what this GPT-2 computes is accepted (tied head, gelu_new, LayerNorm eps
// 1e-5, scaled attention, 4C MLP); anything else is an error naming the field. Vp = V rounded up to 64.
Gpt2Config gpt2_config_from_hf(const HfConfig& hf);

// A Hugging Face GPT-2 directory, opened and checked: every tensor present with its shape (with or without the
// "transformer." prefix), nothing unexpected (the attention mask buffers and a tied lm_head are skipped).
class Gpt2HfReader {
 public:
  explicit Gpt2HfReader(const std::string& dir);
  const Gpt2Config& config() const { return cfg_; }
  // Rows [begin, end) of a runtime parameter (h.0.attn.qkv.weight, ...), f32; wte's padded rows are 0.
  void read_rows(const std::string& name, std::int64_t begin, std::int64_t end, float* out) const;

 private:
  Gpt2Config cfg_;
  SafetensorsSet file_;
  std::string prefix_;  // "" or "transformer."
};

// Writes DIR/config.json and DIR/model.safetensors (GPT2LMHeadModel names, Conv1D (in, out) layout, no padded
// vocabulary rows, no lm_head: it is tied). `weights` gives every runtime parameter (host f32, global shape).
void export_gpt2_hf(const Gpt2Config& cfg, const TensorLookup& weights, const std::string& dir,
                    const std::string& source);

}  // namespace orthoshard
