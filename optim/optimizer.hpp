// Optimizer: routing (matrix rule vs AdamW), named per-parameter state, and one step over all
// parameters of this rank's row shards. Matrix rules orthogonalize across ranks (owner exchange or
// Gram-sharded Newton-Schulz, see optim/distributed/); with one rank (or no communicator) the same
// code runs without communication. Works in float (training) or double (reference checks).
#pragma once

#include "optim/config.hpp"
#include "optim/distributed/plan.hpp"
#include "runtime/fsdp/row_sharding.hpp"
#include "optim/rules.hpp"
#include "optim/state.hpp"
#include "runtime/comm/communicator.hpp"
#include "runtime/core/tensor.hpp"

#include <memory>
#include <string>
#include <vector>

namespace orthoshard {

struct ParamSpec {
  std::string name;
  Shape shape;  // global shape
  RuleKind rule;
};

// Default routing: parameters of 2+ dims take the matrix rule of `c.name`, except embeddings and the LM
// head (names containing wte, wpe, embed, lm_head); 1-D parameters (norms, biases) take AdamW.
// c.adam_params / c.matrix_params (glob patterns, e.g. "h.*.attn.*") override, AdamW first.
RuleKind route_parameter(const std::string& name, const Shape& shape, const OptimConfig& c);
bool glob_match(const std::string& pattern, const std::string& name);

// Where a state tensor lives across ranks, for checkpoints: sharded by rows like its parameter,
// identical on every rank, or only on the owner rank of the parameter's matrix task.
enum class StateHome { Rows, Replicated, Owner };

// The orthogonalization tasks of a parameter list (one per matrix-rule parameter, in order; Conda's carry its
// basis cost and cannot use the Gram scheme) and task_index[param] (-1: elementwise rule). Shared by the CPU
// and GPU optimizers so both plan alike.
std::vector<OrthoTask> matrix_tasks(const std::vector<ParamSpec>& params, const OptimConfig& c,
                                    std::vector<int>& task_index);
// Where state `name` of a parameter lives (task: its matrix task, or null); see Optimizer::state_home.
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

template <typename T> struct StepBuffers;

class Optimizer {
 public:
  // comm: the data-parallel group the parameters are row-sharded over (null: one rank, whole tensors).
  Optimizer(OptimConfig config, std::vector<ParamSpec> params, DType dtype = DType::F32,
            Communicator* comm = nullptr);
  static Optimizer with_routing(OptimConfig config, const std::vector<std::pair<std::string, Shape>>& params,
                                DType dtype = DType::F32, Communicator* comm = nullptr);
  Optimizer(Optimizer&&) noexcept;
  Optimizer& operator=(Optimizer&&) noexcept;
  ~Optimizer();

  // One step: params[i] and grads[i] are this rank's rows of params()[i] (shape local_shape(i)).
  // lr_scale multiplies every learning rate (the schedule's factor). Collective over comm.
  void step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, double lr_scale = 1.0);

  const OptimConfig& config() const { return config_; }
  const std::vector<ParamSpec>& params() const { return specs_; }
  const Shape& local_shape(std::size_t i) const { return local_shapes_.at(i); }
  RowRange local_rows(std::size_t i) const;
  ParamState& state(std::size_t i) { return states_.at(i); }
  ParamState& state(const std::string& param_name);
  StateHome state_home(std::size_t param, const std::string& state_name, int* owner = nullptr) const;
  DType dtype() const { return dtype_; }
  int rank() const { return rank_; }
  int nranks() const { return nranks_; }

  const OrthoPlan& plan() const { return plan_; }  // built once, reused by every step
  const StepStats& last_step_stats() const { return stats_; }

 private:
  template <typename T> void step_typed(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                                        double lr_scale);
  template <typename T> void orthogonalize(StepBuffers<T>& b);
  template <typename T> void normuon_finish(StepBuffers<T>& b, const std::vector<Tensor>& params, double lr);
  template <typename T> void conda_matrices(StepBuffers<T>& b, const std::vector<Tensor>& params,
                                            const std::vector<Tensor>& grads, double lr);
  template <typename T> StepBuffers<T>& buffers();
  const OrthoTask* task_of(std::size_t param) const;

  OptimConfig config_;
  std::vector<ParamSpec> specs_;
  std::vector<Shape> local_shapes_;
  std::vector<ParamState> states_;
  DType dtype_;
  Communicator* comm_;
  int rank_ = 0, nranks_ = 1;
  OrthoPlan plan_;
  std::vector<int> task_index_;  // param -> index in plan_.tasks or -1
  StepStats stats_;
  std::unique_ptr<StepBuffers<float>> buf32_;
  std::unique_ptr<StepBuffers<double>> buf64_;
};

}  // namespace orthoshard
