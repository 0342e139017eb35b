// Caching device allocator: cudaMalloc-backed, size-class bins per (device, stream), freed blocks reused by later
// allocations on the same device and stream, statistics (bytes in use, reserved, peaks). No managed memory.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

namespace orthoshard::cuda {

struct AllocatorStats {
  std::size_t bytes_in_use = 0;         // size-class bytes of live blocks
  std::size_t bytes_requested = 0;      // bytes asked for by live blocks (<= bytes_in_use)
  std::size_t bytes_reserved = 0;       // bytes held from the device: live blocks + cached free blocks
  std::size_t peak_bytes_in_use = 0;
  std::size_t peak_bytes_reserved = 0;
  std::uint64_t allocations = 0;        // allocate() calls with bytes > 0
  std::uint64_t cache_hits = 0;         // of those, served from a cached block
  std::uint64_t device_mallocs = 0;     // raw allocations (cudaMalloc)
  std::uint64_t device_frees = 0;       // raw frees (cudaFree)
  std::uint64_t oom_retries = 0;        // raw allocations that failed once and were retried after release_cached()
};

// Where the bytes come from: cudaMalloc/cudaFree by default; tests substitute host memory. allocate returns
// nullptr when out of memory (the allocator then frees its cache and tries once more). current_device names
// the device allocate() serves (cudaGetDevice by default; unset: device 0).
struct RawMemory {
  std::function<void*(std::size_t)> allocate;
  std::function<void(void*)> release;
  std::function<int()> current_device;
};
RawMemory cuda_raw_memory();  // cudaMalloc / cudaFree / cudaGetDevice on the current device

// Ordering contract (as FSDP2, no record_stream): a block is returned to the pool of the (device, stream) it
// was allocated on and is handed out again only to allocations on that device and stream, so stream order alone
// makes the reuse safe. The device is part of the key because a stream handle alone does not name one device:
// the legacy default stream (nullptr) and cudaStreamPerThread exist on every device under the same handle. A
// caller that used the block on another stream must make the allocation stream wait for that work (an Event)
// before deallocate(). Before destroying a stream, call release_stream() (a destroyed stream's handle may be
// reused by a new stream, which must not inherit blocks ordered on the old one). Thread-safe.
class CachingAllocator {
 public:
  CachingAllocator();
  explicit CachingAllocator(RawMemory raw);
  ~CachingAllocator();  // returns cached blocks to the device; live blocks are left alone (their owner frees)
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // A block of at least `bytes` (256-byte aligned as cudaMalloc's) for use on `stream`; nullptr for 0 bytes.
  // Throws CudaError (with the statistics) when the device is out of memory even after releasing the cache.
  void* allocate(std::size_t bytes, cudaStream_t stream);
  // Returns a block from allocate() to its stream's pool; nullptr is ignored, an unknown pointer throws.
  void deallocate(void* p);
  // Frees every cached (not live) block to the device.
  void release_cached();
  // Call before destroying `stream`: frees the cached blocks of that stream (on every device) to the device,
  // and marks its live blocks so that deallocate() frees them instead of caching them under the dead handle.
  // The caller must still order the stream's pending work before deallocating (as for any deallocate()).
  void release_stream(cudaStream_t stream);

  AllocatorStats stats() const;
  void reset_peaks();
  std::string summary() const;  // one line for logs

  // Size classes: 512 B minimum; then four classes per power of two (waste <= 25%) in 512 B steps at least;
  // above 64 MiB, multiples of 2 MiB. Exposed for tests.
  static std::size_t size_class(std::size_t bytes);

 private:
  struct Block {
    std::size_t class_bytes = 0, requested = 0;
    int device = 0;
    cudaStream_t stream = nullptr;
    bool stream_released = false;  // release_stream() ran while live: free on deallocate, do not cache
  };
  using PoolKey = std::tuple<int, cudaStream_t, std::size_t>;  // (device, stream, class)
  void release_cached_locked();
  // Frees the cached blocks whose pool key satisfies `which`; each block leaves the pool before it is
  // released, so a release that throws never leads to a second free of the same block.
  void release_pools_locked(const std::function<bool(const PoolKey&)>& which);
  void release_block_locked(void* p, std::size_t class_bytes);
  int current_device() const;

  RawMemory raw_;
  mutable std::mutex mu_;
  std::unordered_map<void*, Block> live_;
  std::map<PoolKey, std::vector<void*>> free_;  // (device, stream, class) -> blocks (LIFO)
  AllocatorStats stats_;
};

}  // namespace orthoshard::cuda
