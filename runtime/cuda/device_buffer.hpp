// DeviceBuffer<T>: an owning, move-only array in device memory, from cudaMalloc or a CachingAllocator.
#pragma once

#include "runtime/cuda/allocator.hpp"
#include "runtime/cuda/check.hpp"

#include <cuda_runtime.h>

#include <cstddef>
#include <utility>
#include <vector>

namespace orthoshard::cuda {

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // count elements from cudaMalloc (contents undefined).
  explicit DeviceBuffer(std::size_t count) : count_(count) {
    if (count > 0) OS_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p_), count * sizeof(T)));
  }
  // count elements from `alloc` for use on `stream` (see CachingAllocator for the ordering contract).
  DeviceBuffer(std::size_t count, CachingAllocator& alloc, cudaStream_t stream)
      : p_(static_cast<T*>(alloc.allocate(count * sizeof(T), stream))), count_(count), alloc_(&alloc) {}
  ~DeviceBuffer() { reset(); }

  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), count_(std::exchange(o.count_, 0)), alloc_(std::exchange(o.alloc_, nullptr)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = std::exchange(o.p_, nullptr);
      count_ = std::exchange(o.count_, 0);
      alloc_ = std::exchange(o.alloc_, nullptr);
    }
    return *this;
  }

  T* data() { return p_; }
  const T* data() const { return p_; }
  std::size_t size() const { return count_; }
  std::size_t bytes() const { return count_ * sizeof(T); }
  bool empty() const { return count_ == 0; }

  void zero(cudaStream_t stream) {
    if (count_ > 0) OS_CUDA_CHECK(cudaMemsetAsync(p_, 0, bytes(), stream));
  }
  // Plain copies (pageable host memory: the runtime stages them, the call returns when src may be reused).
  void copy_from_host(const T* src, std::size_t count, cudaStream_t stream) {
    OS_CUDA_REQUIRE(count <= count_, "DeviceBuffer::copy_from_host: more elements than the buffer holds");
    if (count > 0) OS_CUDA_CHECK(cudaMemcpyAsync(p_, src, count * sizeof(T), cudaMemcpyHostToDevice, stream));
  }
  void copy_from_host(const std::vector<T>& src, cudaStream_t stream) { copy_from_host(src.data(), src.size(), stream); }
  // Blocking: waits for the work queued on `stream`, then returns the contents.
  std::vector<T> to_host(cudaStream_t stream) const {
    std::vector<T> out(count_);
    if (count_ > 0) OS_CUDA_CHECK(cudaMemcpyAsync(out.data(), p_, bytes(), cudaMemcpyDeviceToHost, stream));
    OS_CUDA_CHECK(cudaStreamSynchronize(stream));
    return out;
  }

  void reset() noexcept {
    if (p_) {
      if (alloc_) {
        try {
          alloc_->deallocate(p_);
        } catch (...) {  // a destructor must not throw; deallocate only throws for foreign pointers
        }
      } else {
        (void)cudaFree(p_);
      }
    }
    p_ = nullptr;
    count_ = 0;
    alloc_ = nullptr;
  }

 private:
  T* p_ = nullptr;
  std::size_t count_ = 0;
  CachingAllocator* alloc_ = nullptr;
};

}  // namespace orthoshard::cuda
