// Routing by role, the orthogonalization tasks and state homes, and what both optimizers share outside the step.
#include "optim/sharded_optimizer.hpp"

#include "optim/rules.hpp"
#include "runtime/core/error.hpp"

#include <fnmatch.h>

#include <algorithm>

namespace orthoshard {

namespace {
std::int64_t cols_of(const Shape& s) { return s.empty() || s[0] == 0 ? 0 : shape_numel(s) / s[0]; }
}  // namespace

// Cost estimate of a basis refresh (linalg::singular_basis): the Gram product m·n·k plus its eigensolve ~9 k³.
double svd_flops(std::int64_t m, std::int64_t n) {
  const double k = static_cast<double>(std::min(m, n));
  return static_cast<double>(m) * static_cast<double>(n) * k + 9.0 * k * k * k;
}

std::vector<OrthoTask> matrix_tasks(const std::vector<ParamSpec>& params, const OptimConfig& c,
                                    std::vector<int>& task_index) {
  std::vector<OrthoTask> tasks;
  task_index.assign(params.size(), -1);
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& s = params[i];
    OS_CHECK(!s.shape.empty(), "optimizer: parameter {} is 0-d; give it shape (1,)", s.name);
    if (s.rule == RuleKind::AdamW || s.rule == RuleKind::CondaPlain) continue;
    OS_CHECK(s.shape.size() >= 2, "optimizer: parameter {} of shape {} cannot take the {} matrix rule", s.name,
             shape_str(s.shape), rule_name(s.rule));
    OrthoTask t;
    t.param = i;
    t.m = s.shape[0];
    t.n = cols_of(s.shape);
    if (s.rule == RuleKind::Conda) {
      t.allow_gram = false;
      const std::int64_t k = std::min(t.m, t.n);
      const bool left = !conda_right_side(c.proj_type, t.m, t.n);
      t.flops = svd_flops(t.m, t.n) / c.update_proj_gap + (left ? 6.0 * t.m * t.n * k : 0.0) + 1.0;
    }
    task_index[i] = static_cast<int>(tasks.size());
    tasks.push_back(t);
  }
  return tasks;
}

StateHome state_home_of(RuleKind rule, const OrthoTask* t, const OptimConfig& c, const std::string& name,
                        int* owner) {
  if (owner) *owner = t ? t->owner : 0;
  if (name == "step" || name == "conda_basis_step" || name == "conda_basis_side") return StateHome::Replicated;
  if (t && rule == RuleKind::Conda) {
    const bool right = conda_right_side(c.proj_type, t->m, t->n);
    if (name == "conda_basis") return right ? StateHome::Replicated : StateHome::Owner;
    if (name == "exp_avg_sq" && !right) return StateHome::Owner;
  }
  return StateHome::Rows;
}

bool glob_match(const std::string& pattern, const std::string& name) {
  return fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

RuleKind route_parameter(const std::string& name, const Shape& shape, ParamRole role, const OptimConfig& c) {
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
  return role == ParamRole::Matrix && shape.size() >= 2 ? matrix : RuleKind::AdamW;
}

std::vector<ParamSpec> route_parameters(const std::vector<ParamInfo>& params, const OptimConfig& c) {
  std::vector<ParamSpec> specs;
  for (const auto& p : params) specs.push_back({p.name, p.shape, route_parameter(p.name, p.shape, p.role, c)});
  return specs;
}

std::vector<ParamInfo> roles_from_shapes(const std::vector<std::pair<std::string, Shape>>& params) {
  std::vector<ParamInfo> out;
  for (const auto& [name, shape] : params) out.push_back({name, shape, role_from_shape(shape)});
  return out;
}

// ---------------------------------------------------------------------------------------------------

ShardedOptimizer::ShardedOptimizer(OptimConfig config, std::vector<ParamSpec> params, Communicator* comm)
    : config_(std::move(config)), specs_(std::move(params)), states_(specs_.size()), comm_(comm) {
  if (comm_) {
    rank_ = comm_->rank();
    nranks_ = comm_->size();
  }
  for (const auto& s : specs_) {
    OS_CHECK(!s.shape.empty(), "optimizer: parameter {} is 0-d; give it shape (1,)", s.name);
    local_shapes_.push_back(shard_shape(s.shape, nranks_, rank_));
  }
}

ShardedOptimizer::~ShardedOptimizer() = default;
ShardedOptimizer::ShardedOptimizer(ShardedOptimizer&&) noexcept = default;
ShardedOptimizer& ShardedOptimizer::operator=(ShardedOptimizer&&) noexcept = default;

RowRange ShardedOptimizer::local_rows(std::size_t i) const { return shard_rows(specs_.at(i).shape[0], nranks_, rank_); }

ParamState& ShardedOptimizer::state(const std::string& param_name) {
  for (std::size_t i = 0; i < specs_.size(); ++i)
    if (specs_[i].name == param_name) return states_[i];
  fail("optimizer: no parameter named '{}'", param_name);
}

const OrthoTask* ShardedOptimizer::task_of(std::size_t param) const {
  const int t = task_index_.at(param);
  return t < 0 ? nullptr : &plan_.tasks[static_cast<std::size_t>(t)];
}

StateHome ShardedOptimizer::state_home(std::size_t param, const std::string& name, int* owner) const {
  return state_home_of(specs_.at(param).rule, task_of(param), config_, name, owner);
}

Tensor ShardedOptimizer::state_to_host(std::size_t param, const std::string& name) {
  const Tensor& t = states_.at(param).get(name);
  OS_CHECK(t.device() == Device::CPU, "optimizer: state {} of {} is in {} memory", name, specs_[param].name,
           device_name(t.device()));
  return t;
}

void ShardedOptimizer::load_state(std::size_t param, const std::string& name, const Tensor& host) {
  OS_CHECK(param < specs_.size(), "optimizer: parameter {} of {}", param, specs_.size());
  states_[param].set(name, host);
}

void ShardedOptimizer::check_step_args(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                                       const std::vector<Tensor>& copies) const {
  OS_CHECK(params.size() == specs_.size() && grads.size() == specs_.size(),
           "optimizer step: {} parameters and {} gradients given for {} registered parameters", params.size(),
           grads.size(), specs_.size());
  OS_CHECK(copies.empty() || copies.size() == specs_.size(), "optimizer step: {} bf16 copies for {} parameters",
           copies.size(), specs_.size());
  for (std::size_t i = 0; i < specs_.size(); ++i) {
    const auto& s = specs_[i];
    const Shape& ls = local_shapes_[i];
    for (const Tensor* t : {&params[i], &grads[i]})
      OS_CHECK(t->shape() == ls && t->dtype() == dtype() && t->device() == device() && t->is_contiguous(),
               "optimizer step: parameter {} {} expects this rank's shard as a contiguous {} {} tensor {}, got {}",
               s.name, shape_str(s.shape), dtype_name(dtype()), device_name(device()), shape_str(ls), t->describe());
    if (!copies.empty() && copies[i].defined() && copies[i].numel() > 0)
      OS_CHECK(copies[i].numel() == shape_numel(ls) && copies[i].dtype() == DType::BF16 &&
                   copies[i].device() == device() && copies[i].is_contiguous(),
               "optimizer step: the bf16 copy of {} must be a contiguous bf16 {} tensor of {} elements, got {}",
               s.name, device_name(device()), shape_numel(ls), copies[i].describe());
  }
}

}  // namespace orthoshard
