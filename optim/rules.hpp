// The update rules over one whole parameter (row-major, 3-D/4-D weights viewed as rows = dim 0),
// exactly as ../shared/testdata/optim/README.md states them. T is float (training) or double (tests).
#pragma once

#include "optim/config.hpp"
#include "optim/orthogonalize/newton_schulz.hpp"
#include "optim/state.hpp"

#include <cstdint>
#include <vector>

namespace orthoshard {

// Scratch buffers reused across parameters and steps.
template <typename T>
struct RuleWorkspace {
  explicit RuleWorkspace(int ns_steps = 5) : ns(ns_steps) {}
  NewtonSchulz<T> ns;
  std::vector<T> update, proj_g, proj_m, back, svd_a, svd_u, svd_s, svd_vt;
};

// torch.lerp semantics: a + w (b - a), evaluated from the nearer end as torch does.
template <typename T> inline T lerp(T a, T b, T w) {
  return w < T(0.5) ? a + w * (b - a) : b - (b - a) * (T(1) - w);
}

// sqrt(max(1, m/n)) (keller), 0.2 sqrt(max(m, n)) (moonlight) or 1 (none).
double matrix_scale_factor(MatrixScale s, std::int64_t m, std::int64_t n);

// Which side Conda projects on for an m x n matrix: true = right (P = Vᵀ), false = left (P = U).
bool conda_right_side(CondaProjType t, std::int64_t m, std::int64_t n);

template <typename T>
void adamw_step(T* w, const T* g, const Shape& shape, ParamState& st, const AdamHparams& hp, double lr);

template <typename T>
void muon_step(T* w, const T* g, const Shape& shape, ParamState& st, const OptimConfig& c, double lr,
               RuleWorkspace<T>& ws);

template <typename T>
void normuon_step(T* w, const T* g, const Shape& shape, ParamState& st, const OptimConfig& c,
                  double lr, RuleWorkspace<T>& ws);

// `project` false: the plain (vector) group, with g̃ = G and no basis.
template <typename T>
void conda_step(T* w, const T* g, const Shape& shape, bool project, ParamState& st,
                const OptimConfig& c, double lr, RuleWorkspace<T>& ws);

}  // namespace orthoshard
