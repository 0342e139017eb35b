// The host kernels behind the optimizer step of optim/step.hpp: the rules of optim/rules.cpp on host buffers,
// Newton-Schulz (whole matrices on their owner, or Gram-sharded across the ranks), and Conda's SVD basis.
#include "optim/optimizer.hpp"

#include "optim/linalg.hpp"
#include "optim/orthogonalize/newton_schulz.hpp"
#include "optim/step.hpp"
#include "runtime/core/error.hpp"

#include <cmath>
#include <map>

namespace orthoshard {

template <typename T> struct HostKernels {
  using Elem = T;
  using Exchange = RowExchange<T>;

  HostKernels(ShardedOptimizer& o, Communicator* c) : opt(o), comm(c), ns(o.config().ns_steps) {}

  ShardedOptimizer& opt;
  Communicator* comm;
  NewtonSchulz<T> ns;
  std::vector<std::vector<T>> updates;         // per parameter: this rank's rows of the update
  std::map<std::size_t, std::vector<T>> owned_full;  // per exchange batch in flight: the matrices this rank owns
  std::map<std::size_t, std::vector<T>> full;        // Conda's left projection, per owned task: G then M
  std::vector<T> proj_g, proj_m, normed, refresh_full;
  std::vector<double> sums;                    // NorMuon's per-row sums of squares

  // ---- buffers ----
  T* update(std::size_t i, std::int64_t count) {
    if (updates.size() < opt.params().size()) updates.resize(opt.params().size());
    auto& u = updates[i];
    if (u.size() < static_cast<std::size_t>(count)) u.resize(static_cast<std::size_t>(count));
    return u.data();
  }
  T* state(std::size_t i, const std::string& name, const Shape& shape) {
    return opt.state(i).ensure(name, shape, dtype_of<T>()).template data<T>();
  }
  // The owned matrices of an exchange batch, one after another; released once the batch's results are back.
  std::vector<T*> owned(std::size_t batch, const std::vector<const OrthoTask*>& tasks) {
    std::int64_t total = 0;
    for (const OrthoTask* t : tasks) total += t->m * t->n;
    auto& f = owned_full[batch];
    f.resize(static_cast<std::size_t>(total));
    std::vector<T*> out;
    std::int64_t off = 0;
    for (const OrthoTask* t : tasks) {
      out.push_back(f.data() + off);
      off += t->m * t->n;
    }
    return out;
  }
  void release_owned(std::size_t batch) { owned_full.erase(batch); }
  T* refresh(std::int64_t count) {
    // One matrix at a time through one reused buffer: fresh pages are most of what a first step costs.
    if (refresh_full.size() < static_cast<std::size_t>(count)) refresh_full.resize(static_cast<std::size_t>(count));
    return refresh_full.data();
  }
  T* left(std::size_t param, std::int64_t count) {
    auto& f = full[param];
    f.resize(static_cast<std::size_t>(count));
    return f.data();
  }
  std::unique_ptr<Exchange> exchange(std::vector<ExchangeItem> items) {
    return std::make_unique<Exchange>(comm, std::move(items));
  }

  // ---- rules ----
  static T* ptr(const Tensor& t) { return t.data<T>(); }
  void adamw(std::size_t i, const Tensor& w, const Tensor& g, const Tensor&, const AdamHparams& hp, double lr) {
    adamw_step<T>(ptr(w), ptr(g), opt.local_shape(i), opt.state(i), hp, lr);
  }
  void conda_plain(std::size_t i, const Tensor& w, const Tensor& g, const Tensor&, double lr) {
    conda_plain_step<T>(ptr(w), ptr(g), opt.local_shape(i), opt.state(i), opt.config(), lr);
  }
  void momentum(std::size_t i, const Tensor& g) {
    const Shape& ls = opt.local_shape(i);
    momentum_update<T>(ptr(g), ls, opt.state(i), opt.config(), update(i, shape_numel(ls)));
  }
  void conda_momentum(std::size_t i, const Tensor& g) {
    const Shape& ls = opt.local_shape(i);
    orthoshard::conda_momentum<T>(state(i, "exp_avg", ls), ptr(g), shape_numel(ls), opt.config().beta1);
  }
  void decay_then_apply(std::size_t i, const Tensor& w, const Tensor&, double lr, double wd, double factor) {
    const std::int64_t n = shape_numel(opt.local_shape(i));
    orthoshard::decay_then_apply<T>(ptr(w), update(i, n), n, lr, wd, factor);
  }
  void scale(std::size_t i, double f) {
    const T ft = static_cast<T>(f);
    const std::int64_t n = shape_numel(opt.local_shape(i));
    T* o = update(i, n);
    for (std::int64_t j = 0; j < n; ++j) o[j] *= ft;
  }
  void conda_apply(std::size_t i, const Tensor& w, const Tensor&, double step, double lr, double wd) {
    const std::int64_t n = shape_numel(opt.local_shape(i));
    orthoshard::conda_apply<T>(ptr(w), update(i, n), n, step, lr, wd);
  }

  // ---- matrices ----
  // Gram-sharded tasks: global norms in one all-reduce, then NS with one Gram all-reduce per iteration. Returns
  // the bytes all-reduced (each way).
  std::uint64_t gram(const std::vector<const OrthoTask*>& tasks) {
    std::uint64_t bytes = 0;
    std::vector<double> ss(tasks.size());
    for (std::size_t j = 0; j < tasks.size(); ++j)
      ss[j] = linalg::sum_squares(update(tasks[j]->param, 0), shape_numel(opt.local_shape(tasks[j]->param)));
    comm->all_reduce(ss.data(), ss.data(), ss.size(), DType::F64, ReduceOp::Sum);
    for (std::size_t j = 0; j < tasks.size(); ++j) {
      const OrthoTask& t = *tasks[j];
      const std::int64_t rows = opt.local_shape(t.param)[0];
      T* x = update(t.param, rows * t.n);
      const T inv = static_cast<T>(1.0 / (std::sqrt(ss[j]) + 1e-7));
      for (std::int64_t i = 0; i < rows * t.n; ++i) x[i] *= inv;
      ns.iterate_row_shard(x, rows, t.n, [&](T* a, std::int64_t n) {
        comm->all_reduce(a, a, static_cast<std::size_t>(n * n), dtype_of<T>(), ReduceOp::Sum);
        bytes += static_cast<std::uint64_t>(n * n) * sizeof(T);
      });
    }
    return bytes;
  }
  void newton_schulz(const std::vector<const OrthoTask*>& tasks, const std::vector<T*>& mats) {
    for (std::size_t j = 0; j < tasks.size(); ++j) ns.run(mats[j], tasks[j]->m, tasks[j]->n);
  }
  void begin_row_sums(std::int64_t count) { sums.assign(static_cast<std::size_t>(count), 0.0); }
  void normuon_rows(std::size_t i, std::int64_t rows, std::int64_t n, T* v, double beta2, std::int64_t off) {
    normuon_normalize_rows<T>(update(i, rows * n), rows, n, v, beta2, sums.data() + off, sums.data() + off + rows);
  }
  const std::vector<double>& row_sums() const { return sums; }
  void basis(T* full_matrix, std::int64_t m, std::int64_t n, bool right, T* out) {
    linalg::singular_basis(full_matrix, m, n, right, out);
  }
  void conda_right(const Tensor& g, const T* mom, std::int64_t rows, std::int64_t n, const T* p, std::int64_t k, T* v,
                   T* upd) {
    const auto size = static_cast<std::size_t>(rows * k);
    proj_g.resize(size);
    proj_m.resize(size);
    normed.resize(size);
    conda_project<T>(true, ptr(g), rows, n, p, k, proj_g.data());
    conda_project<T>(true, mom, rows, n, p, k, proj_m.data());
    conda_normalize<T>(v, proj_g.data(), proj_m.data(), rows * k, opt.config().beta2_adam, opt.config().eps,
                       normed.data());
    conda_back<T>(true, normed.data(), rows, n, p, k, upd);
  }
  void conda_left(T* g_full, const T* m_full, std::int64_t m, std::int64_t n, const T* p, std::int64_t k, T* v) {
    const auto size = static_cast<std::size_t>(k * n);
    proj_g.resize(size);
    proj_m.resize(size);
    normed.resize(size);
    conda_project<T>(false, g_full, m, n, p, k, proj_g.data());
    conda_project<T>(false, m_full, m, n, p, k, proj_m.data());
    conda_normalize<T>(v, proj_g.data(), proj_m.data(), k * n, opt.config().beta2_adam, opt.config().eps,
                       normed.data());
    conda_back<T>(false, normed.data(), m, n, p, k, g_full);
  }
};

Optimizer::Optimizer(OptimConfig config, std::vector<ParamSpec> params, DType dtype, Communicator* comm)
    : ShardedOptimizer(std::move(config), std::move(params), comm), dtype_(dtype) {
  OS_CHECK(dtype == DType::F32 || dtype == DType::F64, "optimizer: dtype {} is not f32 or f64", dtype_name(dtype));
  std::vector<OrthoTask> tasks = matrix_tasks(specs_, config_, task_index_);
  plan_ = make_ortho_plan(std::move(tasks), nranks_, config_.ortho_scheme, config_.ns_steps);
  make_kernels();
}

// The kernels refer to the optimizer they serve, so a moved optimizer gets its own (their buffers are scratch).
void Optimizer::make_kernels() {
  k32_.reset();
  k64_.reset();
  if (dtype_ == DType::F32) k32_ = std::make_unique<HostKernels<float>>(*this, comm_);
  else k64_ = std::make_unique<HostKernels<double>>(*this, comm_);
}

Optimizer::Optimizer(Optimizer&& o) noexcept : ShardedOptimizer(std::move(o)), dtype_(o.dtype_) { make_kernels(); }

Optimizer& Optimizer::operator=(Optimizer&& o) noexcept {
  ShardedOptimizer::operator=(std::move(o));
  dtype_ = o.dtype_;
  make_kernels();
  return *this;
}

Optimizer::~Optimizer() = default;

Optimizer Optimizer::with_roles(OptimConfig config, const std::vector<ParamInfo>& params, DType dtype,
                                Communicator* comm) {
  std::vector<ParamSpec> specs = route_parameters(params, config);
  return Optimizer(std::move(config), std::move(specs), dtype, comm);
}

Optimizer Optimizer::with_routing(OptimConfig config, const std::vector<std::pair<std::string, Shape>>& params,
                                  DType dtype, Communicator* comm) {
  return with_roles(std::move(config), roles_from_shapes(params), dtype, comm);
}

void Optimizer::step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, double lr_scale,
                     const std::vector<Tensor>& copies) {
  check_step_args(params, grads, copies);
  OS_CHECK(copies.empty(), "optimizer step: bf16 copies are written by the device optimizer only");
  if (dtype_ == DType::F32) OptimizerStep<HostKernels<float>>(*this, *k32_).run(params, grads, lr_scale, copies);
  else OptimizerStep<HostKernels<double>>(*this, *k64_).run(params, grads, lr_scale, copies);
}

}  // namespace orthoshard
