// Conda's basis SVD on the GPU: thin SVD of a row-major fp32 matrix through cuSOLVER's Jacobi gesvdj, with
// the output layout of optim/linalg.hpp's svd_thin (U (m x k), S (k, descending), Vt (k x n), row-major).
//
// Signs: each singular pair (u_i, v_i) is determined only up to a common sign, and gesvdj may pick the other
// sign than the CPU svd_thin (LAPACK gesdd, or its Gram-eigen fp32 path), so U and Vt are not bitwise or even
// sign-wise comparable with the CPU's. That is fine for Conda (optim/rules.hpp): a flipped basis vector
// flips one row (column) of the projected momentum and gradient, the second moment sees only squares, and the
// back-projection (P N or N P) flips it back, so the update is unchanged. Compare by reconstruction
// and orthogonality, not element by element.
//
// Convergence: gesvdj reports info = min(m, n) + 1 when the Jacobi sweeps did not reach the tolerance
// (machine precision) within the sweep limit (kDefaultMaxSweeps). Large or clustered spectra can need more
// sweeps than that while the factors are already accurate, so thin() then accepts the result when
// ‖S − Uᵀ A V‖_F ≤ kAcceptedRelativeResidual · ‖A‖_F (last_converged() false, last_relative_residual() says
// how close), and throws CudaError otherwise (NaN or Inf in A end up there).
#pragma once

#include "runtime/kernels/cuda/device_buffer.hpp"

#include <cusolverDn.h>

#include <cstdint>

namespace orthoshard::cuda {

class SvdGpu {
 public:
  SvdGpu();
  ~SvdGpu();
  SvdGpu(const SvdGpu&) = delete;
  SvdGpu& operator=(const SvdGpu&) = delete;

  // a (m x n, row-major, overwritten); u, s, vt device buffers of m·k, k, k·n floats, k = min(m, n).
  // Synchronizes `stream` to read cuSOLVER's convergence flag; throws CudaError when it rejected an argument
  // or stopped unconverged with a residual above kAcceptedRelativeResidual (see above).
  void thin(float* a, std::int64_t m, std::int64_t n, float* u, float* s, float* vt, cudaStream_t stream);

  // Jacobi stopping rule (0: cuSOLVER's default, machine precision) and sweep limit.
  void set_tolerance(double tol);
  void set_max_sweeps(int sweeps);
  int last_sweeps() const { return last_sweeps_; }
  bool last_converged() const { return last_converged_; }
  double last_relative_residual() const { return last_relative_residual_; }  // set when not converged, else 0

  static constexpr int kDefaultMaxSweeps = 200;  // cuSOLVER's own default is 100
  static constexpr double kAcceptedRelativeResidual = 1e-4;

 private:
  cusolverDnHandle_t handle_ = nullptr;
  gesvdjInfo_t params_ = nullptr;
  DeviceBuffer<float> work_, v_;
  DeviceBuffer<int> info_;
  int last_sweeps_ = 0;
  bool last_converged_ = true;
  double last_relative_residual_ = 0;
};

}  // namespace orthoshard::cuda
