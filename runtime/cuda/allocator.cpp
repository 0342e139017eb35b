// Caching device allocator.
#include "runtime/cuda/allocator.hpp"

#include "runtime/cuda/check.hpp"

#include <algorithm>
#include <bit>
#include <cstdio>

namespace orthoshard::cuda {

RawMemory cuda_raw_memory() {
  RawMemory r;
  r.allocate = [](std::size_t bytes) -> void* {
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear it: the allocator retries after freeing its cache
      return nullptr;
    }
    OS_CUDA_CHECK(e);
    return p;
  };
  r.release = [](void* p) { OS_CUDA_CHECK(cudaFree(p)); };
  r.current_device = [] {
    int d = 0;
    OS_CUDA_CHECK(cudaGetDevice(&d));
    return d;
  };
  return r;
}

CachingAllocator::CachingAllocator() : CachingAllocator(cuda_raw_memory()) {}
CachingAllocator::CachingAllocator(RawMemory raw) : raw_(std::move(raw)) {}

CachingAllocator::~CachingAllocator() {
  try {
    std::lock_guard<std::mutex> lock(mu_);
    release_cached_locked();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "orthoshard: CachingAllocator teardown: %s\n", e.what());
  }
}

std::size_t CachingAllocator::size_class(std::size_t bytes) {
  constexpr std::size_t kMin = 512, kLarge = std::size_t(64) << 20, kLargeStep = std::size_t(2) << 20;
  if (bytes <= kMin) return kMin;
  if (bytes > kLarge) return (bytes + kLargeStep - 1) / kLargeStep * kLargeStep;
  // 2^k < bytes <= 2^(k+1): classes 1.25, 1.5, 1.75, 2 times 2^k.
  const int k = std::bit_width(bytes - 1) - 1;
  const std::size_t step = std::max<std::size_t>(kMin, (std::size_t(1) << k) / 4);
  return (bytes + step - 1) / step * step;
}

int CachingAllocator::current_device() const { return raw_.current_device ? raw_.current_device() : 0; }

void* CachingAllocator::allocate(std::size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return nullptr;
  const std::size_t cls = size_class(bytes);
  const int device = current_device();
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.allocations;
  void* p = nullptr;
  auto it = free_.find(PoolKey{device, stream, cls});
  if (it != free_.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    ++stats_.cache_hits;
  } else {
    p = raw_.allocate(cls);
    if (!p) {
      ++stats_.oom_retries;
      release_cached_locked();
      p = raw_.allocate(cls);
    }
    if (!p) {
      char msg[256];
      std::snprintf(msg, sizeof msg,
                    "device out of memory allocating %zu bytes (class %zu): %zu bytes in use, %zu reserved", bytes,
                    cls, stats_.bytes_in_use, stats_.bytes_reserved);
      throw CudaError(msg);
    }
    ++stats_.device_mallocs;
    stats_.bytes_reserved += cls;
    stats_.peak_bytes_reserved = std::max(stats_.peak_bytes_reserved, stats_.bytes_reserved);
  }
  live_[p] = Block{cls, bytes, device, stream, false};
  stats_.bytes_in_use += cls;
  stats_.bytes_requested += bytes;
  stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
  return p;
}

void CachingAllocator::deallocate(void* p) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(p);
  OS_CUDA_REQUIRE(it != live_.end(), "CachingAllocator::deallocate: pointer was not allocated here or freed twice");
  const Block b = it->second;
  live_.erase(it);
  stats_.bytes_in_use -= b.class_bytes;
  stats_.bytes_requested -= b.requested;
  if (b.stream_released) release_block_locked(p, b.class_bytes);
  else free_[PoolKey{b.device, b.stream, b.class_bytes}].push_back(p);
}

void CachingAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached_locked();
}

void CachingAllocator::release_stream(cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [p, b] : live_)
    if (b.stream == stream) b.stream_released = true;
  release_pools_locked([stream](const PoolKey& k) { return std::get<1>(k) == stream; });
}

void CachingAllocator::release_cached_locked() {
  release_pools_locked([](const PoolKey&) { return true; });
}

void CachingAllocator::release_block_locked(void* p, std::size_t class_bytes) {
  // The block is no longer ours once release is attempted: if it throws, it is leaked, never freed twice.
  stats_.bytes_reserved -= class_bytes;
  raw_.release(p);
  ++stats_.device_frees;
}

void CachingAllocator::release_pools_locked(const std::function<bool(const PoolKey&)>& which) {
  for (auto it = free_.begin(); it != free_.end();) {
    if (!which(it->first)) {
      ++it;
      continue;
    }
    const std::size_t cls = std::get<2>(it->first);
    std::vector<void*>& blocks = it->second;
    while (!blocks.empty()) {
      void* p = blocks.back();
      blocks.pop_back();  // out of the pool before the release that may throw
      release_block_locked(p, cls);
    }
    it = free_.erase(it);
  }
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingAllocator::reset_peaks() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_bytes_in_use = stats_.bytes_in_use;
  stats_.peak_bytes_reserved = stats_.bytes_reserved;
}

std::string CachingAllocator::summary() const {
  const AllocatorStats s = stats();
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "in use %.1f MiB (peak %.1f), reserved %.1f MiB (peak %.1f), %llu allocations, %llu cache hits, "
                "%llu cudaMalloc",
                static_cast<double>(s.bytes_in_use) / 1048576.0, static_cast<double>(s.peak_bytes_in_use) / 1048576.0,
                static_cast<double>(s.bytes_reserved) / 1048576.0,
                static_cast<double>(s.peak_bytes_reserved) / 1048576.0,
                static_cast<unsigned long long>(s.allocations), static_cast<unsigned long long>(s.cache_hits),
                static_cast<unsigned long long>(s.device_mallocs));
  return buf;
}

}  // namespace orthoshard::cuda
