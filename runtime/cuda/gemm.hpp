// Row-major GEMMs through cuBLASLt with a cublasGemmEx fallback, and cuBLASLt calls with fused epilogues (bias,
// GELU, DGELU) for the layers built on them (models/layers/cuda/linear.hpp). bf16 operands use fp32
// accumulation (CUBLAS_COMPUTE_32F), split-K partials included: the cuBLAS handle disallows reduced-precision
// reductions (CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION) and cuBLASLt is limited to algorithms that
// reduce in the compute type (CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE, or no split-K at all). fp32 operands are
// computed in plain fp32 (no TF32).
#pragma once

#include "runtime/cuda/device_buffer.hpp"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <array>
#include <initializer_list>
#include <cstddef>
#include <cstdint>
#include <map>

namespace orthoshard::cuda {

// The cuBLAS and cuBLASLt handles of one device plus cuBLASLt's workspace and algorithm cache. Not thread-safe
// and not for concurrent streams: one Blas serves one stream at a time (the handles are re-pointed at the stream
// of each call and the single workspace is shared by every cuBLASLt call), so work in flight on two streams at
// once needs two Blas objects.
class Blas {
 public:
  explicit Blas(std::size_t lt_workspace_bytes = std::size_t(32) << 20);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  cublasHandle_t cublas() const { return cublas_; }
  cublasLtHandle_t lt() const { return lt_; }
  void* lt_workspace() const { return workspace_.data() ? const_cast<std::uint8_t*>(workspace_.data()) : nullptr; }
  std::size_t lt_workspace_bytes() const { return workspace_.bytes(); }

  // false: every GEMM goes through cublasGemmEx and epilogues through separate kernels (tests compare both).
  bool use_lt = true;
  // How many GEMMs took each path (for tests and logs). lt_epilogue_calls counts the cuBLASLt calls that ran
  // a fused epilogue (bias, GELU, DGELU); lt_heuristic_calls the cublasLtMatmulAlgoGetHeuristic queries (one
  // per distinct problem, see the algorithm cache below).
  // lt_refused_calls: cublasLtMatmul refused (not supported / invalid value) an algorithm its heuristic had
  // offered; that problem then takes the fallback path for good.
  std::uint64_t lt_calls = 0, fallback_calls = 0, lt_epilogue_calls = 0, lt_heuristic_calls = 0, lt_refused_calls = 0;

  // cuBLASLt's algorithm choice per problem: data type, transposes, shape, leading dimensions, operand
  // alignments, epilogue (kind, aux leading dimension). found = false remembers "no algorithm" (the
  // cublasGemmEx fallback runs without asking again). Filled by gemm.cpp.
  using LtAlgoKey = std::array<std::int64_t, 14>;
  struct LtAlgoChoice {
    bool found = false;
    cublasLtMatmulAlgo_t algo{};
  };
  std::map<LtAlgoKey, LtAlgoChoice>& lt_algo_cache() { return lt_algos_; }

 private:
  cublasHandle_t cublas_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  DeviceBuffer<std::uint8_t> workspace_;
  std::map<LtAlgoKey, LtAlgoChoice> lt_algos_;
};

// C (m x n) = alpha · op(A) · op(B) + beta · C, all row-major with leading dimensions in elements;
// op = transpose when the flag is set. T is float or __nv_bfloat16; alpha, beta are fp32. k = 0 gives
// C = beta · C (C = 0 when beta is 0, whatever C held; a and b are not read).
template <typename T>
void gemm(Blas& blas, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
          const T* a, std::int64_t lda, const T* b, std::int64_t ldb, float beta, T* c, std::int64_t ldc,
          cudaStream_t stream);

// `batch` independent GEMMs of the same shape, operand i at a + i·stride_a etc. (cublasGemmStridedBatchedEx);
// k = 0 gives C_i = beta · C_i as gemm.
template <typename T>
void gemm_strided_batched(Blas& blas, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                          float alpha, const T* a, std::int64_t lda, std::int64_t stride_a, const T* b,
                          std::int64_t ldb, std::int64_t stride_b, float beta, T* c, std::int64_t ldc,
                          std::int64_t stride_c, std::int64_t batch, cudaStream_t stream);

// ---- cuBLASLt with a fused epilogue (column-major terms) ----
// The epilogue of a cuBLASLt call, in column-major terms (bias runs along the rows of the column-major D).
struct LtEpilogue {
  cublasLtEpilogue_t kind = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  void* aux = nullptr;  // GELU input (forward: written; DGELU: read)
  std::int64_t aux_ld = 0;
};

// cuBLASLt is tried when enabled, the pointers are 16-byte aligned and leading dimensions are multiples of
// 16 bytes (its fast kernels need both; anything else goes to cublasGemmEx, which handles any layout).
template <typename T>
bool lt_eligible(const Blas& blas, std::initializer_list<const void*> ptrs, std::initializer_list<std::int64_t> lds) {
  if (!blas.use_lt) return false;
  for (const void* p : ptrs)
    if (p && (reinterpret_cast<std::uintptr_t>(p) & 15u) != 0) return false;
  for (std::int64_t ld : lds)
    if ((ld * static_cast<std::int64_t>(sizeof(T))) % 16 != 0) return false;
  return true;
}

// Column-major D (rows x cols) = alpha op(A) op(B) + beta C with D = C, through cuBLASLt, with the epilogue
// fused. A is stored (ta ? k x rows : rows x k), B (tb ? cols x k : k x cols). Returns false (nothing queued)
// when cuBLASLt has no algorithm for it (alignment, epilogue support), so the caller can fall back. The
// algorithm is chosen once per problem (Blas::lt_algo_cache) and reused.
template <typename T>
bool lt_matmul(Blas& blas, bool ta, bool tb, std::int64_t rows, std::int64_t cols, std::int64_t k, float alpha,
               const T* a, std::int64_t lda, const T* b, std::int64_t ldb, float beta, T* d, std::int64_t ldd,
               const LtEpilogue& ep, cudaStream_t stream);

}  // namespace orthoshard::cuda
