// LLaMA on the GPU, unit by unit (see the header). Mirrors models/llama/model.cpp step for step: one packed
// q | k | v GEMM each way, rotary embeddings in place on q and k, grouped-query attention, SwiGLU; residuals as
// a GEMM then residual_add.
#include "models/llama/cuda/device_model.hpp"
#include "models/llama/unit_runner.hpp"

#include "models/device_runner.hpp"
#include "models/gpt2/cuda/embedding_kernels.hpp"
#include "models/layers/cuda/attention.hpp"
#include "models/layers/cuda/flash_attention.hpp"
#include "models/layers/cuda/layer_kernels.hpp"
#include "models/layers/cuda/linear.hpp"
#include "models/layers/rope.hpp"
#include "runtime/core/error.hpp"
#include "runtime/cuda/check.hpp"
#include "runtime/cuda/device_buffer.hpp"

#include <algorithm>
#include <type_traits>

namespace orthoshard {
namespace {
constexpr std::string_view kName = "LLaMA";
}  // namespace

template <typename T>
struct DeviceLlamaModel<T>::Buffers {
  cuda::DeviceBuffer<std::int32_t> inputs, targets;              // (N)
  cuda::DeviceBuffer<std::int32_t> order, starts, bucket_token;  // embedding backward buckets
  std::int64_t buckets = 0;
  std::vector<std::int32_t> host_inputs;
  cuda::DeviceBuffer<T> encoded;              // (L+1, N, C)
  cuda::DeviceBuffer<T> ln1, ln2;             // (A, N, C)
  cuda::DeviceBuffer<float> rstd1, rstd2;     // (A, N)
  cuda::DeviceBuffer<T> qkv;                  // (A, N, W) after the rotary embedding
  cuda::DeviceBuffer<T> att;                  // (A, B, NH, T, T) (GEMM attention)
  cuda::DeviceBuffer<float> att_stats, att_delta;  // flash attention
  cuda::DeviceBuffer<T> atty, mid;            // (A, N, C)
  cuda::DeviceBuffer<T> gate, up, act;        // (A, N, FF)
  cuda::DeviceBuffer<T> lnf;                  // (N, C)
  cuda::DeviceBuffer<float> rstdf;            // (N)
  cuda::DeviceBuffer<T> logits;               // (N, Vp)
  cuda::DeviceBuffer<float> lse, losses;      // (N)
  cuda::DeviceBuffer<T> dres, dsmall;         // (N, C)
  cuda::DeviceBuffer<T> dbig, dbig2;          // (N, max(FF, W)), (N, FF)
  cuda::DeviceBuffer<T> wqkv, dwqkv;          // (W, C)
  cuda::DeviceBuffer<float> scratch;
  cuda::DeviceBuffer<T> attn_ws;
  cuda::DeviceBuffer<float> rope_cos, rope_sin;  // (maxT, hs/2)
};

template <typename T>
DeviceLlamaModel<T>::DeviceLlamaModel(LlamaConfig cfg, cuda::Blas& blas, cudaStream_t stream,
                                      AttentionKernels attention, bool checkpoint_blocks)
    : cfg_(std::move(cfg)), blas_(blas), stream_(stream), buf_(std::make_unique<Buffers>()),
      checkpoint_(checkpoint_blocks) {
  cfg_.validate();
  const bool applies = std::is_same_v<T, __nv_bfloat16> && cuda::flash_attention_supported(cfg_.C, cfg_.NH);
  if (attention == AttentionKernels::Flash && !applies)
    throw UsageError(fmt::format("attention = \"flash\" needs a bf16 LLaMA with head size 16, 32, 64 or 128 (this "
                                 "one: {}, head size {}); use \"gemm\" or \"auto\"",
                                 std::is_same_v<T, float> ? "f32" : "bf16", cfg_.head_size()));
  flash_ = applies && attention != AttentionKernels::Gemm;
}

template <typename T> DeviceLlamaModel<T>::~DeviceLlamaModel() = default;

template <typename T> void DeviceLlamaModel<T>::set_batch(std::int64_t B, std::int64_t Tn) {
  OS_CHECK(B > 0 && Tn > 0, "LLaMA (cuda): batch {} x {} is empty", B, Tn);
  cfg_.check_sequence_length(Tn);
  if (B == B_ && Tn == T_) return;
  OS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  const std::int64_t L = cfg_.L, C = cfg_.C, N = B * Tn, A = checkpoint_ ? 1 : L, W = cfg_.qkv_width(), FF = cfg_.FF;
  const std::int64_t NH = cfg_.NH, NKV = cfg_.NKV, hs = cfg_.head_size();
  auto n = [](std::int64_t v) { return static_cast<std::size_t>(v); };
  Buffers& b = *buf_;
  b = Buffers{};
  b.inputs = cuda::DeviceBuffer<std::int32_t>(n(N));
  b.targets = cuda::DeviceBuffer<std::int32_t>(n(N));
  b.order = cuda::DeviceBuffer<std::int32_t>(n(N));
  b.starts = cuda::DeviceBuffer<std::int32_t>(n(N + 1));
  b.bucket_token = cuda::DeviceBuffer<std::int32_t>(n(N));
  b.encoded = cuda::DeviceBuffer<T>(n((L + 1) * N * C));
  b.ln1 = cuda::DeviceBuffer<T>(n(A * N * C));
  b.ln2 = cuda::DeviceBuffer<T>(n(A * N * C));
  b.rstd1 = cuda::DeviceBuffer<float>(n(A * N));
  b.rstd2 = cuda::DeviceBuffer<float>(n(A * N));
  b.qkv = cuda::DeviceBuffer<T>(n(A * N * W));
  if (flash_) {
    b.att_stats = cuda::DeviceBuffer<float>(n(A) * cuda::flash_attention_stats_floats(B, Tn, NH));
    b.att_delta = cuda::DeviceBuffer<float>(cuda::flash_attention_stats_floats(B, Tn, NH));
  } else {
    b.att = cuda::DeviceBuffer<T>(n(A * B * NH * Tn * Tn));
    b.attn_ws = cuda::DeviceBuffer<T>(std::max(cuda::gqa_attention_forward_workspace(B, Tn, NH, NKV, hs),
                                               cuda::gqa_attention_backward_workspace(B, Tn, NH, NKV, hs)));
  }
  b.atty = cuda::DeviceBuffer<T>(n(A * N * C));
  b.mid = cuda::DeviceBuffer<T>(n(A * N * C));
  b.gate = cuda::DeviceBuffer<T>(n(A * N * FF));
  b.up = cuda::DeviceBuffer<T>(n(A * N * FF));
  b.act = cuda::DeviceBuffer<T>(n(A * N * FF));
  b.lnf = cuda::DeviceBuffer<T>(n(N * C));
  b.rstdf = cuda::DeviceBuffer<float>(n(N));
  b.logits = cuda::DeviceBuffer<T>(n(N * cfg_.Vp));
  b.lse = cuda::DeviceBuffer<float>(n(N));
  b.losses = cuda::DeviceBuffer<float>(n(N));
  b.dres = cuda::DeviceBuffer<T>(n(N * C));
  b.dsmall = cuda::DeviceBuffer<T>(n(N * C));
  b.dbig = cuda::DeviceBuffer<T>(n(N * std::max(FF, W)));
  b.dbig2 = cuda::DeviceBuffer<T>(n(N * FF));
  b.wqkv = cuda::DeviceBuffer<T>(n(W * C));
  b.dwqkv = cuda::DeviceBuffer<T>(n(W * C));
  b.scratch = cuda::DeviceBuffer<float>(std::max({cuda::column_sums_scratch_floats(N, C, 2),
                                                  cuda::linear_backward_scratch_floats(N, C),
                                                  cuda::linear_backward_scratch_floats(N, FF)}));
  const ops::RopeTable<float> table(cfg_.maxT, hs, cfg_.rope_theta);
  b.rope_cos = cuda::DeviceBuffer<float>(table.cos.size());
  b.rope_sin = cuda::DeviceBuffer<float>(table.sin.size());
  b.rope_cos.copy_from_host(table.cos, stream_);
  b.rope_sin.copy_from_host(table.sin, stream_);
  OS_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the tables' host vectors go out of scope
  B_ = B;
  T_ = Tn;
  have_targets_ = false;
  logits_are_grad_ = false;
}

template <typename T> float* DeviceLlamaModel<T>::att_stats(int l) {
  return buf_->att_stats.data() +
         static_cast<std::size_t>(slot(l)) * cuda::flash_attention_stats_floats(B_, T_, cfg_.NH);
}

template <typename T> std::size_t DeviceLlamaModel<T>::activation_bytes() const {
  const Buffers& b = *buf_;
  return b.encoded.bytes() + b.ln1.bytes() + b.ln2.bytes() + b.rstd1.bytes() + b.rstd2.bytes() + b.qkv.bytes() +
         b.att.bytes() + b.att_stats.bytes() + b.att_delta.bytes() + b.atty.bytes() + b.mid.bytes() + b.gate.bytes() +
         b.up.bytes() + b.act.bytes() + b.lnf.bytes() + b.rstdf.bytes() + b.logits.bytes() + b.lse.bytes() +
         b.losses.bytes() + b.dres.bytes() + b.dsmall.bytes() + b.dbig.bytes() + b.dbig2.bytes() + b.wqkv.bytes() +
         b.dwqkv.bytes() + b.scratch.bytes() + b.attn_ws.bytes();
}

template <typename T>
void DeviceLlamaModel<T>::embedding_forward(const LlamaEmbeddingWeights& w, const Tensor& inputs) {
  T* embed = device_tensor<T>(w.embed, {cfg_.Vp, cfg_.C}, kName, "embedding forward", "embed_tokens");
  check_model_tokens(inputs, cfg_.V, kName, "inputs");
  set_batch(inputs.dim(0), inputs.dim(1));
  Buffers& b = *buf_;
  const std::int64_t N = B_ * T_;
  const std::int32_t* tok = inputs.data<std::int32_t>();
  b.host_inputs.assign(tok, tok + N);
  b.inputs.copy_from_host(b.host_inputs, stream_);
  const cuda::EmbeddingBuckets bk = cuda::bucket_tokens(b.host_inputs.data(), N);
  b.order.copy_from_host(bk.order, stream_);
  b.starts.copy_from_host(bk.starts, stream_);
  b.bucket_token.copy_from_host(bk.bucket_token, stream_);
  b.buckets = bk.buckets();
  have_targets_ = false;
  logits_are_grad_ = false;
  cuda::embedding_forward<T>(b.encoded.data(), b.inputs.data(), embed, nullptr, B_, T_, cfg_.C, stream_);
}

template <typename T> void DeviceLlamaModel<T>::pack_qkv(const LlamaBlockWeights& w, const std::string& u) {
  const std::int64_t C = cfg_.C, KV = cfg_.kv_dim();
  T* dst = buf_->wqkv.data();
  const std::pair<T*, std::int64_t> parts[] = {{device_tensor<T>(w.wq, {C, C}, kName, u, "q_proj"), C * C},
                                               {device_tensor<T>(w.wk, {KV, C}, kName, u, "k_proj"), KV * C},
                                               {device_tensor<T>(w.wv, {KV, C}, kName, u, "v_proj"), KV * C}};
  for (const auto& [src, count] : parts) {
    OS_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(count) * sizeof(T), cudaMemcpyDeviceToDevice,
                                  stream_));
    dst += count;
  }
}

template <typename T> void DeviceLlamaModel<T>::block_forward(int l, const LlamaBlockWeights& w) {
  OS_CHECK(B_ > 0, "LLaMA (cuda) layer {} forward before the embedding forward", l);
  OS_CHECK(l >= 0 && l < cfg_.L, "LLaMA (cuda) layer {} out of range (L = {})", l, cfg_.L);
  block_compute(l, w);
}

template <typename T> void DeviceLlamaModel<T>::block_compute(int l, const LlamaBlockWeights& w) {
  const std::int64_t C = cfg_.C, N = B_ * T_, a = slot(l), W = cfg_.qkv_width(), FF = cfg_.FF, hs = cfg_.head_size();
  const std::string u = "layer " + std::to_string(l) + " forward";
  Buffers& b = *buf_;
  T* x = b.encoded.data() + l * N * C;
  T* ln1 = b.ln1.data() + a * N * C;
  T* qkv = b.qkv.data() + a * N * W;
  T* atty = b.atty.data() + a * N * C;
  T* mid = b.mid.data() + a * N * C;
  T* ln2 = b.ln2.data() + a * N * C;
  T* gate = b.gate.data() + a * N * FF;
  T* up = b.up.data() + a * N * FF;
  T* act = b.act.data() + a * N * FF;
  T* out = b.encoded.data() + (l + 1) * N * C;
  const float eps = static_cast<float>(cfg_.norm_eps);
  cuda::rmsnorm_forward(ln1, b.rstd1.data() + a * N, x, device_tensor<T>(w.attn_norm, {C}, kName, u, "input_layernorm"),
                        N, C, eps, stream_);
  pack_qkv(w, u);
  cuda::gemm<T>(blas_, false, true, N, W, C, 1.f, ln1, C, b.wqkv.data(), C, 0.f, qkv, W, stream_);
  cuda::rope_apply(qkv, b.rope_cos.data(), b.rope_sin.data(), B_, T_, W, cfg_.NH, hs, false, stream_);
  cuda::rope_apply(qkv + C, b.rope_cos.data(), b.rope_sin.data(), B_, T_, W, cfg_.NKV, hs, false, stream_);
  if (flash_) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>)
      cuda::flash_attention_forward(atty, att_stats(l), qkv, B_, T_, C, cfg_.NH, cfg_.NKV, stream_);
  } else {
    cuda::gqa_attention_forward(blas_, atty, b.att.data() + a * B_ * cfg_.NH * T_ * T_, b.attn_ws.data(), qkv, B_, T_,
                                cfg_.NH, cfg_.NKV, hs, stream_);
  }
  cuda::gemm<T>(blas_, false, true, N, C, C, 1.f, atty, C, device_tensor<T>(w.wo, {C, C}, kName, u, "o_proj"), C, 0.f,
                mid, C, stream_);
  cuda::residual_add(mid, mid, x, N * C, stream_);
  cuda::rmsnorm_forward(ln2, b.rstd2.data() + a * N, mid,
                        device_tensor<T>(w.mlp_norm, {C}, kName, u, "post_attention_layernorm"), N, C, eps, stream_);
  cuda::gemm<T>(blas_, false, true, N, FF, C, 1.f, ln2, C, device_tensor<T>(w.w_gate, {FF, C}, kName, u, "gate_proj"),
                C, 0.f, gate, FF, stream_);
  cuda::gemm<T>(blas_, false, true, N, FF, C, 1.f, ln2, C, device_tensor<T>(w.w_up, {FF, C}, kName, u, "up_proj"), C,
                0.f, up, FF, stream_);
  cuda::swiglu_forward(act, gate, up, N * FF, stream_);
  cuda::gemm<T>(blas_, false, true, N, C, FF, 1.f, act, FF, device_tensor<T>(w.w_down, {C, FF}, kName, u, "down_proj"),
                FF, 0.f, out, C, stream_);
  cuda::residual_add(out, out, mid, N * C, stream_);
}

template <typename T>
void DeviceLlamaModel<T>::head_forward_async(const LlamaHeadWeights& w, const Tensor& targets) {
  OS_CHECK(B_ > 0, "LLaMA (cuda) head forward before the embedding forward");
  const std::int64_t C = cfg_.C, N = B_ * T_, V = cfg_.V, Vp = cfg_.Vp;
  Buffers& b = *buf_;
  T* head = device_tensor<T>(w.head, {Vp, C}, kName, "head forward", "lm_head");
  cuda::rmsnorm_forward(b.lnf.data(), b.rstdf.data(), b.encoded.data() + cfg_.L * N * C,
                        device_tensor<T>(w.norm, {C}, kName, "head forward", "norm"), N, C,
                        static_cast<float>(cfg_.norm_eps), stream_);
  cuda::gemm<T>(blas_, false, true, N, Vp, C, 1.f, b.lnf.data(), C, head, C, 0.f, b.logits.data(), Vp, stream_);
  logits_are_grad_ = false;
  have_targets_ = targets.defined();
  if (!have_targets_) {
    cuda::cross_entropy_forward<T>(b.losses.data(), b.lse.data(), b.logits.data(), nullptr, N, V, Vp, stream_);
    return;
  }
  check_model_targets(targets, V, B_, T_, kName);
  OS_CUDA_CHECK(cudaMemcpyAsync(b.targets.data(), targets.data<std::int32_t>(), static_cast<std::size_t>(N) * 4,
                                cudaMemcpyHostToDevice, stream_));
  cuda::cross_entropy_forward<T>(b.losses.data(), b.lse.data(), b.logits.data(), b.targets.data(), N, V, Vp, stream_);
}

template <typename T> void DeviceLlamaModel<T>::copy_losses_async(float* dst) {
  OS_CHECK(have_targets_, "LLaMA (cuda) copy_losses_async needs a head forward with targets");
  OS_CUDA_CHECK(cudaMemcpyAsync(dst, buf_->losses.data(), static_cast<std::size_t>(B_ * T_) * sizeof(float),
                                cudaMemcpyDeviceToHost, stream_));
}

template <typename T> std::vector<float> DeviceLlamaModel<T>::losses_to_host() {
  OS_CHECK(B_ > 0, "LLaMA (cuda) losses before any forward");
  return buf_->losses.to_host(stream_);
}

template <typename T> std::vector<float> DeviceLlamaModel<T>::logits_to_host() {
  OS_CHECK(B_ > 0 && !logits_are_grad_, "LLaMA (cuda) logits: none (no forward yet, or the backward overwrote them)");
  const std::vector<T> raw = buf_->logits.to_host(stream_);
  std::vector<float> out(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) out[i] = static_cast<float>(raw[i]);
  return out;
}

template <typename T>
void DeviceLlamaModel<T>::head_backward(const LlamaHeadWeights& w, const LlamaHeadWeights& g, double grad_scale) {
  OS_CHECK(have_targets_ && !logits_are_grad_,
           "LLaMA (cuda) head backward needs a head forward with targets first (and runs once per forward)");
  const std::int64_t C = cfg_.C, N = B_ * T_, V = cfg_.V, Vp = cfg_.Vp;
  Buffers& b = *buf_;
  T* head = device_tensor<T>(w.head, {Vp, C}, kName, "head backward (weights)", "lm_head");
  T* dhead = device_tensor<T>(g.head, {Vp, C}, kName, "head backward (gradients)", "lm_head");
  T* dlogits = b.logits.data();
  cuda::cross_entropy_backward_inplace<T>(dlogits, b.lse.data(), b.targets.data(),
                                          static_cast<float>(grad_scale / static_cast<double>(N)), N, V, Vp, stream_);
  logits_are_grad_ = true;
  // All Vp columns, as GPT-2's head: the padding columns of dlogits are zeros (see the GPT-2 device model).
  cuda::gemm<T>(blas_, true, false, Vp, C, N, 1.f, dlogits, Vp, b.lnf.data(), C, 1.f, dhead, C, stream_);
  cuda::gemm<T>(blas_, false, false, N, C, Vp, 1.f, dlogits, Vp, head, C, 0.f, b.dsmall.data(), C, stream_);
  b.dres.zero(stream_);
  cuda::rmsnorm_backward(b.dres.data(), device_tensor<T>(g.norm, {C}, kName, "head backward (gradients)", "norm"),
                         b.scratch.data(), b.dsmall.data(), b.encoded.data() + cfg_.L * N * C,
                         device_tensor<T>(w.norm, {C}, kName, "head backward (weights)", "norm"), b.rstdf.data(), N, C,
                         stream_);
}

template <typename T>
void DeviceLlamaModel<T>::block_backward(int l, const LlamaBlockWeights& w, const LlamaBlockWeights& g) {
  OS_CHECK(logits_are_grad_, "LLaMA (cuda) layer {} backward before the head backward", l);
  OS_CHECK(l >= 0 && l < cfg_.L, "LLaMA (cuda) layer {} out of range (L = {})", l, cfg_.L);
  if (checkpoint_) block_compute(l, w);
  const std::int64_t C = cfg_.C, N = B_ * T_, a = slot(l), W = cfg_.qkv_width(), KV = cfg_.kv_dim(), FF = cfg_.FF;
  const std::int64_t hs = cfg_.head_size();
  const std::string uw = "layer " + std::to_string(l) + " backward (weights)";
  const std::string ug = "layer " + std::to_string(l) + " backward (gradients)";
  Buffers& b = *buf_;
  T* dres = b.dres.data();
  T* dsmall = b.dsmall.data();
  T* dbig = b.dbig.data();
  T* dup = b.dbig2.data();
  float* scratch = b.scratch.data();
  T* ln1 = b.ln1.data() + a * N * C;
  T* ln2 = b.ln2.data() + a * N * C;
  // MLP half.
  cuda::linear_backward<T>(blas_, dbig, device_tensor<T>(g.w_down, {C, FF}, kName, ug, "down_proj"), nullptr, scratch,
                           dres, b.act.data() + a * N * FF, device_tensor<T>(w.w_down, {C, FF}, kName, uw, "down_proj"),
                           nullptr, N, FF, C, stream_);
  cuda::swiglu_backward(dbig, dup, dbig, b.gate.data() + a * N * FF, b.up.data() + a * N * FF, N * FF, stream_);
  T* w_up = device_tensor<T>(w.w_up, {FF, C}, kName, uw, "up_proj");
  cuda::linear_backward<T>(blas_, dsmall, device_tensor<T>(g.w_gate, {FF, C}, kName, ug, "gate_proj"), nullptr,
                           scratch, dbig, ln2, device_tensor<T>(w.w_gate, {FF, C}, kName, uw, "gate_proj"), nullptr, N, C,
                           FF, stream_);
  cuda::gemm<T>(blas_, false, false, N, C, FF, 1.f, dup, FF, w_up, C, 1.f, dsmall, C, stream_);
  cuda::gemm<T>(blas_, true, false, FF, C, N, 1.f, dup, FF, ln2, C, 1.f,
                device_tensor<T>(g.w_up, {FF, C}, kName, ug, "up_proj"), C, stream_);
  cuda::rmsnorm_backward(dres, device_tensor<T>(g.mlp_norm, {C}, kName, ug, "post_attention_layernorm"), scratch,
                         dsmall, b.mid.data() + a * N * C,
                         device_tensor<T>(w.mlp_norm, {C}, kName, uw, "post_attention_layernorm"),
                         b.rstd2.data() + a * N, N, C, stream_);
  // Attention half.
  cuda::linear_backward<T>(blas_, dsmall, device_tensor<T>(g.wo, {C, C}, kName, ug, "o_proj"), nullptr, scratch, dres,
                           b.atty.data() + a * N * C, device_tensor<T>(w.wo, {C, C}, kName, uw, "o_proj"), nullptr, N, C,
                           C, stream_);
  T* qkv = b.qkv.data() + a * N * W;
  T* dqkv = dbig;  // (N, W)
  if (flash_) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>)
      cuda::flash_attention_backward(dqkv, b.att_delta.data(), dsmall, qkv, b.atty.data() + a * N * C, att_stats(l),
                                     B_, T_, C, cfg_.NH, cfg_.NKV, stream_);
  } else {
    cuda::gqa_attention_backward(blas_, dqkv, b.attn_ws.data(), dsmall, qkv,
                                 b.att.data() + a * B_ * cfg_.NH * T_ * T_, B_, T_, cfg_.NH, cfg_.NKV, hs, stream_);
  }
  cuda::rope_apply(dqkv, b.rope_cos.data(), b.rope_sin.data(), B_, T_, W, cfg_.NH, hs, true, stream_);
  cuda::rope_apply(dqkv + C, b.rope_cos.data(), b.rope_sin.data(), B_, T_, W, cfg_.NKV, hs, true, stream_);
  pack_qkv(w, uw);
  cuda::gemm<T>(blas_, false, false, N, C, W, 1.f, dqkv, W, b.wqkv.data(), C, 0.f, dsmall, C, stream_);
  cuda::gemm<T>(blas_, true, false, W, C, N, 1.f, dqkv, W, ln1, C, 0.f, b.dwqkv.data(), C, stream_);
  T* dq = device_tensor<T>(g.wq, {C, C}, kName, ug, "q_proj");
  T* dk = device_tensor<T>(g.wk, {KV, C}, kName, ug, "k_proj");
  T* dv = device_tensor<T>(g.wv, {KV, C}, kName, ug, "v_proj");
  cuda::residual_add(dq, dq, b.dwqkv.data(), C * C, stream_);
  cuda::residual_add(dk, dk, b.dwqkv.data() + C * C, KV * C, stream_);
  cuda::residual_add(dv, dv, b.dwqkv.data() + (C + KV) * C, KV * C, stream_);
  cuda::rmsnorm_backward(dres, device_tensor<T>(g.attn_norm, {C}, kName, ug, "input_layernorm"), scratch, dsmall,
                         b.encoded.data() + l * N * C, device_tensor<T>(w.attn_norm, {C}, kName, uw, "input_layernorm"),
                         b.rstd1.data() + a * N, N, C, stream_);
}

template <typename T> void DeviceLlamaModel<T>::embedding_backward(const LlamaEmbeddingWeights& g) {
  OS_CHECK(logits_are_grad_, "LLaMA (cuda) embedding backward before the head backward");
  Buffers& b = *buf_;
  const cuda::EmbeddingBucketsView view{b.order.data(), b.starts.data(), b.bucket_token.data(), b.buckets};
  cuda::embedding_backward<T>(device_tensor<T>(g.embed, {cfg_.Vp, cfg_.C}, kName, "embedding backward", "embed_tokens"),
                              nullptr, b.dres.data(), view, B_, T_, cfg_.C, stream_);
}

template class DeviceLlamaModel<float>;
template class DeviceLlamaModel<__nv_bfloat16>;

// ---------------------------------------------------------------- the runner

namespace {

// Each micro-batch's per-token losses are copied asynchronously into pinned host memory and read only when the
// trainer asks for the step's losses, so the host never waits for a micro-batch.
template <typename T>
class LlamaDeviceRunner final : public LlamaUnitRunner<DeviceLlamaModel<T>> {
  using Base = LlamaUnitRunner<DeviceLlamaModel<T>>;

 public:
  LlamaDeviceRunner(const LlamaConfig& cfg, cuda::Blas& blas, cudaStream_t stream, AttentionKernels attention,
                    bool checkpoint_blocks)
      : Base(cfg, blas, stream, attention, checkpoint_blocks) {}
  void set_batch(std::int64_t B, std::int64_t Tn, int micro_batches) override {
    this->net_.set_batch(B, Tn);
    losses_.resize(B * Tn, micro_batches);
  }
  double take_loss_sum() override { return losses_.take_sum(this->net_.stream()); }
  std::string describe() const override {
    return fmt::format("attention {}", this->net_.flash_attention() ? "flash (fused)" : "cuBLAS GEMMs");
  }

 private:
  void head_forward(const LlamaHeadWeights& w, const Tensor& targets) override {
    this->net_.head_forward_async(w, targets);
    this->net_.copy_losses_async(losses_.next(kName));
  }
  DeviceLossSlots losses_;
};

}  // namespace

std::unique_ptr<UnitRunner> make_llama_device_runner(const LlamaConfig& cfg, cuda::Blas& blas, cudaStream_t stream,
                                                     DType dtype, AttentionKernels attention, bool checkpoint_blocks) {
  if (dtype == DType::BF16)
    return std::make_unique<LlamaDeviceRunner<__nv_bfloat16>>(cfg, blas, stream, attention, checkpoint_blocks);
  OS_CHECK(dtype == DType::F32, "LLaMA (cuda): compute dtype {} is not f32 or bf16", dtype_name(dtype));
  return std::make_unique<LlamaDeviceRunner<float>>(cfg, blas, stream, attention, checkpoint_blocks);
}

}  // namespace orthoshard
