// Newton-Schulz on the GPU (see newton_schulz.hpp).
#include "optim/orthogonalize/cuda/device_newton_schulz.hpp"

#include "runtime/cuda/check.hpp"
#include "runtime/cuda/copy_kernels.hpp"

#include <algorithm>
#include <type_traits>
#include <utility>

namespace orthoshard::cuda {

namespace {
template <typename T> void ensure(DeviceBuffer<T>& b, std::int64_t count) {
  if (b.size() < static_cast<std::size_t>(count)) b = DeviceBuffer<T>(static_cast<std::size_t>(count));
}
}  // namespace

std::int64_t DeviceNewtonSchulz::symmetric_tiles(std::int64_t r) {
  for (std::int64_t tiles = kMaxTiles; tiles >= 2; --tiles) {
    const std::int64_t t = r / tiles;
    if (r % tiles == 0 && t % 8 == 0 && t >= kMinTile) return tiles;
  }
  return 0;
}

DeviceNewtonSchulz::DeviceNewtonSchulz(Blas& blas, Precision precision, int steps, Coefficients coef, double eps)
    : blas_(blas), precision_(precision), steps_(steps), coef_(coef), eps_(eps), norm_(1 + kSumSquaresScratch) {}

template <typename T> void DeviceNewtonSchulz::normalize(T* x, std::int64_t size, cudaStream_t stream) {
  sum_squares<T>(norm_.data(), x, size, norm_.data() + 1, false, stream);
  scale_by_inverse_norm<T>(x, size, norm_.data(), eps_, stream);
}

void DeviceNewtonSchulz::run(float* x, std::int64_t m, std::int64_t n, cudaStream_t stream) {
  run_batched(x, 1, m, n, stream);
}

void DeviceNewtonSchulz::run(bf16* x, std::int64_t m, std::int64_t n, cudaStream_t stream) {
  run_batched(x, 1, m, n, stream);
}

void DeviceNewtonSchulz::run_batched(float* x, std::int64_t count, std::int64_t m, std::int64_t n,
                                  cudaStream_t stream) {
  OS_CUDA_REQUIRE(count >= 0 && m >= 0 && n >= 0, "DeviceNewtonSchulz: negative batch or shape");
  if (count * m * n == 0) return;
  // One norm per matrix; the kernels are ordered on the stream, so norm_ is reused from matrix to matrix.
  for (std::int64_t j = 0; j < count; ++j) normalize<float>(x + j * m * n, m * n, stream);
  if (steps_ <= 0) return;
  if (precision_ == Precision::F32) {
    iterate_impl<float>(x, count, m, n, stream);
    return;
  }
  ensure(h_x_, count * m * n);
  convert(x, h_x_.data(), count * m * n, stream);
  iterate_impl<bf16>(h_x_.data(), count, m, n, stream);
  convert(h_x_.data(), x, count * m * n, stream);
}

void DeviceNewtonSchulz::run_batched(bf16* x, std::int64_t count, std::int64_t m, std::int64_t n, cudaStream_t stream) {
  // Checked before normalize() touches x: a wrong precision must leave the input as it was.
  OS_CUDA_REQUIRE(precision_ == Precision::BF16, "DeviceNewtonSchulz: bf16 data needs Precision::BF16");
  OS_CUDA_REQUIRE(count >= 0 && m >= 0 && n >= 0, "DeviceNewtonSchulz: negative batch or shape");
  if (count * m * n == 0) return;
  for (std::int64_t j = 0; j < count; ++j) normalize<bf16>(x + j * m * n, m * n, stream);
  if (steps_ > 0) iterate_impl<bf16>(x, count, m, n, stream);
}

void DeviceNewtonSchulz::iterate(float* x, std::int64_t m, std::int64_t n, cudaStream_t stream) {
  if (m == 0 || n == 0 || steps_ <= 0) return;
  if (precision_ == Precision::F32) {
    iterate_impl<float>(x, 1, m, n, stream);
    return;
  }
  ensure(h_x_, m * n);
  convert(x, h_x_.data(), m * n, stream);
  iterate_impl<bf16>(h_x_.data(), 1, m, n, stream);
  convert(h_x_.data(), x, m * n, stream);
}

void DeviceNewtonSchulz::iterate(bf16* x, std::int64_t m, std::int64_t n, cudaStream_t stream) {
  OS_CUDA_REQUIRE(precision_ == Precision::BF16, "DeviceNewtonSchulz: bf16 data needs Precision::BF16");
  if (m == 0 || n == 0 || steps_ <= 0) return;
  iterate_impl<bf16>(x, 1, m, n, stream);
}

namespace {
// One GEMM, or `count` of them at the given strides (count = 1 keeps the cuBLASLt path of a single GEMM).
template <typename T>
void gemm_n(Blas& blas, std::int64_t count, bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k,
            float alpha, const T* a, std::int64_t lda, std::int64_t sa, const T* b, std::int64_t ldb, std::int64_t sb,
            float beta, T* c, std::int64_t ldc, std::int64_t sc, cudaStream_t stream) {
  if (count == 1) gemm<T>(blas, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, stream);
  else gemm_strided_batched<T>(blas, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, count, stream);
}
}  // namespace

template <typename T>
void DeviceNewtonSchulz::iterate_impl(T* x, std::int64_t count, std::int64_t m, std::int64_t n, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, float>) {
    // No batched syrk in cuBLAS: fp32 batches go matrix by matrix.
    if (precision_ == Precision::F32 && count > 1) {
      for (std::int64_t j = 0; j < count; ++j) iterate_impl<float>(x + j * m * n, 1, m, n, stream);
      return;
    }
  }
  const bool wide = m <= n;
  const std::int64_t r = wide ? m : n, mn = m * n, rr = r * r;
  DeviceBuffer<T>& gram_buf = [&]() -> DeviceBuffer<T>& {
    if constexpr (std::is_same_v<T, float>) return f_gram_;
    else return h_gram_;
  }();
  DeviceBuffer<T>& poly_buf = [&]() -> DeviceBuffer<T>& {
    if constexpr (std::is_same_v<T, float>) return f_poly_;
    else return h_poly_;
  }();
  DeviceBuffer<T>& next_buf = [&]() -> DeviceBuffer<T>& {
    if constexpr (std::is_same_v<T, float>) return f_next_;
    else return h_next_;
  }();
  ensure(gram_buf, count * rr);
  ensure(poly_buf, count * rr);
  ensure(next_buf, count * mn);
  T* gram = gram_buf.data();
  T* poly = poly_buf.data();
  T* cur = x;
  T* nxt = next_buf.data();
  const float a = static_cast<float>(coef_.a), b = static_cast<float>(coef_.b), c = static_cast<float>(coef_.c);
  for (int it = 0; it < steps_; ++it) {
    float beta_x = 0.f;  // X_next = P X + beta_x X
    if constexpr (std::is_same_v<T, float>) {
      // A (r x r) by syrk on the column-major view Xc = Xᵀ (n x m, ld n): wide A = Xcᵀ Xc, tall A = Xc Xcᵀ.
      OS_CUBLAS_CHECK(cublasSetStream(blas_.cublas(), stream));
      const float one = 1.f, zero = 0.f;
      OS_CUBLAS_CHECK(cublasSsyrk(blas_.cublas(), CUBLAS_FILL_MODE_UPPER, wide ? CUBLAS_OP_T : CUBLAS_OP_N,
                                  static_cast<int>(r), static_cast<int>(wide ? n : m), &one, cur, static_cast<int>(n),
                                  &zero, gram, static_cast<int>(r)));
      symmetrize_upper_colmajor(gram, r, stream);
      // P = c A Aᵀ + b A + a I (A symmetric), exactly the CPU's polynomial.
      OS_CUDA_CHECK(cudaMemcpyAsync(poly, gram, static_cast<std::size_t>(r * r) * sizeof(float),
                                    cudaMemcpyDeviceToDevice, stream));
      OS_CUBLAS_CHECK(cublasSsyrk(blas_.cublas(), CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, static_cast<int>(r),
                                  static_cast<int>(r), &c, gram, static_cast<int>(r), &b, poly, static_cast<int>(r)));
      add_diagonal<float>(poly, r, a, stream);
      symmetrize_upper_colmajor(poly, r, stream);
    } else {
      // bf16 with fp32 accumulation. P = c A² + b A only: the a X term enters the last product through beta, so
      // the diagonal a (~3.4) is never rounded to bf16 inside P (that rounding costs ~30% more error; same
      // polynomial, see the tests' bf16 bound).
      const std::int64_t tiles = symmetric ? symmetric_tiles(r) : 0;
      if (tiles > 0) {
        // Tile (i, j), i <= j, of a row-major r x r result sits at i t r + j t. One matrix: the tiles of
        // diagonal d are (i, i + d), i < tiles − d, one strided-batched GEMM with stride t r + t through the
        // result (`tiles` launches). A batch: tile (i, j) of every matrix, one strided-batched GEMM with the
        // matrices' strides (tiles (tiles + 1) / 2 launches, whatever the count).
        const std::int64_t t = r / tiles, diag_stride = t * r + t;
        // A(i, j) = X_i X_jᵀ (rows i t.. of X) when wide; X[:, i]ᵀ X[:, j] (columns i t..) when tall.
        auto gram_tiles = [&](std::int64_t i, std::int64_t j, std::int64_t sx, std::int64_t sg, std::int64_t batch) {
          if (wide)
            gemm_strided_batched<T>(blas_, false, true, t, t, n, 1.f, cur + i * t * n, n, sx, cur + j * t * n, n, sx,
                                    0.f, gram + i * t * r + j * t, r, sg, batch, stream);
          else
            gemm_strided_batched<T>(blas_, true, false, t, t, m, 1.f, cur + i * t, n, sx, cur + j * t, n, sx, 0.f,
                                    gram + i * t * r + j * t, r, sg, batch, stream);
        };
        // P(i, j) = c A(i rows, :) A(:, j columns) + b A(i, j): A² is symmetric too.
        auto poly_tiles = [&](std::int64_t i, std::int64_t j, std::int64_t sa, std::int64_t sb, std::int64_t sp,
                              std::int64_t batch) {
          gemm_strided_batched<T>(blas_, false, false, t, t, r, c, gram + i * t * r, r, sa, gram + j * t, r, sb, b,
                                  poly + i * t * r + j * t, r, sp, batch, stream);
        };
        if (count == 1) {
          for (std::int64_t d = 0; d < tiles; ++d) gram_tiles(0, d, wide ? t * n : t, diag_stride, tiles - d);
        } else {
          for (std::int64_t i = 0; i < tiles; ++i)
            for (std::int64_t j = i; j < tiles; ++j) gram_tiles(i, j, mn, rr, count);
        }
        symmetrize_upper_rowmajor<T>(gram, r, count, stream);
        OS_CUDA_CHECK(cudaMemcpyAsync(poly, gram, static_cast<std::size_t>(count * rr) * sizeof(T),
                                      cudaMemcpyDeviceToDevice, stream));
        if (count == 1) {
          for (std::int64_t d = 0; d < tiles; ++d) poly_tiles(0, d, t * r, t, diag_stride, tiles - d);
        } else {
          for (std::int64_t i = 0; i < tiles; ++i)
            for (std::int64_t j = i; j < tiles; ++j) poly_tiles(i, j, rr, rr, rr, count);
        }
        symmetrize_upper_rowmajor<T>(poly, r, count, stream);
      } else {
        if (wide) gemm_n<T>(blas_, count, false, true, m, m, n, 1.f, cur, n, mn, cur, n, mn, 0.f, gram, r, rr, stream);
        else gemm_n<T>(blas_, count, true, false, n, n, m, 1.f, cur, n, mn, cur, n, mn, 0.f, gram, r, rr, stream);
        OS_CUDA_CHECK(cudaMemcpyAsync(poly, gram, static_cast<std::size_t>(count * rr) * sizeof(T),
                                      cudaMemcpyDeviceToDevice, stream));
        gemm_n<T>(blas_, count, false, false, r, r, r, c, gram, r, rr, gram, r, rr, b, poly, r, rr, stream);
      }
      OS_CUDA_CHECK(cudaMemcpyAsync(nxt, cur, static_cast<std::size_t>(count * mn) * sizeof(T),
                                    cudaMemcpyDeviceToDevice, stream));
      beta_x = a;
    }
    // X ← P X (+ a X) when wide, X P (+ a X) when tall.
    if (wide) gemm_n<T>(blas_, count, false, false, m, n, m, 1.f, poly, r, rr, cur, n, mn, beta_x, nxt, n, mn, stream);
    else gemm_n<T>(blas_, count, false, false, m, n, n, 1.f, cur, n, mn, poly, r, rr, beta_x, nxt, n, mn, stream);
    std::swap(cur, nxt);
  }
  if (cur != x)
    OS_CUDA_CHECK(cudaMemcpyAsync(x, cur, static_cast<std::size_t>(count * mn) * sizeof(T), cudaMemcpyDeviceToDevice,
                                  stream));
}

}  // namespace orthoshard::cuda
