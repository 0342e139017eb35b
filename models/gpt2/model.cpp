// GPT-2 unit forward/backward: each unit is a short sequence of kernel calls on the activation buffers.
#include "models/gpt2/model.hpp"

#include "models/layers/attention.hpp"
#include "models/layers/cross_entropy.hpp"
#include "models/gpt2/embedding.hpp"
#include "models/layers/gelu.hpp"
#include "models/layers/layernorm.hpp"
#include "models/layers/linear.hpp"
#include "runtime/core/blas.hpp"
#include "runtime/core/error.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

namespace orthoshard {

namespace {

// Adds the scope's wall time to `acc` when profiling is on.
class ScopedTimer {
 public:
  ScopedTimer(bool on, double& acc) : on_(on), acc_(acc) {
    if (on_) t0_ = std::chrono::steady_clock::now();
  }
  ~ScopedTimer() {
    if (on_) acc_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  bool on_;
  double& acc_;
  std::chrono::steady_clock::time_point t0_;
};

// Pointer to slice `l` of a buffer whose leading dimension is the layer.
template <typename T> T* layer_ptr(const Tensor& t, std::int64_t l) {
  return t.data<T>() + l * (t.numel() / t.dim(0));
}
template <typename T> T* ptr(const Tensor& t) { return t.data<T>(); }

}  // namespace

template <typename T>
Gpt2Model<T>::Gpt2Model(Gpt2Config cfg, bool checkpoint_blocks) : cfg_(std::move(cfg)), checkpoint_(checkpoint_blocks) {
  cfg_.validate();
}

template <typename T> void Gpt2Model<T>::set_batch(std::int64_t B, std::int64_t Tn) {
  if (B <= 0) throw UsageError(fmt::format("batch size B = {} must be positive", B));
  cfg_.check_sequence_length(Tn);
  if (B == B_ && Tn == T_) return;
  const DType dt = dtype_of<T>();
  const std::int64_t L = cfg_.L, C = cfg_.C, N = B * Tn, A = checkpoint_ ? 1 : L;
  encoded_ = Tensor::empty({L + 1, N, C}, dt);
  ln1_ = Tensor::empty({A, N, C}, dt);
  ln2_ = Tensor::empty({A, N, C}, dt);
  ln1_stats_ = Tensor::empty({A, 2, N}, dt);
  ln2_stats_ = Tensor::empty({A, 2, N}, dt);
  qkv_ = Tensor::empty({A, N, 3 * C}, dt);
  att_ = Tensor::empty({A, B, cfg_.NH, Tn, Tn}, dt);
  atty_ = Tensor::empty({A, N, C}, dt);
  resid_mid_ = Tensor::empty({A, N, C}, dt);
  fch_ = Tensor::empty({A, N, 4 * C}, dt);
  fch_gelu_ = Tensor::empty({A, N, 4 * C}, dt);
  lnf_ = Tensor::empty({N, C}, dt);
  lnf_stats_ = Tensor::empty({2, N}, dt);
  logits_ = Tensor::empty({N, cfg_.Vp}, dt);
  lse_ = Tensor::empty({N}, dt);
  losses_ = Tensor::zeros({N}, dt);
  inputs_ = Tensor::zeros({N}, DType::I32);
  targets_ = Tensor::zeros({N}, DType::I32);
  dresid_ = Tensor::empty({N, C}, dt);
  dsmall_ = Tensor::empty({N, C}, dt);
  dbig_ = Tensor::empty({N, 4 * C}, dt);
  B_ = B;
  T_ = Tn;
  have_targets_ = false;
  logits_are_grad_ = false;
}

template <typename T> std::uint64_t Gpt2Model<T>::activation_bytes() const {
  if (B_ == 0) return 0;
  std::uint64_t n = 0;
  for (const Tensor* t : {&encoded_, &ln1_, &ln2_, &ln1_stats_, &ln2_stats_, &qkv_, &att_, &atty_, &resid_mid_, &fch_,
                          &fch_gelu_, &lnf_, &lnf_stats_, &logits_, &lse_, &losses_, &inputs_, &targets_, &dresid_,
                          &dsmall_, &dbig_})
    n += t->nbytes();
  return n;
}

void check_gpt2_tokens(const Tensor& tokens, std::int64_t V, const char* what) {
  check_model_tokens(tokens, V, "GPT-2", what);
}

template <typename T> void Gpt2Model<T>::embedding_forward(const EmbeddingWeights& w, const Tensor& inputs) {
  check_unit(w, cfg_, dtype_of<T>(), "embedding forward");
  check_gpt2_tokens(inputs, cfg_.V, "inputs");
  set_batch(inputs.dim(0), inputs.dim(1));
  std::copy_n(inputs.data<std::int32_t>(), inputs.numel(), inputs_.data<std::int32_t>());
  have_targets_ = false;
  logits_are_grad_ = false;
  ScopedTimer timer(profile_.enabled, profile_.embedding_s);
  ops::embedding_forward(layer_ptr<T>(encoded_, 0), inputs_.data<std::int32_t>(), ptr<T>(w.wte), ptr<T>(w.wpe), B_,
                         T_, cfg_.C);
}

template <typename T> void Gpt2Model<T>::block_forward(int l, const BlockWeights& w) {
  OS_CHECK(B_ > 0, "GPT-2 block {} forward before the embedding forward", l);
  OS_CHECK(l >= 0 && l < cfg_.L, "GPT-2 block {} out of range (L = {})", l, cfg_.L);
  check_unit(w, cfg_, dtype_of<T>(), "block " + std::to_string(l) + " forward");
  block_compute(l, w);
}

template <typename T> void Gpt2Model<T>::block_compute(int l, const BlockWeights& w) {
  const std::int64_t C = cfg_.C, N = B_ * T_, a = slot(l);
  T* x = layer_ptr<T>(encoded_, l);
  T* ln1 = layer_ptr<T>(ln1_, a);
  T* ln1s = layer_ptr<T>(ln1_stats_, a);
  T* ln2 = layer_ptr<T>(ln2_, a);
  T* ln2s = layer_ptr<T>(ln2_stats_, a);
  T* qkv = layer_ptr<T>(qkv_, a);
  T* atty = layer_ptr<T>(atty_, a);
  T* mid = layer_ptr<T>(resid_mid_, a);
  T* fch = layer_ptr<T>(fch_, a);
  T* gelu = layer_ptr<T>(fch_gelu_, a);
  T* out = layer_ptr<T>(encoded_, l + 1);
  auto& pr = profile_;
  {
    ScopedTimer t(pr.enabled, pr.layernorm_s);
    ops::layernorm_forward(ln1, ln1s, ln1s + N, x, ptr<T>(w.ln1_w), ptr<T>(w.ln1_b), N, C);
  }
  {
    ScopedTimer t(pr.enabled, pr.matmul_s);
    ops::linear_forward(qkv, ln1, ptr<T>(w.qkv_w), ptr<T>(w.qkv_b), static_cast<const T*>(nullptr), N, C, 3 * C);
  }
  {
    ScopedTimer t(pr.enabled, pr.attention_s);
    ops::attention_forward(atty, layer_ptr<T>(att_, a), qkv, B_, T_, C, cfg_.NH);
  }
  {
    ScopedTimer t(pr.enabled, pr.matmul_s);
    ops::linear_forward(mid, atty, ptr<T>(w.attn_proj_w), ptr<T>(w.attn_proj_b), x, N, C, C);
  }
  {
    ScopedTimer t(pr.enabled, pr.layernorm_s);
    ops::layernorm_forward(ln2, ln2s, ln2s + N, mid, ptr<T>(w.ln2_w), ptr<T>(w.ln2_b), N, C);
  }
  {
    ScopedTimer t(pr.enabled, pr.matmul_s);
    ops::linear_forward(fch, ln2, ptr<T>(w.fc_w), ptr<T>(w.fc_b), static_cast<const T*>(nullptr), N, C, 4 * C);
  }
  {
    ScopedTimer t(pr.enabled, pr.gelu_s);
    ops::gelu_forward(gelu, fch, N * 4 * C);
  }
  {
    ScopedTimer t(pr.enabled, pr.matmul_s);
    ops::linear_forward(out, gelu, ptr<T>(w.mlp_proj_w), ptr<T>(w.mlp_proj_b), mid, N, 4 * C, C);
  }
}

template <typename T> double Gpt2Model<T>::head_forward(const HeadWeights& w, const Tensor& targets) {
  OS_CHECK(B_ > 0, "GPT-2 head forward before the embedding forward");
  check_unit(w, cfg_, dtype_of<T>(), "head forward");
  const std::int64_t C = cfg_.C, N = B_ * T_, V = cfg_.V, Vp = cfg_.Vp;
  T* lnfs = ptr<T>(lnf_stats_);
  {
    ScopedTimer t(profile_.enabled, profile_.layernorm_s);
    ops::layernorm_forward(ptr<T>(lnf_), lnfs, lnfs + N, layer_ptr<T>(encoded_, cfg_.L), ptr<T>(w.lnf_w),
                           ptr<T>(w.lnf_b), N, C);
  }
  {
    ScopedTimer t(profile_.enabled, profile_.matmul_s);
    linalg::gemm<T>(false, true, N, Vp, C, T(1), ptr<T>(lnf_), C, ptr<T>(w.wte), C, T(0), ptr<T>(logits_), Vp);
  }
  logits_are_grad_ = false;
  have_targets_ = targets.defined();
  if (!have_targets_) {
    ScopedTimer t(profile_.enabled, profile_.cross_entropy_s);
    ops::cross_entropy_forward(ptr<T>(losses_), ptr<T>(lse_), ptr<T>(logits_), nullptr, N, V, Vp);
    return std::numeric_limits<double>::quiet_NaN();
  }
  check_model_targets(targets, cfg_.V, B_, T_, "GPT-2");
  std::copy_n(targets.data<std::int32_t>(), N, targets_.data<std::int32_t>());
  ScopedTimer t(profile_.enabled, profile_.cross_entropy_s);
  ops::cross_entropy_forward(ptr<T>(losses_), ptr<T>(lse_), ptr<T>(logits_), targets_.data<std::int32_t>(), N, V,
                             Vp);
  double sum = 0;
  for (std::int64_t i = 0; i < N; ++i) sum += static_cast<double>(ptr<T>(losses_)[i]);
  return sum / static_cast<double>(N);
}

template <typename T>
void Gpt2Model<T>::head_backward(const HeadWeights& w, const HeadWeights& g, double grad_scale) {
  OS_CHECK(have_targets_ && !logits_are_grad_,
           "GPT-2 head backward needs a head forward with targets first (and runs once per forward)");
  check_unit(w, cfg_, dtype_of<T>(), "head backward (weights)");
  check_unit(g, cfg_, dtype_of<T>(), "head backward (gradients)");
  const std::int64_t C = cfg_.C, N = B_ * T_, V = cfg_.V, Vp = cfg_.Vp;
  T* dlogits = ptr<T>(logits_);
  {
    ScopedTimer t(profile_.enabled, profile_.cross_entropy_s);
    ops::cross_entropy_backward_inplace(dlogits, ptr<T>(lse_), targets_.data<std::int32_t>(),
                                        static_cast<T>(grad_scale / static_cast<double>(N)), N, V, Vp);
  }
  logits_are_grad_ = true;
  {
    // Only the first V columns carry gradient: dwte[:V] += dlogitsᵀ·lnf, dlnf = dlogits·wte[:V].
    ScopedTimer t(profile_.enabled, profile_.matmul_s);
    linalg::gemm<T>(true, false, V, C, N, T(1), dlogits, Vp, ptr<T>(lnf_), C, T(1), ptr<T>(g.wte), C);
    linalg::gemm<T>(false, false, N, C, V, T(1), dlogits, Vp, ptr<T>(w.wte), C, T(0), ptr<T>(dsmall_), C);
  }
  dresid_.fill_zero();
  const T* lnfs = ptr<T>(lnf_stats_);
  ScopedTimer t(profile_.enabled, profile_.layernorm_s);
  ops::layernorm_backward(ptr<T>(dresid_), ptr<T>(g.lnf_w), ptr<T>(g.lnf_b), ptr<T>(dsmall_),
                          layer_ptr<T>(encoded_, cfg_.L), ptr<T>(w.lnf_w), lnfs, lnfs + N, N, C);
}

template <typename T>
void Gpt2Model<T>::block_backward(int l, const BlockWeights& w, const BlockWeights& g) {
  OS_CHECK(logits_are_grad_, "GPT-2 block {} backward before the head backward", l);
  OS_CHECK(l >= 0 && l < cfg_.L, "GPT-2 block {} out of range (L = {})", l, cfg_.L);
  check_unit(w, cfg_, dtype_of<T>(), "block " + std::to_string(l) + " backward (weights)");
  check_unit(g, cfg_, dtype_of<T>(), "block " + std::to_string(l) + " backward (gradients)");
  if (checkpoint_) block_compute(l, w);  // the block's activations again, from its input (the same bits)
  const std::int64_t C = cfg_.C, N = B_ * T_, a = slot(l);
  T* dres = ptr<T>(dresid_);
  T* dsmall = ptr<T>(dsmall_);
  T* dbig = ptr<T>(dbig_);
  const T* ln1s = layer_ptr<T>(ln1_stats_, a);
  const T* ln2s = layer_ptr<T>(ln2_stats_, a);
  auto& pr = profile_;
  // MLP half: x_out = mid + gelu(ln2(mid)·fcᵀ)·projᵀ.
  {
    ScopedTimer t(pr.enabled, pr.matmul_s);
    ops::linear_backward(dbig, ptr<T>(g.mlp_proj_w), ptr<T>(g.mlp_proj_b), dres, layer_ptr<T>(fch_gelu_, a),
                         ptr<T>(w.mlp_proj_w), N, 4 * C, C);
  }
  {
    ScopedTimer t(pr.enabled, pr.gelu_s);
    ops::gelu_backward(dbig, layer_ptr<T>(fch_, a), dbig, N * 4 * C);
  }
  {
    ScopedTimer t(pr.enabled, pr.matmul_s);
    ops::linear_backward(dsmall, ptr<T>(g.fc_w), ptr<T>(g.fc_b), dbig, layer_ptr<T>(ln2_, a), ptr<T>(w.fc_w), N, C,
                         4 * C);
  }
  {
    ScopedTimer t(pr.enabled, pr.layernorm_s);
    ops::layernorm_backward(dres, ptr<T>(g.ln2_w), ptr<T>(g.ln2_b), dsmall, layer_ptr<T>(resid_mid_, a),
                            ptr<T>(w.ln2_w), ln2s, ln2s + N, N, C);
  }
  // Attention half: mid = x + attn(ln1(x))·projᵀ.
  {
    ScopedTimer t(pr.enabled, pr.matmul_s);
    ops::linear_backward(dsmall, ptr<T>(g.attn_proj_w), ptr<T>(g.attn_proj_b), dres, layer_ptr<T>(atty_, a),
                         ptr<T>(w.attn_proj_w), N, C, C);
  }
  {
    ScopedTimer t(pr.enabled, pr.attention_s);
    ops::attention_backward(dbig, dsmall, layer_ptr<T>(qkv_, a), layer_ptr<T>(att_, a), B_, T_, C, cfg_.NH);
  }
  {
    ScopedTimer t(pr.enabled, pr.matmul_s);
    ops::linear_backward(dsmall, ptr<T>(g.qkv_w), ptr<T>(g.qkv_b), dbig, layer_ptr<T>(ln1_, a), ptr<T>(w.qkv_w), N,
                         C, 3 * C);
  }
  ScopedTimer t(pr.enabled, pr.layernorm_s);
  ops::layernorm_backward(dres, ptr<T>(g.ln1_w), ptr<T>(g.ln1_b), dsmall, layer_ptr<T>(encoded_, l), ptr<T>(w.ln1_w),
                          ln1s, ln1s + N, N, C);
}

template <typename T> void Gpt2Model<T>::embedding_backward(const EmbeddingWeights& g) {
  OS_CHECK(logits_are_grad_, "GPT-2 embedding backward before the head backward");
  check_unit(g, cfg_, dtype_of<T>(), "embedding backward (gradients)");
  ScopedTimer t(profile_.enabled, profile_.embedding_s);
  ops::embedding_backward(ptr<T>(g.wte), ptr<T>(g.wpe), ptr<T>(dresid_), inputs_.data<std::int32_t>(), B_, T_,
                          cfg_.C);
}

template <typename T>
double Gpt2Model<T>::forward(const Gpt2Params& p, const Tensor& inputs, const Tensor& targets) {
  embedding_forward(p.embedding(), inputs);
  for (int l = 0; l < cfg_.L; ++l) block_forward(l, p.block(l));
  return head_forward(p.head(), targets);
}

template <typename T> void Gpt2Model<T>::backward(const Gpt2Params& p, const Gpt2Params& g, double grad_scale) {
  head_backward(p.head(), g.head(), grad_scale);
  for (int l = static_cast<int>(cfg_.L) - 1; l >= 0; --l) block_backward(l, p.block(l), g.block(l));
  embedding_backward(g.embedding());
}

template <typename T> Tensor Gpt2Model<T>::logits() const {
  OS_CHECK(B_ > 0, "GPT-2 logits before any forward");
  return logits_.reshape({B_, T_, cfg_.Vp});
}

template <typename T> Tensor Gpt2Model<T>::losses() const {
  OS_CHECK(B_ > 0, "GPT-2 losses before any forward");
  return losses_.reshape({B_, T_});
}

template class Gpt2Model<float>;
template class Gpt2Model<double>;

}  // namespace orthoshard
