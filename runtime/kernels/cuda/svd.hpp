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
// Convergence: gesvdj reports info = min(m, n) + 1 when the Jacobi sweeps did not reach the tolerance within
// the sweep limit. Its output is then usually a usable approximation, but by policy thin() treats it as an
// error (CudaError) rather than hand the optimizer an unconverged basis; raise set_max_sweeps() or loosen
// set_tolerance() if that is wanted instead.
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
  // Synchronizes `stream` to read cuSOLVER's convergence flag; throws CudaError when it did not converge
  // (info = min(m, n) + 1, an error by policy: see above) or rejected an argument (info < 0).
  void thin(float* a, std::int64_t m, std::int64_t n, float* u, float* s, float* vt, cudaStream_t stream);

  // Jacobi stopping rule (0: cuSOLVER's default, machine precision) and sweep limit.
  void set_tolerance(double tol);
  void set_max_sweeps(int sweeps);
  int last_sweeps() const { return last_sweeps_; }

 private:
  cusolverDnHandle_t handle_ = nullptr;
  gesvdjInfo_t params_ = nullptr;
  DeviceBuffer<float> work_, v_;
  DeviceBuffer<int> info_;
  int last_sweeps_ = 0;
};

}  // namespace orthoshard::cuda
