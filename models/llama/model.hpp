// LLaMA forward and backward on the CPU, by hand (fp32 for training, fp64 for checks), driven one unit at a
// time like GPT-2's: embedding, each layer, head. Each unit call takes only that unit's parameters (and
// gradients); parameter gradients accumulate (+=).
#pragma once

#include "models/llama/config.hpp"
#include "models/llama/params.hpp"
#include "models/layers/rope.hpp"
#include "runtime/core/tensor.hpp"

#include <cstdint>

namespace orthoshard {

template <typename T>
class LlamaModel {
 public:
  // checkpoint_blocks: keep only each layer's input from the forward and recompute the layer in its backward.
  explicit LlamaModel(LlamaConfig cfg, bool checkpoint_blocks = false);

  const LlamaConfig& config() const { return cfg_; }
  // Sizes the activations for batches of B sequences of T tokens (reallocates only when (B, T) changes).
  void set_batch(std::int64_t B, std::int64_t Tn);
  std::uint64_t activation_bytes() const;

  // ---- one unit at a time, forward in this order, backward in reverse ----
  void embedding_forward(const LlamaEmbeddingWeights& w, const Tensor& inputs);  // inputs: i32 (B, T) in [0, V)
  void block_forward(int layer, const LlamaBlockWeights& w);
  // Final RMSNorm and logits (B, T, Vp); with targets (i32 (B, T)) the per-token losses and their mean (NaN
  // without targets: pass Tensor()).
  double head_forward(const LlamaHeadWeights& w, const Tensor& targets);
  // Gradients of grad_scale · mean loss; overwrites the logits with their gradient.
  void head_backward(const LlamaHeadWeights& w, const LlamaHeadWeights& g, double grad_scale = 1.0);
  void block_backward(int layer, const LlamaBlockWeights& w, const LlamaBlockWeights& g);
  void embedding_backward(const LlamaEmbeddingWeights& g);

  Tensor logits() const;  // (B, T, Vp) of the last forward
  Tensor losses() const;  // (B, T)

 private:
  void block_compute(int layer, const LlamaBlockWeights& w);
  std::int64_t slot(int layer) const { return checkpoint_ ? 0 : layer; }

  LlamaConfig cfg_;
  bool checkpoint_ = false;
  ops::RopeTable<T> rope_;
  std::int64_t B_ = 0, T_ = 0;
  // N = B·T rows; A = L layers, or 1 with checkpoint_blocks; W = C + 2·NKV·hs (packed q | k | v).
  Tensor encoded_;             // (L+1, N, C): residual stream entering layer l; [L] enters the head
  Tensor ln1_, ln2_;           // (A, N, C) normalized inputs of attention and MLP
  Tensor rstd1_, rstd2_;       // (A, N)
  Tensor qkv_;                 // (A, N, W) after the rotary embedding
  Tensor att_;                 // (A, B, NH, T, T) softmax probabilities
  Tensor atty_;                // (A, N, C) attention output before o_proj
  Tensor mid_;                 // (A, N, C) residual stream after attention
  Tensor gate_, up_, act_;     // (A, N, FF): gate_proj, up_proj outputs, SiLU(gate)·up
  Tensor lnf_, rstdf_;         // (N, C), (N)
  Tensor logits_;              // (N, Vp); the gradient after head_backward
  Tensor lse_, losses_;        // (N)
  Tensor inputs_, targets_;    // i32 (N)
  Tensor dresid_, dsmall_;     // (N, C) backward scratch
  Tensor dbig_, dbig2_;        // (N, max(FF, W)), (N, FF)
  Tensor wqkv_, dwqkv_;        // (W, C): the layer's q, k, v weights packed (one GEMM each way), their gradient
  bool have_targets_ = false;
  bool logits_are_grad_ = false;
};

extern template class LlamaModel<float>;
extern template class LlamaModel<double>;

}  // namespace orthoshard
