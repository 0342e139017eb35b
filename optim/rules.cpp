// AdamW, Muon, NorMuon and Conda update rules (host, float or double).
#include "optim/rules.hpp"

#include "optim/linalg.hpp"
#include "runtime/core/error.hpp"

#include <algorithm>
#include <cmath>

namespace orthoshard {

double matrix_scale_factor(MatrixScale s, std::int64_t m, std::int64_t n) {
  switch (s) {
    case MatrixScale::Keller: return std::sqrt(std::max(1.0, static_cast<double>(m) / static_cast<double>(n)));
    case MatrixScale::Moonlight: return 0.2 * std::sqrt(static_cast<double>(std::max(m, n)));
    case MatrixScale::None:
    case MatrixScale::Paper: return 1.0;
  }
  return 1.0;
}

bool conda_right_side(CondaProjType t, std::int64_t m, std::int64_t n) {
  switch (t) {
    case CondaProjType::Std: return m >= n;
    case CondaProjType::ReverseStd: return m < n;
    case CondaProjType::Right: return true;
    case CondaProjType::Left: return false;
  }
  return true;
}

namespace {
// Elementwise loops run on OpenMP threads above this many elements (each element's result is independent
// of the thread count, so results stay bitwise reproducible).
constexpr std::int64_t kParallelMin = 1 << 15;

template <typename T> DType dt() { return dtype_of<T>(); }

// Rows = dim 0, columns = the product of the rest (3-D/4-D weights as matrices; 1-D as a column).
std::pair<std::int64_t, std::int64_t> matrix_dims(const Shape& s) {
  OS_CHECK(!s.empty(), "optimizer: a 0-d parameter has no rows");
  const std::int64_t m = s[0];
  return {m, m == 0 ? 0 : shape_numel(s) / m};
}

template <typename T> std::int64_t next_step(ParamState& st) {
  const std::int64_t t = st.get_int("step") + 1;
  st.set_int("step", t);
  return t;
}

// W ← W (1 − lr λ); W ← W − lr · upd · factor.
template <typename T>
void decay_and_apply(T* w, const T* upd, std::int64_t size, double lr, double wd, double factor) {
  const T keep = static_cast<T>(1.0 - lr * wd);
  const T step = static_cast<T>(lr * factor);
#pragma omp parallel for simd schedule(static) if (size > kParallelMin)
  for (std::int64_t i = 0; i < size; ++i) {
    w[i] *= keep;
    w[i] -= step * upd[i];
  }
}

// M ← lerp(M, G, 1−β); U ← lerp(G, M, β) (Nesterov) or M.
template <typename T>
void momentum_update(const T* g, const Shape& shape, ParamState& st, const OptimConfig& c, std::vector<T>& u) {
  const std::int64_t size = shape_numel(shape);
  T* mom = st.ensure("momentum", shape, dt<T>()).template data<T>();
  const T beta = static_cast<T>(c.momentum);
  u.resize(static_cast<std::size_t>(size));
  T* up = u.data();
  const bool nesterov = c.nesterov;
#pragma omp parallel for simd schedule(static) if (size > kParallelMin)
  for (std::int64_t i = 0; i < size; ++i) {
    mom[i] = lerp(mom[i], g[i], T(1) - beta);
    up[i] = nesterov ? lerp(g[i], mom[i], beta) : mom[i];
  }
}
}  // namespace

template <typename T>
void adamw_step(T* w, const T* g, const Shape& shape, ParamState& st, const AdamHparams& hp, double lr) {
  const std::int64_t size = shape_numel(shape);
  T* m = st.ensure("exp_avg", shape, dt<T>()).template data<T>();
  T* v = st.ensure("exp_avg_sq", shape, dt<T>()).template data<T>();
  const std::int64_t t = next_step<T>(st);
  const T b1 = static_cast<T>(hp.beta1), b2 = static_cast<T>(hp.beta2);
  const double bc1 = 1.0 - std::pow(hp.beta1, static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(hp.beta2, static_cast<double>(t));
  const T step = static_cast<T>(lr / bc1), bc2_sqrt = static_cast<T>(std::sqrt(bc2)), eps = static_cast<T>(hp.eps);
  const T keep = static_cast<T>(1.0 - lr * hp.weight_decay);
#pragma omp parallel for simd schedule(static) if (size > kParallelMin)
  for (std::int64_t i = 0; i < size; ++i) {
    w[i] *= keep;
    m[i] = lerp(m[i], g[i], T(1) - b1);
    v[i] = v[i] * b2 + (T(1) - b2) * g[i] * g[i];
    w[i] -= step * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
  }
}

template <typename T>
void muon_step(T* w, const T* g, const Shape& shape, ParamState& st, const OptimConfig& c, double lr,
               RuleWorkspace<T>& ws) {
  const auto [m, n] = matrix_dims(shape);
  next_step<T>(st);
  momentum_update(g, shape, st, c, ws.update);
  ws.ns.run(ws.update.data(), m, n);
  decay_and_apply(w, ws.update.data(), m * n, lr, c.weight_decay, matrix_scale_factor(c.scale, m, n));
}

template <typename T>
void normuon_step(T* w, const T* g, const Shape& shape, ParamState& st, const OptimConfig& c,
                  double lr, RuleWorkspace<T>& ws) {
  const auto [m, n] = matrix_dims(shape);
  next_step<T>(st);
  momentum_update(g, shape, st, c, ws.update);
  T* o = ws.update.data();
  ws.ns.run(o, m, n);
  T* v = st.ensure("row_second_moment", {m, 1}, dt<T>()).template data<T>();
  const double o_norm = std::sqrt(linalg::sum_squares(o, m * n));
  const T b2 = static_cast<T>(c.beta2);
  for (std::int64_t i = 0; i < m; ++i) {
    T* row = o + i * n;
    double ms = 0;
    for (std::int64_t j = 0; j < n; ++j) ms += static_cast<double>(row[j]) * row[j];
    v[i] = lerp(v[i], static_cast<T>(ms / static_cast<double>(n)), T(1) - b2);
    const T d = std::sqrt(v[i]) + static_cast<T>(1e-10);
    for (std::int64_t j = 0; j < n; ++j) row[j] /= d;
  }
  const double hat_norm = std::sqrt(linalg::sum_squares(o, m * n));
  double factor;
  if (c.scale == MatrixScale::Paper) {
    factor = 0.2 * std::sqrt(static_cast<double>(m) * static_cast<double>(n)) / (hat_norm + 1e-10);
  } else {
    factor = o_norm / (hat_norm + 1e-10);
    // Reference order: rescale to ‖O‖_F first (rounded in T), then the shape factor.
    const T f = static_cast<T>(factor);
    for (std::int64_t i = 0; i < m * n; ++i) o[i] *= f;
    factor = matrix_scale_factor(c.scale, m, n);
  }
  decay_and_apply(w, o, m * n, lr, c.weight_decay, factor);
}

template <typename T>
void conda_step(T* w, const T* g, const Shape& shape, bool project, ParamState& st,
                const OptimConfig& c, double lr, RuleWorkspace<T>& ws) {
  const auto [m, n] = matrix_dims(shape);
  const std::int64_t t = next_step<T>(st);
  const std::int64_t size = m * n;
  T* mom = st.ensure("exp_avg", shape, dt<T>()).template data<T>();
  const T b1 = static_cast<T>(c.beta1), b2 = static_cast<T>(c.beta2_adam), eps = static_cast<T>(c.eps);
#pragma omp parallel for simd schedule(static) if (size > kParallelMin)
  for (std::int64_t i = 0; i < size; ++i) mom[i] = b1 * mom[i] + (T(1) - b1) * g[i];

  const T* gt = g;
  const T* mt = mom;
  std::int64_t pr = m, pc = n;  // projected shape
  const T* basis = nullptr;
  bool right = true;
  std::int64_t k = std::min(m, n);
  if (project) {
    right = conda_right_side(c.proj_type, m, n);
    const Shape bshape = right ? Shape{k, n} : Shape{m, k};
    const bool refresh = (t - 1) % c.update_proj_gap == 0 || !st.has("conda_basis");
    T* p = st.ensure("conda_basis", bshape, dt<T>()).template data<T>();
    if (refresh) {
      ws.svd_a.assign(mom, mom + size);
      linalg::svd_thin(ws.svd_a.data(), m, n, ws.svd_u, ws.svd_s, ws.svd_vt);
      const auto& src = right ? ws.svd_vt : ws.svd_u;
      std::copy(src.begin(), src.end(), p);
      st.set_int("conda_basis_step", t);
      st.set_int("conda_basis_side", right ? 0 : 1);
    }
    basis = p;
    pr = right ? m : k;
    pc = right ? k : n;
    ws.proj_g.resize(static_cast<std::size_t>(pr * pc));
    ws.proj_m.resize(static_cast<std::size_t>(pr * pc));
    if (right) {  // X Pᵀ: (m x n)(n x k)
      linalg::gemm<T>(false, true, m, k, n, T(1), g, n, p, n, T(0), ws.proj_g.data(), k);
      linalg::gemm<T>(false, true, m, k, n, T(1), mom, n, p, n, T(0), ws.proj_m.data(), k);
    } else {  // Pᵀ X: (k x m)(m x n)
      linalg::gemm<T>(true, false, k, n, m, T(1), p, k, g, n, T(0), ws.proj_g.data(), n);
      linalg::gemm<T>(true, false, k, n, m, T(1), p, k, mom, n, T(0), ws.proj_m.data(), n);
    }
    gt = ws.proj_g.data();
    mt = ws.proj_m.data();
  }
  const std::int64_t psize = pr * pc;
  T* v = st.ensure("exp_avg_sq", {pr, pc}, dt<T>()).template data<T>();
  ws.back.resize(static_cast<std::size_t>(std::max(psize, size)));
  T* norm_dir = ws.back.data();
#pragma omp parallel for simd schedule(static) if (psize > kParallelMin)
  for (std::int64_t i = 0; i < psize; ++i) {
    v[i] = b2 * v[i] + (T(1) - b2) * gt[i] * gt[i];
    norm_dir[i] = mt[i] / (std::sqrt(v[i]) + eps);
  }
  double step = lr;
  if (c.correct_bias)
    step = lr * std::sqrt(1.0 - std::pow(c.beta2_adam, static_cast<double>(t))) /
           (1.0 - std::pow(c.beta1, static_cast<double>(t)));
  const T* upd = norm_dir;
  double factor = 1.0;
  if (project) {
    // back(N) = s N P (right) or s P N (left), into proj_g (free now).
    ws.proj_g.resize(static_cast<std::size_t>(size));
    if (right) linalg::gemm<T>(false, false, m, n, k, T(1), norm_dir, k, basis, n, T(0), ws.proj_g.data(), n);
    else linalg::gemm<T>(false, false, m, n, k, T(1), basis, k, norm_dir, n, T(0), ws.proj_g.data(), n);
    upd = ws.proj_g.data();
    factor = c.conda_scale;
  }
  const T s = static_cast<T>(step * factor);
  const T keep = static_cast<T>(1.0 - lr * c.weight_decay);
#pragma omp parallel for simd schedule(static) if (size > kParallelMin)
  for (std::int64_t i = 0; i < size; ++i) {
    w[i] -= s * upd[i];
    w[i] *= keep;
  }
}

#define ORTHOSHARD_RULES(T)                                                                                   \
  template void adamw_step<T>(T*, const T*, const Shape&, ParamState&, const AdamHparams&, double);           \
  template void muon_step<T>(T*, const T*, const Shape&, ParamState&, const OptimConfig&, double, \
                             RuleWorkspace<T>&);                                                             \
  template void normuon_step<T>(T*, const T*, const Shape&, ParamState&, const OptimConfig&,    \
                                double, RuleWorkspace<T>&);                                                  \
  template void conda_step<T>(T*, const T*, const Shape&, bool, ParamState&, const OptimConfig&, \
                              double, RuleWorkspace<T>&);
ORTHOSHARD_RULES(float)
ORTHOSHARD_RULES(double)

}  // namespace orthoshard
