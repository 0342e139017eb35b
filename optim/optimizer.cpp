// Routing and the sharded optimizer step: (A) local elementwise work and momentum, (B) distributed
// orthogonalization (owner exchange batches, pipelined; Gram-sharded NS), Conda's basis and projections,
// (C) NorMuon's row statistics with exact global norms, and the parameter update.
#include "optim/optimizer.hpp"

#include "optim/distributed/row_exchange.hpp"
#include "optim/linalg.hpp"
#include "optim/orthogonalize/newton_schulz.hpp"
#include "runtime/core/error.hpp"

#include <fnmatch.h>

#include <chrono>
#include <cmath>
#include <map>

namespace orthoshard {

template <typename T> struct StepBuffers {
  explicit StepBuffers(int ns_steps) : ns(ns_steps) {}
  NewtonSchulz<T> ns;
  std::vector<std::vector<T>> update;  // per parameter: this rank's rows of the update
  std::map<std::size_t, std::vector<T>> full;  // per owned task: the whole matrix (Conda left: G then M)
  std::vector<T> proj_g, proj_m, normed, back, refresh_full;
};

namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

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

// ---------------------------------------------------------------------------------------------------

Optimizer::Optimizer(OptimConfig config, std::vector<ParamSpec> params, DType dtype, Communicator* comm)
    : config_(std::move(config)), specs_(std::move(params)), states_(specs_.size()), dtype_(dtype), comm_(comm) {
  OS_CHECK(dtype == DType::F32 || dtype == DType::F64, "optimizer: dtype {} is not f32 or f64", dtype_name(dtype));
  if (comm_) {
    rank_ = comm_->rank();
    nranks_ = comm_->size();
  }
  for (const auto& s : specs_) {
    OS_CHECK(!s.shape.empty(), "optimizer: parameter {} is 0-d; give it shape (1,)", s.name);
    local_shapes_.push_back(shard_shape(s.shape, nranks_, rank_));
  }
  std::vector<OrthoTask> tasks = matrix_tasks(specs_, config_, task_index_);
  plan_ = make_ortho_plan(std::move(tasks), nranks_, config_.ortho_scheme, config_.ns_steps);
  if (dtype == DType::F32) buf32_ = std::make_unique<StepBuffers<float>>(config_.ns_steps);
  else buf64_ = std::make_unique<StepBuffers<double>>(config_.ns_steps);
}

Optimizer::Optimizer(Optimizer&&) noexcept = default;
Optimizer& Optimizer::operator=(Optimizer&&) noexcept = default;
Optimizer::~Optimizer() = default;

Optimizer Optimizer::with_routing(OptimConfig config, const std::vector<std::pair<std::string, Shape>>& params,
                                  DType dtype, Communicator* comm) {
  std::vector<ParamSpec> specs;
  for (const auto& [name, shape] : params) specs.push_back({name, shape, route_parameter(name, shape, config)});
  return Optimizer(std::move(config), std::move(specs), dtype, comm);
}

RowRange Optimizer::local_rows(std::size_t i) const { return shard_rows(specs_.at(i).shape[0], nranks_, rank_); }

ParamState& Optimizer::state(const std::string& param_name) {
  for (std::size_t i = 0; i < specs_.size(); ++i)
    if (specs_[i].name == param_name) return states_[i];
  fail("optimizer: no parameter named '{}'", param_name);
}

const OrthoTask* Optimizer::task_of(std::size_t param) const {
  const int t = task_index_.at(param);
  return t < 0 ? nullptr : &plan_.tasks[static_cast<std::size_t>(t)];
}

StateHome Optimizer::state_home(std::size_t param, const std::string& name, int* owner) const {
  return state_home_of(specs_.at(param).rule, task_of(param), config_, name, owner);
}

template <> StepBuffers<float>& Optimizer::buffers<float>() { return *buf32_; }
template <> StepBuffers<double>& Optimizer::buffers<double>() { return *buf64_; }

void Optimizer::step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, double lr_scale) {
  OS_CHECK(params.size() == specs_.size() && grads.size() == specs_.size(),
           "optimizer step: {} parameters and {} gradients given for {} registered parameters", params.size(),
           grads.size(), specs_.size());
  for (std::size_t i = 0; i < specs_.size(); ++i) {
    const auto& s = specs_[i];
    const Shape& ls = local_shapes_[i];
    OS_CHECK(params[i].shape() == ls && grads[i].shape() == ls,
             "optimizer step: parameter {} {} expects this rank's shard {}, got parameter {} and gradient {}",
             s.name, shape_str(s.shape), shape_str(ls), params[i].describe(), grads[i].describe());
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
  StepBuffers<T>& b = buffers<T>();
  const OptimConfig& c = config_;
  stats_ = {};
  b.update.resize(specs_.size());
  const double lr = c.lr * lr_scale;

  // (A) Local: elementwise rules, Muon/NorMuon momentum, Conda's first moment.
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < specs_.size(); ++i) {
    const ParamSpec& s = specs_[i];
    const Shape& ls = local_shapes_[i];
    T* w = params[i].data<T>();
    const T* g = grads[i].data<T>();
    ParamState& st = states_[i];
    try {
      switch (s.rule) {
        case RuleKind::AdamW: {
          // With optim.name = adamw every tensor uses the main hyperparameters; otherwise the adam_* ones.
          AdamHparams hp = c.adam;
          if (c.name == "adamw") hp = {c.lr, c.beta1, c.beta2_adam, c.eps, c.weight_decay};
          adamw_step<T>(w, g, ls, st, hp, hp.lr * lr_scale);
          break;
        }
        case RuleKind::CondaPlain: conda_plain_step<T>(w, g, ls, st, c, lr); break;
        case RuleKind::Muon:
        case RuleKind::NorMuon:
          advance_step(st);
          b.update[i].resize(static_cast<std::size_t>(shape_numel(ls)));
          momentum_update<T>(g, ls, st, c, b.update[i].data());
          break;
        case RuleKind::Conda:
          advance_step(st);
          conda_momentum<T>(st.ensure("exp_avg", ls, dtype_of<T>()).template data<T>(), g, shape_numel(ls), c.beta1);
          break;
      }
    } catch (...) {
      rethrow_with_context("optimizer step, parameter " + s.name);
    }
  }
  stats_.local_ms = ms_since(t0);

  // (B) + (C)
  const RuleKind matrix = c.matrix_rule();
  if (plan_.tasks.empty()) return;
  if (matrix == RuleKind::Conda) {
    t0 = Clock::now();
    conda_matrices(b, params, grads, lr);
    stats_.ortho_ms = ms_since(t0);
    return;
  }
  t0 = Clock::now();
  orthogonalize(b);
  stats_.ortho_ms = ms_since(t0);
  t0 = Clock::now();
  if (matrix == RuleKind::NorMuon) {
    normuon_finish(b, params, lr);
  } else {
    for (const auto& t : plan_.tasks)
      decay_then_apply<T>(params[t.param].data<T>(), b.update[t.param].data(), shape_numel(local_shapes_[t.param]),
                          lr, c.weight_decay, matrix_scale_factor(c.scale, t.m, t.n));
  }
  stats_.post_ms = ms_since(t0);
}

template <typename T> void Optimizer::orthogonalize(StepBuffers<T>& b) {
  // Gram-sharded tasks: global norms in one all-reduce, then NS with one Gram all-reduce per iteration.
  std::vector<const OrthoTask*> gram;
  for (const auto& t : plan_.tasks)
    if (t.gram) gram.push_back(&t);
  if (!gram.empty()) {
    std::vector<double> ss(gram.size());
    for (std::size_t j = 0; j < gram.size(); ++j)
      ss[j] = linalg::sum_squares(b.update[gram[j]->param].data(), shape_numel(local_shapes_[gram[j]->param]));
    comm_->all_reduce(ss.data(), ss.data(), ss.size(), DType::F64, ReduceOp::Sum);
    for (std::size_t j = 0; j < gram.size(); ++j) {
      const OrthoTask& t = *gram[j];
      T* x = b.update[t.param].data();
      const std::int64_t rows = local_shapes_[t.param][0];
      const T inv = static_cast<T>(1.0 / (std::sqrt(ss[j]) + 1e-7));
      for (std::int64_t i = 0; i < rows * t.n; ++i) x[i] *= inv;
      b.ns.iterate_row_shard(x, rows, t.n, [&](T* a, std::int64_t n) {
        comm_->all_reduce(a, a, static_cast<std::size_t>(n * n), dtype_of<T>(), ReduceOp::Sum);
        stats_.bytes_sent += static_cast<std::uint64_t>(n * n) * sizeof(T);
        stats_.bytes_received += static_cast<std::uint64_t>(n * n) * sizeof(T);
      });
      stats_.ortho_flops += gram_ns_flops_per_rank(t.m, t.n, config_.ns_steps, nranks_);
    }
  }
  // Owner tasks, batch by batch: batch k+1's rows travel while batch k is orthogonalized.
  std::vector<std::vector<const OrthoTask*>> batches(static_cast<std::size_t>(plan_.batches));
  for (const auto& t : plan_.tasks)
    if (!t.gram) batches[static_cast<std::size_t>(t.batch)].push_back(&t);
  std::vector<std::unique_ptr<RowExchange<T>>> ex;
  auto start = [&](std::size_t k) {
    std::vector<ExchangeItem> items;
    std::vector<const T*> local;
    for (const OrthoTask* t : batches[k]) {
      items.push_back({t->m, t->n, t->owner});
      local.push_back(b.update[t->param].data());
    }
    ex.push_back(std::make_unique<RowExchange<T>>(comm_, std::move(items)));
    ex.back()->start_gather(local);
  };
  if (!batches.empty()) start(0);
  for (std::size_t k = 0; k < batches.size(); ++k) {
    if (k + 1 < batches.size()) start(k + 1);
    std::vector<T*> full;
    for (const OrthoTask* t : batches[k]) {
      auto& f = b.full[t->param];
      if (t->owner == rank_) f.resize(static_cast<std::size_t>(t->m * t->n));
      full.push_back(t->owner == rank_ ? f.data() : nullptr);
    }
    ex[k]->finish_gather(full);
    for (std::size_t j = 0; j < batches[k].size(); ++j)
      if (batches[k][j]->owner == rank_) {
        b.ns.run(full[j], batches[k][j]->m, batches[k][j]->n);
        stats_.ortho_flops += ns_flops(batches[k][j]->m, batches[k][j]->n, config_.ns_steps);
      }
    ex[k]->start_return(std::vector<const T*>(full.begin(), full.end()));
  }
  for (std::size_t k = 0; k < batches.size(); ++k) {
    std::vector<T*> local;
    for (const OrthoTask* t : batches[k]) local.push_back(b.update[t->param].data());
    ex[k]->finish_return(local);
    stats_.bytes_sent += ex[k]->bytes_sent();
    stats_.bytes_received += ex[k]->bytes_received();
  }
}

template <typename T>
void Optimizer::normuon_finish(StepBuffers<T>& b, const std::vector<Tensor>& params, double lr) {
  const OptimConfig& c = config_;
  // Row statistics are local; the two Frobenius norms per matrix are sums over all rows. Every rank's
  // per-row sums of squares are gathered and added in global row order, so the norms (and the update)
  // do not depend on the number of ranks.
  std::vector<double> mine;
  std::vector<std::int64_t> matrix_rows;
  for (const auto& t : plan_.tasks) {
    const std::int64_t rows = local_shapes_[t.param][0];
    T* v = states_[t.param].ensure("row_second_moment", {rows, 1}, dtype_of<T>()).template data<T>();
    const std::size_t off = mine.size();
    mine.resize(off + 2 * static_cast<std::size_t>(rows));
    normuon_normalize_rows<T>(b.update[t.param].data(), rows, t.n, v, c.beta2, mine.data() + off,
                              mine.data() + off + rows);
    matrix_rows.push_back(t.m);
  }
  const auto sums = global_row_sums(mine, matrix_rows, 2, nranks_ > 1 ? comm_ : nullptr);
  const std::vector<double>& before = sums[0];
  const std::vector<double>& after = sums[1];
  for (std::size_t j = 0; j < plan_.tasks.size(); ++j) {
    const OrthoTask& t = plan_.tasks[j];
    T* o = b.update[t.param].data();
    const std::int64_t size = shape_numel(local_shapes_[t.param]);
    const double hat_norm = std::sqrt(after[j]);
    double factor;
    if (c.scale == MatrixScale::Paper) {
      factor = 0.2 * std::sqrt(static_cast<double>(t.m) * static_cast<double>(t.n)) / (hat_norm + 1e-10);
    } else {
      // Reference order: rescale to ‖O‖_F first (rounded in T), then the shape factor.
      const T f = static_cast<T>(std::sqrt(before[j]) / (hat_norm + 1e-10));
      for (std::int64_t i = 0; i < size; ++i) o[i] *= f;
      factor = matrix_scale_factor(c.scale, t.m, t.n);
    }
    decay_then_apply<T>(params[t.param].data<T>(), o, size, lr, c.weight_decay, factor);
  }
}

template <typename T>
void Optimizer::conda_matrices(StepBuffers<T>& b, const std::vector<Tensor>& params,
                               const std::vector<Tensor>& grads, double lr) {
  const OptimConfig& c = config_;
  const DType dt = dtype_of<T>();
  struct Item {
    const OrthoTask* task;
    bool right;
    std::int64_t k, rows, t;
  };
  std::vector<Item> items;
  std::vector<const OrthoTask*> refresh;
  for (const auto& t : plan_.tasks) {
    ParamState& st = states_[t.param];
    const std::int64_t step = st.get_int("step");
    Item it{&t, conda_right_side(c.proj_type, t.m, t.n), std::min(t.m, t.n), local_shapes_[t.param][0], step};
    items.push_back(it);
    if ((step - 1) % c.update_proj_gap == 0 || st.get_int("conda_basis_step") == 0) refresh.push_back(&t);
  }

  // Basis refresh: the owner gathers the whole first moment and computes its basis; a right basis (k x n) is
  // broadcast to every rank, a left basis (m x k) stays with the owner. One matrix at a time through one reused
  // buffer: refreshes are rare, and fresh pages are most of what a first step costs on the CPU.
  for (const OrthoTask* tp : refresh) {
    const OrthoTask& t = *tp;
    ParamState& st = states_[t.param];
    const bool right = conda_right_side(c.proj_type, t.m, t.n);
    const std::int64_t k = std::min(t.m, t.n);
    const Shape bshape = right ? Shape{k, t.n} : Shape{t.m, k};
    auto& f = b.refresh_full;
    if (t.owner == rank_ && f.size() < static_cast<std::size_t>(t.m * t.n)) f.resize(static_cast<std::size_t>(t.m * t.n));
    RowExchange<T> ex(comm_, {{t.m, t.n, t.owner}});
    ex.start_gather({st.get("exp_avg").template data<T>()});
    ex.finish_gather({t.owner == rank_ ? f.data() : nullptr});
    stats_.bytes_sent += ex.bytes_sent();
    stats_.bytes_received += ex.bytes_received();
    // The basis lives on the owner (left) or on every rank (right, broadcast).
    T* basis = (right || t.owner == rank_) ? st.ensure("conda_basis", bshape, dt).template data<T>() : nullptr;
    if (t.owner == rank_) {
      linalg::singular_basis(f.data(), t.m, t.n, right, basis);
      stats_.ortho_flops += svd_flops(t.m, t.n);
    }
    if (right && nranks_ > 1) comm_->broadcast(basis, static_cast<std::size_t>(k * t.n), dt, t.owner);
    st.set_int("conda_basis_step", st.get_int("step"));
    st.set_int("conda_basis_side", right ? 0 : 1);
  }

  // Right basis: everything row-local. Left basis: the owner projects the whole G and first moment.
  std::vector<const OrthoTask*> left;
  for (const Item& it : items) {
    const OrthoTask& t = *it.task;
    ParamState& st = states_[t.param];
    auto& upd = b.update[t.param];
    upd.resize(static_cast<std::size_t>(it.rows * t.n));
    if (!it.right) {
      left.push_back(&t);
      continue;
    }
    const T* p = st.get("conda_basis").template data<T>();
    b.proj_g.resize(static_cast<std::size_t>(it.rows * it.k));
    b.proj_m.resize(b.proj_g.size());
    b.normed.resize(b.proj_g.size());
    conda_project<T>(true, grads[t.param].data<T>(), it.rows, t.n, p, it.k, b.proj_g.data());
    conda_project<T>(true, st.get("exp_avg").template data<T>(), it.rows, t.n, p, it.k, b.proj_m.data());
    T* v = st.ensure("exp_avg_sq", {it.rows, it.k}, dt).template data<T>();
    conda_normalize<T>(v, b.proj_g.data(), b.proj_m.data(), it.rows * it.k, c.beta2_adam, c.eps, b.normed.data());
    conda_back<T>(true, b.normed.data(), it.rows, t.n, p, it.k, upd.data());
    stats_.ortho_flops += 6.0 * static_cast<double>(it.rows * t.n * it.k);
  }
  if (!left.empty()) {
    std::vector<ExchangeItem> gather_items, return_items;
    std::vector<const T*> local;
    std::vector<T*> full;
    for (const OrthoTask* t : left) {
      for (int part = 0; part < 2; ++part) gather_items.push_back({t->m, t->n, t->owner});
      return_items.push_back({t->m, t->n, t->owner});
      local.push_back(grads[t->param].data<T>());
      local.push_back(states_[t->param].get("exp_avg").template data<T>());
      auto& f = b.full[t->param];
      if (t->owner == rank_) f.resize(static_cast<std::size_t>(2 * t->m * t->n));
      full.push_back(t->owner == rank_ ? f.data() : nullptr);
      full.push_back(t->owner == rank_ ? f.data() + t->m * t->n : nullptr);
    }
    RowExchange<T> in(comm_, gather_items), out(comm_, return_items);
    in.start_gather(local);
    in.finish_gather(full);
    std::vector<const T*> results;
    for (std::size_t j = 0; j < left.size(); ++j) {
      const OrthoTask& t = *left[j];
      if (t.owner != rank_) {
        results.push_back(nullptr);
        continue;
      }
      ParamState& st = states_[t.param];
      const std::int64_t k = std::min(t.m, t.n);
      const T* p = st.get("conda_basis").template data<T>();
      T* g_full = full[2 * j];
      T* m_full = full[2 * j + 1];
      b.proj_g.resize(static_cast<std::size_t>(k * t.n));
      b.proj_m.resize(b.proj_g.size());
      b.normed.resize(b.proj_g.size());
      conda_project<T>(false, g_full, t.m, t.n, p, k, b.proj_g.data());
      conda_project<T>(false, m_full, t.m, t.n, p, k, b.proj_m.data());
      T* v = st.ensure("exp_avg_sq", {k, t.n}, dt).template data<T>();
      conda_normalize<T>(v, b.proj_g.data(), b.proj_m.data(), k * t.n, c.beta2_adam, c.eps, b.normed.data());
      conda_back<T>(false, b.normed.data(), t.m, t.n, p, k, g_full);  // the update, in G's buffer
      results.push_back(g_full);
      stats_.ortho_flops += 6.0 * static_cast<double>(t.m * t.n * k);
    }
    out.start_return(results);
    std::vector<T*> dest;
    for (const OrthoTask* t : left) dest.push_back(b.update[t->param].data());
    out.finish_return(dest);
    stats_.bytes_sent += in.bytes_sent() + out.bytes_sent();
    stats_.bytes_received += in.bytes_received() + out.bytes_received();
  }
  for (const Item& it : items) {
    const OrthoTask& t = *it.task;
    const double step = conda_step_size(c, it.t, lr) * c.conda_scale;
    conda_apply<T>(params[t.param].data<T>(), b.update[t.param].data(), it.rows * t.n, step, lr, c.weight_decay);
  }
}

}  // namespace orthoshard
