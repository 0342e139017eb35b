// GPT-2 parameters: llm.c's 16 stacked tensors in one flat buffer (file order), exposed to the runtime as
// named per-layer tensors (`h.3.attn.qkv.weight` (3C, C), ...), and grouped into the units the FSDP engine
// gathers one at a time: embedding (wte, wpe), block l (h.l.*), head (lnf.*, plus the tied wte).
#pragma once

#include "models/family.hpp"
#include "models/gpt2/config.hpp"
#include "runtime/core/tensor.hpp"

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace orthoshard {

using NamedShape = std::pair<std::string, Shape>;

// llm.c's file tensors, in file order: wte (Vp, C), wpe (maxT, C), ln1w (L, C), ln1b (L, C),
// qkvw (L, 3C, C), qkvb (L, 3C), attprojw (L, C, C), attprojb (L, C), ln2w (L, C), ln2b (L, C),
// fcw (L, 4C, C), fcb (L, 4C), fcprojw (L, C, 4C), fcprojb (L, C), lnfw (C), lnfb (C).
std::vector<NamedShape> llmc_tensor_shapes(const Gpt2Config& cfg);
// The runtime's named parameters, in canonical order (wte, wpe, h.0.ln1.weight, ..., lnf.bias); the same
// names and shapes as bench/optim_bench's gpt2_parameter_shapes.
std::vector<NamedShape> gpt2_parameter_specs(const Gpt2Config& cfg);

// Where a named parameter lies in the flat llm.c buffer: its first element and the elements per row (dim 0).
std::pair<std::int64_t, std::int64_t> gpt2_param_layout(const Gpt2Config& cfg, const std::string& name);

// One unit's tensors (parameters, or their gradients: the same structs serve both).
struct EmbeddingWeights {
  Tensor wte;  // (Vp, C)
  Tensor wpe;  // (maxT, C)
};
struct BlockWeights {
  Tensor ln1_w, ln1_b;            // (C)
  Tensor qkv_w;                   // (3C, C)
  Tensor qkv_b;                   // (3C)
  Tensor attn_proj_w;             // (C, C)
  Tensor attn_proj_b;             // (C)
  Tensor ln2_w, ln2_b;            // (C)
  Tensor fc_w;                    // (4C, C)
  Tensor fc_b;                    // (4C)
  Tensor mlp_proj_w;              // (C, 4C)
  Tensor mlp_proj_b;              // (C)
};
struct HeadWeights {
  Tensor lnf_w, lnf_b;  // (C)
  Tensor wte;           // (Vp, C), tied with the embedding's wte (the same tensor, not a copy)
};

// Throw naming the unit and field when a tensor has the wrong shape, dtype, or is not contiguous host memory.
void check_unit(const EmbeddingWeights& w, const Gpt2Config& cfg, DType dt, const std::string& what);
void check_unit(const BlockWeights& w, const Gpt2Config& cfg, DType dt, const std::string& what);
void check_unit(const HeadWeights& w, const Gpt2Config& cfg, DType dt, const std::string& what);

// The units in forward order, and which named parameters each owns. wte is owned by the embedding unit;
// the head unit reads it too (tied), so an engine keeps it gathered for the head.
struct Gpt2Unit {
  UnitKind kind;
  int layer = -1;  // blocks only
  std::string name() const;  // "embedding", "h.3", "head"
};
std::vector<Gpt2Unit> gpt2_units(const Gpt2Config& cfg);
std::vector<std::string> unit_parameter_names(const Gpt2Unit& unit);

// Builds a unit's structs from any name -> tensor lookup (e.g. views into an engine's gathered buffer).
EmbeddingWeights embedding_weights(const TensorLookup& get);
BlockWeights block_weights(const TensorLookup& get, int layer);
HeadWeights head_weights(const TensorLookup& get);

class Gpt2Params {
 public:
  Gpt2Params() = default;
  // All tensors zero (the layout used for gradients too).
  static Gpt2Params zeros(const Gpt2Config& cfg, DType dtype = DType::F32);

  const Gpt2Config& config() const { return cfg_; }
  DType dtype() const { return flat_.dtype(); }
  Tensor flat() const { return flat_; }                                         // (num_parameters)
  const std::vector<NamedTensor>& stacked() const { return stacked_; }          // llm.c's 16, file order
  const std::vector<NamedTensor>& named() const { return named_; }              // per layer, canonical order
  // A named (per-layer) or stacked tensor by name; throws naming it when unknown.
  Tensor get(const std::string& name) const;

  EmbeddingWeights embedding() const;
  BlockWeights block(int layer) const;
  HeadWeights head() const;

  Gpt2Params clone() const;
  Gpt2Params to(DType dtype) const;  // f32 <-> f64 copy
  void zero() { flat_.fill_zero(); }

 private:
  Gpt2Config cfg_;
  Tensor flat_;
  std::vector<NamedTensor> stacked_, named_;
  std::map<std::string, Tensor> by_name_;
  void build_views();
};

}  // namespace orthoshard
