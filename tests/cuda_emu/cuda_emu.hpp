// CUDA kernel emulation on the CPU: force-included (-include) into the project's .cu files when they are
// compiled as C++ for the emulated build (ORTHOSHARD_CUDA=EMULATE; see tests/cuda_emu/CMakeLists.txt). The
// launches `k<<<grid, block, smem, stream>>>(args)` are first rewritten (rewrite_launches.cmake) to
// `::cuda_emu::Launch(grid, block, smem, stream)([](auto... a) { k(a...); }, args)`. Each CUDA thread of a
// block runs as a fiber; blocks run one after another on the calling thread, so a launch has finished when it
// returns. __syncthreads and warp shuffles are barriers between the fibers; a barrier that can never complete
// (divergent __syncthreads, a shuffle across an exited or missing lane) stops the process with a message
// instead of hanging.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace cuda_emu {

struct ThreadCoords {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};

// The coordinates of the CUDA thread running now (valid inside a kernel only).
const ThreadCoords& coords();

void syncthreads();
// Publishes `bytes` bytes of this lane's value and returns a pointer to lane `src_lane`'s value, after every
// lane named in `mask` has published (the value stays valid until this lane's next shuffle).
const void* warp_exchange(unsigned mask, const void* value, std::size_t bytes, int src_lane);

// Runs `body` once per thread of the grid; returns the launch's error (invalid configuration) or cudaSuccess.
cudaError_t run_grid(dim3 grid, dim3 block, std::size_t dynamic_smem, cudaStream_t stream,
                     const std::function<void()>& body);

struct Launch {
  dim3 grid, block;
  std::size_t smem;
  cudaStream_t stream;
  Launch(dim3 g, dim3 b, std::size_t s = 0, cudaStream_t st = nullptr) : grid(g), block(b), smem(s), stream(st) {}
  // `call` forwards by-value copies of the arguments to the kernel (a generic lambda written by the rewrite, so
  // the kernel's template arguments are deduced as nvcc deduces them); every thread gets its own copies.
  template <typename F, typename... A>
  void operator()(F call, A&&... args) const {
    const std::tuple<std::decay_t<A>...> params(std::forward<A>(args)...);
    run_grid(grid, block, smem, stream, [&] { std::apply(call, params); });
  }
};

}  // namespace cuda_emu

#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __host__
#define __host__
#undef __forceinline__
#define __forceinline__ inline
#undef __noinline__
#define __noinline__
// Shared memory: statics in one linker section, which the emulator fills with 0xff (NaN for floats) before every
// block, so a read before any write sees garbage as on a GPU instead of the previous block's values.
#undef __shared__
#define __shared__ static __attribute__((section("cuda_emu_shared"), aligned(16)))
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __restrict__
#define __restrict__

#undef threadIdx
#undef blockIdx
#undef blockDim
#undef gridDim
#undef warpSize
#define threadIdx (::cuda_emu::coords().thread_idx)
#define blockIdx (::cuda_emu::coords().block_idx)
#define blockDim (::cuda_emu::coords().block_dim)
#define gridDim (::cuda_emu::coords().grid_dim)
constexpr int warpSize = 32;

inline void __syncthreads() { ::cuda_emu::syncthreads(); }

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffled values are at most 8 bytes");
  const int lane = static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) & 31;
  int src = lane ^ lane_mask;
  if (src / width != lane / width) src = lane;  // outside the lane's segment: the lane keeps its own value
  T out;
  std::memcpy(&out, ::cuda_emu::warp_exchange(mask, &value, sizeof(T), src), sizeof(T));
  return out;
}

inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
template <typename T> inline T __ldg(const T* p) { return *p; }
