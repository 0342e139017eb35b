// Thin SVD through gesvdj. Row-major A (m x n) is the column-major M = Aᵀ (n x m) = V S Uᵀ, so gesvdj's
// left vectors of M (n x k, column-major) are row-major Vt as they lie, and its right vectors (m x k,
// column-major, i.e. row-major k x m = Uᵀ) are transposed into row-major U. The vectors' signs are gesvdj's
// and may differ from the CPU gesdd's (harmless for Conda's sign-invariant projections; see svd.hpp).
#include "runtime/kernels/cuda/svd.hpp"

#include "runtime/kernels/cuda/check.hpp"
#include "runtime/kernels/cuda/optim_kernels.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace orthoshard::cuda {

SvdGpu::SvdGpu() : info_(1) {
  OS_CUSOLVER_CHECK(cusolverDnCreate(&handle_));
  OS_CUSOLVER_CHECK(cusolverDnCreateGesvdjInfo(&params_));
  OS_CUSOLVER_CHECK(cusolverDnXgesvdjSetMaxSweeps(params_, kDefaultMaxSweeps));
}

SvdGpu::~SvdGpu() {
  if (params_) cusolverDnDestroyGesvdjInfo(params_);
  if (handle_) cusolverDnDestroy(handle_);
}

void SvdGpu::set_tolerance(double tol) { OS_CUSOLVER_CHECK(cusolverDnXgesvdjSetTolerance(params_, tol)); }
void SvdGpu::set_max_sweeps(int sweeps) { OS_CUSOLVER_CHECK(cusolverDnXgesvdjSetMaxSweeps(params_, sweeps)); }

void SvdGpu::thin(float* a, std::int64_t m, std::int64_t n, float* u, float* s, float* vt, cudaStream_t stream) {
  OS_CUDA_REQUIRE(m >= 0 && n >= 0 && m <= INT32_MAX && n <= INT32_MAX, "SvdGpu::thin: bad shape");
  const std::int64_t k = std::min(m, n);
  if (k == 0) return;
  const int rows = static_cast<int>(n), cols = static_cast<int>(m);  // M = Aᵀ, column-major n x m
  if (v_.size() < static_cast<std::size_t>(m * k)) v_ = DeviceBuffer<float>(static_cast<std::size_t>(m * k));
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
  // The factors are accepted when they reproduce A: residual ‖S − Uᵀ A V‖_F relative to ‖A‖_F = ‖S‖_F.
  double residual = 0;
  OS_CUSOLVER_CHECK(cusolverDnXgesvdjGetResidual(handle_, params_, &residual));
  std::vector<float> sh(static_cast<std::size_t>(k));
  OS_CUDA_CHECK(cudaMemcpy(sh.data(), s, sh.size() * sizeof(float), cudaMemcpyDeviceToHost));
  double norm2 = 0;
  for (float v : sh) norm2 += static_cast<double>(v) * v;
  last_relative_residual_ = norm2 > 0 ? residual / std::sqrt(norm2) : residual;
  if (!(last_relative_residual_ <= kAcceptedRelativeResidual)) {
    char rel[32];
    std::snprintf(rel, sizeof rel, "%.2e", last_relative_residual_);
    throw CudaError(what + " did not converge in " + std::to_string(last_sweeps_) + " sweeps (relative residual " +
                    rel + "; NaN or Inf in the input?)");
  }
}

}  // namespace orthoshard::cuda
