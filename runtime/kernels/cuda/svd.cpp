// Thin SVD through gesvdj. Row-major A (m x n) is the column-major M = Aᵀ (n x m) = V S Uᵀ, so gesvdj's
// left vectors of M (n x k, column-major) are row-major Vt as they lie, and its right vectors (m x k,
// column-major, i.e. row-major k x m = Uᵀ) are transposed into row-major U. The vectors' signs are gesvdj's
// and may differ from the CPU gesdd's (harmless for Conda's sign-invariant projections; see svd.hpp).
#include "runtime/kernels/cuda/svd.hpp"

#include "runtime/kernels/cuda/check.hpp"
#include "runtime/kernels/cuda/optim_kernels.hpp"

#include <algorithm>
#include <string>

namespace orthoshard::cuda {

SvdGpu::SvdGpu() : info_(1) {
  OS_CUSOLVER_CHECK(cusolverDnCreate(&handle_));
  OS_CUSOLVER_CHECK(cusolverDnCreateGesvdjInfo(&params_));
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
  // info = min(m, n) + 1: not converged within the tolerance and sweep limit. Treated as an error by policy
  // (svd.hpp), even though the output may be a fair approximation.
  if (info != 0)
    throw CudaError("cuSOLVER gesvdj failed for a " + std::to_string(m) + "x" + std::to_string(n) + " matrix (info " +
                    std::to_string(info) +
                    (info > 0 ? ": Jacobi sweeps did not converge within the tolerance and sweep limit (" +
                                    std::to_string(last_sweeps_) + " sweeps); NaN or Inf in the input?)"
                              : std::string(": invalid argument)")));
}

}  // namespace orthoshard::cuda
