// The linear layer on the GPU (see linear.hpp): fused cuBLASLt epilogues, with a GEMM + kernels fallback.
#include "models/layers/cuda/linear.hpp"

#include "models/layers/cuda/layer_kernels.hpp"

namespace orthoshard::cuda {

template <typename T>
void linear_forward(Blas& blas, T* out, T* pre_gelu, const T* inp, const T* w, const T* bias, std::int64_t N,
                    std::int64_t IC, std::int64_t OC, cudaStream_t stream) {
  if (N == 0 || OC == 0) return;
  // Column-major D (OC x N) = Wᵀ-view: A = w stored (IC x OC) transposed, B = inp stored (IC x N); bias along OC.
  // cuBLASLt wants the GELU aux leading dimension divisible by 8.
  if (lt_eligible<T>(blas, {out, pre_gelu, inp, w, bias}, {IC, OC}) && IC > 0 && (!pre_gelu || OC % 8 == 0)) {
    LtEpilogue ep;
    ep.bias = bias;
    if (pre_gelu) {
      ep.kind = bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
      ep.aux = pre_gelu;
      ep.aux_ld = OC;
    } else {
      ep.kind = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    }
    if (lt_matmul<T>(blas, true, false, OC, N, IC, 1.f, w, IC, inp, IC, 0.f, out, OC, ep, stream)) return;
  }
  // Fallback: GEMM (into pre_gelu when GELU follows), bias kernel, GELU kernel. IC = 0 lands here: the k = 0
  // GEMM zeroes y (no cuBLAS call with empty operands), then the bias and GELU apply as usual.
  T* y = pre_gelu ? pre_gelu : out;
  gemm<T>(blas, false, true, N, OC, IC, 1.f, inp, IC, w, IC, 0.f, y, OC, stream);
  if (bias) bias_add<T>(y, bias, N, OC, stream);
  if (pre_gelu) gelu_forward<T>(out, pre_gelu, N * OC, stream);
}

std::size_t linear_backward_scratch_floats(std::int64_t N, std::int64_t OC) {
  return column_sums_scratch_floats(N, OC, 1);
}

template <typename T>
void linear_backward(Blas& blas, T* dinp, T* dw, T* dbias, float* scratch, const T* dout, const T* inp, const T* w,
                     const T* gelu_pre, std::int64_t N, std::int64_t IC, std::int64_t OC, cudaStream_t stream) {
  if (N == 0) return;
  if (dinp) {
    bool done = false;
    if (gelu_pre && lt_eligible<T>(blas, {dinp, gelu_pre, dout, w}, {IC, OC}) && OC > 0 && IC % 8 == 0) {
      // Column-major dinpᵀ (IC x N) = w stored (IC x OC) · dout stored (OC x N), times gelu'(aux).
      LtEpilogue ep;
      ep.kind = CUBLASLT_EPILOGUE_DGELU;
      ep.aux = const_cast<T*>(gelu_pre);  // read-only for DGELU
      ep.aux_ld = IC;
      done = lt_matmul<T>(blas, false, false, IC, N, OC, 1.f, w, IC, dout, OC, 0.f, dinp, IC, ep, stream);
    }
    if (!done) {
      gemm<T>(blas, false, false, N, IC, OC, 1.f, dout, OC, w, IC, 0.f, dinp, IC, stream);
      if (gelu_pre) gelu_backward<T>(dinp, gelu_pre, dinp, N * IC, stream);
    }
  }
  if (dw) gemm<T>(blas, true, false, OC, IC, N, 1.f, dout, OC, inp, IC, 1.f, dw, IC, stream);
  if (dbias) bias_backward<T>(dbias, scratch, dout, N, OC, stream);
}

#define ORTHOSHARD_LINEAR(T)                                                                                       \
  template void linear_forward<T>(Blas&, T*, T*, const T*, const T*, const T*, std::int64_t, std::int64_t,         \
                                  std::int64_t, cudaStream_t);                                                     \
  template void linear_backward<T>(Blas&, T*, T*, T*, float*, const T*, const T*, const T*, const T*, std::int64_t, \
                                   std::int64_t, std::int64_t, cudaStream_t);
ORTHOSHARD_LINEAR(float)
ORTHOSHARD_LINEAR(__nv_bfloat16)

}  // namespace orthoshard::cuda
