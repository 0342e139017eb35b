// Device runtime basics: how many GPUs there are (0, not an error, without a GPU or driver), RAII streams and
// events with explicit record/wait ordering, pinned host buffers and host<->device copies staged through them.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace orthoshard::cuda {

struct DeviceQuery {
  int count = 0;
  std::string why_none;  // when count == 0: the runtime's reason ("no CUDA-capable device is detected", ...)
};
// Never throws: a missing driver or device gives count 0 and the reason.
DeviceQuery query_devices();
inline int device_count() { return query_devices().count; }
// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)" for a device index; throws CudaError on a bad index.
std::string device_description(int device);
// The nominal dense bf16 tensor-core peak of a GPU by its name, in FLOP/s (the number MFU is usually quoted
// against): H100/H200/H800/GH200 (SXM) 989e12, H100 PCIe 756e12, A100/A800 312e12, B200 2250e12, L40S 362e12;
// 0 when the device is not one of these.
double nominal_bf16_peak_flops(const std::string& device_name);
// The same for a device index (its cudaDeviceProp name).
double nominal_bf16_peak_flops(int device);

// A CUDA stream (non-blocking with respect to the legacy default stream unless asked otherwise).
class Stream {
 public:
  explicit Stream(bool non_blocking = true, int priority = 0);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  Stream(Stream&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
  Stream& operator=(Stream&& o) noexcept;

  cudaStream_t get() const { return s_; }
  operator cudaStream_t() const { return s_; }  // NOLINT: streams are passed to kernels as cudaStream_t
  void synchronize() const;
  // Work queued on this stream after this call starts only once `event` has completed.
  void wait(cudaEvent_t event) const;

 private:
  cudaStream_t s_ = nullptr;
};

// A CUDA event; timing is off by default (cheaper record/wait). record() then another stream's wait()
// is the one way this runtime orders work between streams.
class Event {
 public:
  explicit Event(bool timing = false);
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  Event(Event&& o) noexcept : e_(o.e_) { o.e_ = nullptr; }
  Event& operator=(Event&& o) noexcept;

  cudaEvent_t get() const { return e_; }
  operator cudaEvent_t() const { return e_; }  // NOLINT
  void record(cudaStream_t stream) const;
  void synchronize() const;
  bool done() const;  // cudaEventQuery: true when the recorded work has completed
  // Milliseconds from `start` to this event (both recorded with timing on, this one completed).
  float elapsed_ms_since(const Event& start) const;

 private:
  cudaEvent_t e_ = nullptr;
};

// Page-locked host memory (cudaMallocHost), the only host memory that async copies really overlap with.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(std::size_t bytes);
  ~PinnedBuffer();
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr, o.bytes_ = 0; }
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept;

  void* data() const { return p_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  std::size_t bytes_ = 0;
};

// Host<->device copies of pageable host memory through two pinned chunks (double buffering): the memcpy
// into one chunk overlaps the DMA of the other. Not thread-safe; one copier per stream of copies.
class StagedCopier {
 public:
  explicit StagedCopier(std::size_t chunk_bytes = std::size_t(8) << 20);
  ~StagedCopier();  // waits for copies still in flight out of the pinned chunks
  StagedCopier(const StagedCopier&) = delete;
  StagedCopier& operator=(const StagedCopier&) = delete;

  // Queues dst (device) <- src (host) on `stream`; src may be reused when this returns (its bytes are in the
  // pinned chunks or already copied). The device data is ready for later work on `stream`.
  void to_device(void* dst, const void* src, std::size_t bytes, cudaStream_t stream);
  // dst (host) <- src (device) after the work queued on `stream`; returns when dst holds the data.
  void to_host(void* dst, const void* src, std::size_t bytes, cudaStream_t stream);

  std::size_t chunk_bytes() const { return chunk_; }

 private:
  std::size_t chunk_;
  PinnedBuffer slot_[2];
  Event done_[2];
  bool pending_[2] = {false, false};
};

}  // namespace orthoshard::cuda
