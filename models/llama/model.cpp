// LLaMA unit forward/backward: each unit is a short sequence of kernel calls on the activation buffers.
#include "models/llama/model.hpp"

#include "models/layers/attention.hpp"
#include "models/layers/cross_entropy.hpp"
#include "models/layers/linear.hpp"
#include "models/layers/parallel.hpp"
#include "models/layers/rmsnorm.hpp"
#include "models/layers/swiglu.hpp"
#include "runtime/core/blas.hpp"
#include "runtime/core/error.hpp"

#include <algorithm>
#include <limits>

namespace orthoshard {
namespace {

template <typename T> T* layer_ptr(const Tensor& t, std::int64_t l) { return t.data<T>() + l * (t.numel() / t.dim(0)); }
template <typename T> T* ptr(const Tensor& t) { return t.data<T>(); }

}  // namespace

template <typename T>
LlamaModel<T>::LlamaModel(LlamaConfig cfg, bool checkpoint_blocks)
    : cfg_(std::move(cfg)), checkpoint_(checkpoint_blocks) {
  cfg_.validate();
  rope_ = ops::RopeTable<T>(cfg_.maxT, cfg_.head_size(), cfg_.rope_theta);
}

template <typename T> void LlamaModel<T>::set_batch(std::int64_t B, std::int64_t Tn) {
  if (B <= 0) throw UsageError(fmt::format("batch size B = {} must be positive", B));
  cfg_.check_sequence_length(Tn);
  if (B == B_ && Tn == T_) return;
  const DType dt = dtype_of<T>();
  const std::int64_t L = cfg_.L, C = cfg_.C, N = B * Tn, A = checkpoint_ ? 1 : L, W = cfg_.qkv_width(), FF = cfg_.FF;
  encoded_ = Tensor::empty({L + 1, N, C}, dt);
  ln1_ = Tensor::empty({A, N, C}, dt);
  ln2_ = Tensor::empty({A, N, C}, dt);
  rstd1_ = Tensor::empty({A, N}, dt);
  rstd2_ = Tensor::empty({A, N}, dt);
  qkv_ = Tensor::empty({A, N, W}, dt);
  att_ = Tensor::empty({A, B, cfg_.NH, Tn, Tn}, dt);
  atty_ = Tensor::empty({A, N, C}, dt);
  mid_ = Tensor::empty({A, N, C}, dt);
  gate_ = Tensor::empty({A, N, FF}, dt);
  up_ = Tensor::empty({A, N, FF}, dt);
  act_ = Tensor::empty({A, N, FF}, dt);
  lnf_ = Tensor::empty({N, C}, dt);
  rstdf_ = Tensor::empty({N}, dt);
  logits_ = Tensor::empty({N, cfg_.Vp}, dt);
  lse_ = Tensor::empty({N}, dt);
  losses_ = Tensor::zeros({N}, dt);
  inputs_ = Tensor::zeros({N}, DType::I32);
  targets_ = Tensor::zeros({N}, DType::I32);
  dresid_ = Tensor::empty({N, C}, dt);
  dsmall_ = Tensor::empty({N, C}, dt);
  dbig_ = Tensor::empty({N, std::max(FF, W)}, dt);
  dbig2_ = Tensor::empty({N, FF}, dt);
  if (!wqkv_.defined()) {
    wqkv_ = Tensor::empty({W, C}, dt);
    dwqkv_ = Tensor::empty({W, C}, dt);
  }
  B_ = B;
  T_ = Tn;
  have_targets_ = false;
  logits_are_grad_ = false;
}

template <typename T> std::uint64_t LlamaModel<T>::activation_bytes() const {
  if (B_ == 0) return 0;
  std::uint64_t n = 0;
  for (const Tensor* t : {&encoded_, &ln1_, &ln2_, &rstd1_, &rstd2_, &qkv_, &att_, &atty_, &mid_, &gate_, &up_, &act_,
                          &lnf_, &rstdf_, &logits_, &lse_, &losses_, &inputs_, &targets_, &dresid_, &dsmall_, &dbig_,
                          &dbig2_, &wqkv_, &dwqkv_})
    n += t->nbytes();
  return n;
}

template <typename T> void LlamaModel<T>::embedding_forward(const LlamaEmbeddingWeights& w, const Tensor& inputs) {
  check_unit(w, cfg_, dtype_of<T>(), "embedding forward");
  check_model_tokens(inputs, cfg_.V, "LLaMA", "inputs");
  set_batch(inputs.dim(0), inputs.dim(1));
  std::copy_n(inputs.data<std::int32_t>(), inputs.numel(), inputs_.data<std::int32_t>());
  have_targets_ = false;
  logits_are_grad_ = false;
  const std::int64_t C = cfg_.C, N = B_ * T_;
  const std::int32_t* tok = inputs_.data<std::int32_t>();
  T* x = layer_ptr<T>(encoded_, 0);
  const T* e = ptr<T>(w.embed);
#pragma omp parallel for schedule(static) if (N * C > ops::kParallelMinWork)
  for (std::int64_t n = 0; n < N; ++n) std::copy_n(e + static_cast<std::int64_t>(tok[n]) * C, C, x + n * C);
}

template <typename T> void LlamaModel<T>::block_forward(int l, const LlamaBlockWeights& w) {
  OS_CHECK(B_ > 0, "LLaMA layer {} forward before the embedding forward", l);
  OS_CHECK(l >= 0 && l < cfg_.L, "LLaMA layer {} out of range (L = {})", l, cfg_.L);
  check_unit(w, cfg_, dtype_of<T>(), "layer " + std::to_string(l) + " forward");
  block_compute(l, w);
}

namespace {

// q, k, v weights (C, C), (KV, C), (KV, C) -> one (C + 2·KV, C) matrix: a row of ln1 · packedᵀ is q | k | v.
template <typename T> void pack_qkv(T* out, const LlamaBlockWeights& w, std::int64_t C, std::int64_t KV) {
  std::copy_n(w.wq.data<T>(), C * C, out);
  std::copy_n(w.wk.data<T>(), KV * C, out + C * C);
  std::copy_n(w.wv.data<T>(), KV * C, out + (C + KV) * C);
}

template <typename T> void add_to(T* dst, const T* src, std::int64_t n) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

}  // namespace

template <typename T> void LlamaModel<T>::block_compute(int l, const LlamaBlockWeights& w) {
  const std::int64_t C = cfg_.C, N = B_ * T_, a = slot(l), W = cfg_.qkv_width(), KV = cfg_.kv_dim(), FF = cfg_.FF;
  const std::int64_t hs = cfg_.head_size();
  T* x = layer_ptr<T>(encoded_, l);
  T* ln1 = layer_ptr<T>(ln1_, a);
  T* qkv = layer_ptr<T>(qkv_, a);
  T* atty = layer_ptr<T>(atty_, a);
  T* mid = layer_ptr<T>(mid_, a);
  T* ln2 = layer_ptr<T>(ln2_, a);
  T* gate = layer_ptr<T>(gate_, a);
  T* up = layer_ptr<T>(up_, a);
  T* act = layer_ptr<T>(act_, a);
  T* out = layer_ptr<T>(encoded_, l + 1);
  ops::rmsnorm_forward(ln1, layer_ptr<T>(rstd1_, a), x, ptr<T>(w.attn_norm), N, C, cfg_.norm_eps);
  // q | k | v into one packed row (N, W), one GEMM with the packed weights.
  pack_qkv(ptr<T>(wqkv_), w, C, KV);
  linalg::gemm<T>(false, true, N, W, C, T(1), ln1, C, ptr<T>(wqkv_), C, T(0), qkv, W);
  ops::rope_apply(qkv, rope_, B_, T_, W, cfg_.NH, hs, false);
  ops::rope_apply(qkv + C, rope_, B_, T_, W, cfg_.NKV, hs, false);
  ops::gqa_attention_forward(atty, layer_ptr<T>(att_, a), qkv, B_, T_, cfg_.NH, cfg_.NKV, hs);
  ops::linear_forward(mid, atty, ptr<T>(w.wo), static_cast<const T*>(nullptr), x, N, C, C);
  ops::rmsnorm_forward(ln2, layer_ptr<T>(rstd2_, a), mid, ptr<T>(w.mlp_norm), N, C, cfg_.norm_eps);
  ops::linear_forward(gate, ln2, ptr<T>(w.w_gate), static_cast<const T*>(nullptr), static_cast<const T*>(nullptr), N,
                      C, FF);
  ops::linear_forward(up, ln2, ptr<T>(w.w_up), static_cast<const T*>(nullptr), static_cast<const T*>(nullptr), N, C,
                      FF);
  ops::swiglu_forward(act, gate, up, N * FF);
  ops::linear_forward(out, act, ptr<T>(w.w_down), static_cast<const T*>(nullptr), mid, N, FF, C);
}

template <typename T> double LlamaModel<T>::head_forward(const LlamaHeadWeights& w, const Tensor& targets) {
  OS_CHECK(B_ > 0, "LLaMA head forward before the embedding forward");
  check_unit(w, cfg_, dtype_of<T>(), "head forward");
  const std::int64_t C = cfg_.C, N = B_ * T_, V = cfg_.V, Vp = cfg_.Vp;
  ops::rmsnorm_forward(ptr<T>(lnf_), ptr<T>(rstdf_), layer_ptr<T>(encoded_, cfg_.L), ptr<T>(w.norm), N, C,
                       cfg_.norm_eps);
  linalg::gemm<T>(false, true, N, Vp, C, T(1), ptr<T>(lnf_), C, ptr<T>(w.head), C, T(0), ptr<T>(logits_), Vp);
  logits_are_grad_ = false;
  have_targets_ = targets.defined();
  if (!have_targets_) {
    ops::cross_entropy_forward(ptr<T>(losses_), ptr<T>(lse_), ptr<T>(logits_), nullptr, N, V, Vp);
    return std::numeric_limits<double>::quiet_NaN();
  }
  check_model_targets(targets, V, B_, T_, "LLaMA");
  std::copy_n(targets.data<std::int32_t>(), N, targets_.data<std::int32_t>());
  ops::cross_entropy_forward(ptr<T>(losses_), ptr<T>(lse_), ptr<T>(logits_), targets_.data<std::int32_t>(), N, V,
                             Vp);
  double sum = 0;
  for (std::int64_t i = 0; i < N; ++i) sum += static_cast<double>(ptr<T>(losses_)[i]);
  return sum / static_cast<double>(N);
}

template <typename T>
void LlamaModel<T>::head_backward(const LlamaHeadWeights& w, const LlamaHeadWeights& g, double grad_scale) {
  OS_CHECK(have_targets_ && !logits_are_grad_,
           "LLaMA head backward needs a head forward with targets first (and runs once per forward)");
  check_unit(w, cfg_, dtype_of<T>(), "head backward (weights)");
  check_unit(g, cfg_, dtype_of<T>(), "head backward (gradients)");
  const std::int64_t C = cfg_.C, N = B_ * T_, V = cfg_.V, Vp = cfg_.Vp;
  T* dlogits = ptr<T>(logits_);
  ops::cross_entropy_backward_inplace(dlogits, ptr<T>(lse_), targets_.data<std::int32_t>(),
                                      static_cast<T>(grad_scale / static_cast<double>(N)), N, V, Vp);
  logits_are_grad_ = true;
  // Only the first V columns carry gradient: dhead[:V] += dlogitsᵀ·lnf, dlnf = dlogits·head[:V].
  linalg::gemm<T>(true, false, V, C, N, T(1), dlogits, Vp, ptr<T>(lnf_), C, T(1), ptr<T>(g.head), C);
  linalg::gemm<T>(false, false, N, C, V, T(1), dlogits, Vp, ptr<T>(w.head), C, T(0), ptr<T>(dsmall_), C);
  dresid_.fill_zero();
  ops::rmsnorm_backward(ptr<T>(dresid_), ptr<T>(g.norm), ptr<T>(dsmall_), layer_ptr<T>(encoded_, cfg_.L),
                        ptr<T>(w.norm), ptr<T>(rstdf_), N, C);
}

template <typename T>
void LlamaModel<T>::block_backward(int l, const LlamaBlockWeights& w, const LlamaBlockWeights& g) {
  OS_CHECK(logits_are_grad_, "LLaMA layer {} backward before the head backward", l);
  OS_CHECK(l >= 0 && l < cfg_.L, "LLaMA layer {} out of range (L = {})", l, cfg_.L);
  check_unit(w, cfg_, dtype_of<T>(), "layer " + std::to_string(l) + " backward (weights)");
  check_unit(g, cfg_, dtype_of<T>(), "layer " + std::to_string(l) + " backward (gradients)");
  if (checkpoint_) block_compute(l, w);  // the layer's activations again, from its input (the same bits)
  const std::int64_t C = cfg_.C, N = B_ * T_, a = slot(l), W = cfg_.qkv_width(), KV = cfg_.kv_dim(), FF = cfg_.FF;
  const std::int64_t hs = cfg_.head_size();
  T* dres = ptr<T>(dresid_);
  T* dsmall = ptr<T>(dsmall_);
  T* dbig = ptr<T>(dbig_);
  T* dup = ptr<T>(dbig2_);
  const T* ln1 = layer_ptr<T>(ln1_, a);
  const T* ln2 = layer_ptr<T>(ln2_, a);
  // MLP half: out = mid + (SiLU(ln2·gateᵀ) ⊙ ln2·upᵀ)·downᵀ.
  ops::linear_backward(dbig, ptr<T>(g.w_down), static_cast<T*>(nullptr), dres, layer_ptr<T>(act_, a), ptr<T>(w.w_down),
                       N, FF, C);
  ops::swiglu_backward(dbig, dup, dbig, layer_ptr<T>(gate_, a), layer_ptr<T>(up_, a), N * FF);
  ops::linear_backward(dsmall, ptr<T>(g.w_gate), static_cast<T*>(nullptr), dbig, ln2, ptr<T>(w.w_gate), N, C, FF);
  linalg::gemm<T>(false, false, N, C, FF, T(1), dup, FF, ptr<T>(w.w_up), C, T(1), dsmall, C);
  linalg::gemm<T>(true, false, FF, C, N, T(1), dup, FF, ln2, C, T(1), ptr<T>(g.w_up), C);
  ops::rmsnorm_backward(dres, ptr<T>(g.mlp_norm), dsmall, layer_ptr<T>(mid_, a), ptr<T>(w.mlp_norm),
                        layer_ptr<T>(rstd2_, a), N, C);
  // Attention half: mid = x + attn(rope(ln1·[q|k|v]ᵀ))·oᵀ.
  ops::linear_backward(dsmall, ptr<T>(g.wo), static_cast<T*>(nullptr), dres, layer_ptr<T>(atty_, a), ptr<T>(w.wo), N,
                       C, C);
  T* dqkv = dbig;  // (N, W)
  ops::gqa_attention_backward(dqkv, dsmall, layer_ptr<T>(qkv_, a), layer_ptr<T>(att_, a), B_, T_, cfg_.NH, cfg_.NKV,
                              hs);
  ops::rope_apply(dqkv, rope_, B_, T_, W, cfg_.NH, hs, true);
  ops::rope_apply(dqkv + C, rope_, B_, T_, W, cfg_.NKV, hs, true);
  // dln1 = dqkv · packed (N, C); dpacked = dqkvᵀ · ln1 (W, C), added to the q, k, v gradients.
  pack_qkv(ptr<T>(wqkv_), w, C, KV);
  linalg::gemm<T>(false, false, N, C, W, T(1), dqkv, W, ptr<T>(wqkv_), C, T(0), dsmall, C);
  linalg::gemm<T>(true, false, W, C, N, T(1), dqkv, W, ln1, C, T(0), ptr<T>(dwqkv_), C);
  add_to(ptr<T>(g.wq), ptr<T>(dwqkv_), C * C);
  add_to(ptr<T>(g.wk), ptr<T>(dwqkv_) + C * C, KV * C);
  add_to(ptr<T>(g.wv), ptr<T>(dwqkv_) + (C + KV) * C, KV * C);
  ops::rmsnorm_backward(dres, ptr<T>(g.attn_norm), dsmall, layer_ptr<T>(encoded_, l), ptr<T>(w.attn_norm),
                        layer_ptr<T>(rstd1_, a), N, C);
}

template <typename T> void LlamaModel<T>::embedding_backward(const LlamaEmbeddingWeights& g) {
  OS_CHECK(logits_are_grad_, "LLaMA embedding backward before the head backward");
  check_unit(g, cfg_, dtype_of<T>(), "embedding backward (gradients)");
  const std::int64_t C = cfg_.C, N = B_ * T_;
  const std::int32_t* tok = inputs_.data<std::int32_t>();
  const T* d = ptr<T>(dresid_);
  T* de = ptr<T>(g.embed);
  // Rows in token order per channel block: the same sums whatever the thread count.
  constexpr std::int64_t kBlock = 32;
  const std::int64_t blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (N * C > ops::kParallelMinWork)
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t c0 = blk * kBlock, c1 = std::min(C, c0 + kBlock);
    for (std::int64_t n = 0; n < N; ++n) {
      T* e = de + static_cast<std::int64_t>(tok[n]) * C;
      const T* dn = d + n * C;
      for (std::int64_t c = c0; c < c1; ++c) e[c] += dn[c];
    }
  }
}

template <typename T> Tensor LlamaModel<T>::logits() const {
  OS_CHECK(B_ > 0, "LLaMA logits before any forward");
  return logits_.reshape({B_, T_, cfg_.Vp});
}

template <typename T> Tensor LlamaModel<T>::losses() const {
  OS_CHECK(B_ > 0, "LLaMA losses before any forward");
  return losses_.reshape({B_, T_});
}

template class LlamaModel<float>;
template class LlamaModel<double>;

}  // namespace orthoshard
