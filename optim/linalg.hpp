// Row-major BLAS/LAPACK wrappers for float and double (OpenBLAS): the products and decompositions the optimizers
// need beyond the GEMM of runtime/core/blas.hpp.
#pragma once

#include "runtime/core/blas.hpp"

#include <cstdint>
#include <vector>

namespace orthoshard::linalg {

// C (r x r, upper triangle) = alpha * X Xᵀ + beta * C for row-major X (r x c).
template <typename T> void syrk_xxt(const T* x, std::int64_t r, std::int64_t c, T* out, T alpha = 1, T beta = 0);
// C (c x c, upper triangle) = alpha * Xᵀ X + beta * C for row-major X (r x c).
template <typename T> void syrk_xtx(const T* x, std::int64_t r, std::int64_t c, T* out, T alpha = 1, T beta = 0);
// Copies the upper triangle of the n x n row-major matrix into the lower one.
template <typename T> void symmetrize_upper(T* a, std::int64_t n);
// Thin SVD of row-major A (m x n), k = min(m, n): U (m x k), S (k, descending), Vt (k x n), all row-major.
// A is overwritten. Throws with the LAPACK info code on failure.
template <typename T>
void svd_thin(T* a, std::int64_t m, std::int64_t n, std::vector<T>& u, std::vector<T>& s, std::vector<T>& vt);

// The top-k singular basis of row-major A (m x n), k = min(m, n), without the other side: right = true gives
// Vt (k x n, row-major), false gives U (m x k, row-major), singular values descending. Signs are arbitrary
// (as an SVD's). float: eigenvectors of the Gram matrix (AᵀA or AAᵀ) formed and decomposed in double
// (dsyrk + dsyevd) — about 3x faster than sgesdd here and at least as accurate as an f32 SVD except for
// singular values below ~1e-9 of the largest, where f32 vectors are noise anyway. double: gesdd (exact path).
template <typename T> void singular_basis(const T* a, std::int64_t m, std::int64_t n, bool right, T* out);

// Sum of squares accumulated in double (Frobenius norms of f32 data without overflow or drift).
template <typename T> double sum_squares(const T* x, std::int64_t n);

}  // namespace orthoshard::linalg
