// The emulator itself (built only with ORTHOSHARD_CUDA=EMULATE): coordinates, barriers and shuffles give what
// a GPU gives; launch errors are reported; a deadlocking barrier or an unsupported shuffle stops the process with
// a message; shared memory starts as garbage in every block; CUDA_EMU_ORDER=reverse exposes a missing
// __syncthreads that the default order hides; work on streams runs only when needed, in the orders
// CUDA_EMU_STREAMS names, so a missing event wait shows as stale data.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <mma.h>

#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <string>
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

// d (16x16, row-major) = a (row-major) · b + c (row-major), b stored column-major when b_col; one warp.
__global__ void wmma_product(float* d, const __nv_bfloat16* a, const __nv_bfloat16* b, const float* c, bool b_col) {
  namespace wmma = nvcuda::wmma;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::load_matrix_sync(fa, a, 16);
  wmma::load_matrix_sync(acc, c, 16, wmma::mem_row_major);
  if (b_col) {
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
    wmma::load_matrix_sync(fb, b, 16);
    wmma::mma_sync(acc, fa, fb, acc);
  } else {
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
    wmma::load_matrix_sync(fb, b, 16);
    wmma::mma_sync(acc, fa, fb, acc);
  }
  wmma::store_matrix_sync(d, acc, 16, wmma::mem_row_major);
}

// Lanes write a 16x16 shared tile (8 consecutive elements each), then load it as a fragment, with or without a
// __syncwarp between, and store it to out.
__global__ void wmma_after_lane_writes(float* out, bool sync) {
  namespace wmma = nvcuda::wmma;
  __shared__ __align__(32) float tile[256];
  for (int i = 0; i < 8; ++i) tile[threadIdx.x * 8 + i] = static_cast<float>(threadIdx.x * 8 + i);
  if (sync) __syncwarp();
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> f;
  wmma::load_matrix_sync(f, tile, 16, wmma::mem_row_major);
  wmma::store_matrix_sync(out, f, 16, wmma::mem_row_major);
}

__global__ void wmma_misaligned(float* out) {
  namespace wmma = nvcuda::wmma;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> f;
  wmma::fill_fragment(f, 1.f);
  wmma::store_matrix_sync(out + 4, f, 16, wmma::mem_row_major);
}

__global__ void copy_ints(int* dst, const int* src, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) dst[i] = src[i];
}

int read_int(const int* d) {
  int h = -1;
  EXPECT_EQ(cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

// Sets CUDA_EMU_STREAMS for one scope (the emulator reads it at every use).
struct StreamOrder {
  std::string before;
  bool had = false;
  explicit StreamOrder(const char* order) {
    if (const char* v = std::getenv("CUDA_EMU_STREAMS")) had = true, before = v;
    setenv("CUDA_EMU_STREAMS", order, 1);
  }
  ~StreamOrder() {
    if (had) setenv("CUDA_EMU_STREAMS", before.c_str(), 1);
    else unsetenv("CUDA_EMU_STREAMS");
  }
};

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

TEST(CudaEmu, WmmaProductsMatchAHostProduct) {
  // Small integers: every product and sum is exact in bf16 and fp32.
  std::vector<__nv_bfloat16> a(256), b(256);
  std::vector<float> c(256), want_row(256), want_col(256);
  for (int i = 0; i < 256; ++i) {
    a[i] = __float2bfloat16(static_cast<float>(i % 7 - 3));
    b[i] = __float2bfloat16(static_cast<float>(i % 5 - 2));
    c[i] = static_cast<float>(i % 3);
  }
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      float r = c[m * 16 + n], q = c[m * 16 + n];
      for (int k = 0; k < 16; ++k) {
        r += __bfloat162float(a[m * 16 + k]) * __bfloat162float(b[k * 16 + n]);  // b row-major: (k, n) at k·16 + n
        q += __bfloat162float(a[m * 16 + k]) * __bfloat162float(b[n * 16 + k]);  // column-major: at n·16 + k
      }
      want_row[m * 16 + n] = r;
      want_col[m * 16 + n] = q;
    }
  __nv_bfloat16 *da = nullptr, *db = nullptr;
  float *dc = nullptr, *dd = nullptr;
  ASSERT_EQ(cudaMalloc(&da, 512), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&db, 512), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dc, 1024), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dd, 1024), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(da, a.data(), 512, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(db, b.data(), 512, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dc, c.data(), 1024, cudaMemcpyHostToDevice), cudaSuccess);
  for (const bool col : {false, true}) {
    wmma_product<<<1, 32>>>(dd, da, db, dc, col);
    std::vector<float> got(256);
    ASSERT_EQ(cudaMemcpy(got.data(), dd, 1024, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(got, col ? want_col : want_row) << (col ? "b column-major" : "b row-major");
  }
  cudaFree(da);
  cudaFree(db);
  cudaFree(dc);
  cudaFree(dd);
}

TEST(CudaEmu, WmmaLoadWithoutSyncwarpSeesOtherLanesStale) {
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 1024), cudaSuccess);
  for (const bool sync : {true, false}) {
    wmma_after_lane_writes<<<1, 32>>>(d, sync);
    std::vector<float> got(256);
    ASSERT_EQ(cudaMemcpy(got.data(), d, 1024, cudaMemcpyDeviceToHost), cudaSuccess);
    int right = 0;
    for (int i = 0; i < 256; ++i) right += got[i] == static_cast<float>(i);
    if (sync) EXPECT_EQ(right, 256);
    else EXPECT_LT(right, 256) << "without __syncwarp a load must not see every lane's writes";
  }
  cudaFree(d);
}

TEST(CudaEmuDeathTest, WmmaOnAMisalignedPointerStops) {
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 2048), cudaSuccess);
  EXPECT_DEATH(wmma_misaligned<<<1, 32>>>(d), "wmma::store_matrix_sync: the pointer is not 256-bit aligned");
  cudaFree(d);
}

}  // namespace

TEST(CudaEmu, StreamWorkRunsOnlyWhenSomethingNeedsIt) {
  int* x = nullptr;
  cudaStream_t a = nullptr;
  cudaEvent_t done = nullptr;
  ASSERT_EQ(cudaMalloc(&x, sizeof(int)), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), cudaSuccess);
  fill<int><<<1, 32, 0, a>>>(x, 5, 1);
  ASSERT_EQ(cudaEventRecord(done, a), cudaSuccess);
  EXPECT_EQ(cudaEventQuery(done), cudaErrorNotReady);
  EXPECT_EQ(cudaStreamQuery(a), cudaErrorNotReady);
  EXPECT_EQ(read_int(x), -1) << "a blocking copy does not wait for a non-blocking stream (NaN pattern expected)";
  ASSERT_EQ(cudaEventSynchronize(done), cudaSuccess);
  EXPECT_EQ(cudaEventQuery(done), cudaSuccess);
  EXPECT_EQ(cudaStreamQuery(a), cudaSuccess);
  EXPECT_EQ(read_int(x), 5);
  cudaEventDestroy(done);
  cudaStreamDestroy(a);
  cudaFree(x);
}

// x = 0; stream `w` writes x = 1; stream `r` copies x to y, after `w`'s write only if `wait`; issued writer first
// or reader first. Returns y after synchronizing `r` (and then everything).
int race(const char* order, bool writer_first, bool wait) {
  StreamOrder scope(order);
  int *x = nullptr, *y = nullptr;
  cudaStream_t w = nullptr, r = nullptr;
  cudaEvent_t written = nullptr;
  EXPECT_EQ(cudaMalloc(&x, sizeof(int)), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&y, sizeof(int)), cudaSuccess);
  EXPECT_EQ(cudaMemset(x, 0, sizeof(int)), cudaSuccess);
  EXPECT_EQ(cudaStreamCreate(&w), cudaSuccess);
  EXPECT_EQ(cudaStreamCreate(&r), cudaSuccess);
  EXPECT_EQ(cudaEventCreate(&written), cudaSuccess);
  auto write = [&] {
    fill<int><<<1, 32, 0, w>>>(x, 1, 1);
    EXPECT_EQ(cudaEventRecord(written, w), cudaSuccess);
  };
  if (writer_first) write();
  if (wait) {
    EXPECT_EQ(cudaStreamWaitEvent(r, written, 0), cudaSuccess);
  }
  copy_ints<<<1, 32, 0, r>>>(y, x, 1);
  if (!writer_first) write();
  EXPECT_EQ(cudaStreamSynchronize(r), cudaSuccess);
  const int got = read_int(y);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaEventDestroy(written);
  cudaStreamDestroy(w);
  cudaStreamDestroy(r);
  cudaFree(x);
  cudaFree(y);
  return got;
}

TEST(CudaEmu, LazyStreamsShowAReaderThatDoesNotWaitForItsWriter) {
  EXPECT_EQ(race("lazy", true, true), 1);
  EXPECT_EQ(race("lazy", true, false), 0) << "the reader ran before the writer it did not wait for";
  EXPECT_EQ(race("immediate", true, false), 1) << "issue order hides the missing wait";
}

TEST(CudaEmu, OthersFirstShowsAWriterThatDoesNotWaitForAReader) {
  EXPECT_EQ(race("lazy", false, false), 0);
  EXPECT_EQ(race("others-first", false, false), 1) << "the later writer ran before the reader on another stream";
}

TEST(CudaEmu, AsyncCopiesReadPageableMemoryAtTheCallAndPinnedMemoryWhenTheyRun) {
  int* d = nullptr;
  void* host = nullptr;
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 2 * sizeof(int)), cudaSuccess);
  ASSERT_EQ(cudaMallocHost(&host, sizeof(int)), cudaSuccess);
  int* pinned = static_cast<int*>(host);
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  std::vector<int> pageable{1};
  *pinned = 1;
  ASSERT_EQ(cudaMemcpyAsync(d, pageable.data(), sizeof(int), cudaMemcpyHostToDevice, s), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(d + 1, pinned, sizeof(int), cudaMemcpyHostToDevice, s), cudaSuccess);
  pageable[0] = 2;  // allowed: CUDA staged the pageable source during the call
  *pinned = 2;      // a race on a GPU: the DMA has not necessarily read it yet
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(read_int(d), 1);
  EXPECT_EQ(read_int(d + 1), 2);
  // Into pageable memory the copy is complete on return; into pinned memory only after a synchronization.
  int back = 0;
  *pinned = 0;
  fill<int><<<1, 32, 0, s>>>(d, 7, 2);
  ASSERT_EQ(cudaMemcpyAsync(&back, d, sizeof(int), cudaMemcpyDeviceToHost, s), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(pinned, d + 1, sizeof(int), cudaMemcpyDeviceToHost, s), cudaSuccess);
  EXPECT_EQ(back, 7);
  EXPECT_EQ(*pinned, 0);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(*pinned, 7);
  cudaStreamDestroy(s);
  cudaFreeHost(pinned);
  cudaFree(d);
}
