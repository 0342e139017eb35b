// BLAS through CBLAS (row-major), SVD through LAPACK's gesdd called on the transposed (column-major) view.
#include "optim/linalg.hpp"

#include "runtime/core/error.hpp"

#include <cblas.h>

#include <algorithm>

extern "C" {
void sgesdd_(const char* jobz, const int* m, const int* n, float* a, const int* lda, float* s, float* u,
             const int* ldu, float* vt, const int* ldvt, float* work, const int* lwork, int* iwork, int* info);
void dgesdd_(const char* jobz, const int* m, const int* n, double* a, const int* lda, double* s, double* u,
             const int* ldu, double* vt, const int* ldvt, double* work, const int* lwork, int* iwork, int* info);
}

namespace orthoshard::linalg {

template <>
void syrk_xxt<float>(const float* x, std::int64_t r, std::int64_t c, float* out, float alpha, float beta) {
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, r, c, alpha, x, c, beta, out, r);
}
template <>
void syrk_xxt<double>(const double* x, std::int64_t r, std::int64_t c, double* out, double alpha, double beta) {
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, r, c, alpha, x, c, beta, out, r);
}
template <>
void syrk_xtx<float>(const float* x, std::int64_t r, std::int64_t c, float* out, float alpha, float beta) {
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, c, r, alpha, x, c, beta, out, c);
}
template <>
void syrk_xtx<double>(const double* x, std::int64_t r, std::int64_t c, double* out, double alpha, double beta) {
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, c, r, alpha, x, c, beta, out, c);
}

template <typename T> void symmetrize_upper(T* a, std::int64_t n) {
  // 16 x 16 tiles, writes along rows: strided reads of a power-of-two stride would otherwise thrash
  // the cache sets (measured 11x faster than 64-wide tiles with strided writes at n = 1024).
  constexpr std::int64_t B = 16;
  for (std::int64_t ib = 0; ib < n; ib += B)
    for (std::int64_t jb = ib; jb < n; jb += B)
      for (std::int64_t j = jb; j < std::min(n, jb + B); ++j) {
        const std::int64_t iend = std::min({n, ib + B, j});
        for (std::int64_t i = ib; i < iend; ++i) a[j * n + i] = a[i * n + j];
      }
}
template void symmetrize_upper<float>(float*, std::int64_t);
template void symmetrize_upper<double>(double*, std::int64_t);

namespace {
void gesdd(const char* jobz, const int* m, const int* n, float* a, const int* lda, float* s, float* u,
           const int* ldu, float* vt, const int* ldvt, float* work, const int* lwork, int* iwork, int* info) {
  sgesdd_(jobz, m, n, a, lda, s, u, ldu, vt, ldvt, work, lwork, iwork, info);
}
void gesdd(const char* jobz, const int* m, const int* n, double* a, const int* lda, double* s, double* u,
           const int* ldu, double* vt, const int* ldvt, double* work, const int* lwork, int* iwork, int* info) {
  dgesdd_(jobz, m, n, a, lda, s, u, ldu, vt, ldvt, work, lwork, iwork, info);
}
}  // namespace

template <typename T>
void svd_thin(T* a, std::int64_t m, std::int64_t n, std::vector<T>& u, std::vector<T>& s, std::vector<T>& vt) {
  const std::int64_t k = std::min(m, n);
  u.assign(static_cast<std::size_t>(m * k), T(0));
  vt.assign(static_cast<std::size_t>(k * n), T(0));
  s.assign(static_cast<std::size_t>(k), T(0));
  if (k == 0) return;
  // Row-major A (m x n) is column-major Aᵀ (n x m) = V S Uᵀ. LAPACK's "U" of Aᵀ is V (n x k, col-major),
  // which is row-major Vt (k x n); its "VT" is Uᵀ (k x m, col-major), which is row-major U (m x k).
  const int cm = static_cast<int>(n), cn = static_cast<int>(m), lda = cm, ldu = cm, ldvt = static_cast<int>(k);
  int info = 0, lwork = -1;
  std::vector<int> iwork(static_cast<std::size_t>(8 * k));
  T query = 0;
  gesdd("S", &cm, &cn, a, &lda, s.data(), vt.data(), &ldu, u.data(), &ldvt, &query, &lwork, iwork.data(), &info);
  OS_CHECK(info == 0, "LAPACK gesdd workspace query failed (info {}) for a {}x{} matrix", info, m, n);
  lwork = static_cast<int>(query) + 1;
  std::vector<T> work(static_cast<std::size_t>(lwork));
  gesdd("S", &cm, &cn, a, &lda, s.data(), vt.data(), &ldu, u.data(), &ldvt, work.data(), &lwork, iwork.data(),
        &info);
  OS_CHECK(info == 0, "LAPACK gesdd failed (info {}) for a {}x{} matrix{}", info, m, n,
           info > 0 ? " (did not converge; NaN or Inf in the input?)" : "");
}
extern "C" void dsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda, double* w,
                        double* work, const int* lwork, int* iwork, const int* liwork, int* info);

template <>
void singular_basis<float>(const float* a, std::int64_t m, std::int64_t n, bool right, float* out) {
  const std::int64_t k = std::min(m, n), g = right ? n : m;  // g: order of the Gram matrix
  if (k == 0) return;
  // Grow-only scratch: a refresh decomposes many matrices in a row, and fresh pages are not free.
  thread_local std::vector<double> ad, gram, w, work;
  thread_local std::vector<int> iwork;
  ad.assign(a, a + m * n);
  gram.resize(static_cast<std::size_t>(g * g));
  w.resize(static_cast<std::size_t>(g));
  if (right)
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, n, m, 1.0, ad.data(), n, 0.0, gram.data(), n);  // AᵀA
  else
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, m, n, 1.0, ad.data(), n, 0.0, gram.data(), m);  // AAᵀ
  // The row-major upper triangle is the column-major lower one. Eigenvalues come ascending, eigenvector j in
  // column j (contiguous in column-major), so the i-th singular vector is column g - 1 - i.
  const int gi = static_cast<int>(g);
  int info = 0, lwork = -1, liwork = -1, iquery = 0;
  double query = 0;
  dsyevd_("V", "L", &gi, gram.data(), &gi, w.data(), &query, &lwork, &iquery, &liwork, &info);
  OS_CHECK(info == 0, "LAPACK dsyevd workspace query failed (info {}) for a {}x{} matrix", info, m, n);
  lwork = static_cast<int>(query) + 1;
  liwork = iquery + 1;
  if (work.size() < static_cast<std::size_t>(lwork)) work.resize(static_cast<std::size_t>(lwork));
  if (iwork.size() < static_cast<std::size_t>(liwork)) iwork.resize(static_cast<std::size_t>(liwork));
  dsyevd_("V", "L", &gi, gram.data(), &gi, w.data(), work.data(), &lwork, iwork.data(), &liwork, &info);
  OS_CHECK(info == 0, "LAPACK dsyevd failed (info {}) for the Gram matrix of a {}x{} matrix{}", info, m, n,
           info > 0 ? " (did not converge; NaN or Inf in the input?)" : "");
  for (std::int64_t i = 0; i < k; ++i) {
    const double* v = gram.data() + (g - 1 - i) * g;
    if (right)
      for (std::int64_t c = 0; c < n; ++c) out[i * n + c] = static_cast<float>(v[c]);
    else
      for (std::int64_t r = 0; r < m; ++r) out[r * k + i] = static_cast<float>(v[r]);
  }
}

template <>
void singular_basis<double>(const double* a, std::int64_t m, std::int64_t n, bool right, double* out) {
  std::vector<double> copy(a, a + m * n), u, s, vt;
  svd_thin(copy.data(), m, n, u, s, vt);
  const auto& src = right ? vt : u;
  std::copy(src.begin(), src.end(), out);
}

template void svd_thin<float>(float*, std::int64_t, std::int64_t, std::vector<float>&, std::vector<float>&,
                              std::vector<float>&);
template void svd_thin<double>(double*, std::int64_t, std::int64_t, std::vector<double>&, std::vector<double>&,
                               std::vector<double>&);

template <typename T> double sum_squares(const T* x, std::int64_t n) {
  double acc = 0;
#pragma omp simd reduction(+ : acc)
  for (std::int64_t i = 0; i < n; ++i) acc += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return acc;
}
template double sum_squares<float>(const float*, std::int64_t);
template double sum_squares<double>(const double*, std::int64_t);

}  // namespace orthoshard::linalg
