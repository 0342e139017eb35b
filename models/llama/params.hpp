// LLaMA parameters under Hugging Face's names (model.layers.3.self_attn.q_proj.weight, ...), in PyTorch's
// (out, in) layout, grouped into the units the FSDP engine gathers one at a time: embedding
// (model.embed_tokens.weight), layer l (model.layers.l.*), head (model.norm.weight and lm_head.weight, or the
// embedding when tied).
#pragma once

#include "models/family.hpp"
#include "models/llama/config.hpp"

#include <string>
#include <utility>
#include <vector>

namespace orthoshard {

inline constexpr const char* kLlamaEmbed = "model.embed_tokens.weight";
inline constexpr const char* kLlamaNorm = "model.norm.weight";
inline constexpr const char* kLlamaHead = "lm_head.weight";

// The units in forward order with every parameter's global shape and role: the embedding is an embedding, the
// untied lm_head a head, the 2-D layer weights (q, k, v, o, gate, up, down) hidden matrices, the norms vectors.
std::vector<ModelUnit> llama_model_units(const LlamaConfig& cfg);

// One unit's tensors (parameters, or their gradients: the same structs serve both).
struct LlamaEmbeddingWeights {
  Tensor embed;  // (Vp, C)
};
struct LlamaBlockWeights {
  Tensor attn_norm;        // (C)      input_layernorm
  Tensor wq;               // (C, C)   NH heads of C/NH
  Tensor wk, wv;           // (NKV·hs, C)
  Tensor wo;               // (C, C)
  Tensor mlp_norm;         // (C)      post_attention_layernorm
  Tensor w_gate, w_up;     // (FF, C)
  Tensor w_down;           // (C, FF)
};
struct LlamaHeadWeights {
  Tensor norm;  // (C)
  Tensor head;  // (Vp, C): lm_head, or the embedding when tied (the same tensor, not a copy)
};

LlamaEmbeddingWeights llama_embedding_weights(const TensorLookup& get);
LlamaBlockWeights llama_block_weights(const TensorLookup& get, int layer);
LlamaHeadWeights llama_head_weights(const TensorLookup& get, const LlamaConfig& cfg);

// Throw naming the unit and field when a tensor has the wrong shape, dtype, or is not contiguous host memory.
void check_unit(const LlamaEmbeddingWeights& w, const LlamaConfig& cfg, DType dt, const std::string& what);
void check_unit(const LlamaBlockWeights& w, const LlamaConfig& cfg, DType dt, const std::string& what);
void check_unit(const LlamaHeadWeights& w, const LlamaConfig& cfg, DType dt, const std::string& what);

// Rows [begin, end) of a parameter's seeded initial value, a pure function of (seed, name, element): weights and
// embeddings ~ N(0, 0.02²) (Hugging Face's initializer_range), norms 1, padded vocabulary rows 0.
void llama_init_rows(const LlamaConfig& cfg, std::uint64_t seed, const std::string& name, std::int64_t begin,
                     std::int64_t end, float* out);

}  // namespace orthoshard
