// Row-major GEMM for float and double through CBLAS (OpenBLAS): what the models' layers and the optimizers share.
#pragma once

#include <cstdint>

namespace orthoshard::linalg {

// C (M x N) = alpha * op(A) op(B) + beta * C, all row-major, op = transpose when the flag is set.
template <typename T>
void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
          std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc);

}  // namespace orthoshard::linalg
