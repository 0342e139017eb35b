// GPT-2's units on a backend: the UnitRunner of models/family.hpp over a network with GPT-2's unit API
// (Gpt2Model<float> on the CPU, DeviceGpt2Model<T> on the GPU), one switch for both. Each backend says how the
// head's loss reaches the host.
#pragma once

#include "models/family.hpp"
#include "models/gpt2/params.hpp"

#include <utility>

namespace orthoshard {

template <typename Net>
class Gpt2UnitRunner : public UnitRunner {
 public:
  template <typename... Args>
  explicit Gpt2UnitRunner(Args&&... args) : net_(std::forward<Args>(args)...) {}

  void set_tokens(const Tensor& inputs, const Tensor& targets) override {
    inputs_ = inputs;
    targets_ = targets;
  }
  void forward(const ModelUnit& unit, const TensorLookup& params) override {
    switch (unit.kind) {
      case UnitKind::Embedding: net_.embedding_forward(embedding_weights(params), inputs_); break;
      case UnitKind::Block: net_.block_forward(unit.layer, block_weights(params, unit.layer)); break;
      case UnitKind::Head: head_forward(head_weights(params), targets_); break;
    }
  }
  void backward(const ModelUnit& unit, const TensorLookup& params, const TensorLookup& grads,
                double grad_scale) override {
    switch (unit.kind) {
      case UnitKind::Head: net_.head_backward(head_weights(params), head_weights(grads), grad_scale); break;
      case UnitKind::Block:
        net_.block_backward(unit.layer, block_weights(params, unit.layer), block_weights(grads, unit.layer));
        break;
      case UnitKind::Embedding: net_.embedding_backward(embedding_weights(grads)); break;  // no parameters read
    }
  }
  Net& net() { return net_; }

 protected:
  // The final layernorm, logits and losses of the micro-batch; its mean loss joins take_loss_sum().
  virtual void head_forward(const HeadWeights& w, const Tensor& targets) = 0;
  Net net_;
  Tensor inputs_, targets_;
};

}  // namespace orthoshard
