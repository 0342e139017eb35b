// LLaMA as a model family (see family.hpp), with its CPU runner.
#include "models/llama/family.hpp"

#include "models/llama/generator.hpp"
#include "models/llama/model.hpp"
#include "models/llama/params.hpp"
#include "models/llama/unit_runner.hpp"
#include "runtime/core/error.hpp"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <utility>

namespace orthoshard {
namespace {

const LlamaFamily kFamily;

// The units of a LLaMA on the CPU: losses are known when the head's forward returns.
class LlamaCpuRunner final : public LlamaUnitRunner<LlamaModel<float>> {
 public:
  LlamaCpuRunner(const LlamaConfig& cfg, bool checkpoint_blocks) : LlamaUnitRunner(cfg, checkpoint_blocks) {}
  void set_batch(std::int64_t B, std::int64_t T, int) override { net_.set_batch(B, T); }
  double take_loss_sum() override { return std::exchange(loss_sum_, 0.0); }

 private:
  void head_forward(const LlamaHeadWeights& w, const Tensor& targets) override {
    loss_sum_ += net_.head_forward(w, targets);
  }
  double loss_sum_ = 0;
};

// Hugging Face's shape of a parameter: the vocabulary tensors without their padding rows.
Shape hf_shape(const LlamaConfig& cfg, const ParamInfo& p) {
  if (p.name == kLlamaEmbed || p.name == kLlamaHead) return {cfg.V, cfg.C};
  return p.shape;
}

// Buffers older transformers versions saved beside the weights: not parameters, safe to skip.
bool is_rotary_buffer(const std::string& name) {
  return name.ends_with("self_attn.rotary_emb.inv_freq");
}

}  // namespace

LlamaConfig llama_config(const ModelSpec& spec) {
  LlamaConfig c;
  c.L = spec.L;
  c.C = spec.C;
  c.NH = spec.NH;
  c.NKV = spec.NKV == 0 ? spec.NH : spec.NKV;
  c.FF = spec.FF == 0 ? llama_default_ff(spec.C) : spec.FF;
  c.V = spec.V;
  c.Vp = spec.Vp;
  c.maxT = spec.maxT;
  c.norm_eps = spec.norm_eps;
  c.rope_theta = spec.rope_theta;
  c.tie_embeddings = spec.tie_embeddings;
  c.origin = spec.origin;
  return c;
}

LlamaConfig llama_config_from_hf(const HfConfig& hf) {
  if (hf.model_type() != "llama")
    throw UsageError(fmt::format("'{}': model_type is '{}', expected 'llama'", hf.path(), hf.model_type()));
  constexpr std::int64_t kBig = std::int64_t{1} << 24;
  LlamaConfig c;
  c.origin = hf.path();
  c.C = hf.get_int("hidden_size", 1, kBig);
  c.L = hf.get_int("num_hidden_layers", 1, 1 << 16);
  c.NH = hf.get_int("num_attention_heads", 1, kBig);
  c.NKV = hf.get_int("num_key_value_heads", 1, kBig, c.NH);
  c.FF = hf.get_int("intermediate_size", 1, kBig);
  c.V = hf.get_int("vocab_size", 1, kBig);
  c.Vp = (c.V + 63) / 64 * 64;
  c.maxT = hf.get_int("max_position_embeddings", 1, kBig);
  c.norm_eps = hf.get_positive("rms_norm_eps", 1e-6);
  c.rope_theta = hf.get_positive("rope_theta", 10000.0);
  c.tie_embeddings = hf.get_bool("tie_word_embeddings", false);
  if (c.C % c.NH != 0)
    throw UsageError(fmt::format("'{}': hidden_size {} is not divisible by num_attention_heads {}", hf.path(), c.C, c.NH));
  if (hf.has("head_dim") && hf.get_int("head_dim", 1, kBig) != c.C / c.NH)
    throw UsageError(fmt::format("'{}': head_dim = {} is not supported (only hidden_size / num_attention_heads = {})",
                                 hf.path(), hf.get_int("head_dim", 1, kBig), c.C / c.NH));
  hf.refuse_unless("rope_scaling", nullptr, "rotary scaling is not implemented");
  hf.refuse_unless("attention_bias", false, "LLaMA here has no attention biases");
  hf.refuse_unless("mlp_bias", false, "LLaMA here has no MLP biases");
  hf.refuse_unless("hidden_act", "silu", "the MLP is SwiGLU with SiLU");
  hf.refuse_unless("attention_dropout", 0.0, "no dropout");
  c.validate();
  return c;
}

Llama::Llama(LlamaConfig cfg, std::optional<std::uint64_t> seed, std::shared_ptr<const SafetensorsSet> file)
    : cfg_(std::move(cfg)), seed_(seed), file_(std::move(file)), units_(llama_model_units(cfg_)) {}

const ModelFamily& Llama::family() const { return kFamily; }

double Llama::flops_per_token(std::int64_t T) const {
  // Every weight but the embedding lookup does 6 flops per token (forward + backward); attention 6·L·C·T.
  const double weights = static_cast<double>(cfg_.num_parameters() - (cfg_.tie_embeddings ? 0 : cfg_.Vp * cfg_.C));
  return 6.0 * weights + 6.0 * static_cast<double>(cfg_.L * cfg_.C * T);
}

void Llama::initial_rows(const std::string& name, std::int64_t begin, std::int64_t end, float* out) const {
  if (!file_) {
    OS_CHECK(seed_.has_value(), "LLaMA {}: no initial values (the model describes a checkpoint)", cfg_.describe());
    return llama_init_rows(cfg_, *seed_, name, begin, end, out);
  }
  std::int64_t live_end = end;
  if (name == kLlamaEmbed || name == kLlamaHead) {  // the padded vocabulary rows start at 0
    live_end = std::min(end, cfg_.V);
    const std::int64_t from = std::max(begin, live_end);
    std::fill(out + (from - begin) * cfg_.C, out + (end - begin) * cfg_.C, 0.0f);
  }
  if (live_end > begin) file_->read_rows(name, begin, live_end, out);
}

std::vector<ModelAttribute> Llama::attributes() const {
  return {{"L", cfg_.L},       {"C", cfg_.C},
          {"NH", cfg_.NH},     {"NKV", cfg_.NKV},
          {"FF", cfg_.FF},     {"V", cfg_.V},
          {"Vp", cfg_.Vp},     {"maxT", cfg_.maxT},
          {"norm_eps", cfg_.norm_eps}, {"rope_theta", cfg_.rope_theta},
          {"tie_embeddings", std::int64_t{cfg_.tie_embeddings ? 1 : 0}}};
}

void Llama::export_weights(const std::string& format, const TensorLookup& weights, const std::string& path,
                           const std::string& source) const {
  if (format != "hf") throw UsageError(fmt::format("LLaMA exports as hf, not '{}'", format));
  std::vector<NamedTensor> tensors;
  for (const ModelUnit& u : units_)
    for (const ParamInfo& p : u.params) {
      const Tensor v = weights(p.name);
      if (v.shape() != p.shape || v.dtype() != DType::F32)
        fail("'{}': {} is {}, expected f32{}", source, p.name, v.describe(), shape_str(p.shape));
      tensors.emplace_back(p.name, p.role == ParamRole::Embedding || p.role == ParamRole::Head ? v.rows(0, cfg_.V)
                                                                                               : v);
    }
  nlohmann::ordered_json c;
  c["architectures"] = {"LlamaForCausalLM"};
  c["model_type"] = "llama";
  c["hidden_size"] = cfg_.C;
  c["intermediate_size"] = cfg_.FF;
  c["num_hidden_layers"] = cfg_.L;
  c["num_attention_heads"] = cfg_.NH;
  c["num_key_value_heads"] = cfg_.NKV;
  c["head_dim"] = cfg_.head_size();
  c["vocab_size"] = cfg_.V;
  c["max_position_embeddings"] = cfg_.maxT;
  c["rms_norm_eps"] = cfg_.norm_eps;
  c["rope_theta"] = cfg_.rope_theta;
  c["rope_scaling"] = nullptr;
  c["tie_word_embeddings"] = cfg_.tie_embeddings;
  c["hidden_act"] = "silu";
  c["attention_bias"] = false;
  c["mlp_bias"] = false;
  c["torch_dtype"] = "float32";
  write_hf_dir(path, c, tensors, source);
}

std::unique_ptr<UnitRunner> Llama::cpu_runner(const RunnerOptions& opt) const {
  return std::make_unique<LlamaCpuRunner>(cfg_, opt.checkpoint_blocks);
}

std::unique_ptr<TokenGenerator> Llama::cpu_generator(const TensorLookup& weights) const {
  return make_llama_generator(cfg_, weights);
}

std::unique_ptr<Model> LlamaFamily::create(const ModelSpec& spec) const {
  if (spec.init_from.empty()) {
    const LlamaConfig c = llama_config(spec);
    c.validate();
    return std::make_unique<Llama>(c, spec.seed);
  }
  std::error_code ec;
  if (!std::filesystem::exists(spec.init_from, ec))
    throw UsageError(fmt::format("model.init_from '{}': no such file or directory", spec.init_from));
  if (!is_hf_model_dir(spec.init_from))
    throw UsageError(fmt::format("model.init_from '{}': LLaMA starts from a Hugging Face model directory (config.json "
                                 "and safetensors) or an orthoshard checkpoint", spec.init_from));
  const LlamaConfig c = llama_config_from_hf(HfConfig(spec.init_from));
  auto file = std::make_shared<const SafetensorsSet>(spec.init_from);
  std::set<std::string> expected;
  for (const ModelUnit& u : llama_model_units(c))
    for (const ParamInfo& p : u.params) {
      expected.insert(p.name);
      if (!file->has(p.name))
        throw UsageError(fmt::format("'{}': tensor {} is missing", file->describe(), p.name));
      const Shape want = hf_shape(c, p);
      if (file->at(p.name).shape != want)
        throw UsageError(fmt::format("'{}': tensor {} has shape {}, the config needs {}", file->describe(), p.name,
                                     shape_str(file->at(p.name).shape), shape_str(want)));
    }
  for (const std::string& n : file->names())
    if (!expected.count(n) && !is_rotary_buffer(n))
      throw UsageError(fmt::format("'{}': unexpected tensor {}{}", file->describe(), n,
                                   n == kLlamaHead ? " (tie_word_embeddings is true)" : ""));
  return std::make_unique<Llama>(c, std::nullopt, file);
}

std::unique_ptr<Model> LlamaFamily::from_attributes(const AttributeSource& attrs) const {
  LlamaConfig c;
  c.L = attrs.get_int("L");
  c.C = attrs.get_int("C");
  c.NH = attrs.get_int("NH");
  c.NKV = attrs.get_int("NKV");
  c.FF = attrs.get_int("FF");
  c.V = attrs.get_int("V");
  c.Vp = attrs.get_int("Vp");
  c.maxT = attrs.get_int("maxT");
  c.norm_eps = attrs.get_double("norm_eps");
  c.rope_theta = attrs.get_double("rope_theta");
  c.tie_embeddings = attrs.get_int("tie_embeddings") != 0;
  c.origin = attrs.where();
  c.validate();
  return std::make_unique<Llama>(c, std::nullopt);
}

}  // namespace orthoshard
