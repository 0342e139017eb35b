// LLaMA as a model family ([model] arch = "llama"): a pre-norm decoder without biases (RMSNorm, rotary
// embeddings, grouped-query attention, SwiGLU), under Hugging Face's tensor names; its units, roles, seeded
// init, Hugging Face import (model.init_from = a model directory) and export (ckpt export --format hf), and the
// CPU runner.
#pragma once

#include "models/family.hpp"
#include "models/hf_config.hpp"
#include "models/llama/config.hpp"
#include "models/safetensors.hpp"

#include <memory>
#include <optional>

namespace orthoshard {

// The [model] shape as LLaMA's config (NKV 0 -> NH, FF 0 -> llama_default_ff(C)).
LlamaConfig llama_config(const ModelSpec& spec);
// A Hugging Face LlamaForCausalLM config.json, checked (unsupported fields such as rope_scaling or biases are
// errors naming them). Vp = V rounded up to a multiple of 64.
LlamaConfig llama_config_from_hf(const HfConfig& hf);

class Llama final : public Model {
 public:
  // Initial values from the seed, or from a Hugging Face directory's tensors (`file`); neither describes a
  // checkpoint.
  Llama(LlamaConfig cfg, std::optional<std::uint64_t> seed, std::shared_ptr<const SafetensorsSet> file = nullptr);

  const LlamaConfig& config() const { return cfg_; }
  const ModelFamily& family() const override;
  std::string describe() const override { return "LLaMA " + cfg_.describe(); }
  std::int64_t num_parameters() const override { return cfg_.num_parameters(); }
  std::int64_t vocab_size() const override { return cfg_.V; }
  double flops_per_token(std::int64_t T) const override;  // 6·(weights) + 6·L·C·T
  void check_sequence_length(std::int64_t T) const override { cfg_.check_sequence_length(T); }
  const std::vector<ModelUnit>& units() const override { return units_; }
  void initial_rows(const std::string& name, std::int64_t begin, std::int64_t end, float* out) const override;
  std::vector<ModelAttribute> attributes() const override;
  std::vector<std::string> export_formats() const override { return {"hf"}; }
  // hf: a directory with config.json and model.safetensors that transformers' LlamaForCausalLM loads (no padded
  // vocabulary rows; no lm_head when tied).
  void export_weights(const std::string& format, const TensorLookup& weights, const std::string& path,
                      const std::string& source) const override;
  std::unique_ptr<UnitRunner> cpu_runner(const RunnerOptions& opt = {}) const override;
  std::unique_ptr<TokenGenerator> cpu_generator(const TensorLookup& weights) const override;

 private:
  LlamaConfig cfg_;
  std::optional<std::uint64_t> seed_;
  std::shared_ptr<const SafetensorsSet> file_;
  std::vector<ModelUnit> units_;
};

class LlamaFamily final : public ModelFamily {
 public:
  std::string_view arch() const override { return "llama"; }
  std::string_view title() const override { return "LLaMA"; }
  // From a Hugging Face directory (spec.init_from: config.json + safetensors; every tensor checked by name and
  // shape), else the seeded init of llama_config(spec).
  std::unique_ptr<Model> create(const ModelSpec& spec) const override;
  std::unique_ptr<Model> from_attributes(const AttributeSource& attrs) const override;
};

}  // namespace orthoshard
