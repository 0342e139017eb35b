// Newton-Schulz orthogonalization on the GPU, the algorithm of optim/orthogonalize/newton_schulz.hpp:
// X / (‖X‖_F + eps), then `steps` iterations X ← (aI + bA + cA²) X with A = X Xᵀ on the short side
// (tall matrices iterate X ← X (aI + bA + cA²) with A = Xᵀ X, no transpose is made).
//   F32:  fp32 throughout; A and A² by cublasSsyrk (the CPU's symmetric products), X ← P X by SGEMM.
//   BF16: X, A and bA + cA² stored in bf16, every product with fp32 accumulation (X ← (bA + cA²) X + a X, the
//         a X term through the GEMM's beta). cuBLAS has no bf16 syrk, so the symmetric products A = X Xᵀ and
//         A² are made of tiles: the short side r is cut into T tiles of t = r / T rows, and only the
//         T (T + 1) / 2 tiles on and above the diagonal are computed (one strided-batched GEMM per tile
//         diagonal), then mirrored, when `symmetric` is set. T = 4 saves 37.5% of those two products' flops.
//         By default, and for sizes without such a tiling (symmetric_tiles() = 0), full GEMMs
//         (cuBLASLt/cublasGemmEx).
// Batched: run_batched() orthogonalizes `count` same-shape matrices stored one after another, each with its own
// norm, and (BF16) every product of an iteration is one strided-batched GEMM over the count matrices (the tiled
// symmetric products one per tile), so a group of same-shape matrices costs the launches of one matrix. The
// optimizer groups each owner's same-shape matrices this way (GPT-2 124M: 48 matrices in 4 groups at one rank).
// F32 batches run the matrices one by one (cuBLAS has no batched syrk).
#pragma once

#include "runtime/cuda/device_buffer.hpp"
#include "runtime/cuda/gemm.hpp"
#include "optim/cuda/optim_kernels.hpp"

#include <cstdint>

namespace orthoshard::cuda {

// The quintic's coefficients (the Muon reference's, as NsCoefficients in optim/).
struct NsGpuCoefficients {
  double a = 3.4445, b = -4.7750, c = 2.0315;
};

// Not thread-safe and not for concurrent streams: the workspaces below (and the Blas, see gemm.hpp) are shared
// by every call, so an instance must not have work from two streams in flight at once (two calls on different
// streams would overwrite each other's Gram matrix, polynomial and norm). Use one DeviceNewtonSchulz and one Blas
// per stream, or order the streams (an Event) so the second call starts after the first one's work.
class DeviceNewtonSchulz {
 public:
  enum class Precision { F32, BF16 };
  using Coefficients = NsGpuCoefficients;

  explicit DeviceNewtonSchulz(Blas& blas, Precision precision = Precision::BF16, int steps = 5, Coefficients coef = {},
                           double eps = 1e-7);

  // Orthogonalizes the row-major m x n fp32 device matrix x in place (normalization in fp32 from fp32 data;
  // with BF16 precision the iterations run on a bf16 copy that is converted back at the end).
  void run(float* x, std::int64_t m, std::int64_t n, cudaStream_t stream);
  // bf16 in place (BF16 precision only: otherwise throws CudaError before touching x); the norm is summed in
  // double from the bf16 values.
  void run(bf16* x, std::int64_t m, std::int64_t n, cudaStream_t stream);
  // The iterations alone, on an already normalized matrix.
  void iterate(float* x, std::int64_t m, std::int64_t n, cudaStream_t stream);
  void iterate(bf16* x, std::int64_t m, std::int64_t n, cudaStream_t stream);
  // count row-major m x n matrices at x + j m n (j < count), each orthogonalized as run() does it alone (the
  // same polynomial and rounding points; the batched GEMMs may pick other cuBLAS algorithms, so results can
  // differ from run() in the last bits).
  void run_batched(float* x, std::int64_t count, std::int64_t m, std::int64_t n, cudaStream_t stream);
  void run_batched(bf16* x, std::int64_t count, std::int64_t m, std::int64_t n, cudaStream_t stream);

  Precision precision() const { return precision_; }
  int steps() const { return steps_; }

  // BF16: true takes the symmetric products by upper tiles (see above); false (the default) full GEMMs. The
  // benchmark times both: on an H100 (CUDA 13's cuBLAS) the tiles were slower at every size measured, e.g.
  // 4096² at 573 against 671 GEMM-equivalent TFLOP/s, GPT-2 124M's 48 matrices batched in 8.2 against 4.9 ms:
  // the smaller tile GEMMs lose more than the 37.5% of flops they save.
  bool symmetric = false;
  // Tiles per side for a symmetric product of side r: the largest T <= kMaxTiles with r = T t, t a multiple of
  // 8 (16-byte rows for the tensor cores) and t >= kMinTile; 0 (full GEMMs) when there is none.
  static constexpr std::int64_t kMaxTiles = 4, kMinTile = 128;
  static std::int64_t symmetric_tiles(std::int64_t r);

 private:
  template <typename T>
  void iterate_impl(T* x, std::int64_t count, std::int64_t m, std::int64_t n, cudaStream_t stream);
  template <typename T> void normalize(T* x, std::int64_t size, cudaStream_t stream);

  Blas& blas_;
  Precision precision_;
  int steps_;
  Coefficients coef_;
  double eps_;
  // Workspaces, grown on demand and reused: (r x r) Gram and polynomial, (m x n) next iterate, bf16 copy (each
  // count times for a batch).
  DeviceBuffer<float> f_gram_, f_poly_, f_next_;
  DeviceBuffer<bf16> h_x_, h_gram_, h_poly_, h_next_;
  DeviceBuffer<double> norm_;  // [0]: Σx², then kSumSquaresScratch partials
};

}  // namespace orthoshard::cuda
