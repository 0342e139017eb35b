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
// sweeps than that while the factors are already accurate, so thin() then measures the factors it got and
// accepts them when each of ‖A − U·diag(S)·Vt‖_F / ‖A‖_F, ‖UᵀU − I‖_F / √k and ‖Vt·Vtᵀ − I‖_F / √k is at most
// kAcceptedRelativeResidual (last_converged() false, last_relative_residual() the largest of the three), and
// throws CudaError otherwise (NaN or Inf in A end up there). Both kinds of error matter to Conda, which projects
// onto the vectors and back. gesvdj's own residual (cusolverDnXgesvdjGetResidual) is not used for this: on an
// H100 it was within 1e-4 of ‖A‖ for factors whose reconstruction was 6e-4 away from A.
#pragma once

#include "runtime/cuda/device_buffer.hpp"
#include "runtime/cuda/gemm.hpp"

#include <cusolverDn.h>

#include <cstdint>
#include <memory>

namespace orthoshard::cuda {

class DeviceSvd {
 public:
  DeviceSvd();
  ~DeviceSvd();
  DeviceSvd(const DeviceSvd&) = delete;
  DeviceSvd& operator=(const DeviceSvd&) = delete;

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
  // The largest of the three relative errors above, A being a_copy_ (which it overwrites); NaN when any is not
  // finite.
  double factor_error(const float* u, const float* s, const float* vt, std::int64_t m, std::int64_t n,
                              cudaStream_t stream);

  cusolverDnHandle_t handle_ = nullptr;
  gesvdjInfo_t params_ = nullptr;
  std::unique_ptr<Blas> blas_;  // created for the first unconverged result
  DeviceBuffer<float> work_, v_, a_copy_, svt_, gram_;
  DeviceBuffer<double> sums_;
  DeviceBuffer<int> info_;
  int last_sweeps_ = 0;
  bool last_converged_ = true;
  double last_relative_residual_ = 0;
};

}  // namespace orthoshard::cuda
