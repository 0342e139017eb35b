// Batched span copies (see copy_kernels.hpp): blockIdx.y picks the span, the x blocks stride over it.
#include "runtime/cuda/copy_kernels.hpp"

#include "runtime/cuda/device_math.cuh"

namespace orthoshard::cuda {

namespace {

template <typename S, typename D> __device__ __forceinline__ D cast(S x) { return from_f<D>(to_f(x)); }
template <> __device__ __forceinline__ __nv_bfloat16 cast<__nv_bfloat16, __nv_bfloat16>(__nv_bfloat16 x) { return x; }

template <typename S, typename D>
__global__ void copy_spans_kernel(const CopySpan* spans, const S* src, D* dst) {
  const CopySpan sp = spans[blockIdx.y];
  const S* s = src + sp.src;
  D* d = dst + sp.dst;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < sp.count;
       i += std::int64_t(gridDim.x) * blockDim.x)
    d[i] = cast<S, D>(s[i]);
}

template <typename S, typename D> __global__ void convert_kernel(const S* src, D* dst, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x)
    dst[i] = cast<S, D>(src[i]);
}

__global__ void accumulate_and_zero_kernel(float* acc, __nv_bfloat16* src, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x) {
    acc[i] += to_f(src[i]);
    src[i] = from_f<__nv_bfloat16>(0.f);
  }
}

}  // namespace

void accumulate_and_zero(float* acc, __nv_bfloat16* src, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  accumulate_and_zero_kernel<<<blocks_for(n), kThreads, 0, stream>>>(acc, src, n);
  OS_CUDA_CHECK_LAUNCH();
}

template <typename S, typename D>
void copy_spans(const CopySpan* spans, int n, std::int64_t max_count, const S* src, D* dst, cudaStream_t stream) {
  if (n <= 0 || max_count <= 0) return;
  OS_CUDA_REQUIRE(n <= 65535, "copy_spans: more than 65535 spans");
  const dim3 grid(blocks_for(max_count, kThreads, 4096), static_cast<unsigned>(n));
  copy_spans_kernel<S, D><<<grid, kThreads, 0, stream>>>(spans, src, dst);
  OS_CUDA_CHECK_LAUNCH();
}

template <typename S, typename D> void convert(const S* src, D* dst, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  convert_kernel<S, D><<<blocks_for(n), kThreads, 0, stream>>>(src, dst, n);
  OS_CUDA_CHECK_LAUNCH();
}

#define ORTHOSHARD_COPY(S, D)                                                                                  \
  template void copy_spans<S, D>(const CopySpan*, int, std::int64_t, const S*, D*, cudaStream_t);             \
  template void convert<S, D>(const S*, D*, std::int64_t, cudaStream_t);
ORTHOSHARD_COPY(float, float)
ORTHOSHARD_COPY(float, __nv_bfloat16)
ORTHOSHARD_COPY(__nv_bfloat16, float)
ORTHOSHARD_COPY(__nv_bfloat16, __nv_bfloat16)

}  // namespace orthoshard::cuda
