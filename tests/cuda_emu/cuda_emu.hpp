// CUDA kernel emulation on the CPU: force-included (-include) into the project's .cu files when they are
// compiled as C++ for the emulated build (ORTHOSHARD_CUDA=EMULATE; see tests/cuda_emu/CMakeLists.txt). The
// launches `k<<<grid, block, smem, stream>>>(args)` are first rewritten (rewrite_launches.cmake) to
// `::cuda_emu::Launch(grid, block, smem, stream)([](auto... a) { k(a...); }, args)`. A launch is queued on its
// stream (emu_streams.hpp); when it runs, each CUDA thread of a block runs as a fiber, blocks one after another
// on the thread that needs the result. __syncthreads and warp shuffles are barriers between the fibers; a
// barrier that can never complete (divergent __syncthreads, a shuffle across an exited or missing lane) stops
// the process with a message instead of hanging.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
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
// The bytes a lane may publish in one warp exchange.
constexpr std::size_t kWarpSlotBytes = 64;
// A warp-wide barrier that also gathers: publishes `bytes` (<= kWarpSlotBytes) of this lane's value, waits for
// all 32 lanes of its warp, and returns the slots: lane i's value at the result + i * kWarpSlotBytes (valid
// until this lane's next exchange). `what` names the operation in messages.
const unsigned char* warp_gather(const void* value, std::size_t bytes, const char* what);
// Stops the process with `what` and the block and thread running now.
[[noreturn]] void kernel_error(const std::string& what);

// Queues the grid on `stream` (emu_streams.hpp): when it runs, `body` runs once per thread of the grid. Returns
// the launch's error (invalid configuration) or cudaSuccess.
cudaError_t run_grid(dim3 grid, dim3 block, std::size_t dynamic_smem, cudaStream_t stream, std::function<void()> body);

struct Launch {
  dim3 grid, block;
  std::size_t smem;
  cudaStream_t stream;
  Launch(dim3 g, dim3 b, std::size_t s = 0, cudaStream_t st = nullptr) : grid(g), block(b), smem(s), stream(st) {}
  // `call` forwards by-value copies of the arguments to the kernel (a generic lambda written by the rewrite, so
  // the kernel's template arguments are deduced as nvcc deduces them); the launch keeps the arguments' values
  // from the call, and every thread gets its own copies.
  template <typename F, typename... A>
  void operator()(F call, A&&... args) const {
    std::tuple<std::decay_t<A>...> params(std::forward<A>(args)...);
    run_grid(grid, block, smem, stream, [call, params = std::move(params)] { std::apply(call, params); });
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
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (mask != 0xffffffffu) ::cuda_emu::kernel_error("__syncwarp with a partial mask is not emulated");
  ::cuda_emu::warp_gather(nullptr, 0, "__syncwarp");
}

namespace cuda_emu {
inline int lane_id() {
  return static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) & 31;
}
}  // namespace cuda_emu

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffled values are at most 8 bytes");
  const int lane = ::cuda_emu::lane_id();
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

// Warp matrix operations (<mma.h>), m16n16k16 only. A fragment holds 8 of its tile's 256 elements in each lane,
// element e = lane + 32·i of the tile in row-major order: an emulator choice (the hardware's is unspecified), so
// code that reads or writes x[] element-wise works only if it treats every element alike, as on a GPU. Loads,
// stores and products are warp barriers: every lane of a full warp must call them with the same arguments; the
// pointer must be 256-bit aligned and ldm a multiple of 16 bytes, as the CUDA guide requires (else the process
// stops with a message). Products accumulate in float, k in order. A load reads its lane's elements before the
// barrier and a store writes them after it, so data that other lanes wrote (or will read) without a __syncwarp
// between is seen stale, as it may be on a GPU.
namespace nvcuda {
namespace wmma {
struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "cuda-emu: only m16n16k16 fragments are emulated");
  static constexpr int num_elements = 8;
  T x[num_elements];
};

namespace detail {
template <typename T>
inline void check_access(const char* what, const void* p, unsigned ldm) {
  struct Args {
    const void* p;
    unsigned ldm;
  } mine{p, ldm};
  const unsigned char* all = ::cuda_emu::warp_gather(&mine, sizeof mine, what);
  for (int l = 0; l < 32; ++l) {
    Args a;
    std::memcpy(&a, all + static_cast<std::size_t>(l) * ::cuda_emu::kWarpSlotBytes, sizeof a);
    if (a.p != p || a.ldm != ldm)
      ::cuda_emu::kernel_error(std::string(what) + ": the lanes of a warp pass different pointers or ldm");
  }
  if (reinterpret_cast<std::uintptr_t>(p) % 32 != 0)
    ::cuda_emu::kernel_error(std::string(what) + ": the pointer is not 256-bit aligned");
  if ((static_cast<std::size_t>(ldm) * sizeof(T)) % 16 != 0)
    ::cuda_emu::kernel_error(std::string(what) + ": ldm " + std::to_string(ldm) + " is not a multiple of 16 bytes");
}
// Offset of the tile's element (r, c) in memory of leading dimension ldm.
inline std::size_t offset(bool row_major, int r, int c, unsigned ldm) {
  return row_major ? static_cast<std::size_t>(r) * ldm + static_cast<std::size_t>(c)
                   : static_cast<std::size_t>(c) * ldm + static_cast<std::size_t>(r);
}
}  // namespace detail

template <typename Use, typename T, typename Layout, typename V>
inline void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, const V& v) {
  for (T& e : f.x) e = static_cast<T>(v);
}

template <typename Use, typename T, typename Layout>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
  static_assert(std::is_same_v<Layout, row_major> || std::is_same_v<Layout, col_major>,
                "an accumulator load names its layout");
  const int lane = ::cuda_emu::lane_id();
  T got[8];
  for (int i = 0; i < 8; ++i) {
    const int e = lane + 32 * i;
    got[i] = p[detail::offset(std::is_same_v<Layout, row_major>, e / 16, e % 16, ldm)];
  }
  detail::check_access<T>("wmma::load_matrix_sync", p, ldm);
  for (int i = 0; i < 8; ++i) f.x[i] = got[i];
}

template <typename T>
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, T>& f, const T* p, unsigned ldm, layout_t layout) {
  const int lane = ::cuda_emu::lane_id();
  T got[8];
  for (int i = 0; i < 8; ++i) {
    const int e = lane + 32 * i;
    got[i] = p[detail::offset(layout == mem_row_major, e / 16, e % 16, ldm)];
  }
  detail::check_access<T>("wmma::load_matrix_sync", p, ldm);
  for (int i = 0; i < 8; ++i) f.x[i] = got[i];
}

template <typename T>
inline void store_matrix_sync(T* p, const fragment<accumulator, 16, 16, 16, T>& f, unsigned ldm, layout_t layout) {
  detail::check_access<T>("wmma::store_matrix_sync", p, ldm);
  const int lane = ::cuda_emu::lane_id();
  for (int i = 0; i < 8; ++i) {
    const int e = lane + 32 * i;
    p[detail::offset(layout == mem_row_major, e / 16, e % 16, ldm)] = f.x[i];
  }
}

// d = a·b + c (d may be c).
template <typename TA, typename LA, typename LB, typename TC>
inline void mma_sync(fragment<accumulator, 16, 16, 16, TC>& d, const fragment<matrix_a, 16, 16, 16, TA, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, TA, LB>& b, const fragment<accumulator, 16, 16, 16, TC>& c) {
  struct Pack {
    TA a[8], b[8];
    TC c[8];
  };
  static_assert(sizeof(Pack) <= ::cuda_emu::kWarpSlotBytes, "cuda-emu: fragment too large to exchange");
  Pack mine;
  for (int i = 0; i < 8; ++i) mine.a[i] = a.x[i], mine.b[i] = b.x[i], mine.c[i] = c.x[i];
  const unsigned char* all = ::cuda_emu::warp_gather(&mine, sizeof mine, "wmma::mma_sync");
  float ta[256], tb[256];  // the whole tiles, row-major
  for (int l = 0; l < 32; ++l) {
    Pack p;
    std::memcpy(&p, all + static_cast<std::size_t>(l) * ::cuda_emu::kWarpSlotBytes, sizeof p);
    for (int i = 0; i < 8; ++i) ta[l + 32 * i] = static_cast<float>(p.a[i]), tb[l + 32 * i] = static_cast<float>(p.b[i]);
  }
  const int lane = ::cuda_emu::lane_id();
  TC out[8];
  for (int i = 0; i < 8; ++i) {
    const int e = lane + 32 * i, r = e / 16, col = e % 16;
    float acc = static_cast<float>(mine.c[i]);
    for (int k = 0; k < 16; ++k) acc += ta[r * 16 + k] * tb[k * 16 + col];
    out[i] = static_cast<TC>(acc);
  }
  for (int i = 0; i < 8; ++i) d.x[i] = out[i];
}
}  // namespace wmma
}  // namespace nvcuda
