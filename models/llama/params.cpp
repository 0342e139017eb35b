// LLaMA's parameter names, shapes, roles and units; its seeded initialization.
#include "models/llama/params.hpp"

#include "models/random.hpp"
#include "runtime/core/error.hpp"

#include <algorithm>

namespace orthoshard {
namespace {

std::string layer_name(int l, const char* rest) { return fmt::format("model.layers.{}.{}", l, rest); }

}  // namespace

std::vector<ModelUnit> llama_model_units(const LlamaConfig& cfg) {
  const std::int64_t C = cfg.C, KV = cfg.kv_dim(), FF = cfg.FF;
  std::vector<ModelUnit> units;
  ModelUnit emb{"embedding", UnitKind::Embedding, -1, {{kLlamaEmbed, {cfg.Vp, C}, ParamRole::Embedding}}, {}, false};
  units.push_back(std::move(emb));
  for (int l = 0; l < cfg.L; ++l) {
    ModelUnit u;
    u.name = fmt::format("layers.{}", l);
    u.kind = UnitKind::Block;
    u.layer = l;
    u.params = {{layer_name(l, "input_layernorm.weight"), {C}, ParamRole::Vector},
                {layer_name(l, "self_attn.q_proj.weight"), {C, C}, ParamRole::Matrix},
                {layer_name(l, "self_attn.k_proj.weight"), {KV, C}, ParamRole::Matrix},
                {layer_name(l, "self_attn.v_proj.weight"), {KV, C}, ParamRole::Matrix},
                {layer_name(l, "self_attn.o_proj.weight"), {C, C}, ParamRole::Matrix},
                {layer_name(l, "post_attention_layernorm.weight"), {C}, ParamRole::Vector},
                {layer_name(l, "mlp.gate_proj.weight"), {FF, C}, ParamRole::Matrix},
                {layer_name(l, "mlp.up_proj.weight"), {FF, C}, ParamRole::Matrix},
                {layer_name(l, "mlp.down_proj.weight"), {C, FF}, ParamRole::Matrix}};
    units.push_back(std::move(u));
  }
  ModelUnit head;
  head.name = "head";
  head.kind = UnitKind::Head;
  head.params = {{kLlamaNorm, {C}, ParamRole::Vector}};
  if (cfg.tie_embeddings) head.reads = {kLlamaEmbed};  // the logits use the embedding (tied)
  else head.params.push_back({kLlamaHead, {cfg.Vp, C}, ParamRole::Head});
  units.push_back(std::move(head));
  return units;
}

LlamaEmbeddingWeights llama_embedding_weights(const TensorLookup& get) { return {get(kLlamaEmbed)}; }

LlamaBlockWeights llama_block_weights(const TensorLookup& get, int l) {
  LlamaBlockWeights w;
  w.attn_norm = get(layer_name(l, "input_layernorm.weight"));
  w.wq = get(layer_name(l, "self_attn.q_proj.weight"));
  w.wk = get(layer_name(l, "self_attn.k_proj.weight"));
  w.wv = get(layer_name(l, "self_attn.v_proj.weight"));
  w.wo = get(layer_name(l, "self_attn.o_proj.weight"));
  w.mlp_norm = get(layer_name(l, "post_attention_layernorm.weight"));
  w.w_gate = get(layer_name(l, "mlp.gate_proj.weight"));
  w.w_up = get(layer_name(l, "mlp.up_proj.weight"));
  w.w_down = get(layer_name(l, "mlp.down_proj.weight"));
  return w;
}

LlamaHeadWeights llama_head_weights(const TensorLookup& get, const LlamaConfig& cfg) {
  return {get(kLlamaNorm), get(cfg.tie_embeddings ? kLlamaEmbed : kLlamaHead)};
}

namespace {

void check_tensor(const Tensor& t, const Shape& shape, DType dt, const std::string& what, const char* field) {
  if (!t.defined() || t.shape() != shape || t.dtype() != dt || !t.is_contiguous() || t.device() != Device::CPU)
    fail("LLaMA {}: {} is {}, expected contiguous host {}{}", what, field, t.defined() ? t.describe() : "missing",
         dtype_name(dt), shape_str(shape));
}

}  // namespace

void check_unit(const LlamaEmbeddingWeights& w, const LlamaConfig& cfg, DType dt, const std::string& what) {
  check_tensor(w.embed, {cfg.Vp, cfg.C}, dt, what, "embed_tokens");
}

void check_unit(const LlamaBlockWeights& w, const LlamaConfig& cfg, DType dt, const std::string& what) {
  const std::int64_t C = cfg.C, KV = cfg.kv_dim(), FF = cfg.FF;
  check_tensor(w.attn_norm, {C}, dt, what, "input_layernorm");
  check_tensor(w.wq, {C, C}, dt, what, "q_proj");
  check_tensor(w.wk, {KV, C}, dt, what, "k_proj");
  check_tensor(w.wv, {KV, C}, dt, what, "v_proj");
  check_tensor(w.wo, {C, C}, dt, what, "o_proj");
  check_tensor(w.mlp_norm, {C}, dt, what, "post_attention_layernorm");
  check_tensor(w.w_gate, {FF, C}, dt, what, "gate_proj");
  check_tensor(w.w_up, {FF, C}, dt, what, "up_proj");
  check_tensor(w.w_down, {C, FF}, dt, what, "down_proj");
}

void check_unit(const LlamaHeadWeights& w, const LlamaConfig& cfg, DType dt, const std::string& what) {
  check_tensor(w.norm, {cfg.C}, dt, what, "norm");
  check_tensor(w.head, {cfg.Vp, cfg.C}, dt, what, cfg.tie_embeddings ? "embed_tokens (tied head)" : "lm_head");
}

void llama_init_rows(const LlamaConfig& cfg, std::uint64_t seed, const std::string& name, std::int64_t begin,
                     std::int64_t end, float* out) {
  Shape shape;
  for (const ModelUnit& u : llama_model_units(cfg))
    for (const ParamInfo& p : u.params)
      if (p.name == name) shape = p.shape;
  if (shape.empty()) fail("LLaMA has no parameter named '{}'", name);
  OS_CHECK(0 <= begin && begin <= end && end <= shape[0], "rows [{}, {}) outside {} {}", begin, end, name,
           shape_str(shape));
  const std::int64_t row = shape_numel(shape) / shape[0];
  const std::int64_t n = (end - begin) * row;
  if (shape.size() == 1) {  // the norms
    std::fill(out, out + n, 1.0f);
    return;
  }
  const bool vocab = name == kLlamaEmbed || name == kLlamaHead;
  const std::int64_t live_rows = vocab ? cfg.V : shape[0];  // padded vocabulary rows stay 0
  const std::uint64_t k = rng::key(seed, rng::hash_name(name));
  const std::int64_t first = begin * row;
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t g = first + i;
    out[i] = g / row < live_rows ? static_cast<float>(0.02 * rng::normal_at(k, static_cast<std::uint64_t>(g))) : 0.0f;
  }
}

}  // namespace orthoshard
