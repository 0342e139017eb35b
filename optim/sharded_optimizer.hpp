// The optimizer over this rank's row shards, as the trainer and the checkpoint code see it on either backend:
// routing by role (matrix rule vs AdamW), named per-parameter state, the distributed orthogonalization plan, and
// one step over all parameters. Matrix rules orthogonalize across ranks (owner exchange or Gram-sharded
// Newton-Schulz, see optim/distributed/); with one rank (or no communicator) the same code runs without
// communication.
//
// The step itself is written once (optim/step.hpp, instantiated by each backend): the order of the rules, the
// owner-exchange pipeline, NorMuon's exact global norms, Conda's basis refresh and projections. Each backend
// supplies its kernels behind it: Optimizer (host memory, f32 or f64, optimizer.hpp) and DeviceOptimizer (GPU
// memory, f32, optim/cuda/device_optimizer.hpp).
#pragma once

#include "optim/config.hpp"
#include "optim/distributed/plan.hpp"
#include "optim/state.hpp"
#include "runtime/comm/communicator.hpp"
#include "runtime/core/param_role.hpp"
#include "runtime/core/tensor.hpp"
#include "runtime/fsdp/row_sharding.hpp"

#include <string>
#include <utility>
#include <vector>

namespace orthoshard {

struct ParamSpec {
  std::string name;
  Shape shape;  // global shape
  RuleKind rule;
};

// Routing by role: hidden matrices (ParamRole::Matrix, 2+ dimensions) take the matrix rule of `c.name`;
// embeddings, heads and vectors take AdamW. c.adam_params / c.matrix_params (glob patterns on names, e.g.
// "h.*.attn.*") override, AdamW first; a matrix_params pattern matching a 1-D parameter is a UsageError.
RuleKind route_parameter(const std::string& name, const Shape& shape, ParamRole role, const OptimConfig& c);
std::vector<ParamSpec> route_parameters(const std::vector<ParamInfo>& params, const OptimConfig& c);
// Parameters given by name and shape only (tests, benchmarks): roles from the shape (role_from_shape).
std::vector<ParamInfo> roles_from_shapes(const std::vector<std::pair<std::string, Shape>>& params);
bool glob_match(const std::string& pattern, const std::string& name);

// Where a state tensor lives across ranks, for checkpoints: sharded by rows like its parameter,
// identical on every rank, or only on the owner rank of the parameter's matrix task.
enum class StateHome { Rows, Replicated, Owner };

// The orthogonalization tasks of a parameter list (one per matrix-rule parameter, in order; Conda's carry its
// basis cost and cannot use the Gram scheme) and task_index[param] (-1: elementwise rule).
std::vector<OrthoTask> matrix_tasks(const std::vector<ParamSpec>& params, const OptimConfig& c,
                                    std::vector<int>& task_index);
// Where state `name` of a parameter lives (task: its matrix task, or null); see ShardedOptimizer::state_home.
StateHome state_home_of(RuleKind rule, const OrthoTask* task, const OptimConfig& c, const std::string& name,
                        int* owner);
// Estimated flops of one Conda basis refresh of an m x n matrix (Gram product + eigensolve).
double svd_flops(std::int64_t m, std::int64_t n);

// What one step cost this rank.
struct StepStats {
  double local_ms = 0;     // elementwise rules and momentum
  double ortho_ms = 0;     // Newton-Schulz / SVD / projections, exchange waits included
  double post_ms = 0;      // NorMuon row statistics, norms and the parameter update
  std::uint64_t bytes_sent = 0, bytes_received = 0;
  double ortho_flops = 0;  // estimated flops of orthogonalization work done on this rank
};

class ShardedOptimizer {
 public:
  virtual ~ShardedOptimizer();
  ShardedOptimizer(ShardedOptimizer&&) noexcept;
  ShardedOptimizer& operator=(ShardedOptimizer&&) noexcept;

  // One step: params[i] and grads[i] are this rank's rows of params()[i] (shape local_shape(i)), contiguous, of
  // dtype() on device(). copies: empty, or one tensor per parameter (undefined/empty entries skipped) that
  // receives a bf16 copy of the updated parameter (device only: the source of the next all-gathers). lr_scale
  // multiplies every learning rate (the schedule's factor). Collective over the communicator.
  virtual void step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, double lr_scale = 1.0,
                    const std::vector<Tensor>& copies = {}) = 0;
  virtual DType dtype() const = 0;
  virtual Device device() const = 0;

  const OptimConfig& config() const { return config_; }
  const std::vector<ParamSpec>& params() const { return specs_; }
  const Shape& local_shape(std::size_t i) const { return local_shapes_.at(i); }
  RowRange local_rows(std::size_t i) const;
  // Named state: tensors of dtype() on device() (host i64 counters: step, conda_basis_step, conda_basis_side).
  ParamState& state(std::size_t i) { return states_.at(i); }
  ParamState& state(const std::string& param_name);
  StateHome state_home(std::size_t param, const std::string& state_name, int* owner = nullptr) const;
  // A state tensor on the host (the tensor itself in host memory, a copy of a device one), and a state set from
  // a host tensor (a checkpoint's; 0-d i64 tensors are the counters).
  virtual Tensor state_to_host(std::size_t param, const std::string& state_name);
  virtual void load_state(std::size_t param, const std::string& state_name, const Tensor& host);
  int rank() const { return rank_; }
  int nranks() const { return nranks_; }
  const OrthoPlan& plan() const { return plan_; }  // built once, reused by every step
  const StepStats& last_step_stats() const { return stats_; }

 protected:
  // comm: the data-parallel group the parameters are row-sharded over (null: one rank, whole tensors).
  ShardedOptimizer(OptimConfig config, std::vector<ParamSpec> params, Communicator* comm);
  // Checks the step's arguments against the parameters, dtype() and device().
  void check_step_args(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                       const std::vector<Tensor>& copies) const;
  const OrthoTask* task_of(std::size_t param) const;
  template <typename Kernels> friend class OptimizerStep;

  OptimConfig config_;
  std::vector<ParamSpec> specs_;
  std::vector<Shape> local_shapes_;
  std::vector<ParamState> states_;
  Communicator* comm_;
  int rank_ = 0, nranks_ = 1;
  OrthoPlan plan_;
  std::vector<int> task_index_;  // param -> index in plan_.tasks or -1
  StepStats stats_;
};

}  // namespace orthoshard
