// Local pieces of the AdamW, Muon, NorMuon and Conda rules (host, float or double).
#include "optim/rules.hpp"

#include "optim/linalg.hpp"
#include "runtime/core/error.hpp"

#include <algorithm>
#include <cmath>

namespace orthoshard {
namespace {
// Elementwise loops run on OpenMP threads above this many elements (each element's result does not
// depend on the thread count, so results stay bitwise reproducible).
constexpr std::int64_t kParallelMin = 1 << 15;
}  // namespace

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

double conda_step_size(const OptimConfig& c, std::int64_t t, double lr) {
  if (!c.correct_bias) return lr;
  const double td = static_cast<double>(t);
  return lr * std::sqrt(1.0 - std::pow(c.beta2_adam, td)) / (1.0 - std::pow(c.beta1, td));
}

std::int64_t advance_step(ParamState& st) {
  const std::int64_t t = st.get_int("step") + 1;
  st.set_int("step", t);
  return t;
}

template <typename T>
void adamw_step(T* w, const T* g, const Shape& shape, ParamState& st, const AdamHparams& hp, double lr) {
  const std::int64_t size = shape_numel(shape);
  T* m = st.ensure("exp_avg", shape, dtype_of<T>()).template data<T>();
  T* v = st.ensure("exp_avg_sq", shape, dtype_of<T>()).template data<T>();
  const std::int64_t t = advance_step(st);
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
void conda_plain_step(T* w, const T* g, const Shape& shape, ParamState& st, const OptimConfig& c, double lr) {
  const std::int64_t size = shape_numel(shape);
  T* mom = st.ensure("exp_avg", shape, dtype_of<T>()).template data<T>();
  T* v = st.ensure("exp_avg_sq", shape, dtype_of<T>()).template data<T>();
  const std::int64_t t = advance_step(st);
  conda_momentum(mom, g, size, c.beta1);
  const T b2 = static_cast<T>(c.beta2_adam), eps = static_cast<T>(c.eps);
  const T step = static_cast<T>(conda_step_size(c, t, lr)), keep = static_cast<T>(1.0 - lr * c.weight_decay);
#pragma omp parallel for simd schedule(static) if (size > kParallelMin)
  for (std::int64_t i = 0; i < size; ++i) {
    v[i] = b2 * v[i] + (T(1) - b2) * g[i] * g[i];
    w[i] -= step * (mom[i] / (std::sqrt(v[i]) + eps));
    w[i] *= keep;
  }
}

template <typename T>
void momentum_update(const T* g, const Shape& shape, ParamState& st, const OptimConfig& c, T* u) {
  const std::int64_t size = shape_numel(shape);
  T* mom = st.ensure("momentum", shape, dtype_of<T>()).template data<T>();
  const T beta = static_cast<T>(c.momentum);
  const bool nesterov = c.nesterov;
#pragma omp parallel for simd schedule(static) if (size > kParallelMin)
  for (std::int64_t i = 0; i < size; ++i) {
    mom[i] = lerp(mom[i], g[i], T(1) - beta);
    u[i] = nesterov ? lerp(g[i], mom[i], beta) : mom[i];
  }
}

template <typename T>
void decay_then_apply(T* w, const T* upd, std::int64_t size, double lr, double weight_decay, double factor) {
  const T keep = static_cast<T>(1.0 - lr * weight_decay);
  const T step = static_cast<T>(lr * factor);
#pragma omp parallel for simd schedule(static) if (size > kParallelMin)
  for (std::int64_t i = 0; i < size; ++i) {
    w[i] *= keep;
    w[i] -= step * upd[i];
  }
}

template <typename T>
void normuon_normalize_rows(T* o, std::int64_t rows, std::int64_t n, T* v, double beta2, double* ss_before,
                            double* ss_after) {
  const T b2 = static_cast<T>(beta2);
  for (std::int64_t i = 0; i < rows; ++i) {
    T* row = o + i * n;
    const double ss = linalg::sum_squares(row, n);
    ss_before[i] = ss;
    v[i] = lerp(v[i], static_cast<T>(ss / static_cast<double>(n)), T(1) - b2);
    const T d = std::sqrt(v[i]) + static_cast<T>(1e-10);
    for (std::int64_t j = 0; j < n; ++j) row[j] /= d;
    ss_after[i] = linalg::sum_squares(row, n);
  }
}

template <typename T> void conda_momentum(T* mom, const T* g, std::int64_t size, double beta1) {
  const T b1 = static_cast<T>(beta1);
#pragma omp parallel for simd schedule(static) if (size > kParallelMin)
  for (std::int64_t i = 0; i < size; ++i) mom[i] = b1 * mom[i] + (T(1) - b1) * g[i];
}

template <typename T>
void conda_project(bool right, const T* x, std::int64_t rows, std::int64_t n, const T* p, std::int64_t k, T* out) {
  if (rows == 0 || n == 0 || k == 0) return;
  if (right) linalg::gemm<T>(false, true, rows, k, n, T(1), x, n, p, n, T(0), out, k);  // (rows x n)(n x k)
  else linalg::gemm<T>(true, false, k, n, rows, T(1), p, k, x, n, T(0), out, n);        // (k x m)(m x n)
}

template <typename T>
void conda_back(bool right, const T* nd, std::int64_t rows, std::int64_t n, const T* p, std::int64_t k, T* out) {
  if (rows == 0 || n == 0) return;
  if (k == 0) {
    std::fill(out, out + rows * n, T(0));
    return;
  }
  if (right) linalg::gemm<T>(false, false, rows, n, k, T(1), nd, k, p, n, T(0), out, n);  // (rows x k)(k x n)
  else linalg::gemm<T>(false, false, rows, n, k, T(1), p, k, nd, n, T(0), out, n);        // (m x k)(k x n)
}

template <typename T>
void conda_normalize(T* v, const T* gt, const T* mt, std::int64_t size, double beta2, double eps, T* out) {
  const T b2 = static_cast<T>(beta2), e = static_cast<T>(eps);
#pragma omp parallel for simd schedule(static) if (size > kParallelMin)
  for (std::int64_t i = 0; i < size; ++i) {
    v[i] = b2 * v[i] + (T(1) - b2) * gt[i] * gt[i];
    out[i] = mt[i] / (std::sqrt(v[i]) + e);
  }
}

template <typename T>
void conda_apply(T* w, const T* upd, std::int64_t size, double step, double lr, double weight_decay) {
  const T s = static_cast<T>(step), keep = static_cast<T>(1.0 - lr * weight_decay);
#pragma omp parallel for simd schedule(static) if (size > kParallelMin)
  for (std::int64_t i = 0; i < size; ++i) {
    w[i] -= s * upd[i];
    w[i] *= keep;
  }
}

#define ORTHOSHARD_RULES(T)                                                                                  \
  template void adamw_step<T>(T*, const T*, const Shape&, ParamState&, const AdamHparams&, double);          \
  template void conda_plain_step<T>(T*, const T*, const Shape&, ParamState&, const OptimConfig&, double);    \
  template void momentum_update<T>(const T*, const Shape&, ParamState&, const OptimConfig&, T*);             \
  template void decay_then_apply<T>(T*, const T*, std::int64_t, double, double, double);                    \
  template void normuon_normalize_rows<T>(T*, std::int64_t, std::int64_t, T*, double, double*, double*);     \
  template void conda_momentum<T>(T*, const T*, std::int64_t, double);                                      \
  template void conda_project<T>(bool, const T*, std::int64_t, std::int64_t, const T*, std::int64_t, T*);    \
  template void conda_back<T>(bool, const T*, std::int64_t, std::int64_t, const T*, std::int64_t, T*);       \
  template void conda_normalize<T>(T*, const T*, const T*, std::int64_t, double, double, T*);                \
  template void conda_apply<T>(T*, const T*, std::int64_t, double, double, double);
ORTHOSHARD_RULES(float)
ORTHOSHARD_RULES(double)

}  // namespace orthoshard
