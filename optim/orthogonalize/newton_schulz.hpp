// Newton-Schulz orthogonalization (the quintic NS5 of the Muon reference) on the host, through BLAS.
// X Xᵀ and A·A are symmetric products (syrk), which halves their flops against plain GEMM.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace orthoshard {

struct NsCoefficients {
  double a = 3.4445, b = -4.7750, c = 2.0315;
};

// GEMM-equivalent flop count of one orthogonalization of an m x n matrix (r = min, s = max):
// steps x (2 r² s  [X Xᵀ] + 2 r³ [A²] + 2 r² s [B X]), the count plain-GEMM code performs.
double ns_gemm_equivalent_flops(std::int64_t m, std::int64_t n, int steps);

template <typename T>
class NewtonSchulz {
 public:
  explicit NewtonSchulz(int steps = 5, NsCoefficients coef = {}, double eps = 1e-7)
      : steps_(steps), coef_(coef), eps_(eps) {}

  // Orthogonalizes the row-major m x n matrix x in place: X / (‖X‖_F + eps), then `steps` iterations
  // X ← a X + (b A + c A²) X with A = X Xᵀ, carried out on the short side (A is min(m,n)²).
  // An all-zero input gives an all-zero output.
  void run(T* x, std::int64_t m, std::int64_t n);

  // Same iterations on an already normalized x (used when the norm is computed elsewhere).
  void iterate(T* x, std::int64_t m, std::int64_t n);

  // Gram-sharded iterations of a tall matrix whose rows are spread over ranks: x holds this rank's
  // local_rows x n rows (possibly none); every iteration `reduce` sums the n x n Gram matrix Xᵢᵀ Xᵢ
  // over the ranks (an all-reduce), the rest is local. x must already be globally normalized.
  using GramReducer = std::function<void(T* gram, std::int64_t n)>;
  void iterate_row_shard(T* x, std::int64_t local_rows, std::int64_t n, const GramReducer& reduce);

  int steps() const { return steps_; }

 private:
  void iterate_impl(T* x, std::int64_t m, std::int64_t n, bool wide, const GramReducer* reduce);
  int steps_;
  NsCoefficients coef_;
  double eps_;
  std::vector<T> gram_, poly_, next_;  // workspaces, reused across calls: (r x r), (r x r), (m x n)
};

extern template class NewtonSchulz<float>;
extern template class NewtonSchulz<double>;

}  // namespace orthoshard
