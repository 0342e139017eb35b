// Thin SVD through gesvdj. Row-major A (m x n) is the column-major M = Aᵀ (n x m) = V S Uᵀ, so gesvdj's
// left vectors of M (n x k, column-major) are row-major Vt as they lie, and its right vectors (m x k,
// column-major, i.e. row-major k x m = Uᵀ) are transposed into row-major U. The vectors' signs are gesvdj's
// and may differ from the CPU gesdd's (harmless for Conda's sign-invariant projections; see device_svd.hpp).
#include "optim/orthogonalize/cuda/device_svd.hpp"

#include "runtime/cuda/check.hpp"
#include "runtime/cuda/gemm.hpp"
#include "optim/cuda/optim_kernels.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <string>

namespace orthoshard::cuda {

DeviceSvd::DeviceSvd() : info_(1) {
  OS_CUSOLVER_CHECK(cusolverDnCreate(&handle_));
  OS_CUSOLVER_CHECK(cusolverDnCreateGesvdjInfo(&params_));
  OS_CUSOLVER_CHECK(cusolverDnXgesvdjSetMaxSweeps(params_, kDefaultMaxSweeps));
}

DeviceSvd::~DeviceSvd() {
  if (params_) cusolverDnDestroyGesvdjInfo(params_);
  if (handle_) cusolverDnDestroy(handle_);
}

void DeviceSvd::set_tolerance(double tol) { OS_CUSOLVER_CHECK(cusolverDnXgesvdjSetTolerance(params_, tol)); }
void DeviceSvd::set_max_sweeps(int sweeps) { OS_CUSOLVER_CHECK(cusolverDnXgesvdjSetMaxSweeps(params_, sweeps)); }

void DeviceSvd::thin(float* a, std::int64_t m, std::int64_t n, float* u, float* s, float* vt, cudaStream_t stream) {
  OS_CUDA_REQUIRE(m >= 0 && n >= 0 && m <= INT32_MAX && n <= INT32_MAX, "DeviceSvd::thin: bad shape");
  const std::int64_t k = std::min(m, n);
  if (k == 0) return;
  const int rows = static_cast<int>(n), cols = static_cast<int>(m);  // M = Aᵀ, column-major n x m
  if (v_.size() < static_cast<std::size_t>(m * k)) v_ = DeviceBuffer<float>(static_cast<std::size_t>(m * k));
  // gesvdj overwrites A; a copy is kept to measure an unconverged result against (a copy costs little next to
  // the Jacobi sweeps).
  if (a_copy_.size() < static_cast<std::size_t>(m * n)) a_copy_ = DeviceBuffer<float>(static_cast<std::size_t>(m * n));
  OS_CUDA_CHECK(cudaMemcpyAsync(a_copy_.data(), a, static_cast<std::size_t>(m * n) * sizeof(float),
                                cudaMemcpyDeviceToDevice, stream));
  OS_CUSOLVER_CHECK(cusolverDnSetStream(handle_, stream));
  int lwork = 0;
  OS_CUSOLVER_CHECK(cusolverDnSgesvdj_bufferSize(handle_, CUSOLVER_EIG_MODE_VECTOR, 1, rows, cols, a, rows, s, vt,
                                                 rows, v_.data(), cols, &lwork, params_));
  if (work_.size() < static_cast<std::size_t>(lwork)) work_ = DeviceBuffer<float>(static_cast<std::size_t>(lwork));
  OS_CUSOLVER_CHECK(cusolverDnSgesvdj(handle_, CUSOLVER_EIG_MODE_VECTOR, 1, rows, cols, a, rows, s, vt, rows,
                                     v_.data(), cols, work_.data(), lwork, info_.data(), params_));
  transpose(u, v_.data(), k, m, stream);  // (k x m) -> (m x k)
  int info = 0;
  OS_CUDA_CHECK(cudaMemcpyAsync(&info, info_.data(), sizeof info, cudaMemcpyDeviceToHost, stream));
  OS_CUDA_CHECK(cudaStreamSynchronize(stream));
  OS_CUSOLVER_CHECK(cusolverDnXgesvdjGetSweeps(handle_, params_, &last_sweeps_));
  last_converged_ = info == 0;
  last_relative_residual_ = 0;
  if (info == 0) return;
  const std::string what = "cuSOLVER gesvdj for a " + std::to_string(m) + "x" + std::to_string(n) + " matrix";
  if (info < 0) throw CudaError(what + " rejected argument " + std::to_string(-info));
  // info = k + 1: the Jacobi sweeps stopped at the limit before the tolerance (machine precision by default).
  // The factors are accepted when they reproduce A and their vectors are orthonormal, measured here (see device_svd.hpp).
  last_relative_residual_ = factor_error(u, s, vt, m, n, stream);
  if (!(last_relative_residual_ <= kAcceptedRelativeResidual)) {
    char rel[32];
    std::snprintf(rel, sizeof rel, "%.2e", last_relative_residual_);
    throw CudaError(what + " did not converge in " + std::to_string(last_sweeps_) + " sweeps (relative residual " +
                    rel + "; NaN or Inf in the input?)");
  }
}

double DeviceSvd::factor_error(const float* u, const float* s, const float* vt, std::int64_t m, std::int64_t n,
                            cudaStream_t stream) {
  const std::int64_t k = std::min(m, n);
  if (!blas_) blas_ = std::make_unique<Blas>(0);  // only unconverged results get here: no cuBLASLt workspace
  if (svt_.size() < static_cast<std::size_t>(k * n)) svt_ = DeviceBuffer<float>(static_cast<std::size_t>(k * n));
  if (gram_.size() < static_cast<std::size_t>(k * k)) gram_ = DeviceBuffer<float>(static_cast<std::size_t>(k * k));
  if (sums_.size() < 4 + kSumSquaresScratch) sums_ = DeviceBuffer<double>(4 + kSumSquaresScratch);
  double* sums = sums_.data();
  double* scratch = sums + 4;
  sum_squares<float>(sums, a_copy_.data(), m * n, scratch, false, stream);  // ‖A‖²
  scale_rows(svt_.data(), vt, s, k, n, stream);                             // diag(S)·Vt
  gemm<float>(*blas_, false, false, m, n, k, -1.0f, u, k, svt_.data(), n, 1.0f, a_copy_.data(), n, stream);
  sum_squares<float>(sums + 1, a_copy_.data(), m * n, scratch, false, stream);  // ‖A − U·diag(S)·Vt‖²
  gemm<float>(*blas_, true, false, k, k, m, 1.0f, u, k, u, k, 0.0f, gram_.data(), k, stream);  // UᵀU
  add_diagonal<float>(gram_.data(), k, -1.0f, stream);
  sum_squares<float>(sums + 2, gram_.data(), k * k, scratch, false, stream);  // ‖UᵀU − I‖²
  gemm<float>(*blas_, false, true, k, k, n, 1.0f, vt, n, vt, n, 0.0f, gram_.data(), k, stream);  // Vt·Vtᵀ
  add_diagonal<float>(gram_.data(), k, -1.0f, stream);
  sum_squares<float>(sums + 3, gram_.data(), k * k, scratch, false, stream);  // ‖Vt·Vtᵀ − I‖²
  double h[4] = {0, 0, 0, 0};
  OS_CUDA_CHECK(cudaMemcpyAsync(h, sums, sizeof h, cudaMemcpyDeviceToHost, stream));
  OS_CUDA_CHECK(cudaStreamSynchronize(stream));
  for (double v : h)
    if (!std::isfinite(v)) return std::numeric_limits<double>::quiet_NaN();
  const double rec = h[0] > 0 ? std::sqrt(h[1] / h[0]) : std::sqrt(h[1]);
  const double kk = static_cast<double>(k);  // ‖I‖_F² = k
  return std::max({rec, std::sqrt(h[2] / kk), std::sqrt(h[3] / kk)});
}

}  // namespace orthoshard::cuda
