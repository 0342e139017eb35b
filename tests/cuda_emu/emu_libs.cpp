// Emulated cuBLAS, cuBLASLt and cuSOLVER: the calls the project makes, computed on the CPU with the semantics the
// NVIDIA documentation gives them (column-major; fp32 accumulation; C is not read when beta = 0; bf16 results
// rounded to nearest even once). These check the code around the library calls (shapes, leading dimensions,
// transposes, epilogue buffers), not the libraries themselves. The work of a call is queued on the handle's
// stream (emu_streams.hpp); the argument checks and host scalars are taken at the call, as the libraries do.
#include <cblas.h>
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cusolverDn.h>

#include "emu_streams.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

struct cublasContext {
  cudaStream_t stream = nullptr;
};
struct cublasLtContext {};
struct cusolverDnContext {
  cudaStream_t stream = nullptr;
};
struct gesvdjInfo {
  double tolerance = 0;
  int max_sweeps = 100;
  int sweeps = 0;
};

namespace {

float load(const void* p, cudaDataType t, std::int64_t i) {
  if (t == CUDA_R_32F) return static_cast<const float*>(p)[i];
  return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
}
void store(void* p, cudaDataType t, std::int64_t i, float v) {
  if (t == CUDA_R_32F) static_cast<float*>(p)[i] = v;
  else static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
}
bool supported(cudaDataType t) { return t == CUDA_R_32F || t == CUDA_R_16BF; }

// op(X) as a dense column-major rows x cols float matrix; X stored column-major with leading dimension ld.
std::vector<float> load_op(const void* x, cudaDataType t, bool trans, std::int64_t rows, std::int64_t cols,
                           std::int64_t ld) {
  std::vector<float> out(static_cast<std::size_t>(rows * cols));
  for (std::int64_t j = 0; j < cols; ++j)
    for (std::int64_t i = 0; i < rows; ++i)
      out[static_cast<std::size_t>(i + j * rows)] = trans ? load(x, t, j + i * ld) : load(x, t, i + j * ld);
  return out;
}

// acc (m x n, column-major) = alpha op(A) op(B) [+ beta C when beta != 0].
std::vector<float> product(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                           const void* a, cudaDataType at, std::int64_t lda, const void* b, cudaDataType bt,
                           std::int64_t ldb, float beta, const void* c, cudaDataType ct, std::int64_t ldc) {
  const std::vector<float> A = load_op(a, at, ta, m, k, lda), B = load_op(b, bt, tb, k, n, ldb);
  std::vector<float> acc(static_cast<std::size_t>(m * n), 0.f);
  if (k > 0)
    cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(k), alpha, A.data(), static_cast<int>(m), B.data(), static_cast<int>(k), 0.f,
                acc.data(), static_cast<int>(m));
  if (beta != 0.f)
    for (std::int64_t j = 0; j < n; ++j)
      for (std::int64_t i = 0; i < m; ++i) acc[static_cast<std::size_t>(i + j * m)] += beta * load(c, ct, i + j * ldc);
  return acc;
}

bool dims_ok(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, std::int64_t lda, std::int64_t ldb,
             std::int64_t ldc) {
  if (m < 0 || n < 0 || k < 0) return false;
  if (lda < std::max<std::int64_t>(1, ta ? k : m)) return false;
  if (ldb < std::max<std::int64_t>(1, tb ? n : k)) return false;
  return ldc >= std::max<std::int64_t>(1, m);
}

float gelu_tanh(float x) {
  const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
  return 0.5f * x * (1.f + std::tanh(u));
}
float gelu_tanh_grad(float x) {
  const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
  const float t = std::tanh(u);
  return 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * 0.7978845608028654f * (1.f + 3.f * 0.044715f * x * x);
}

struct LtDesc {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  void* aux = nullptr;
  std::int64_t aux_ld = 0;
};
struct LtLayout {
  cudaDataType type;
  std::uint64_t rows, cols;
  std::int64_t ld;
};
struct LtPref {};

void unsupported(const char* what, int value) {
  std::fprintf(stderr, "cuda-emu: %s %d is not emulated\n", what, value);
}

}  // namespace

extern "C" {

// ---------------- cuBLAS ----------------

cublasStatus_t CUBLASWINAPI cublasCreate_v2(cublasHandle_t* h) {
  *h = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasDestroy_v2(cublasHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
  h->stream = s;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasSetAtomicsMode(cublasHandle_t, cublasAtomicsMode_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t CUBLASWINAPI cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
const char* CUBLASWINAPI cublasGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "emulated cuBLAS status";
  }
}

cublasStatus_t CUBLASWINAPI cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t transa,
                                                       cublasOperation_t transb, int m, int n, int k, const void* alpha,
                                                       const void* A, cudaDataType Atype, int lda, long long strideA,
                                                       const void* B, cudaDataType Btype, int ldb, long long strideB,
                                                       const void* beta, void* C, cudaDataType Ctype, int ldc,
                                                       long long strideC, int batch, cublasComputeType_t compute,
                                                       cublasGemmAlgo_t) {
  const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
  // cuBLAS's fp32-compute combinations among these types: A and B alike, C like them or fp32.
  if (compute != CUBLAS_COMPUTE_32F || !supported(Atype) || Btype != Atype || (Ctype != Atype && Ctype != CUDA_R_32F)) {
    unsupported("cublasGemmEx compute/data type", static_cast<int>(compute));
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (!dims_ok(ta, tb, m, n, k, lda, ldb, ldc) || batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  const std::size_t ea = Atype == CUDA_R_32F ? 4 : 2, eb = Btype == CUDA_R_32F ? 4 : 2, ec = Ctype == CUDA_R_32F ? 4 : 2;
  cuda_emu::enqueue(h->stream, "a cuBLAS GEMM", [=] {
    for (int i = 0; i < batch; ++i) {
      const char* a = static_cast<const char*>(A) + i * strideA * static_cast<long long>(ea);
      const char* b = static_cast<const char*>(B) + i * strideB * static_cast<long long>(eb);
      char* c = static_cast<char*>(C) + i * strideC * static_cast<long long>(ec);
      const std::vector<float> acc = product(ta, tb, m, n, k, al, a, Atype, lda, b, Btype, ldb, be, c, Ctype, ldc);
      for (int j = 0; j < n; ++j)
        for (int r = 0; r < m; ++r)
          store(c, Ctype, r + std::int64_t(j) * ldc, acc[static_cast<std::size_t>(r + j * m)]);
    }
  });
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasGemmEx(cublasHandle_t h, cublasOperation_t transa, cublasOperation_t transb, int m,
                                         int n, int k, const void* alpha, const void* A, cudaDataType Atype, int lda,
                                         const void* B, cudaDataType Btype, int ldb, const void* beta, void* C,
                                         cudaDataType Ctype, int ldc, cublasComputeType_t compute,
                                         cublasGemmAlgo_t algo) {
  return cublasGemmStridedBatchedEx(h, transa, transb, m, n, k, alpha, A, Atype, lda, 0, B, Btype, ldb, 0, beta, C,
                                    Ctype, ldc, 0, 1, compute, algo);
}

cublasStatus_t CUBLASWINAPI cublasSsyrk_v2(cublasHandle_t h, cublasFillMode_t uplo, cublasOperation_t trans, int n,
                                           int k, const float* alpha, const float* A, int lda, const float* beta,
                                           float* C, int ldc) {
  const bool t = trans != CUBLAS_OP_N;
  if (n < 0 || k < 0 || lda < std::max(1, t ? k : n) || ldc < std::max(1, n)) return CUBLAS_STATUS_INVALID_VALUE;
  if (n == 0) return CUBLAS_STATUS_SUCCESS;
  const float al = *alpha, be = *beta;
  cuda_emu::enqueue(h->stream, "cublasSsyrk", [=] {
    if (be == 0.f)  // C is not read (it may hold NaN): its triangle is written, not scaled
      for (int j = 0; j < n; ++j)
        for (int i = uplo == CUBLAS_FILL_MODE_UPPER ? 0 : j; i <= (uplo == CUBLAS_FILL_MODE_UPPER ? j : n - 1); ++i)
          C[i + std::int64_t(j) * ldc] = 0.f;
    cblas_ssyrk(CblasColMajor, uplo == CUBLAS_FILL_MODE_UPPER ? CblasUpper : CblasLower, t ? CblasTrans : CblasNoTrans,
                n, k, al, A, lda, be, C, ldc);
  });
  return CUBLAS_STATUS_SUCCESS;
}

// ---------------- cuBLASLt ----------------

cublasStatus_t CUBLASWINAPI cublasLtCreate(cublasLtHandle_t* h) {
  *h = new cublasLtContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasLtDestroy(cublasLtHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t compute,
                                                     cudaDataType_t scale) {
  auto* o = new LtDesc;
  o->compute = compute;
  o->scale = scale;
  *d = reinterpret_cast<cublasLtMatmulDesc_t>(o);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
  delete reinterpret_cast<LtDesc*>(d);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                                           const void* buf, size_t size) {
  auto* o = reinterpret_cast<LtDesc*>(d);
  auto get = [&](auto& field) {
    if (!buf || size != sizeof field) return CUBLAS_STATUS_INVALID_VALUE;
    std::memcpy(&field, buf, size);
    return CUBLAS_STATUS_SUCCESS;
  };
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: return get(o->ta);
    case CUBLASLT_MATMUL_DESC_TRANSB: return get(o->tb);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return get(o->epilogue);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return get(o->bias);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: return get(o->aux);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: return get(o->aux_ld);
    default: unsupported("cuBLASLt matmul attribute", static_cast<int>(attr)); return CUBLAS_STATUS_NOT_SUPPORTED;
  }
}
cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType type, uint64_t rows,
                                                       uint64_t cols, int64_t ld) {
  *l = reinterpret_cast<cublasLtMatrixLayout_t>(new LtLayout{type, rows, cols, ld});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
  delete reinterpret_cast<LtLayout*>(l);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) {
  *p = reinterpret_cast<cublasLtMatmulPreference_t>(new LtPref);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
  delete reinterpret_cast<LtPref*>(p);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t,
                                                                 cublasLtMatmulPreferenceAttributes_t attr,
                                                                 const void* buf, size_t) {
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
    case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: return buf ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
    default: unsupported("cuBLASLt preference attribute", static_cast<int>(attr)); return CUBLAS_STATUS_NOT_SUPPORTED;
  }
}

namespace {
bool lt_epilogue_known(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_DEFAULT || e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_AUX ||
         e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || e == CUBLASLT_EPILOGUE_DGELU;
}
// What the emulation covers, and cuBLASLt's documented limits it keeps: one data type for A, B, C and D (as
// the project calls it), fp32 compute and scale, and a GELU aux leading dimension divisible by 8.
bool lt_supported(const LtDesc& o, const LtLayout& a, const LtLayout& b, const LtLayout& c, const LtLayout& d) {
  if (o.compute != CUBLAS_COMPUTE_32F || o.scale != CUDA_R_32F || !lt_epilogue_known(o.epilogue)) return false;
  if (!supported(d.type) || a.type != d.type || b.type != d.type || c.type != d.type) return false;
  const bool aux = o.epilogue == CUBLASLT_EPILOGUE_GELU_AUX || o.epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS ||
                   o.epilogue == CUBLASLT_EPILOGUE_DGELU;
  return !aux || o.aux_ld % 8 == 0;
}
}  // namespace

cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t d,
                                                           cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                                           cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dd,
                                                           cublasLtMatmulPreference_t, int requested,
                                                           cublasLtMatmulHeuristicResult_t results[], int* returned) {
  const auto* o = reinterpret_cast<const LtDesc*>(d);
  *returned = 0;
  if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
  if (!lt_supported(*o, *reinterpret_cast<const LtLayout*>(a), *reinterpret_cast<const LtLayout*>(b),
                    *reinterpret_cast<const LtLayout*>(c), *reinterpret_cast<const LtLayout*>(dd)))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  results[0] = cublasLtMatmulHeuristicResult_t{};
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.f;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t desc, const void* alpha,
                                           const void* A, cublasLtMatrixLayout_t Adesc, const void* B,
                                           cublasLtMatrixLayout_t Bdesc, const void* beta, const void* C,
                                           cublasLtMatrixLayout_t Cdesc, void* D, cublasLtMatrixLayout_t Ddesc,
                                           const cublasLtMatmulAlgo_t*, void*, size_t, cudaStream_t stream) {
  // Copies: the descriptors may be changed or destroyed once the call has returned.
  const LtDesc o = *reinterpret_cast<const LtDesc*>(desc);
  const LtLayout la = *reinterpret_cast<const LtLayout*>(Adesc);
  const LtLayout lb = *reinterpret_cast<const LtLayout*>(Bdesc);
  const LtLayout lc = *reinterpret_cast<const LtLayout*>(Cdesc);
  const LtLayout ld = *reinterpret_cast<const LtLayout*>(Ddesc);
  if (!lt_supported(o, la, lb, lc, ld)) return CUBLAS_STATUS_NOT_SUPPORTED;
  const bool ta = o.ta != CUBLAS_OP_N, tb = o.tb != CUBLAS_OP_N;
  const std::int64_t m = static_cast<std::int64_t>(ld.rows), n = static_cast<std::int64_t>(ld.cols);
  const std::int64_t k = static_cast<std::int64_t>(ta ? la.rows : la.cols);
  // The layouts must agree with each other, as cuBLASLt checks.
  if (static_cast<std::int64_t>(ta ? la.cols : la.rows) != m || static_cast<std::int64_t>(tb ? lb.cols : lb.rows) != k ||
      static_cast<std::int64_t>(tb ? lb.rows : lb.cols) != n || lc.rows != ld.rows || lc.cols != ld.cols ||
      la.ld < static_cast<std::int64_t>(la.rows) || lb.ld < static_cast<std::int64_t>(lb.rows) ||
      lc.ld < static_cast<std::int64_t>(lc.rows) || ld.ld < static_cast<std::int64_t>(ld.rows))
    return CUBLAS_STATUS_INVALID_VALUE;
  const bool has_bias = o.epilogue == CUBLASLT_EPILOGUE_BIAS || o.epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  const bool has_aux = o.epilogue == CUBLASLT_EPILOGUE_GELU_AUX || o.epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS ||
                       o.epilogue == CUBLASLT_EPILOGUE_DGELU;
  if ((has_bias && !o.bias) || (has_aux && (!o.aux || o.aux_ld < m))) return CUBLAS_STATUS_INVALID_VALUE;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  cuda_emu::enqueue(stream, "cublasLtMatmul", [=] {
    const std::vector<float> acc =
        product(ta, tb, m, n, k, al, A, la.type, la.ld, B, lb.type, lb.ld, be, C, lc.type, lc.ld);
    for (std::int64_t j = 0; j < n; ++j)
      for (std::int64_t i = 0; i < m; ++i) {
        float v = acc[static_cast<std::size_t>(i + j * m)];
        if (has_bias) v += load(o.bias, ld.type, i);  // bias in D's type, one value per row of D
        switch (o.epilogue) {
          case CUBLASLT_EPILOGUE_GELU_AUX:
          case CUBLASLT_EPILOGUE_GELU_AUX_BIAS:
            store(o.aux, ld.type, i + j * o.aux_ld, v);
            v = gelu_tanh(v);
            break;
          case CUBLASLT_EPILOGUE_DGELU: v *= gelu_tanh_grad(load(o.aux, ld.type, i + j * o.aux_ld)); break;
          default: break;
        }
        store(D, ld.type, i + j * ld.ld, v);
      }
  });
  return CUBLAS_STATUS_SUCCESS;
}

// ---------------- cuSOLVER ----------------
// gesvdj is a one-sided Jacobi method here too (in double): sweeps of plane rotations over column pairs until
// every pair is orthogonal to the tolerance or the sweep limit is reached, so the sweep count, the "did not
// converge" result (info = min(m,n) + 1) and the unconverged factors behave as the real routine's do (no
// residual: the project measures unconverged factors itself, see optim/orthogonalize/cuda/device_svd.hpp).

cusolverStatus_t CUSOLVERAPI cusolverDnCreate(cusolverDnHandle_t* h) {
  *h = new cusolverDnContext;
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t CUSOLVERAPI cusolverDnDestroy(cusolverDnHandle_t h) {
  delete h;
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t CUSOLVERAPI cusolverDnSetStream(cusolverDnHandle_t h, cudaStream_t s) {
  h->stream = s;
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t CUSOLVERAPI cusolverDnCreateGesvdjInfo(gesvdjInfo_t* info) {
  *info = new gesvdjInfo;
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t CUSOLVERAPI cusolverDnDestroyGesvdjInfo(gesvdjInfo_t info) {
  delete info;
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t CUSOLVERAPI cusolverDnXgesvdjSetTolerance(gesvdjInfo_t info, double tol) {
  info->tolerance = tol;
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t CUSOLVERAPI cusolverDnXgesvdjSetMaxSweeps(gesvdjInfo_t info, int sweeps) {
  if (sweeps < 0) return CUSOLVER_STATUS_INVALID_VALUE;
  info->max_sweeps = sweeps;
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t CUSOLVERAPI cusolverDnXgesvdjGetSweeps(cusolverDnHandle_t, gesvdjInfo_t info, int* sweeps) {
  *sweeps = info->sweeps;
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t CUSOLVERAPI cusolverDnSgesvdj_bufferSize(cusolverDnHandle_t, cusolverEigMode_t, int, int m, int n,
                                                          const float*, int, const float*, const float*, int,
                                                          const float*, int, int* lwork, gesvdjInfo_t) {
  *lwork = static_cast<int>(std::min<std::int64_t>(INT32_MAX, std::max<std::int64_t>(1, std::int64_t(m) * n)));
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t CUSOLVERAPI cusolverDnSgesvdj(cusolverDnHandle_t h, cusolverEigMode_t jobz, int econ, int m, int n,
                                               float* A, int lda, float* S, float* U, int ldu, float* V, int ldv,
                                               float* work, int lwork, int* info, gesvdjInfo_t params) {
  const int k = std::min(m, n);
  if (m < 0 || n < 0 || lda < std::max(1, m) || econ != 1 || jobz != CUSOLVER_EIG_MODE_VECTOR || ldu < std::max(1, m) ||
      ldv < std::max(1, n) || !work || lwork < std::min<std::int64_t>(INT32_MAX, std::max<std::int64_t>(1, std::int64_t(m) * n)))
    return CUSOLVER_STATUS_INVALID_VALUE;
  // The sweep count lands in `params` when the stream runs the call (read it after a sync).
  cuda_emu::enqueue(h->stream, "cusolverDnSgesvdj", [=] {
    params->sweeps = 0;
    *info = 0;
    if (k == 0) return;
    const bool tall = m >= n;
    const int rows = tall ? m : n;  // W = A (tall) or Aᵀ (wide): rows x k, columns rotated in place
    std::vector<double> a0(static_cast<std::size_t>(m) * n), w(static_cast<std::size_t>(rows) * k),
        q(static_cast<std::size_t>(k) * k, 0.0);
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) {
        const double v = A[i + std::int64_t(j) * lda];
        a0[static_cast<std::size_t>(i + j * m)] = v;
        w[tall ? static_cast<std::size_t>(i + j * rows) : static_cast<std::size_t>(j + i * rows)] = v;
        A[i + std::int64_t(j) * lda] = NAN;  // "on exit, the contents of A are destroyed"
      }
    for (int j = 0; j < k; ++j) q[static_cast<std::size_t>(j + j * k)] = 1.0;
    for (double v : a0)
      if (!std::isfinite(v)) {  // the sweeps cannot converge: every sweep, then "not converged", NaN factors
        params->sweeps = params->max_sweeps;
        for (int i = 0; i < k; ++i) S[i] = NAN;
        for (int j = 0; j < k; ++j) {
          for (int i = 0; i < m; ++i) U[i + std::int64_t(j) * ldu] = NAN;
          for (int i = 0; i < n; ++i) V[i + std::int64_t(j) * ldv] = NAN;
        }
        *info = k + 1;
        return;
      }
    const double tol = params->tolerance > 0 ? params->tolerance : 1.1920929e-07;  // default: float's epsilon
    auto col = [&](std::vector<double>& x, int ld, int j) { return x.data() + static_cast<std::size_t>(j) * ld; };
    bool converged = false;
    while (!converged && params->sweeps < params->max_sweeps) {
      converged = true;
      for (int p = 0; p < k - 1; ++p)
        for (int r = p + 1; r < k; ++r) {
          double* wp = col(w, rows, p);
          double* wr = col(w, rows, r);
          double alpha = 0, beta = 0, gamma = 0;
          for (int i = 0; i < rows; ++i) {
            alpha += wp[i] * wp[i];
            beta += wr[i] * wr[i];
            gamma += wp[i] * wr[i];
          }
          if (!(std::abs(gamma) > tol * std::sqrt(alpha * beta))) continue;
          converged = false;
          const double zeta = (beta - alpha) / (2 * gamma);
          const double t = (zeta >= 0 ? 1.0 : -1.0) / (std::abs(zeta) + std::sqrt(1 + zeta * zeta));
          const double c = 1 / std::sqrt(1 + t * t), sn = c * t;
          for (int i = 0; i < rows; ++i) {
            const double x = wp[i], y = wr[i];
            wp[i] = c * x - sn * y;
            wr[i] = sn * x + c * y;
          }
          double* qp = col(q, k, p);
          double* qr = col(q, k, r);
          for (int i = 0; i < k; ++i) {
            const double x = qp[i], y = qr[i];
            qp[i] = c * x - sn * y;
            qr[i] = sn * x + c * y;
          }
        }
      ++params->sweeps;
    }
    // Singular values are the column norms, sorted descending; left vectors the normalized columns.
    std::vector<double> sv(static_cast<std::size_t>(k));
    std::vector<int> order(static_cast<std::size_t>(k));
    for (int j = 0; j < k; ++j) {
      double s2 = 0;
      for (int i = 0; i < rows; ++i) s2 += col(w, rows, j)[i] * col(w, rows, j)[i];
      sv[static_cast<std::size_t>(j)] = std::sqrt(s2);
      order[static_cast<std::size_t>(j)] = j;
    }
    std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return sv[static_cast<std::size_t>(x)] > sv[static_cast<std::size_t>(y)]; });
    // tall: U = W/σ (m x k), V = Q (n x k); wide: Aᵀ = W Qᵀ, so U = Q (m x k), V = W/σ (n x k).
    std::vector<double> uu(static_cast<std::size_t>(m) * k), vv(static_cast<std::size_t>(n) * k);
    for (int jj = 0; jj < k; ++jj) {
      const int j = order[static_cast<std::size_t>(jj)];
      const double sj = sv[static_cast<std::size_t>(j)];
      S[jj] = static_cast<float>(sj);
      for (int i = 0; i < rows; ++i) {
        const double left = sj > 0 ? col(w, rows, j)[i] / sj : 0.0;
        (tall ? uu : vv)[static_cast<std::size_t>(i + jj * rows)] = left;
      }
      for (int i = 0; i < k; ++i) (tall ? vv : uu)[static_cast<std::size_t>(i + jj * k)] = col(q, k, j)[i];
    }
    for (int j = 0; j < k; ++j) {
      for (int i = 0; i < m; ++i) U[i + std::int64_t(j) * ldu] = static_cast<float>(uu[static_cast<std::size_t>(i + j * m)]);
      for (int i = 0; i < n; ++i) V[i + std::int64_t(j) * ldv] = static_cast<float>(vv[static_cast<std::size_t>(i + j * n)]);
    }
    if (!converged) *info = k + 1;
  });
  return CUSOLVER_STATUS_SUCCESS;
}

}  // extern "C"
