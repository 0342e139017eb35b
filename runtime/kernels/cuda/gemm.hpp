// Row-major GEMMs through cuBLASLt (bias and GELU epilogues fused) with a cublasGemmEx fallback, and the
// linear layer of the GPT-2 step (y = x·Wᵀ + b, W stored (OC, IC)) on top of them. bf16 operands use fp32
// accumulation (CUBLAS_COMPUTE_32F), split-K partials included: the cuBLAS handle disallows reduced-precision
// reductions (CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION) and cuBLASLt is limited to algorithms that
// reduce in the compute type (CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE, or no split-K at all). fp32 operands are
// computed in plain fp32 (no TF32).
#pragma once

#include "runtime/kernels/cuda/device_buffer.hpp"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <array>
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

// out (N, OC) = inp (N, IC) · wᵀ + bias (OC; may be null). With pre_gelu non-null: pre_gelu = that value and
// out = gelu_tanh(pre_gelu) (cuBLASLt's GELU_AUX_BIAS epilogue, else a GEMM then kernels). IC = 0 gives
// out = bias (or 0) broadcast over the rows (then the GELU).
template <typename T>
void linear_forward(Blas& blas, T* out, T* pre_gelu, const T* inp, const T* w, const T* bias, std::int64_t N,
                    std::int64_t IC, std::int64_t OC, cudaStream_t stream);

// Floats of scratch linear_backward needs when dbias is non-null.
std::size_t linear_backward_scratch_floats(std::int64_t N, std::int64_t OC);

// dinp (N, IC) = dout · w (overwritten), times gelu'(gelu_pre) elementwise when gelu_pre (N, IC) is non-null
// (the backward through the GELU that produced this layer's input: cuBLASLt's DGELU epilogue);
// dw (OC, IC) += doutᵀ · inp; dbias (OC) += Σ_n dout (deterministic column sums; may be null). Any of
// dinp, dw may be null to skip it.
template <typename T>
void linear_backward(Blas& blas, T* dinp, T* dw, T* dbias, float* scratch, const T* dout, const T* inp, const T* w,
                     const T* gelu_pre, std::int64_t N, std::int64_t IC, std::int64_t OC, cudaStream_t stream);

}  // namespace orthoshard::cuda
