// The emulator itself (built only with ORTHOSHARD_CUDA=EMULATE): coordinates, barriers and shuffles give what
// a GPU gives; launch errors are reported; a deadlocking barrier or an unsupported shuffle stops the process with
// a message; shared memory starts as garbage in every block; CUDA_EMU_ORDER=reverse exposes a missing
// __syncthreads that the default order hides.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <vector>

namespace {

template <typename T>
__device__ T warp_total(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// out[block] = sum over the block's threads of (linear thread id + 1); seen[global id] counts visits.
__global__ void block_sums(std::int64_t* out, int* seen) {
  __shared__ std::int64_t partial[32];
  const int tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int threads = blockDim.x * blockDim.y * blockDim.z;
  const int block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  seen[block * threads + tid] += 1;
  const std::int64_t w = warp_total<std::int64_t>(tid + 1);
  if ((tid & 31) == 0) partial[tid >> 5] = w;
  __syncthreads();
  if (tid == 0) {
    std::int64_t s = 0;
    for (int i = 0; i < threads / 32; ++i) s += partial[i];
    out[block] = s;
  }
}

template <typename T> __global__ void fill(T* x, T value, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x[i] = value;
}

__global__ void no_arguments() {}

__global__ void divergent_barrier(int* x) {
  if (threadIdx.x < 16) __syncthreads();
  else x[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);
}

__global__ void shuffle_in_partial_warp(int* x) { x[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1); }

// Thread 0 publishes a value that the others read without a barrier between (a bug).
__global__ void missing_barrier(int* out, int v) {
  __shared__ int value;
  if (threadIdx.x == 0) value = v;
  if (threadIdx.x == 0) __syncthreads();  // deliberately only some threads: exited ones count as arrived
  else out[threadIdx.x] = value;
}

// Reads shared memory that no thread of the block wrote (a bug): each block first writes, the next only reads.
__global__ void stale_shared(unsigned* out) {
  __shared__ unsigned cell;
  if (blockIdx.x == 0) cell = 7u;
  else out[0] = cell;
}

std::vector<int> run_missing_barrier(int v) {
  int* d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, 64 * sizeof(int)), cudaSuccess);
  missing_barrier<<<1, 64>>>(d, v);
  std::vector<int> h(64);
  EXPECT_EQ(cudaMemcpy(h.data(), d, h.size() * sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(d);
  return h;
}

TEST(CudaEmu, CoordinatesShufflesAndBarriersGiveBlockSums) {
  const dim3 grid(3, 2, 2), block(32, 4, 2);  // 12 blocks of 256 threads
  const int blocks = 12, threads = 256;
  std::int64_t* sums = nullptr;
  int* seen = nullptr;
  ASSERT_EQ(cudaMalloc(&sums, blocks * sizeof(std::int64_t)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&seen, blocks * threads * sizeof(int)), cudaSuccess);
  ASSERT_EQ(cudaMemset(seen, 0, blocks * threads * sizeof(int)), cudaSuccess);
  block_sums<<<grid, block>>>(sums, seen);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<std::int64_t> h(blocks);
  std::vector<int> hs(blocks * threads);
  ASSERT_EQ(cudaMemcpy(h.data(), sums, h.size() * sizeof(std::int64_t), cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(hs.data(), seen, hs.size() * sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
  for (std::int64_t s : h) EXPECT_EQ(s, std::int64_t(threads) * (threads + 1) / 2);
  for (int v : hs) EXPECT_EQ(v, 1);
  cudaFree(sums);
  cudaFree(seen);
}

TEST(CudaEmu, TemplateArgumentsAreDeducedAndEmptyLaunchesWork) {
  float* x = nullptr;
  ASSERT_EQ(cudaMalloc(&x, 1000 * sizeof(float)), cudaSuccess);
  fill<<<3, 128>>>(x, 2.5f, 1000);  // T deduced as float; 3 x 128 threads stride over 1000
  no_arguments<<<1, 1>>>();
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<float> h(1000);
  ASSERT_EQ(cudaMemcpy(h.data(), x, h.size() * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  for (float v : h) EXPECT_EQ(v, 2.5f);
  cudaFree(x);
}

TEST(CudaEmu, InvalidLaunchConfigurationIsTheLastError) {
  no_arguments<<<1, 2048>>>();
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  no_arguments<<<dim3(1, 70000), 32>>>();
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
}

TEST(CudaEmuDeathTest, DeadlockedBarrierStopsWithAMessage) {
  int* x = nullptr;
  ASSERT_EQ(cudaMalloc(&x, 32 * sizeof(int)), cudaSuccess);
  EXPECT_DEATH(divergent_barrier<<<1, 32>>>(x), "deadlock in block \\(0,0,0\\).*16 threads wait at __syncthreads and 16 at a warp shuffle");
  cudaFree(x);
}

TEST(CudaEmuDeathTest, ShuffleInAPartialWarpStops) {
  int* x = nullptr;
  ASSERT_EQ(cudaMalloc(&x, 48 * sizeof(int)), cudaSuccess);
  EXPECT_DEATH(shuffle_in_partial_warp<<<1, 48>>>(x), "warp of 16 threads");
  cudaFree(x);
}

TEST(CudaEmu, SharedMemoryStartsAsGarbageInEveryBlock) {
  unsigned* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, sizeof(unsigned)), cudaSuccess);
  stale_shared<<<2, 1>>>(d);
  unsigned h = 0;
  ASSERT_EQ(cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(h, 0xffffffffu) << "block 1 must not see block 0's value";
  cudaFree(d);
}

TEST(CudaEmu, ReverseOrderExposesAMissingBarrier) {
  unsetenv("CUDA_EMU_ORDER");
  const std::vector<int> forward = run_missing_barrier(42);
  setenv("CUDA_EMU_ORDER", "reverse", 1);
  const std::vector<int> reverse = run_missing_barrier(7);  // a new value: the readers see the old one
  unsetenv("CUDA_EMU_ORDER");
  for (int i = 1; i < 64; ++i) EXPECT_EQ(forward[i], 42) << "thread " << i;  // thread 0 happened to run first
  int stale = 0;
  for (int i = 1; i < 64; ++i) stale += reverse[i] != 7;
  EXPECT_EQ(stale, 63) << "every reader ran before the writer";
}

}  // namespace
