// GPT-2 forward and backward on the CPU, by hand (fp32 for training, fp64 for checks), driven one unit at a
// time: embedding, each block, head. Each unit call takes only that unit's parameters (and gradients), so an
// FSDP engine can gather one unit, run it, and release it. Parameter gradients accumulate (+=).
#pragma once

#include "models/gpt2/config.hpp"
#include "models/gpt2/params.hpp"
#include "runtime/core/tensor.hpp"

#include <cstdint>
#include <vector>

namespace orthoshard {

// Wall time per kind of work on the calling thread (enabled with Gpt2Model::profile().enabled).
struct Gpt2Profile {
  bool enabled = false;
  double matmul_s = 0;         // linear layers and the logits GEMMs (BLAS)
  double attention_s = 0;
  double layernorm_s = 0;
  double gelu_s = 0;
  double cross_entropy_s = 0;  // fused softmax + loss + gradient
  double embedding_s = 0;
  double total_s() const { return matmul_s + attention_s + layernorm_s + gelu_s + cross_entropy_s + embedding_s; }
  void reset() { *this = Gpt2Profile{enabled}; }
};

// Throws a UsageError naming `what` unless `tokens` is a contiguous host i32 (B, T) tensor with every token in
// [0, V) (the CPU and GPU models check their inputs and targets with it).
void check_gpt2_tokens(const Tensor& tokens, std::int64_t V, const char* what);

template <typename T>
class Gpt2Model {
 public:
  // checkpoint_blocks: keep only each block's input (the residual stream) from the forward and recompute the
  // block's forward in its backward (activation checkpointing): one block's activations instead of L, the same
  // results bit for bit.
  explicit Gpt2Model(Gpt2Config cfg, bool checkpoint_blocks = false);

  const Gpt2Config& config() const { return cfg_; }
  // Sizes the activation buffers for batches of B sequences of T tokens; reallocates only when (B, T)
  // changes. T > maxT is an error naming the model file.
  void set_batch(std::int64_t B, std::int64_t Tn);
  std::int64_t batch() const { return B_; }
  std::int64_t seq_len() const { return T_; }
  std::uint64_t activation_bytes() const;  // the activation and scratch buffers of the current (B, T)

  // ---- one unit at a time, forward in this order, backward in reverse ----
  // inputs: i32 (B, T) tokens in [0, V); sets the batch shape.
  void embedding_forward(const EmbeddingWeights& w, const Tensor& inputs);
  void block_forward(int layer, const BlockWeights& w);
  // Final layernorm and logits (B, T, Vp). With targets (i32 (B, T)) also the per-token losses; returns
  // their mean (NaN without targets: pass an undefined Tensor()).
  double head_forward(const HeadWeights& w, const Tensor& targets);
  // Gradients of grad_scale · mean loss (grad_scale = 1/K for K accumulated micro-batches). Overwrites the
  // logits with their gradient. Accumulates into g (g.wte is the same gradient as the embedding's).
  void head_backward(const HeadWeights& w, const HeadWeights& g, double grad_scale = 1.0);
  void block_backward(int layer, const BlockWeights& w, const BlockWeights& g);
  void embedding_backward(const EmbeddingWeights& g);

  // ---- whole model: the units in order ----
  double forward(const Gpt2Params& p, const Tensor& inputs, const Tensor& targets);
  void backward(const Gpt2Params& p, const Gpt2Params& grads, double grad_scale = 1.0);

  // Views of the last forward (valid until the next set_batch; the logits until head_backward).
  Tensor logits() const;  // (B, T, Vp)
  Tensor losses() const;  // (B, T)
  Gpt2Profile& profile() { return profile_; }

 private:

  void block_compute(int layer, const BlockWeights& w);  // the block's forward into its activation slot
  std::int64_t slot(int layer) const { return checkpoint_ ? 0 : layer; }

  Gpt2Config cfg_;
  bool checkpoint_ = false;
  std::int64_t B_ = 0, T_ = 0;
  // Activations, sized once per (B, T); N = B·T rows; A = L layers, or 1 with checkpoint_blocks (the block being
  // computed or recomputed).
  Tensor encoded_;         // (L+1, N, C): residual stream entering block l; [L] enters the head
  Tensor ln1_, ln2_;       // (A, N, C)
  Tensor ln1_stats_, ln2_stats_;  // (A, 2, N): mean, rstd
  Tensor qkv_;             // (A, N, 3C)
  Tensor att_;             // (A, B, NH, T, T) softmax probabilities
  Tensor atty_;            // (A, N, C) attention output before the projection
  Tensor resid_mid_;       // (A, N, C) residual stream after the attention half of the block
  Tensor fch_, fch_gelu_;  // (A, N, 4C)
  Tensor lnf_;             // (N, C)
  Tensor lnf_stats_;       // (2, N)
  Tensor logits_;          // (N, Vp); the gradient after head_backward
  Tensor lse_, losses_;    // (N)
  Tensor inputs_, targets_;  // i32 (N)
  // Backward scratch, one layer's worth.
  Tensor dresid_;  // (N, C) gradient w.r.t. the residual stream
  Tensor dsmall_;  // (N, C)
  Tensor dbig_;    // (N, 4C) (also holds dqkv (N, 3C))
  bool have_targets_ = false;
  bool logits_are_grad_ = false;
  Gpt2Profile profile_;
};

extern template class Gpt2Model<float>;
extern template class Gpt2Model<double>;

}  // namespace orthoshard
