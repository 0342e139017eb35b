// Parameter layout: the flat llm.c buffer, its stacked views, and the named per-layer views.
#include "models/gpt2/params.hpp"

#include "runtime/core/error.hpp"

#include <array>

namespace orthoshard {

namespace {

// Per-layer name suffix <-> llm.c stacked tensor, in the order both use.
struct LayerTensor {
  const char* suffix;
  const char* stacked;
};
constexpr std::array<LayerTensor, 12> kLayerTensors{{{"ln1.weight", "ln1w"},
                                                     {"ln1.bias", "ln1b"},
                                                     {"attn.qkv.weight", "qkvw"},
                                                     {"attn.qkv.bias", "qkvb"},
                                                     {"attn.proj.weight", "attprojw"},
                                                     {"attn.proj.bias", "attprojb"},
                                                     {"ln2.weight", "ln2w"},
                                                     {"ln2.bias", "ln2b"},
                                                     {"mlp.fc.weight", "fcw"},
                                                     {"mlp.fc.bias", "fcb"},
                                                     {"mlp.proj.weight", "fcprojw"},
                                                     {"mlp.proj.bias", "fcprojb"}}};

std::string layer_name(int l, const char* suffix) { return "h." + std::to_string(l) + "." + suffix; }

void check_tensor(const Tensor& t, const Shape& want, DType dt, const std::string& what, const char* field) {
  if (!t.defined() || t.shape() != want || t.dtype() != dt || t.device() != Device::CPU || !t.is_contiguous())
    fail("{}: {} must be a contiguous host {}{} tensor, got {}", what, field, dtype_name(dt), shape_str(want),
         t.defined() ? t.describe() : std::string("none"));
}

}  // namespace

std::vector<NamedShape> llmc_tensor_shapes(const Gpt2Config& c) {
  return {{"wte", {c.Vp, c.C}},          {"wpe", {c.maxT, c.C}},        {"ln1w", {c.L, c.C}},
          {"ln1b", {c.L, c.C}},          {"qkvw", {c.L, 3 * c.C, c.C}}, {"qkvb", {c.L, 3 * c.C}},
          {"attprojw", {c.L, c.C, c.C}}, {"attprojb", {c.L, c.C}},      {"ln2w", {c.L, c.C}},
          {"ln2b", {c.L, c.C}},          {"fcw", {c.L, 4 * c.C, c.C}},  {"fcb", {c.L, 4 * c.C}},
          {"fcprojw", {c.L, c.C, 4 * c.C}}, {"fcprojb", {c.L, c.C}},    {"lnfw", {c.C}},
          {"lnfb", {c.C}}};
}

std::vector<NamedShape> gpt2_parameter_specs(const Gpt2Config& c) {
  std::vector<NamedShape> out{{"wte", {c.Vp, c.C}}, {"wpe", {c.maxT, c.C}}};
  const auto stacked = llmc_tensor_shapes(c);
  for (int l = 0; l < c.L; ++l)
    for (std::size_t i = 0; i < kLayerTensors.size(); ++i) {
      const Shape& s = stacked[2 + i].second;
      out.push_back({layer_name(l, kLayerTensors[i].suffix), Shape(s.begin() + 1, s.end())});
    }
  out.push_back({"lnf.weight", {c.C}});
  out.push_back({"lnf.bias", {c.C}});
  return out;
}

std::pair<std::int64_t, std::int64_t> gpt2_param_layout(const Gpt2Config& c, const std::string& name) {
  const auto stacked = llmc_tensor_shapes(c);
  std::vector<std::int64_t> offset(stacked.size() + 1, 0);
  for (std::size_t i = 0; i < stacked.size(); ++i) offset[i + 1] = offset[i] + shape_numel(stacked[i].second);
  auto per_row = [](const Shape& s) { return s.empty() || s[0] == 0 ? 0 : shape_numel(s) / s[0]; };
  if (name == "wte") return {offset[0], per_row(stacked[0].second)};
  if (name == "wpe") return {offset[1], per_row(stacked[1].second)};
  if (name == "lnf.weight") return {offset[14], 1};
  if (name == "lnf.bias") return {offset[15], 1};
  for (int l = 0; l < c.L; ++l)
    for (std::size_t i = 0; i < kLayerTensors.size(); ++i)
      if (name == layer_name(l, kLayerTensors[i].suffix)) {
        const Shape& s = stacked[2 + i].second;  // (L, ...)
        const Shape layer(s.begin() + 1, s.end());
        return {offset[2 + i] + l * shape_numel(layer), layer.size() == 1 ? 1 : per_row(layer)};
      }
  fail("GPT-2 has no parameter named '{}' (names look like h.0.attn.qkv.weight)", name);
}

std::string Gpt2Unit::name() const {
  switch (kind) {
    case UnitKind::Embedding: return "embedding";
    case UnitKind::Block: return "h." + std::to_string(layer);
    case UnitKind::Head: return "head";
  }
  return "?";
}

std::vector<Gpt2Unit> gpt2_units(const Gpt2Config& cfg) {
  std::vector<Gpt2Unit> u{{UnitKind::Embedding, -1}};
  for (int l = 0; l < cfg.L; ++l) u.push_back({UnitKind::Block, l});
  u.push_back({UnitKind::Head, -1});
  return u;
}

std::vector<std::string> unit_parameter_names(const Gpt2Unit& unit) {
  switch (unit.kind) {
    case UnitKind::Embedding: return {"wte", "wpe"};
    case UnitKind::Head: return {"lnf.weight", "lnf.bias"};
    case UnitKind::Block: {
      std::vector<std::string> n;
      for (const auto& t : kLayerTensors) n.push_back(layer_name(unit.layer, t.suffix));
      return n;
    }
  }
  return {};
}

EmbeddingWeights embedding_weights(const TensorLookup& get) { return {get("wte"), get("wpe")}; }

BlockWeights block_weights(const TensorLookup& get, int l) {
  auto g = [&](int i) { return get(layer_name(l, kLayerTensors[static_cast<std::size_t>(i)].suffix)); };
  return {g(0), g(1), g(2), g(3), g(4), g(5), g(6), g(7), g(8), g(9), g(10), g(11)};
}

HeadWeights head_weights(const TensorLookup& get) { return {get("lnf.weight"), get("lnf.bias"), get("wte")}; }

void check_unit(const EmbeddingWeights& w, const Gpt2Config& c, DType dt, const std::string& what) {
  check_tensor(w.wte, {c.Vp, c.C}, dt, what, "wte");
  check_tensor(w.wpe, {c.maxT, c.C}, dt, what, "wpe");
}

void check_unit(const BlockWeights& w, const Gpt2Config& c, DType dt, const std::string& what) {
  const std::int64_t C = c.C;
  check_tensor(w.ln1_w, {C}, dt, what, "ln1.weight");
  check_tensor(w.ln1_b, {C}, dt, what, "ln1.bias");
  check_tensor(w.qkv_w, {3 * C, C}, dt, what, "attn.qkv.weight");
  check_tensor(w.qkv_b, {3 * C}, dt, what, "attn.qkv.bias");
  check_tensor(w.attn_proj_w, {C, C}, dt, what, "attn.proj.weight");
  check_tensor(w.attn_proj_b, {C}, dt, what, "attn.proj.bias");
  check_tensor(w.ln2_w, {C}, dt, what, "ln2.weight");
  check_tensor(w.ln2_b, {C}, dt, what, "ln2.bias");
  check_tensor(w.fc_w, {4 * C, C}, dt, what, "mlp.fc.weight");
  check_tensor(w.fc_b, {4 * C}, dt, what, "mlp.fc.bias");
  check_tensor(w.mlp_proj_w, {C, 4 * C}, dt, what, "mlp.proj.weight");
  check_tensor(w.mlp_proj_b, {C}, dt, what, "mlp.proj.bias");
}

void check_unit(const HeadWeights& w, const Gpt2Config& c, DType dt, const std::string& what) {
  check_tensor(w.lnf_w, {c.C}, dt, what, "lnf.weight");
  check_tensor(w.lnf_b, {c.C}, dt, what, "lnf.bias");
  check_tensor(w.wte, {c.Vp, c.C}, dt, what, "wte");
}

Gpt2Params Gpt2Params::zeros(const Gpt2Config& cfg, DType dtype) {
  cfg.validate();
  OS_CHECK(dtype == DType::F32 || dtype == DType::F64, "GPT-2 parameters are f32 or f64, not {}",
           dtype_name(dtype));
  Gpt2Params p;
  p.cfg_ = cfg;
  p.flat_ = Tensor::zeros({cfg.num_parameters()}, dtype);
  p.build_views();
  return p;
}

void Gpt2Params::build_views() {
  stacked_.clear();
  named_.clear();
  by_name_.clear();
  std::int64_t off = 0;
  for (auto& [name, shape] : llmc_tensor_shapes(cfg_)) {
    const std::int64_t n = shape_numel(shape);
    stacked_.push_back({name, flat_.rows(off, off + n).reshape(shape)});
    off += n;
  }
  OS_CHECK(off == flat_.numel(), "GPT-2 layout: {} parameters laid out, {} allocated", off, flat_.numel());
  named_.push_back(stacked_[0]);
  named_.push_back(stacked_[1]);
  for (int l = 0; l < cfg_.L; ++l)
    for (std::size_t i = 0; i < kLayerTensors.size(); ++i) {
      const Tensor& s = stacked_[2 + i].second;
      Shape shape(s.shape().begin() + 1, s.shape().end());
      named_.push_back({layer_name(l, kLayerTensors[i].suffix), s.rows(l, l + 1).reshape(shape)});
    }
  named_.push_back({"lnf.weight", stacked_[14].second});
  named_.push_back({"lnf.bias", stacked_[15].second});
  for (const auto& [n, t] : stacked_) by_name_[n] = t;
  for (const auto& [n, t] : named_) by_name_[n] = t;
}

Tensor Gpt2Params::get(const std::string& name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) fail("GPT-2 has no parameter named '{}' (names look like h.0.attn.qkv.weight)", name);
  return it->second;
}

EmbeddingWeights Gpt2Params::embedding() const { return embedding_weights([this](const auto& n) { return get(n); }); }
BlockWeights Gpt2Params::block(int l) const {
  OS_CHECK(l >= 0 && l < cfg_.L, "GPT-2 block {} out of range (L = {})", l, cfg_.L);
  return block_weights([this](const auto& n) { return get(n); }, l);
}
HeadWeights Gpt2Params::head() const { return head_weights([this](const auto& n) { return get(n); }); }

Gpt2Params Gpt2Params::clone() const {
  Gpt2Params p;
  p.cfg_ = cfg_;
  p.flat_ = flat_.clone();
  p.build_views();
  return p;
}

Gpt2Params Gpt2Params::to(DType dtype) const {
  if (dtype == flat_.dtype()) return clone();
  Gpt2Params p = zeros(cfg_, dtype);
  const std::int64_t n = flat_.numel();
  if (dtype == DType::F64)
    for (std::int64_t i = 0; i < n; ++i) p.flat_.data<double>()[i] = flat_.data<float>()[i];
  else
    for (std::int64_t i = 0; i < n; ++i) p.flat_.data<float>()[i] = static_cast<float>(flat_.data<double>()[i]);
  return p;
}

}  // namespace orthoshard
