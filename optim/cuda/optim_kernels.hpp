// Optimizer math on the GPU with the semantics of optim/rules.hpp: AdamW on fp32 master weights (with a bf16
// copy for the forward), Muon/NorMuon momentum and apply, NorMuon row statistics, and small helpers for Newton-Schulz and SVD.
#pragma once

#include "runtime/cuda/vector_kernels.hpp"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace orthoshard::cuda {

using bf16 = __nv_bfloat16;

// ---- AdamW (torch semantics, as adamw_step in optim/rules.cpp) ----
struct AdamWScalars {
  float beta1 = 0, beta2 = 0, eps = 0;
  float step = 0;       // lr / (1 − β₁ᵗ)
  float bc2_sqrt = 0;   // sqrt(1 − β₂ᵗ)
  float keep = 0;       // 1 − lr·λ
  float grad_scale = 1; // gradient clipping factor applied to g first (1: none)
};
// The scalars computed on the host in double then rounded to float, as the CPU rule does. t >= 1.
AdamWScalars adamw_scalars(double lr, double beta1, double beta2, double eps, double weight_decay, std::int64_t t,
                           double grad_scale = 1.0);
// w ← w·keep; m ← lerp(m, g, 1−β₁); v ← β₂ v + (1−β₂) g²; w ← w − step·m / (sqrt(v)/bc2_sqrt + eps).
// master, m, v fp32 (n); grad float or bf16; param_copy (nullable) receives bf16(w) for the next forward.
template <typename G>
void adamw_update(float* master, bf16* param_copy, const G* grad, float* m, float* v, std::int64_t n,
                  const AdamWScalars& s, cudaStream_t stream);

// ---- Muon / NorMuon pieces ----
// mom ← lerp(mom, g, 1−β); u ← nesterov ? lerp(g, mom, β) : mom.   (momentum_update)
template <typename G>
void momentum_update(float* mom, float* u, const G* grad, std::int64_t n, double beta, bool nesterov,
                     cudaStream_t stream);
// w ← w·(1 − lr·λ); w ← w − lr·factor·upd; param_copy (nullable) ← bf16(w).   (decay_then_apply)
template <typename U>
void decay_then_apply(float* w, bf16* param_copy, const U* upd, std::int64_t n, double lr, double weight_decay,
                      double factor, cudaStream_t stream);
// NorMuon on rows x n of O (row-major, T float or bf16), one block per row: ss_before[i] = Σ_j O², v[i] ←
// lerp(v[i], ss/n, 1−β₂), O_i ← O_i / (sqrt(v[i]) + 1e-10), ss_after[i] = Σ_j O² of the stored result.
// v fp32 (rows); ss_before, ss_after device doubles (rows), the sums the caller adds into Frobenius norms.
template <typename T>
void normuon_normalize_rows(T* o, std::int64_t rows, std::int64_t n, float* v, double beta2, double* ss_before,
                            double* ss_after, cudaStream_t stream);

// ---- Conda pieces (optim/rules.hpp; fp32 state and parameters) ----
// mom ← β₁ mom + (1−β₁) g.   (conda_momentum)
void conda_momentum(float* mom, const float* g, std::int64_t n, double beta1, cudaStream_t stream);
// v ← β₂ v + (1−β₂) gt²; out = mt / (sqrt(v) + eps), over the projected shape.   (conda_normalize)
void conda_normalize(float* v, const float* gt, const float* mt, float* out, std::int64_t n, double beta2, double eps,
                     cudaStream_t stream);
// w ← w − step·upd; w ← w·(1 − lr·λ); param_copy (nullable) ← bf16(w).   (conda_apply)
void conda_apply(float* w, bf16* param_copy, const float* upd, std::int64_t n, double step, double lr,
                 double weight_decay, cudaStream_t stream);
// Conda's plain (vector) rule: conda_momentum, then v ← β₂ v + (1−β₂) g², w ← w − step·(mom / (sqrt(v) + eps)),
// w ← w·(1 − lr·λ); param_copy (nullable) ← bf16(w).   (conda_plain_step; step = conda_step_size)
void conda_plain_update(float* w, bf16* param_copy, const float* g, float* mom, float* v, std::int64_t n, double beta1,
                        double beta2, double eps, double step, double lr, double weight_decay, cudaStream_t stream);

// ---- Newton-Schulz / SVD helpers ----
// x ← x · float(1 / (sqrt(*sumsq) + eps)), the norm read on the device (no host round trip).
template <typename T>
void scale_by_inverse_norm(T* x, std::int64_t n, const double* sumsq, double eps, cudaStream_t stream);
// a (r x r) diagonal += value.
template <typename T> void add_diagonal(T* a, std::int64_t r, float value, cudaStream_t stream);
// Column-major r x r with only the upper triangle valid (cuBLAS syrk, FILL_MODE_UPPER): copies it down.
void symmetrize_upper_colmajor(float* a, std::int64_t r, cudaStream_t stream);
// `count` row-major r x r matrices at a + k r r, each with only the upper triangle (i <= j) valid: copies it
// into the lower one.
template <typename T>
void symmetrize_upper_rowmajor(T* a, std::int64_t r, std::int64_t count, cudaStream_t stream);
// out (cols x rows, row-major) = transpose of in (rows x cols, row-major).
void transpose(float* out, const float* in, std::int64_t rows, std::int64_t cols, cudaStream_t stream);
// out (rows x cols, row-major) = in with row i multiplied by s[i] (s on the device); out may be in.
void scale_rows(float* out, const float* in, const float* s, std::int64_t rows, std::int64_t cols, cudaStream_t stream);

}  // namespace orthoshard::cuda
