// Routing and the optimizer step loop.
#include "optim/optimizer.hpp"

#include "runtime/core/error.hpp"

#include <fnmatch.h>

namespace orthoshard {

bool glob_match(const std::string& pattern, const std::string& name) {
  return fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

RuleKind route_parameter(const std::string& name, const Shape& shape, const OptimConfig& c) {
  const RuleKind matrix = c.matrix_rule();
  if (matrix == RuleKind::AdamW) return RuleKind::AdamW;
  for (const auto& p : c.adam_params)
    if (glob_match(p, name)) return RuleKind::AdamW;
  for (const auto& p : c.matrix_params)
    if (glob_match(p, name)) {
      if (shape.size() < 2)
        throw UsageError(fmt::format("optim.matrix_params: '{}' matches {} of shape {}, which is not a matrix", p,
                                     name, shape_str(shape)));
      return matrix;
    }
  if (shape.size() < 2) return RuleKind::AdamW;
  for (const char* emb : {"wte", "wpe", "embed", "lm_head"})
    if (name.find(emb) != std::string::npos) return RuleKind::AdamW;
  return matrix;
}

Optimizer::Optimizer(OptimConfig config, std::vector<ParamSpec> params, DType dtype)
    : config_(std::move(config)), specs_(std::move(params)), states_(specs_.size()), dtype_(dtype) {
  OS_CHECK(dtype == DType::F32 || dtype == DType::F64, "optimizer: dtype {} is not f32 or f64", dtype_name(dtype));
  for (const auto& s : specs_)
    if (s.rule != RuleKind::AdamW && s.rule != RuleKind::CondaPlain)
      OS_CHECK(s.shape.size() >= 2, "optimizer: parameter {} of shape {} cannot take the {} matrix rule", s.name,
               shape_str(s.shape), rule_name(s.rule));
  if (dtype == DType::F32) ws32_ = std::make_unique<RuleWorkspace<float>>(config_.ns_steps);
  else ws64_ = std::make_unique<RuleWorkspace<double>>(config_.ns_steps);
}

Optimizer Optimizer::with_routing(OptimConfig config, const std::vector<std::pair<std::string, Shape>>& params,
                                  DType dtype) {
  std::vector<ParamSpec> specs;
  for (const auto& [name, shape] : params) specs.push_back({name, shape, route_parameter(name, shape, config)});
  return Optimizer(std::move(config), std::move(specs), dtype);
}

ParamState& Optimizer::state(const std::string& param_name) {
  for (std::size_t i = 0; i < specs_.size(); ++i)
    if (specs_[i].name == param_name) return states_[i];
  fail("optimizer: no parameter named '{}'", param_name);
}

void Optimizer::step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, double lr_scale) {
  OS_CHECK(params.size() == specs_.size() && grads.size() == specs_.size(),
           "optimizer step: {} parameters and {} gradients given for {} registered parameters", params.size(),
           grads.size(), specs_.size());
  for (std::size_t i = 0; i < specs_.size(); ++i) {
    const auto& s = specs_[i];
    OS_CHECK(params[i].shape() == s.shape && grads[i].shape() == s.shape,
             "optimizer step: parameter {} expects shape {}, got parameter {} and gradient {}", s.name,
             shape_str(s.shape), params[i].describe(), grads[i].describe());
    OS_CHECK(params[i].dtype() == dtype_ && grads[i].dtype() == dtype_ && params[i].is_contiguous() &&
                 grads[i].is_contiguous(),
             "optimizer step: parameter {} needs contiguous {} tensors, got {} and {}", s.name, dtype_name(dtype_),
             params[i].describe(), grads[i].describe());
  }
  if (dtype_ == DType::F32) step_typed<float>(params, grads, lr_scale);
  else step_typed<double>(params, grads, lr_scale);
}

template <typename T>
void Optimizer::step_typed(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, double lr_scale) {
  RuleWorkspace<T>& ws = [&]() -> RuleWorkspace<T>& {
    if constexpr (std::is_same_v<T, float>) return *ws32_;
    else return *ws64_;
  }();
  const OptimConfig& c = config_;
  for (std::size_t i = 0; i < specs_.size(); ++i) {
    const ParamSpec& s = specs_[i];
    T* w = params[i].data<T>();
    const T* g = grads[i].data<T>();
    ParamState& st = states_[i];
    try {
      switch (s.rule) {
        case RuleKind::AdamW: {
          // With optim.name = adamw every tensor uses the main hyperparameters; otherwise the adam_* ones.
          AdamHparams hp = c.adam;
          if (c.name == "adamw") hp = {c.lr, c.beta1, c.beta2_adam, c.eps, c.weight_decay};
          adamw_step<T>(w, g, s.shape, st, hp, hp.lr * lr_scale);
          break;
        }
        case RuleKind::Muon: muon_step<T>(w, g, s.shape, st, c, c.lr * lr_scale, ws); break;
        case RuleKind::NorMuon: normuon_step<T>(w, g, s.shape, st, c, c.lr * lr_scale, ws); break;
        case RuleKind::Conda: conda_step<T>(w, g, s.shape, true, st, c, c.lr * lr_scale, ws); break;
        case RuleKind::CondaPlain: conda_step<T>(w, g, s.shape, false, st, c, c.lr * lr_scale, ws); break;
      }
    } catch (...) {
      rethrow_with_context("optimizer step, parameter " + s.name);
    }
  }
}

}  // namespace orthoshard
