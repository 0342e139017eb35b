// NS5 on the short side of the matrix: wide (m <= n) iterates X ← (aI + bA + cA²) X with A = X Xᵀ;
// tall (m > n) iterates the transposed form X ← X (aI + bA + cA²) with A = Xᵀ X, so no transpose is made.
#include "optim/orthogonalize/newton_schulz.hpp"

#include "optim/linalg.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace orthoshard {

double ns_gemm_equivalent_flops(std::int64_t m, std::int64_t n, int steps) {
  const double r = static_cast<double>(std::min(m, n)), s = static_cast<double>(std::max(m, n));
  return steps * (2 * r * r * s + 2 * r * r * r + 2 * r * r * s);
}

template <typename T>
void NewtonSchulz<T>::run(T* x, std::int64_t m, std::int64_t n) {
  const std::int64_t size = m * n;
  if (size == 0) return;
  const double norm = std::sqrt(linalg::sum_squares(x, size));
  const T inv = static_cast<T>(1.0 / (norm + eps_));
  for (std::int64_t i = 0; i < size; ++i) x[i] *= inv;
  iterate(x, m, n);
}

template <typename T>
void NewtonSchulz<T>::iterate(T* x, std::int64_t m, std::int64_t n) {
  if (m == 0 || n == 0) return;
  iterate_impl(x, m, n, m <= n, nullptr);
}

template <typename T>
void NewtonSchulz<T>::iterate_row_shard(T* x, std::int64_t local_rows, std::int64_t n, const GramReducer& reduce) {
  if (n == 0) return;
  iterate_impl(x, local_rows, n, false, &reduce);
}

template <typename T>
void NewtonSchulz<T>::iterate_impl(T* x, std::int64_t m, std::int64_t n, bool wide, const GramReducer* reduce) {
  if (steps_ <= 0) return;
  const std::int64_t r = wide ? m : n;
  gram_.resize(static_cast<std::size_t>(r * r));
  poly_.resize(static_cast<std::size_t>(r * r));
  next_.resize(static_cast<std::size_t>(m * n));
  const T a = static_cast<T>(coef_.a), b = static_cast<T>(coef_.b), c = static_cast<T>(coef_.c);
  T* cur = x;
  T* nxt = next_.data();
  for (int it = 0; it < steps_; ++it) {
    // A = X Xᵀ (wide) or Xᵀ X (tall): upper triangle by syrk, mirrored so it can feed the next syrk.
    if (wide) linalg::syrk_xxt(cur, m, n, gram_.data());
    else if (m > 0) linalg::syrk_xtx(cur, m, n, gram_.data());
    else std::fill(gram_.begin(), gram_.end(), T(0));  // an empty row shard contributes nothing
    linalg::symmetrize_upper(gram_.data(), r);
    if (reduce) (*reduce)(gram_.data(), r);  // sum of the row shards' Xᵢᵀ Xᵢ
    // P = c A² + b A + a I: A² = A Aᵀ (A symmetric) by syrk with beta folding in b A.
    std::memcpy(poly_.data(), gram_.data(), gram_.size() * sizeof(T));
    linalg::syrk_xxt(gram_.data(), r, r, poly_.data(), c, b);
    for (std::int64_t i = 0; i < r; ++i) poly_[static_cast<std::size_t>(i * r + i)] += a;
    linalg::symmetrize_upper(poly_.data(), r);
    // X ← P X (wide) or X P (tall).
    if (wide) linalg::gemm<T>(false, false, m, n, m, T(1), poly_.data(), r, cur, n, T(0), nxt, n);
    else if (m > 0) linalg::gemm<T>(false, false, m, n, n, T(1), cur, n, poly_.data(), r, T(0), nxt, n);
    std::swap(cur, nxt);
  }
  if (cur != x && m > 0) std::memcpy(x, cur, static_cast<std::size_t>(m * n) * sizeof(T));
}

template class NewtonSchulz<float>;
template class NewtonSchulz<double>;

}  // namespace orthoshard
