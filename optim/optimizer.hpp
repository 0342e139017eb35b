// Optimizer: parameter routing (matrix rule vs AdamW), named per-parameter state, and one step over all
// parameters. Works in float (training) or double (reference checks).
#pragma once

#include "optim/config.hpp"
#include "optim/rules.hpp"
#include "optim/state.hpp"
#include "runtime/core/tensor.hpp"

#include <memory>
#include <string>
#include <vector>

namespace orthoshard {

struct ParamSpec {
  std::string name;
  Shape shape;
  RuleKind rule;
};

// Default routing: parameters of 2+ dims take the matrix rule of `c.name`, except embeddings and the LM
// head (names containing wte, wpe, embed, lm_head); 1-D parameters (norms, biases) take AdamW.
// c.adam_params / c.matrix_params (glob patterns, e.g. "h.*.attn.*") override, AdamW first.
RuleKind route_parameter(const std::string& name, const Shape& shape, const OptimConfig& c);
bool glob_match(const std::string& pattern, const std::string& name);

class Optimizer {
 public:
  Optimizer(OptimConfig config, std::vector<ParamSpec> params, DType dtype = DType::F32);
  // Convenience: route every (name, shape) with route_parameter.
  static Optimizer with_routing(OptimConfig config, const std::vector<std::pair<std::string, Shape>>& params,
                                DType dtype = DType::F32);

  // One step: params[i] and grads[i] belong to params()[i] (same shape and dtype). lr_scale multiplies
  // every learning rate (the schedule's factor).
  void step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, double lr_scale = 1.0);

  const OptimConfig& config() const { return config_; }
  const std::vector<ParamSpec>& params() const { return specs_; }
  ParamState& state(std::size_t i) { return states_.at(i); }
  ParamState& state(const std::string& param_name);
  DType dtype() const { return dtype_; }

 private:
  template <typename T> void step_typed(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                                        double lr_scale);
  OptimConfig config_;
  std::vector<ParamSpec> specs_;
  std::vector<ParamState> states_;
  DType dtype_;
  std::unique_ptr<RuleWorkspace<float>> ws32_;
  std::unique_ptr<RuleWorkspace<double>> ws64_;
};

}  // namespace orthoshard
