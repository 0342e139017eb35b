// Reductions and scaling over device vectors (see vector_kernels.hpp). Fixed launch shapes and double
// accumulators, so sums are bitwise reproducible.
#include "runtime/cuda/vector_kernels.hpp"

#include "runtime/cuda/device_math.cuh"

namespace orthoshard::cuda {

namespace {

constexpr int kReduceThreads = 256;

// Pass 1: gridDim.x (fixed by n) partial sums of squares in double.
template <typename T>
__global__ void sum_squares_partial_kernel(double* partial, const T* x, std::int64_t n) {
  __shared__ double sh[32];
  double s = 0;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x) {
    const double v = static_cast<double>(to_f(x[i]));
    s += v * v;
  }
  s = detail::block_sum(s, sh);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Pass 2: one block adds the partials.
__global__ void sum_partials_kernel(double* out, const double* partial, int count, bool accumulate) {
  __shared__ double sh[32];
  double s = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  s = detail::block_sum(s, sh);
  if (threadIdx.x == 0) out[0] = (accumulate ? out[0] : 0.0) + s;
}

template <typename T>
__global__ void scale_kernel(T* x, std::int64_t n, float f) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x)
    x[i] = from_f<T>(to_f(x[i]) * f);
}

template <typename S>
__global__ void add_kernel(float* acc, const S* src, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x)
    acc[i] += to_f(src[i]);
}

}  // namespace

template <typename S> void add_inplace(float* acc, const S* src, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  add_kernel<<<blocks_for(n), kThreads, 0, stream>>>(acc, src, n);
  OS_CUDA_CHECK_LAUNCH();
}

template <typename T>
void sum_squares(double* out, const T* x, std::int64_t n, double* scratch, bool accumulate, cudaStream_t stream) {
  OS_CUDA_REQUIRE(n >= 0, "sum_squares: negative size");
  // The grid depends only on n (never on the device), so the summation order is fixed.
  const unsigned blocks = blocks_for(n, kReduceThreads * 4, static_cast<std::int64_t>(kSumSquaresScratch));
  sum_squares_partial_kernel<<<blocks, kReduceThreads, 0, stream>>>(scratch, x, n);
  OS_CUDA_CHECK_LAUNCH();
  sum_partials_kernel<<<1, 1024, 0, stream>>>(out, scratch, static_cast<int>(blocks), accumulate);
  OS_CUDA_CHECK_LAUNCH();
}

template <typename T> void scale_inplace(T* x, std::int64_t n, double f, cudaStream_t stream) {
  if (n <= 0) return;
  scale_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, n, static_cast<float>(f));
  OS_CUDA_CHECK_LAUNCH();
}

template void sum_squares<float>(double*, const float*, std::int64_t, double*, bool, cudaStream_t);
template void sum_squares<__nv_bfloat16>(double*, const __nv_bfloat16*, std::int64_t, double*, bool, cudaStream_t);
template void add_inplace<float>(float*, const float*, std::int64_t, cudaStream_t);
template void add_inplace<__nv_bfloat16>(float*, const __nv_bfloat16*, std::int64_t, cudaStream_t);
template void scale_inplace<float>(float*, std::int64_t, double, cudaStream_t);
template void scale_inplace<__nv_bfloat16>(__nv_bfloat16*, std::int64_t, double, cudaStream_t);

}  // namespace orthoshard::cuda
