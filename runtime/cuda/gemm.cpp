// Row-major GEMMs on column-major cuBLAS: a row-major C (m x n) is the column-major Cᵀ (n x m), and
// Cᵀ = op(B)ᵀ · op(A)ᵀ, so every call swaps the operands (B first) and keeps the transpose flags.
#include "runtime/cuda/gemm.hpp"

#include "runtime/cuda/check.hpp"
#include "runtime/cuda/vector_kernels.hpp"

#include <cstdint>
#include <type_traits>

namespace orthoshard::cuda {

namespace {

template <typename T> constexpr cudaDataType_t data_type() {
  if constexpr (std::is_same_v<T, float>) return CUDA_R_32F;
  else return CUDA_R_16BF;
}

// The largest power of two (<= 256) dividing the address: cuBLASLt's heuristics assume 256-byte aligned
// operands unless told otherwise, and sub-buffers (heads of a workspace, rows of a shard) are often less.
std::uint32_t alignment_of(const void* p) {
  const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(p);
  std::uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al >>= 1;
  return al;
}

int to_int(std::int64_t v, const char* what) {
  OS_CUDA_REQUIRE(v >= 0 && v <= INT32_MAX, std::string("GEMM dimension out of int range: ") + what);
  return static_cast<int>(v);
}

// Owns the cuBLASLt descriptors of one call.
struct LtCall {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~LtCall() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// Row-major C (m x n, leading dimension ldc) = beta · C: the k = 0 GEMM (cuBLAS would need valid leading
// dimensions for the empty operands). beta = 0 writes zeros (BLAS semantics: C's old contents, NaN included,
// are not read).
template <typename T>
void scale_matrix(T* c, std::int64_t m, std::int64_t n, std::int64_t ldc, float beta, cudaStream_t stream) {
  if (m == 0 || n == 0 || beta == 1.f) return;
  OS_CUDA_REQUIRE(ldc >= n, "gemm: ldc smaller than the row length");
  if (beta == 0.f) {  // all-zero bits are 0.0 in fp32 and bf16
    OS_CUDA_CHECK(cudaMemset2DAsync(c, static_cast<std::size_t>(ldc) * sizeof(T), 0,
                                    static_cast<std::size_t>(n) * sizeof(T), static_cast<std::size_t>(m), stream));
  } else if (ldc == n) {
    scale_inplace<T>(c, m * n, beta, stream);
  } else {
    for (std::int64_t i = 0; i < m; ++i) scale_inplace<T>(c + i * ldc, n, beta, stream);
  }
}

template <typename T>
void gemm_ex(Blas& blas, bool ta, bool tb, std::int64_t rows, std::int64_t cols, std::int64_t k, float alpha,
             const T* a, std::int64_t lda, const T* b, std::int64_t ldb, float beta, T* d, std::int64_t ldd,
             cudaStream_t stream) {
  const cudaDataType_t dt = data_type<T>();
  OS_CUBLAS_CHECK(cublasSetStream(blas.cublas(), stream));
  OS_CUBLAS_CHECK(cublasGemmEx(blas.cublas(), ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                               to_int(rows, "m"), to_int(cols, "n"), to_int(k, "k"), &alpha, a, dt, to_int(lda, "lda"),
                               b, dt, to_int(ldb, "ldb"), &beta, d, dt, to_int(ldd, "ldc"), CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT));
  ++blas.fallback_calls;
}

}  // namespace

template <typename T>
bool lt_matmul(Blas& blas, bool ta, bool tb, std::int64_t rows, std::int64_t cols, std::int64_t k, float alpha,
               const T* a, std::int64_t lda, const T* b, std::int64_t ldb, float beta, T* d, std::int64_t ldd,
               const LtEpilogue& ep, cudaStream_t stream) {
  const cudaDataType_t dt = data_type<T>();
  const std::uint32_t align_a = alignment_of(a), align_b = alignment_of(b), align_d = alignment_of(d);
  const Blas::LtAlgoKey key{static_cast<std::int64_t>(dt), ta, tb, rows, cols, k, lda, ldb, ldd,
                            align_a, align_b, align_d, static_cast<std::int64_t>(ep.kind), ep.aux ? ep.aux_ld : -1};
  auto& cache = blas.lt_algo_cache();
  auto cached = cache.find(key);
  if (cached != cache.end() && !cached->second.found) return false;
  LtCall call;
  OS_CUBLAS_CHECK(cublasLtMatmulDescCreate(&call.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  OS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(call.op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
  OS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(call.op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
  OS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(call.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep.kind, sizeof ep.kind));
  if (ep.bias)
    OS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(call.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &ep.bias, sizeof ep.bias));
  if (ep.aux) {
    OS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(call.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &ep.aux,
                                                   sizeof ep.aux));
    OS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(call.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ep.aux_ld,
                                                   sizeof ep.aux_ld));
  }
  OS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&call.a, dt, ta ? k : rows, ta ? rows : k, lda));
  OS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&call.b, dt, tb ? cols : k, tb ? k : cols, ldb));
  OS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&call.c, dt, rows, cols, ldd));
  const std::size_t ws = blas.lt_workspace_bytes();
  if (cached == cache.end()) {
    OS_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&call.pref));
    OS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(call.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                         sizeof ws));
    // Split-K partials are reduced in the compute type (fp32) or not split at all: no INPLACE (accumulates in
    // the output buffer, bf16) or OUTPUT_TYPE (bf16 partials) schemes.
    const std::uint32_t reduction = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    OS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(call.pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                         &reduction, sizeof reduction));
    OS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(call.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                         &align_a, sizeof align_a));
    OS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(call.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                         &align_b, sizeof align_b));
    OS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(call.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                         &align_d, sizeof align_d));
    OS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(call.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                         &align_d, sizeof align_d));
    cublasLtMatmulHeuristicResult_t heur{};
    int found = 0;
    ++blas.lt_heuristic_calls;
    const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(blas.lt(), call.op, call.a, call.b, call.c, call.c,
                                                             call.pref, 1, &heur, &found);
    Blas::LtAlgoChoice choice;
    choice.found = hs == CUBLAS_STATUS_SUCCESS && found > 0;  // e.g. CUBLAS_STATUS_NOT_SUPPORTED: fall back
    if (choice.found) choice.algo = heur.algo;
    cached = cache.emplace(key, choice).first;
    if (!choice.found) return false;
  }
  const cublasStatus_t st = cublasLtMatmul(blas.lt(), call.op, &alpha, a, call.a, b, call.b, &beta, d, call.c, d,
                                           call.c, &cached->second.algo, blas.lt_workspace(), ws, stream);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE) {
    // Refused before anything was queued although the heuristic offered the algorithm (an epilogue or layout
    // this cuBLASLt cannot run after all): remember it and let the caller take the cublasGemmEx path.
    cached->second.found = false;
    ++blas.lt_refused_calls;
    return false;
  }
  OS_CUBLAS_CHECK(st);
  ++blas.lt_calls;
  if (ep.kind != CUBLASLT_EPILOGUE_DEFAULT) ++blas.lt_epilogue_calls;
  return true;
}


Blas::Blas(std::size_t lt_workspace_bytes) : workspace_(lt_workspace_bytes) {
  OS_CUBLAS_CHECK(cublasCreate(&cublas_));
  OS_CUBLAS_CHECK(cublasLtCreate(&lt_));
  // Deterministic, exact fp32 for float operands: no TF32 (CUBLAS_DEFAULT_MATH), no atomics in reductions; bf16
  // GEMMs reduce their split-K partials in fp32 (no reduced-precision reductions).
  OS_CUBLAS_CHECK(
      cublasSetMathMode(cublas_, cublasMath_t(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
  OS_CUBLAS_CHECK(cublasSetAtomicsMode(cublas_, CUBLAS_ATOMICS_NOT_ALLOWED));
}

Blas::~Blas() {
  if (lt_) cublasLtDestroy(lt_);
  if (cublas_) cublasDestroy(cublas_);
}

template <typename T>
void gemm(Blas& blas, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
          const T* a, std::int64_t lda, const T* b, std::int64_t ldb, float beta, T* c, std::int64_t ldc,
          cudaStream_t stream) {
  OS_CUDA_REQUIRE(m >= 0 && n >= 0 && k >= 0, "gemm: negative dimension");
  if (m == 0 || n == 0) return;
  if (k == 0) {
    scale_matrix<T>(c, m, n, ldc, beta, stream);
    return;
  }
  // Column-major Cᵀ (n x m) = op(B)ᵀ (n x k) · op(A)ᵀ (k x m): B's buffer is the first operand.
  if (lt_eligible<T>(blas, {a, b, c}, {lda, ldb, ldc}) &&
      lt_matmul<T>(blas, trans_b, trans_a, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc, LtEpilogue{}, stream))
    return;
  gemm_ex<T>(blas, trans_b, trans_a, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc, stream);
}

template <typename T>
void gemm_strided_batched(Blas& blas, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                          float alpha, const T* a, std::int64_t lda, std::int64_t stride_a, const T* b,
                          std::int64_t ldb, std::int64_t stride_b, float beta, T* c, std::int64_t ldc,
                          std::int64_t stride_c, std::int64_t batch, cudaStream_t stream) {
  OS_CUDA_REQUIRE(m >= 0 && n >= 0 && k >= 0 && batch >= 0, "gemm_strided_batched: negative dimension");
  if (m == 0 || n == 0 || batch == 0) return;
  if (k == 0) {
    if (ldc == n && stride_c == m * n) scale_matrix<T>(c, batch * m, n, n, beta, stream);
    else
      for (std::int64_t i = 0; i < batch; ++i) scale_matrix<T>(c + i * stride_c, m, n, ldc, beta, stream);
    return;
  }
  const cudaDataType_t dt = data_type<T>();
  OS_CUBLAS_CHECK(cublasSetStream(blas.cublas(), stream));
  OS_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      blas.cublas(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, to_int(n, "n"),
      to_int(m, "m"), to_int(k, "k"), &alpha, b, dt, to_int(ldb, "ldb"), stride_b, a, dt, to_int(lda, "lda"), stride_a,
      &beta, c, dt, to_int(ldc, "ldc"), stride_c, to_int(batch, "batch"), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  ++blas.fallback_calls;
}

#define ORTHOSHARD_GEMM(T)                                                                                         \
  template void gemm<T>(Blas&, bool, bool, std::int64_t, std::int64_t, std::int64_t, float, const T*, std::int64_t, \
                        const T*, std::int64_t, float, T*, std::int64_t, cudaStream_t);                            \
  template void gemm_strided_batched<T>(Blas&, bool, bool, std::int64_t, std::int64_t, std::int64_t, float,        \
                                        const T*, std::int64_t, std::int64_t, const T*, std::int64_t, std::int64_t, \
                                        float, T*, std::int64_t, std::int64_t, std::int64_t, cudaStream_t);        \
  template bool lt_matmul<T>(Blas&, bool, bool, std::int64_t, std::int64_t, std::int64_t, float, const T*,         \
                             std::int64_t, const T*, std::int64_t, float, T*, std::int64_t, const LtEpilogue&,      \
                             cudaStream_t);
ORTHOSHARD_GEMM(float)
ORTHOSHARD_GEMM(bf16)

}  // namespace orthoshard::cuda
