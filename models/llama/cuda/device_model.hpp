// LLaMA forward and backward on one GPU, driven one unit at a time like the CPU LlamaModel (same API, same
// semantics). T is float (checks against the CPU model) or __nv_bfloat16 (training; statistics, softmax and losses
// stay fp32). Weight and gradient structs hold device tensors of dtype T; gradients accumulate (+=). All work is
// queued on the model's stream.
#pragma once

#include "models/family.hpp"
#include "models/llama/config.hpp"
#include "models/llama/params.hpp"
#include "runtime/cuda/gemm.hpp"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace orthoshard {

template <typename T>
class DeviceLlamaModel {
 public:
  // Attention: the fused flash kernels where they apply (bf16, head size 16-128; grouped-query heads read in
  // place), else cuBLAS GEMMs (grouped too; K and V never repeated). Flash where it does not apply is a
  // UsageError.
  DeviceLlamaModel(LlamaConfig cfg, cuda::Blas& blas, cudaStream_t stream,
                   AttentionKernels attention = AttentionKernels::Auto, bool checkpoint_blocks = false);
  ~DeviceLlamaModel();
  DeviceLlamaModel(const DeviceLlamaModel&) = delete;
  DeviceLlamaModel& operator=(const DeviceLlamaModel&) = delete;

  const LlamaConfig& config() const { return cfg_; }
  bool flash_attention() const { return flash_; }
  cudaStream_t stream() const { return stream_; }
  void set_batch(std::int64_t B, std::int64_t Tn);
  std::size_t activation_bytes() const;

  void embedding_forward(const LlamaEmbeddingWeights& w, const Tensor& inputs);  // host i32 (B, T)
  void block_forward(int layer, const LlamaBlockWeights& w);
  void head_forward_async(const LlamaHeadWeights& w, const Tensor& targets);  // queues logits and losses
  void copy_losses_async(float* dst);  // the B·T per-token losses into pinned host memory, without waiting
  void head_backward(const LlamaHeadWeights& w, const LlamaHeadWeights& g, double grad_scale = 1.0);
  void block_backward(int layer, const LlamaBlockWeights& w, const LlamaBlockWeights& g);
  void embedding_backward(const LlamaEmbeddingWeights& g);

  std::vector<float> logits_to_host();  // (B, T, Vp) as f32, synchronizing (until head_backward)
  std::vector<float> losses_to_host();  // (B, T)

 private:
  struct Buffers;
  void block_compute(int layer, const LlamaBlockWeights& w);
  void pack_qkv(const LlamaBlockWeights& w, const std::string& unit);  // q, k, v weights -> buffers' wqkv (W, C)
  float* att_stats(int layer);
  std::int64_t slot(int layer) const { return checkpoint_ ? 0 : layer; }

  LlamaConfig cfg_;
  cuda::Blas& blas_;
  cudaStream_t stream_;
  std::int64_t B_ = 0, T_ = 0;
  std::unique_ptr<Buffers> buf_;
  bool have_targets_ = false, logits_are_grad_ = false;
  bool flash_ = false, checkpoint_ = false;
};

extern template class DeviceLlamaModel<float>;
extern template class DeviceLlamaModel<__nv_bfloat16>;

// The UnitRunner of a LLaMA on the current GPU (models/device_runner.hpp).
std::unique_ptr<UnitRunner> make_llama_device_runner(const LlamaConfig& cfg, cuda::Blas& blas, cudaStream_t stream,
                                                     DType dtype, AttentionKernels attention, bool checkpoint_blocks);

}  // namespace orthoshard
