// LLaMA's units on a backend: the UnitRunner of models/family.hpp over a network with LLaMA's unit API
// (LlamaModel<float> on the CPU, DeviceLlamaModel<T> on the GPU), one switch for both. Each backend says how the
// head's loss reaches the host.
#pragma once

#include "models/family.hpp"
#include "models/llama/params.hpp"

#include <utility>

namespace orthoshard {

template <typename Net>
class LlamaUnitRunner : public UnitRunner {
 public:
  template <typename... Args>
  explicit LlamaUnitRunner(Args&&... args) : net_(std::forward<Args>(args)...) {}

  void set_tokens(const Tensor& inputs, const Tensor& targets) override {
    inputs_ = inputs;
    targets_ = targets;
  }
  void forward(const ModelUnit& unit, const TensorLookup& params) override {
    switch (unit.kind) {
      case UnitKind::Embedding: net_.embedding_forward(llama_embedding_weights(params), inputs_); break;
      case UnitKind::Block: net_.block_forward(unit.layer, llama_block_weights(params, unit.layer)); break;
      case UnitKind::Head: head_forward(llama_head_weights(params, net_.config()), targets_); break;
    }
  }
  void backward(const ModelUnit& unit, const TensorLookup& params, const TensorLookup& grads,
                double grad_scale) override {
    const LlamaConfig& c = net_.config();
    switch (unit.kind) {
      case UnitKind::Head:
        net_.head_backward(llama_head_weights(params, c), llama_head_weights(grads, c), grad_scale);
        break;
      case UnitKind::Block:
        net_.block_backward(unit.layer, llama_block_weights(params, unit.layer), llama_block_weights(grads, unit.layer));
        break;
      case UnitKind::Embedding: net_.embedding_backward(llama_embedding_weights(grads)); break;  // no parameters read
    }
  }
  std::uint64_t activation_bytes() const override { return net_.activation_bytes(); }

 protected:
  // The final RMSNorm, logits and losses of the micro-batch; its mean loss joins take_loss_sum().
  virtual void head_forward(const LlamaHeadWeights& w, const Tensor& targets) = 0;
  Net net_;
  Tensor inputs_, targets_;
};

}  // namespace orthoshard
