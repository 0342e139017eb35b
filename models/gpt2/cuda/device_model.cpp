// GPT-2 on the GPU, unit by unit (see the header). Mirrors models/gpt2/model.cpp step for step; the fused
// residual of the CPU linear layer is a GEMM then residual_add here, and the MLP's GELU rides on cuBLASLt's
// GELU_AUX_BIAS / DGELU epilogues where available. Attention runs the fused kernels of flash_attention.hpp
// (bf16, where the head size allows; the forward keeps only each row's log-sum-exp) or cuBLAS batched GEMMs
// around softmax kernels (keeping the (B, NH, T, T) probabilities per layer).
#include "models/gpt2/cuda/device_model.hpp"

#include "models/gpt2/model.hpp"
#include "runtime/core/error.hpp"
#include "models/layers/cuda/attention.hpp"
#include "runtime/cuda/check.hpp"
#include "models/layers/cuda/flash_attention.hpp"
#include "models/layers/cuda/linear.hpp"
#include "models/layers/cuda/layer_kernels.hpp"
#include "models/gpt2/cuda/embedding_kernels.hpp"

#include <algorithm>
#include <type_traits>

namespace orthoshard {
namespace {

template <typename T> constexpr DType dtype_for();
template <> constexpr DType dtype_for<float>() { return DType::F32; }
template <> constexpr DType dtype_for<__nv_bfloat16>() { return DType::BF16; }

// A device tensor of the model's dtype and the expected shape, as a pointer; throws naming the unit and field.
template <typename T>
T* dev(const Tensor& t, const Shape& shape, const std::string& unit, const char* field) {
  if (!t.defined() || t.device() != Device::CUDA || t.dtype() != dtype_for<T>() || t.shape() != shape ||
      !t.is_contiguous())
    throw Error(fmt::format("GPT-2 (cuda) {}: {} must be a contiguous {} {} tensor on the GPU, got {}", unit, field,
                            dtype_name(dtype_for<T>()), shape_str(shape), t.defined() ? t.describe() : "nothing"));
  return static_cast<T*>(t.raw());
}

}  // namespace

template <typename T>
struct DeviceGpt2Model<T>::Buffers {
  cuda::DeviceBuffer<std::int32_t> inputs, targets;              // (N)
  cuda::DeviceBuffer<std::int32_t> order, starts, bucket_token;  // embedding backward buckets
  std::int64_t buckets = 0;
  std::vector<std::int32_t> host_inputs;
  cuda::DeviceBuffer<T> encoded;             // (L+1, N, C)
  cuda::DeviceBuffer<T> ln1, ln2;            // (L, N, C)
  cuda::DeviceBuffer<float> ln1_stats, ln2_stats;  // (L, 2, N): mean, rstd
  cuda::DeviceBuffer<T> qkv;                 // (L, N, 3C)
  cuda::DeviceBuffer<T> att;                 // (L, B, NH, T, T) (GEMM attention)
  cuda::DeviceBuffer<float> att_stats;       // (L, B, NH, T) row log-sum-exps (flash attention)
  cuda::DeviceBuffer<float> att_delta;       // (B, NH, T) the flash backward's workspace
  cuda::DeviceBuffer<T> atty, mid;           // (L, N, C)
  cuda::DeviceBuffer<T> fch, fch_gelu;       // (L, N, 4C)
  cuda::DeviceBuffer<T> lnf;                 // (N, C)
  cuda::DeviceBuffer<float> lnf_stats;       // (2, N)
  cuda::DeviceBuffer<T> logits;              // (N, Vp); the gradient after head_backward
  cuda::DeviceBuffer<float> lse, losses;     // (N)
  cuda::DeviceBuffer<T> dres, dsmall;        // (N, C)
  cuda::DeviceBuffer<T> dbig;                // (N, 4C) (also dqkv (N, 3C))
  cuda::DeviceBuffer<float> scratch;         // column-sum partials
  cuda::DeviceBuffer<T> attn_ws;             // attention workspace
};

template <typename T>
DeviceGpt2Model<T>::DeviceGpt2Model(Gpt2Config cfg, cuda::Blas& blas, cudaStream_t stream, AttentionKernels attention,
                                    bool checkpoint_blocks)
    : cfg_(std::move(cfg)),
      blas_(blas),
      stream_(stream),
      buf_(std::make_unique<Buffers>()),
      checkpoint_(checkpoint_blocks) {
  cfg_.validate();
  const bool applies = std::is_same_v<T, __nv_bfloat16> && cuda::flash_attention_supported(cfg_.C, cfg_.NH);
  if (attention == AttentionKernels::Flash && !applies)
    throw UsageError(fmt::format(
        "attention = \"flash\" needs a bf16 model with head size 16, 32, 64 or 128 (this one: {}, head size {}); "
        "use \"gemm\" or \"auto\"",
        std::is_same_v<T, float> ? "f32" : "bf16", cfg_.head_size()));
  flash_ = applies && attention != AttentionKernels::Gemm;
}

template <typename T> DeviceGpt2Model<T>::~DeviceGpt2Model() = default;

template <typename T> void DeviceGpt2Model<T>::set_batch(std::int64_t B, std::int64_t Tn) {
  OS_CHECK(B > 0 && Tn > 0, "GPT-2 (cuda): batch {} x {} is empty", B, Tn);
  cfg_.check_sequence_length(Tn);
  if (B == B_ && Tn == T_) return;
  OS_CUDA_CHECK(cudaStreamSynchronize(stream_));  // old buffers may still be in use
  const std::int64_t L = cfg_.L, C = cfg_.C, N = B * Tn, A = checkpoint_ ? 1 : L;  // activation slots
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
  b.ln1_stats = cuda::DeviceBuffer<float>(n(A * 2 * N));
  b.ln2_stats = cuda::DeviceBuffer<float>(n(A * 2 * N));
  b.qkv = cuda::DeviceBuffer<T>(n(A * N * 3 * C));
  if (flash_) {
    b.att_stats = cuda::DeviceBuffer<float>(n(A) * cuda::flash_attention_stats_floats(B, Tn, cfg_.NH));
    b.att_delta = cuda::DeviceBuffer<float>(cuda::flash_attention_stats_floats(B, Tn, cfg_.NH));
  } else {
    b.att = cuda::DeviceBuffer<T>(n(A * B * cfg_.NH * Tn * Tn));
  }
  b.atty = cuda::DeviceBuffer<T>(n(A * N * C));
  b.mid = cuda::DeviceBuffer<T>(n(A * N * C));
  b.fch = cuda::DeviceBuffer<T>(n(A * N * 4 * C));
  b.fch_gelu = cuda::DeviceBuffer<T>(n(A * N * 4 * C));
  b.lnf = cuda::DeviceBuffer<T>(n(N * C));
  b.lnf_stats = cuda::DeviceBuffer<float>(n(2 * N));
  b.logits = cuda::DeviceBuffer<T>(n(N * cfg_.Vp));
  b.lse = cuda::DeviceBuffer<float>(n(N));
  b.losses = cuda::DeviceBuffer<float>(n(N));
  b.dres = cuda::DeviceBuffer<T>(n(N * C));
  b.dsmall = cuda::DeviceBuffer<T>(n(N * C));
  b.dbig = cuda::DeviceBuffer<T>(n(N * 4 * C));
  const std::size_t scratch = std::max({cuda::column_sums_scratch_floats(N, C, 2),
                                        cuda::linear_backward_scratch_floats(N, 4 * C),
                                        cuda::linear_backward_scratch_floats(N, 3 * C),
                                        cuda::linear_backward_scratch_floats(N, C)});
  b.scratch = cuda::DeviceBuffer<float>(scratch);
  if (!flash_)
    b.attn_ws = cuda::DeviceBuffer<T>(std::max(cuda::attention_forward_workspace(B, Tn, C, cfg_.NH),
                                               cuda::attention_backward_workspace(B, Tn, C, cfg_.NH)));
  B_ = B;
  T_ = Tn;
  have_targets_ = false;
  logits_are_grad_ = false;
}

template <typename T> float* DeviceGpt2Model<T>::att_stats(int l) {
  return buf_->att_stats.data() + static_cast<std::size_t>(slot(l)) * cuda::flash_attention_stats_floats(B_, T_, cfg_.NH);
}

template <typename T> std::size_t DeviceGpt2Model<T>::activation_bytes() const {
  const Buffers& b = *buf_;
  return b.encoded.bytes() + b.ln1.bytes() + b.ln2.bytes() + b.ln1_stats.bytes() + b.ln2_stats.bytes() +
         b.qkv.bytes() + b.att.bytes() + b.att_stats.bytes() + b.att_delta.bytes() + b.atty.bytes() + b.mid.bytes() +
         b.fch.bytes() + b.fch_gelu.bytes() +
         b.lnf.bytes() + b.lnf_stats.bytes() + b.logits.bytes() + b.lse.bytes() + b.losses.bytes() + b.dres.bytes() +
         b.dsmall.bytes() + b.dbig.bytes() + b.scratch.bytes() + b.attn_ws.bytes();
}

template <typename T> void DeviceGpt2Model<T>::embedding_forward(const EmbeddingWeights& w, const Tensor& inputs) {
  const std::int64_t C = cfg_.C;
  T* wte = dev<T>(w.wte, {cfg_.Vp, C}, "embedding forward", "wte");
  T* wpe = dev<T>(w.wpe, {cfg_.maxT, C}, "embedding forward", "wpe");
  check_gpt2_tokens(inputs, cfg_.V, "inputs");
  set_batch(inputs.dim(0), inputs.dim(1));
  Buffers& b = *buf_;
  const std::int64_t N = B_ * T_;
  const std::int32_t* tok = inputs.data<std::int32_t>();
  b.host_inputs.assign(tok, tok + N);
  b.inputs.copy_from_host(b.host_inputs, stream_);
  // The backward's token buckets, from the host copy (uploaded now, used after the head backward).
  const cuda::EmbeddingBuckets bk = cuda::bucket_tokens(b.host_inputs.data(), N);
  b.order.copy_from_host(bk.order, stream_);
  b.starts.copy_from_host(bk.starts, stream_);
  b.bucket_token.copy_from_host(bk.bucket_token, stream_);
  b.buckets = bk.buckets();
  have_targets_ = false;
  logits_are_grad_ = false;
  mark("fwd embedding");
  cuda::embedding_forward(b.encoded.data(), b.inputs.data(), wte, wpe, B_, T_, C, stream_);
}

template <typename T> void DeviceGpt2Model<T>::block_forward(int l, const BlockWeights& w) {
  OS_CHECK(B_ > 0, "GPT-2 (cuda) block {} forward before the embedding forward", l);
  OS_CHECK(l >= 0 && l < cfg_.L, "GPT-2 (cuda) block {} out of range (L = {})", l, cfg_.L);
  block_compute(l, w);
}

template <typename T> void DeviceGpt2Model<T>::block_compute(int l, const BlockWeights& w) {
  const std::int64_t C = cfg_.C, N = B_ * T_, a = slot(l);
  const std::string u = "block " + std::to_string(l) + " forward";
  Buffers& b = *buf_;
  T* x = b.encoded.data() + l * N * C;
  T* ln1 = b.ln1.data() + a * N * C;
  float* s1 = b.ln1_stats.data() + a * 2 * N;
  T* ln2 = b.ln2.data() + a * N * C;
  float* s2 = b.ln2_stats.data() + a * 2 * N;
  T* qkv = b.qkv.data() + a * N * 3 * C;
  T* atty = b.atty.data() + a * N * C;
  T* mid = b.mid.data() + a * N * C;
  T* fch = b.fch.data() + a * N * 4 * C;
  T* gelu = b.fch_gelu.data() + a * N * 4 * C;
  T* out = b.encoded.data() + (l + 1) * N * C;
  mark("fwd layernorm");
  cuda::layernorm_forward(ln1, s1, s1 + N, x, dev<T>(w.ln1_w, {C}, u, "ln1_w"), dev<T>(w.ln1_b, {C}, u, "ln1_b"), N,
                          C, stream_);
  mark("fwd matmul");
  cuda::linear_forward<T>(blas_, qkv, nullptr, ln1, dev<T>(w.qkv_w, {3 * C, C}, u, "qkv_w"),
                          dev<T>(w.qkv_b, {3 * C}, u, "qkv_b"), N, C, 3 * C, stream_);
  mark("fwd attention");
  if (flash_) {  // only ever set for bf16
    if constexpr (std::is_same_v<T, __nv_bfloat16>)
      cuda::flash_attention_forward(atty, att_stats(l), qkv, B_, T_, C, cfg_.NH, stream_);
  } else {
    cuda::attention_forward(blas_, atty, b.att.data() + a * B_ * cfg_.NH * T_ * T_, b.attn_ws.data(), qkv, B_, T_, C,
                            cfg_.NH, stream_);
  }
  mark("fwd matmul");
  cuda::linear_forward<T>(blas_, mid, nullptr, atty, dev<T>(w.attn_proj_w, {C, C}, u, "attn_proj_w"),
                          dev<T>(w.attn_proj_b, {C}, u, "attn_proj_b"), N, C, C, stream_);
  mark("fwd residual");
  cuda::residual_add(mid, mid, x, N * C, stream_);
  mark("fwd layernorm");
  cuda::layernorm_forward(ln2, s2, s2 + N, mid, dev<T>(w.ln2_w, {C}, u, "ln2_w"), dev<T>(w.ln2_b, {C}, u, "ln2_b"),
                          N, C, stream_);
  mark("fwd matmul");
  cuda::linear_forward<T>(blas_, gelu, fch, ln2, dev<T>(w.fc_w, {4 * C, C}, u, "fc_w"),
                          dev<T>(w.fc_b, {4 * C}, u, "fc_b"), N, C, 4 * C, stream_);
  cuda::linear_forward<T>(blas_, out, nullptr, gelu, dev<T>(w.mlp_proj_w, {C, 4 * C}, u, "mlp_proj_w"),
                          dev<T>(w.mlp_proj_b, {C}, u, "mlp_proj_b"), N, 4 * C, C, stream_);
  mark("fwd residual");
  cuda::residual_add(out, out, mid, N * C, stream_);
}

template <typename T> void DeviceGpt2Model<T>::head_forward_async(const HeadWeights& w, const Tensor& targets) {
  OS_CHECK(B_ > 0, "GPT-2 (cuda) head forward before the embedding forward");
  const std::int64_t C = cfg_.C, N = B_ * T_, V = cfg_.V, Vp = cfg_.Vp;
  Buffers& b = *buf_;
  T* wte = dev<T>(w.wte, {Vp, C}, "head forward", "wte");
  float* s = b.lnf_stats.data();
  mark("fwd layernorm");
  cuda::layernorm_forward(b.lnf.data(), s, s + N, b.encoded.data() + cfg_.L * N * C,
                          dev<T>(w.lnf_w, {C}, "head forward", "lnf_w"), dev<T>(w.lnf_b, {C}, "head forward", "lnf_b"),
                          N, C, stream_);
  mark("fwd head matmul");
  cuda::gemm<T>(blas_, false, true, N, Vp, C, 1.f, b.lnf.data(), C, wte, C, 0.f, b.logits.data(), Vp, stream_);
  logits_are_grad_ = false;
  have_targets_ = targets.defined();
  if (!have_targets_) {
    mark("fwd cross-entropy");
    cuda::cross_entropy_forward<T>(b.losses.data(), b.lse.data(), b.logits.data(), nullptr, N, V, Vp, stream_);
    return;
  }
  check_model_targets(targets, cfg_.V, B_, T_, "GPT-2");
  mark("fwd cross-entropy");
  OS_CUDA_CHECK(cudaMemcpyAsync(b.targets.data(), targets.data<std::int32_t>(), static_cast<std::size_t>(N) * 4,
                                cudaMemcpyHostToDevice, stream_));
  cuda::cross_entropy_forward<T>(b.losses.data(), b.lse.data(), b.logits.data(), b.targets.data(), N, V, Vp, stream_);
}

template <typename T> double DeviceGpt2Model<T>::mean_of(const float* losses, std::int64_t count) {
  double sum = 0;
  for (std::int64_t i = 0; i < count; ++i) sum += static_cast<double>(losses[i]);
  return sum / static_cast<double>(count);
}

template <typename T> double DeviceGpt2Model<T>::mean_loss() {
  OS_CHECK(have_targets_, "GPT-2 (cuda) mean_loss needs a head forward with targets");
  const std::vector<float> l = losses_to_host();
  return mean_of(l.data(), static_cast<std::int64_t>(l.size()));
}

template <typename T> void DeviceGpt2Model<T>::copy_losses_async(float* dst) {
  OS_CHECK(have_targets_, "GPT-2 (cuda) copy_losses_async needs a head forward with targets");
  OS_CUDA_CHECK(cudaMemcpyAsync(dst, buf_->losses.data(), static_cast<std::size_t>(B_ * T_) * sizeof(float),
                                cudaMemcpyDeviceToHost, stream_));
}

template <typename T> std::vector<float> DeviceGpt2Model<T>::losses_to_host() {
  OS_CHECK(B_ > 0, "GPT-2 (cuda) losses before any forward");
  return buf_->losses.to_host(stream_);
}

template <typename T> std::vector<float> DeviceGpt2Model<T>::logits_to_host() {
  OS_CHECK(B_ > 0 && !logits_are_grad_, "GPT-2 (cuda) logits: none (no forward yet, or the backward overwrote them)");
  const std::vector<T> raw = buf_->logits.to_host(stream_);
  std::vector<float> out(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) out[i] = static_cast<float>(raw[i]);
  return out;
}

template <typename T>
void DeviceGpt2Model<T>::head_backward(const HeadWeights& w, const HeadWeights& g, double grad_scale) {
  OS_CHECK(have_targets_ && !logits_are_grad_,
           "GPT-2 (cuda) head backward needs a head forward with targets first (and runs once per forward)");
  const std::int64_t C = cfg_.C, N = B_ * T_, V = cfg_.V, Vp = cfg_.Vp;
  Buffers& b = *buf_;
  T* wte = dev<T>(w.wte, {Vp, C}, "head backward (weights)", "wte");
  T* dwte = dev<T>(g.wte, {Vp, C}, "head backward (gradients)", "wte");
  T* dlogits = b.logits.data();
  mark("bwd cross-entropy");
  cuda::cross_entropy_backward_inplace<T>(dlogits, b.lse.data(), b.targets.data(),
                                          static_cast<float>(grad_scale / static_cast<double>(N)), N, V, Vp, stream_);
  logits_are_grad_ = true;
  // Only the first V columns carry gradient, but the GEMMs run over all Vp: the padding columns of dlogits are
  // zeros (cross_entropy_backward_inplace writes them), so dwte's padding rows get += 0 and the padding rows of
  // wte (zeros from the init and the llm.c files, and they never get a gradient) add 0 to dlnf. On an H100 the
  // dlnf GEMM with the odd depth V = 50257 ran at 80 TFLOP/s against 709 with Vp = 50304 (the dwte GEMM: 453
  // against 700; both timed through PyTorch's cuBLAS matmul), and this phase of the GPT-2 124M step (B=8,
  // T=1024) went from 9.4 ms to 1.5 ms.
  mark("bwd head matmul");
  cuda::gemm<T>(blas_, true, false, Vp, C, N, 1.f, dlogits, Vp, b.lnf.data(), C, 1.f, dwte, C, stream_);
  cuda::gemm<T>(blas_, false, false, N, C, Vp, 1.f, dlogits, Vp, wte, C, 0.f, b.dsmall.data(), C, stream_);
  mark("bwd layernorm");
  b.dres.zero(stream_);
  const float* s = b.lnf_stats.data();
  cuda::layernorm_backward(b.dres.data(), dev<T>(g.lnf_w, {C}, "head backward (gradients)", "lnf_w"),
                           dev<T>(g.lnf_b, {C}, "head backward (gradients)", "lnf_b"), b.scratch.data(),
                           b.dsmall.data(), b.encoded.data() + cfg_.L * N * C,
                           dev<T>(w.lnf_w, {C}, "head backward (weights)", "lnf_w"), s, s + N, N, C, stream_);
}

template <typename T>
void DeviceGpt2Model<T>::block_backward(int l, const BlockWeights& w, const BlockWeights& g) {
  OS_CHECK(logits_are_grad_, "GPT-2 (cuda) block {} backward before the head backward", l);
  OS_CHECK(l >= 0 && l < cfg_.L, "GPT-2 (cuda) block {} out of range (L = {})", l, cfg_.L);
  if (checkpoint_) block_compute(l, w);  // the block's activations again, from its input (the same bits)
  const std::int64_t C = cfg_.C, N = B_ * T_, a = slot(l);
  const std::string uw = "block " + std::to_string(l) + " backward (weights)";
  const std::string ug = "block " + std::to_string(l) + " backward (gradients)";
  Buffers& b = *buf_;
  T* dres = b.dres.data();
  T* dsmall = b.dsmall.data();
  T* dbig = b.dbig.data();
  float* scratch = b.scratch.data();
  const float* s1 = b.ln1_stats.data() + a * 2 * N;
  const float* s2 = b.ln2_stats.data() + a * 2 * N;
  T* fch = b.fch.data() + a * N * 4 * C;
  T* gelu = b.fch_gelu.data() + a * N * 4 * C;
  // MLP half: x_out = mid + gelu(ln2(mid)·fcᵀ + b)·projᵀ + b; the GELU's backward fused into the first GEMM.
  mark("bwd matmul");
  cuda::linear_backward<T>(blas_, dbig, dev<T>(g.mlp_proj_w, {C, 4 * C}, ug, "mlp_proj_w"),
                           dev<T>(g.mlp_proj_b, {C}, ug, "mlp_proj_b"), scratch, dres, gelu,
                           dev<T>(w.mlp_proj_w, {C, 4 * C}, uw, "mlp_proj_w"), fch, N, 4 * C, C, stream_);
  cuda::linear_backward<T>(blas_, dsmall, dev<T>(g.fc_w, {4 * C, C}, ug, "fc_w"), dev<T>(g.fc_b, {4 * C}, ug, "fc_b"),
                           scratch, dbig, b.ln2.data() + a * N * C, dev<T>(w.fc_w, {4 * C, C}, uw, "fc_w"), nullptr, N,
                           C, 4 * C, stream_);
  mark("bwd layernorm");
  cuda::layernorm_backward(dres, dev<T>(g.ln2_w, {C}, ug, "ln2_w"), dev<T>(g.ln2_b, {C}, ug, "ln2_b"), scratch, dsmall,
                           b.mid.data() + a * N * C, dev<T>(w.ln2_w, {C}, uw, "ln2_w"), s2, s2 + N, N, C, stream_);
  // Attention half: mid = x + attn(ln1(x))·projᵀ + b.
  mark("bwd matmul");
  cuda::linear_backward<T>(blas_, dsmall, dev<T>(g.attn_proj_w, {C, C}, ug, "attn_proj_w"),
                           dev<T>(g.attn_proj_b, {C}, ug, "attn_proj_b"), scratch, dres, b.atty.data() + a * N * C,
                           dev<T>(w.attn_proj_w, {C, C}, uw, "attn_proj_w"), nullptr, N, C, C, stream_);
  mark("bwd attention");
  if (flash_) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>)
      cuda::flash_attention_backward(dbig, b.att_delta.data(), dsmall, b.qkv.data() + a * N * 3 * C,
                                     b.atty.data() + a * N * C, att_stats(l), B_, T_, C, cfg_.NH, stream_);
  } else {
    cuda::attention_backward(blas_, dbig, b.attn_ws.data(), dsmall, b.qkv.data() + a * N * 3 * C,
                             b.att.data() + a * B_ * cfg_.NH * T_ * T_, B_, T_, C, cfg_.NH, stream_);
  }
  mark("bwd matmul");
  cuda::linear_backward<T>(blas_, dsmall, dev<T>(g.qkv_w, {3 * C, C}, ug, "qkv_w"),
                           dev<T>(g.qkv_b, {3 * C}, ug, "qkv_b"), scratch, dbig, b.ln1.data() + a * N * C,
                           dev<T>(w.qkv_w, {3 * C, C}, uw, "qkv_w"), nullptr, N, C, 3 * C, stream_);
  mark("bwd layernorm");
  cuda::layernorm_backward(dres, dev<T>(g.ln1_w, {C}, ug, "ln1_w"), dev<T>(g.ln1_b, {C}, ug, "ln1_b"), scratch, dsmall,
                           b.encoded.data() + l * N * C, dev<T>(w.ln1_w, {C}, uw, "ln1_w"), s1, s1 + N, N, C, stream_);
}

template <typename T> void DeviceGpt2Model<T>::embedding_backward(const EmbeddingWeights& g) {
  OS_CHECK(logits_are_grad_, "GPT-2 (cuda) embedding backward before the head backward");
  const std::int64_t C = cfg_.C;
  Buffers& b = *buf_;
  const cuda::EmbeddingBucketsView view{b.order.data(), b.starts.data(), b.bucket_token.data(), b.buckets};
  mark("bwd embedding");
  cuda::embedding_backward(dev<T>(g.wte, {cfg_.Vp, C}, "embedding backward (gradients)", "wte"),
                           dev<T>(g.wpe, {cfg_.maxT, C}, "embedding backward (gradients)", "wpe"), b.dres.data(), view,
                           B_, T_, C, stream_);
}

template class DeviceGpt2Model<float>;
template class DeviceGpt2Model<__nv_bfloat16>;

}  // namespace orthoshard
