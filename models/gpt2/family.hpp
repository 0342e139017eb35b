// GPT-2 as a model family ([model] arch = "gpt2"): llm.c's tensor layout, its units (embedding, blocks, head
// with the tied wte), the parameters' roles, the llm.c and safetensors file formats, and the CPU runner.
#pragma once

#include "models/family.hpp"
#include "models/gpt2/config.hpp"
#include "models/gpt2/hf_file.hpp"
#include "models/gpt2/llmc_file.hpp"
#include "models/gpt2/params.hpp"

#include <memory>
#include <optional>
#include <vector>

namespace orthoshard {

// The [model] shape as GPT-2's config (origin: the configuration file, for errors).
Gpt2Config gpt2_config(const ModelSpec& spec);

// The model units of a GPT-2: embedding {wte (Vp, C), wpe (maxT, C)}, h.l {12 tensors}, head {lnf.weight,
// lnf.bias} reading the embedding's wte (tied). Roles: wte and wpe are embeddings, the 2-D block weights hidden
// matrices, biases and layernorm weights vectors.
std::vector<ModelUnit> gpt2_model_units(const Gpt2Config& cfg);

class Gpt2 final : public Model {
 public:
  // Initial values from the seeded init, or from an llm.c file (`file`, non-null); a model that only describes a
  // checkpoint has neither (nullopt seed, null file).
  Gpt2(Gpt2Config cfg, std::optional<std::uint64_t> seed, std::shared_ptr<const LlmcReader> file = nullptr,
       std::shared_ptr<const Gpt2HfReader> hf = nullptr);

  const Gpt2Config& config() const { return cfg_; }
  const ModelFamily& family() const override;
  std::string describe() const override;
  std::int64_t num_parameters() const override { return cfg_.num_parameters(); }
  std::int64_t vocab_size() const override { return cfg_.V; }
  double flops_per_token(std::int64_t T) const override;  // 6N + 6·L·C·T
  void check_sequence_length(std::int64_t T) const override { cfg_.check_sequence_length(T); }
  const std::vector<ModelUnit>& units() const override { return units_; }
  void initial_rows(const std::string& name, std::int64_t begin, std::int64_t end, float* out) const override;
  std::vector<ModelAttribute> attributes() const override;  // L, C, NH, V, Vp, maxT
  std::vector<std::string> export_formats() const override { return {"llmc", "hf", "safetensors"}; }
  // llmc: an llm.c fp32 model file (version 3); hf: a Hugging Face directory (export_gpt2_hf); safetensors: F32
  // tensors under the runtime's names, in order.
  void export_weights(const std::string& format, const TensorLookup& weights, const std::string& path,
                      const std::string& source) const override;
  std::unique_ptr<UnitRunner> cpu_runner(const RunnerOptions& opt = {}) const override;
  std::unique_ptr<TokenGenerator> cpu_generator(const TensorLookup& weights) const override;

 private:
  Gpt2Config cfg_;
  std::optional<std::uint64_t> seed_;
  std::shared_ptr<const LlmcReader> file_;
  std::shared_ptr<const Gpt2HfReader> hf_;
  std::vector<ModelUnit> units_;
};

class Gpt2Family final : public ModelFamily {
 public:
  std::string_view arch() const override { return "gpt2"; }
  std::string_view title() const override { return "GPT-2"; }
  // From an llm.c model file or a Hugging Face directory (spec.init_from), else the seeded init of gpt2_config(spec) (gpt2_init_rows).
  std::unique_ptr<Model> create(const ModelSpec& spec) const override;
  std::unique_ptr<Model> from_attributes(const AttributeSource& attrs) const override;
};

}  // namespace orthoshard
