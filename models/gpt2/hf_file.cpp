// GPT-2 <-> Hugging Face names and layouts (see hf_file.hpp).
#include "models/gpt2/hf_file.hpp"

#include "models/gpt2/params.hpp"
#include "runtime/core/error.hpp"

#include <set>
#include <vector>

namespace orthoshard {
namespace {

// A runtime parameter's Hugging Face name (without prefix) and whether the file stores it transposed (Conv1D).
struct HfName {
  std::string name;
  bool transposed = false;
};

HfName hf_name(const std::string& runtime) {
  if (runtime == "wte") return {"wte.weight"};
  if (runtime == "wpe") return {"wpe.weight"};
  if (runtime == "lnf.weight") return {"ln_f.weight"};
  if (runtime == "lnf.bias") return {"ln_f.bias"};
  // h.L.<suffix>
  const std::size_t dot = runtime.find('.', 2);
  const std::string layer = runtime.substr(0, dot + 1), suffix = runtime.substr(dot + 1);
  static const std::map<std::string, HfName> kSuffix = {
      {"ln1.weight", {"ln_1.weight"}},           {"ln1.bias", {"ln_1.bias"}},
      {"attn.qkv.weight", {"attn.c_attn.weight", true}}, {"attn.qkv.bias", {"attn.c_attn.bias"}},
      {"attn.proj.weight", {"attn.c_proj.weight", true}}, {"attn.proj.bias", {"attn.c_proj.bias"}},
      {"ln2.weight", {"ln_2.weight"}},           {"ln2.bias", {"ln_2.bias"}},
      {"mlp.fc.weight", {"mlp.c_fc.weight", true}}, {"mlp.fc.bias", {"mlp.c_fc.bias"}},
      {"mlp.proj.weight", {"mlp.c_proj.weight", true}}, {"mlp.proj.bias", {"mlp.c_proj.bias"}}};
  const auto it = kSuffix.find(suffix);
  OS_CHECK(it != kSuffix.end(), "GPT-2 parameter '{}' has no Hugging Face name", runtime);
  return {layer + it->second.name, it->second.transposed};
}

// The file's shape of a runtime parameter: transposed Conv1D weights, wte without its padding rows.
Shape hf_shape(const Gpt2Config& cfg, const std::string& runtime, const Shape& shape) {
  if (runtime == "wte") return {cfg.V, cfg.C};
  if (hf_name(runtime).transposed) return {shape[1], shape[0]};
  return shape;
}

// Buffers some GPT-2 files carry besides the weights.
bool is_buffer(const std::string& n) { return n.ends_with(".attn.bias") || n.ends_with(".attn.masked_bias"); }

}  // namespace

Gpt2Config gpt2_config_from_hf(const HfConfig& hf) {
  if (hf.model_type() != "gpt2")
    throw UsageError(fmt::format("'{}': model_type is '{}', expected 'gpt2'", hf.path(), hf.model_type()));
  constexpr std::int64_t kBig = std::int64_t{1} << 24;
  Gpt2Config c;
  c.origin = hf.path();
  c.C = hf.get_int("n_embd", 1, kBig);
  c.L = hf.get_int("n_layer", 1, 1 << 16);
  c.NH = hf.get_int("n_head", 1, kBig);
  c.V = hf.get_int("vocab_size", 1, kBig);
  c.Vp = (c.V + 63) / 64 * 64;
  c.maxT = hf.get_int("n_positions", 1, kBig);
  if (hf.has("n_inner") && hf.get_int("n_inner", 1, kBig) != 4 * c.C)
    throw UsageError(fmt::format("'{}': n_inner = {} is not supported (only 4·n_embd = {})", hf.path(),
                                 hf.get_int("n_inner", 1, kBig), 4 * c.C));
  if (std::abs(hf.get_positive("layer_norm_epsilon", 1e-5) - 1e-5) > 1e-12)
    throw UsageError(fmt::format("'{}': layer_norm_epsilon = {} is not supported (only 1e-5)", hf.path(),
                                 hf.get_positive("layer_norm_epsilon", 1e-5)));
  hf.refuse_unless("activation_function", "gelu_new", "GPT-2's MLP here is the tanh GELU, gelu_new");
  hf.refuse_unless("tie_word_embeddings", true, "GPT-2's head here is the token embedding");
  hf.refuse_unless("scale_attn_weights", true, "attention scores are scaled by 1/sqrt(head size)");
  hf.refuse_unless("scale_attn_by_inverse_layer_idx", false, "not implemented");
  hf.refuse_unless("add_cross_attention", false, "a decoder-only model");
  if (c.C % c.NH != 0)
    throw UsageError(fmt::format("'{}': n_embd {} is not divisible by n_head {}", hf.path(), c.C, c.NH));
  c.validate();
  return c;
}

Gpt2HfReader::Gpt2HfReader(const std::string& dir) : cfg_(gpt2_config_from_hf(HfConfig(dir))), file_(dir) {
  prefix_ = file_.has("transformer.wte.weight") ? "transformer." : "";
  std::set<std::string> expected;
  for (const auto& [name, shape] : gpt2_parameter_specs(cfg_)) {
    const std::string n = prefix_ + hf_name(name).name;
    expected.insert(n);
    if (!file_.has(n)) throw UsageError(fmt::format("'{}': tensor {} is missing", file_.describe(), n));
    const Shape want = hf_shape(cfg_, name, shape);
    if (file_.at(n).shape != want)
      throw UsageError(fmt::format("'{}': tensor {} has shape {}, the config needs {}", file_.describe(), n,
                                   shape_str(file_.at(n).shape), shape_str(want)));
  }
  for (const std::string& n : file_.names())
    if (!expected.count(n) && !is_buffer(n) && n != "lm_head.weight")
      throw UsageError(fmt::format("'{}': unexpected tensor {}", file_.describe(), n));
}

void Gpt2HfReader::read_rows(const std::string& name, std::int64_t begin, std::int64_t end, float* out) const {
  const HfName h = hf_name(name);
  const std::string n = prefix_ + h.name;
  const Shape fs = file_.at(n).shape;
  if (name == "wte") {  // the padded vocabulary rows start at 0
    const std::int64_t live_end = std::min(end, cfg_.V);
    const std::int64_t from = std::max(begin, live_end);
    std::fill(out + (from - begin) * cfg_.C, out + (end - begin) * cfg_.C, 0.0f);
    if (live_end > begin) file_.read_rows(n, begin, live_end, out);
    return;
  }
  if (!h.transposed) return file_.read_rows(n, begin, end, out);
  // File (in, out) = runtime (out, in)ᵀ: runtime rows [begin, end) are file columns; read the whole tensor.
  const std::int64_t in = fs[0], outs = fs[1];
  std::vector<float> all(static_cast<std::size_t>(in * outs));
  file_.read_rows(n, 0, in, all.data());
  for (std::int64_t r = begin; r < end; ++r)
    for (std::int64_t c = 0; c < in; ++c) out[(r - begin) * in + c] = all[static_cast<std::size_t>(c * outs + r)];
}

void export_gpt2_hf(const Gpt2Config& cfg, const TensorLookup& weights, const std::string& dir,
                    const std::string& source) {
  std::vector<NamedTensor> tensors;
  for (const auto& [name, shape] : gpt2_parameter_specs(cfg)) {
    const Tensor v = weights(name);
    if (v.shape() != shape || v.dtype() != DType::F32)
      fail("'{}': {} is {}, expected f32{}", source, name, v.describe(), shape_str(shape));
    const HfName h = hf_name(name);
    Tensor t = name == "wte" ? v.rows(0, cfg.V) : v;
    if (h.transposed) {
      const std::int64_t r = shape[0], c = shape[1];
      Tensor tt = Tensor::empty({c, r}, DType::F32);
      for (std::int64_t i = 0; i < r; ++i)
        for (std::int64_t j = 0; j < c; ++j) tt.data<float>()[j * r + i] = v.data<float>()[i * c + j];
      t = tt;
    }
    tensors.emplace_back("transformer." + h.name, t);
  }
  nlohmann::ordered_json j;
  j["architectures"] = {"GPT2LMHeadModel"};
  j["model_type"] = "gpt2";
  j["n_embd"] = cfg.C;
  j["n_layer"] = cfg.L;
  j["n_head"] = cfg.NH;
  j["n_positions"] = cfg.maxT;
  j["n_ctx"] = cfg.maxT;
  j["vocab_size"] = cfg.V;
  j["n_inner"] = nullptr;
  j["activation_function"] = "gelu_new";
  j["layer_norm_epsilon"] = 1e-5;
  j["tie_word_embeddings"] = true;
  j["scale_attn_weights"] = true;
  j["torch_dtype"] = "float32";
  write_hf_dir(dir, j, tensors, source);
}

}  // namespace orthoshard
