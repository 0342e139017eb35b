// The update rules of ../shared/testdata/optim/README.md, split into the pieces that stay local to a
// row shard; the Optimizer strings them together with the distributed orthogonalization in between.
// T is float (training) or double (reference checks). Matrices are row-major, N-D weights as (dim 0, rest).
#pragma once

#include "optim/config.hpp"
#include "optim/state.hpp"

#include <cstdint>

namespace orthoshard {

// torch.lerp semantics: a + w (b - a), evaluated from the nearer end as torch does.
template <typename T> inline T lerp(T a, T b, T w) {
  return w < T(0.5) ? a + w * (b - a) : b - (b - a) * (T(1) - w);
}

// sqrt(max(1, m/n)) (keller), 0.2 sqrt(max(m, n)) (moonlight) or 1 (none, paper).
double matrix_scale_factor(MatrixScale s, std::int64_t m, std::int64_t n);
// Which side Conda projects on for an m x n matrix: true = right (P = Vᵀ, k x n), false = left (P = U, m x k).
bool conda_right_side(CondaProjType t, std::int64_t m, std::int64_t n);
// Conda's step size lr·sqrt(1−β₂ᵗ)/(1−β₁ᵗ) (lr without bias correction).
double conda_step_size(const OptimConfig& c, std::int64_t t, double lr);

// Increments and returns the state's step counter.
std::int64_t advance_step(ParamState& st);

// AdamW as torch: W ← W(1 − lr λ); bias-corrected Adam step. Elementwise, so it runs on any shard.
template <typename T>
void adamw_step(T* w, const T* g, const Shape& shape, ParamState& st, const AdamHparams& hp, double lr);

// Conda's plain (vector) group: Adam moments, Conda's step size, decay after the step. Elementwise.
template <typename T>
void conda_plain_step(T* w, const T* g, const Shape& shape, ParamState& st, const OptimConfig& c, double lr);

// Muon/NorMuon momentum: M ← lerp(M, G, 1−β); u ← lerp(G, M, β) (Nesterov) or M. `shape` is the shard's.
template <typename T>
void momentum_update(const T* g, const Shape& shape, ParamState& st, const OptimConfig& c, T* u);

// W ← W (1 − lr λ); W ← W − lr·factor·upd (Muon, NorMuon).
template <typename T>
void decay_then_apply(T* w, const T* upd, std::int64_t size, double lr, double weight_decay, double factor);

// NorMuon on local rows of O (rows x n): v ← lerp(v, mean_j O², 1−β₂); O ← O / (sqrt(v) + 1e-10).
// Writes each row's sum of squares before and after the normalization (global norms are sums of these).
template <typename T>
void normuon_normalize_rows(T* o, std::int64_t rows, std::int64_t n, T* v, double beta2, double* ss_before,
                            double* ss_after);

// Conda pieces. Right: proj(X) = X Pᵀ and back(N) = N P act row by row, so they run on row shards.
// Left: proj(X) = Pᵀ X and back(N) = P N need the whole matrix (the owner runs them).
template <typename T> void conda_momentum(T* mom, const T* g, std::int64_t size, double beta1);
template <typename T>
void conda_project(bool right, const T* x, std::int64_t rows, std::int64_t n, const T* p, std::int64_t k, T* out);
template <typename T>
void conda_back(bool right, const T* nd, std::int64_t rows, std::int64_t n, const T* p, std::int64_t k, T* out);
// v ← β₂ v + (1−β₂) g̃²; out = m̃ / (sqrt(v) + eps), elementwise over the projected shape.
template <typename T>
void conda_normalize(T* v, const T* gt, const T* mt, std::int64_t size, double beta2, double eps, T* out);
// W ← W − step·upd; W ← W (1 − lr λ).
template <typename T>
void conda_apply(T* w, const T* upd, std::int64_t size, double step, double lr, double weight_decay);

}  // namespace orthoshard
