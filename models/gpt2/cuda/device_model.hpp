// GPT-2 forward and backward on one GPU with the kernels of runtime/kernels/cuda, driven one unit at a time
// like the CPU Gpt2Model (same API, same semantics): an FSDP engine gathers a unit into device memory, the model
// runs it, the engine releases it. T is float (checks against the CPU model) or __nv_bfloat16 (training;
// statistics, softmax and losses stay fp32). Weight and gradient structs hold device tensors (Device::CUDA,
// contiguous, dtype T); gradients accumulate (+=). All work is queued on the model's stream.
#pragma once

#include "models/gpt2/config.hpp"
#include "models/gpt2/params.hpp"
#include "runtime/core/tensor.hpp"
#include "runtime/cuda/device_buffer.hpp"
#include "runtime/cuda/gemm.hpp"

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace orthoshard {

template <typename T>
class DeviceGpt2Model {
 public:
  // `blas` serves this model's stream only (see cuda::Blas). `attention` picks the attention kernels (see
  // AttentionKernels); Flash where they do not apply (an f32 model, another head size) is a UsageError.
  // checkpoint_blocks: keep only each block's input from the forward and recompute the block's forward in its
  // backward (activation checkpointing, as Gpt2Model): one block's activations instead of L, the same results.
  DeviceGpt2Model(Gpt2Config cfg, cuda::Blas& blas, cudaStream_t stream,
                  AttentionKernels attention = AttentionKernels::Auto, bool checkpoint_blocks = false);
  ~DeviceGpt2Model();
  DeviceGpt2Model(const DeviceGpt2Model&) = delete;
  DeviceGpt2Model& operator=(const DeviceGpt2Model&) = delete;

  const Gpt2Config& config() const { return cfg_; }
  bool flash_attention() const { return flash_; }  // the fused kernels run (else the cuBLAS GEMM path)
  cudaStream_t stream() const { return stream_; }
  // Sizes the activation buffers for (B, T); reallocates only when they change. T > maxT is an error.
  void set_batch(std::int64_t B, std::int64_t Tn);
  std::int64_t batch() const { return B_; }
  std::int64_t seq_len() const { return T_; }
  std::size_t activation_bytes() const;

  // ---- one unit at a time, forward in this order, backward in reverse ----
  // inputs: host i32 (B, T) tokens in [0, V) (checked here; the host copy also orders the embedding backward).
  void embedding_forward(const EmbeddingWeights& w, const Tensor& inputs);
  void block_forward(int layer, const BlockWeights& w);
  // Queues the final layernorm, the logits and (with host i32 (B, T) targets) the per-token losses.
  void head_forward_async(const HeadWeights& w, const Tensor& targets);
  // Waits for the stream and returns the mean of the last forward's losses (sum in double on the host).
  double mean_loss();
  // Queues a copy of the last forward's B·T per-token losses into `dst` (pinned host memory, to be read only
  // after the stream has passed this point), without waiting; mean_of() then gives what mean_loss() would.
  void copy_losses_async(float* dst);
  static double mean_of(const float* losses, std::int64_t count);
  double head_forward(const HeadWeights& w, const Tensor& targets) {
    head_forward_async(w, targets);
    return mean_loss();
  }
  // Gradients of grad_scale · mean loss; overwrites the logits with their gradient; g.wte accumulates the
  // head's share of the tied embedding.
  void head_backward(const HeadWeights& w, const HeadWeights& g, double grad_scale = 1.0);
  void block_backward(int layer, const BlockWeights& w, const BlockWeights& g);
  void embedding_backward(const EmbeddingWeights& g);

  // Profiling (bench gpu): `mark(phase)` is called whenever the work the model queues next belongs to another
  // phase ("fwd matmul", "bwd attention", ...), so the caller can record an event there. Empty: no calls.
  void set_phase_marker(std::function<void(const char*)> mark) { mark_ = std::move(mark); }

  // Host copies of the last forward (synchronise the stream): logits (B, T, Vp) as f32 (until head_backward),
  // losses (B, T).
  std::vector<float> logits_to_host();
  std::vector<float> losses_to_host();

 private:
  struct Buffers;
  float* att_stats(int layer);  // the flash forward's row statistics of a layer
  void block_compute(int layer, const BlockWeights& w);  // the block's forward into its activation slot
  std::int64_t slot(int layer) const { return checkpoint_ ? 0 : layer; }
  void mark(const char* phase) {
    if (mark_) mark_(phase);
  }
  std::function<void(const char*)> mark_;

  Gpt2Config cfg_;
  cuda::Blas& blas_;
  cudaStream_t stream_;
  std::int64_t B_ = 0, T_ = 0;
  std::unique_ptr<Buffers> buf_;
  bool have_targets_ = false, logits_are_grad_ = false;
  bool flash_ = false;
  bool checkpoint_ = false;
};

extern template class DeviceGpt2Model<float>;
extern template class DeviceGpt2Model<__nv_bfloat16>;

}  // namespace orthoshard
