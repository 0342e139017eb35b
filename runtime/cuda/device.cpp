// Device runtime basics and the error helpers of check.hpp.
#include "runtime/cuda/device.hpp"

#include "runtime/cuda/check.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <utility>

namespace orthoshard::cuda {

const char* cusolver_status_string(cusolverStatus_t s) {
  switch (s) {
    case CUSOLVER_STATUS_SUCCESS: return "success";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "allocation failed";
    case CUSOLVER_STATUS_INVALID_VALUE: return "invalid value";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "internal error";
    case CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED: return "matrix type not supported";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "unknown cuSOLVER status";
  }
}

namespace {
[[noreturn]] void throw_formatted(const char* call, const char* file, int line, const char* lib, int code,
                                  const char* text) {
  std::string msg = std::string(call) + " failed at " + file + ":" + std::to_string(line) + ": " + lib +
                    " error " + std::to_string(code) + " (" + (text ? text : "?") + ")";
  throw CudaError(msg);
}
}  // namespace

void throw_cuda_error(cudaError_t e, const char* call, const char* file, int line) {
  throw_formatted(call, file, line, "CUDA", static_cast<int>(e), cudaGetErrorString(e));
}
void throw_cublas_error(cublasStatus_t s, const char* call, const char* file, int line) {
  throw_formatted(call, file, line, "cuBLAS", static_cast<int>(s), cublasGetStatusString(s));
}
void throw_cusolver_error(cusolverStatus_t s, const char* call, const char* file, int line) {
  throw_formatted(call, file, line, "cuSOLVER", static_cast<int>(s), cusolver_status_string(s));
}
void throw_usage(const std::string& what, const char* file, int line) {
  throw CudaError(what + " at " + file + ":" + std::to_string(line));
}

DeviceQuery query_devices() {
  DeviceQuery q;
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error so later calls do not see it
    q.why_none = cudaGetErrorString(e);
    return q;
  }
  q.count = n;
  if (n == 0) q.why_none = "cudaGetDeviceCount reports 0 devices";
  return q;
}

std::string device_description(int device) {
  cudaDeviceProp p{};
  OS_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  char buf[320];
  std::snprintf(buf, sizeof buf, "%s (sm_%d%d, %.1f GiB)", p.name, p.major, p.minor,
                static_cast<double>(p.totalGlobalMem) / double(1 << 30));
  return buf;
}

double nominal_bf16_peak_flops(const std::string& name) {
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  if (has("H100") && has("PCIe")) return 756e12;
  if (has("H100") || has("H200") || has("H800") || has("GH200")) return 989e12;
  if (has("A100") || has("A800")) return 312e12;
  if (has("B200")) return 2250e12;
  if (has("L40S")) return 362e12;
  return 0;
}

double nominal_bf16_peak_flops(int device) {
  cudaDeviceProp p{};
  OS_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  return nominal_bf16_peak_flops(std::string(p.name));
}

// ---- Stream ----
Stream::Stream(bool non_blocking, int priority) {
  OS_CUDA_CHECK(cudaStreamCreateWithPriority(&s_, non_blocking ? cudaStreamNonBlocking : cudaStreamDefault,
                                             priority));
}
Stream::~Stream() {
  if (s_) (void)cudaStreamDestroy(s_);  // destructors never throw; a failure here means the context is gone
}
Stream& Stream::operator=(Stream&& o) noexcept {
  if (this != &o) {
    if (s_) (void)cudaStreamDestroy(s_);
    s_ = std::exchange(o.s_, nullptr);
  }
  return *this;
}
void Stream::synchronize() const { OS_CUDA_CHECK(cudaStreamSynchronize(s_)); }
void Stream::wait(cudaEvent_t event) const { OS_CUDA_CHECK(cudaStreamWaitEvent(s_, event, 0)); }

// ---- Event ----
Event::Event(bool timing) {
  OS_CUDA_CHECK(cudaEventCreateWithFlags(&e_, timing ? cudaEventDefault : cudaEventDisableTiming));
}
Event::~Event() {
  if (e_) (void)cudaEventDestroy(e_);
}
Event& Event::operator=(Event&& o) noexcept {
  if (this != &o) {
    if (e_) (void)cudaEventDestroy(e_);
    e_ = std::exchange(o.e_, nullptr);
  }
  return *this;
}
void Event::record(cudaStream_t stream) const { OS_CUDA_CHECK(cudaEventRecord(e_, stream)); }
void Event::synchronize() const { OS_CUDA_CHECK(cudaEventSynchronize(e_)); }
bool Event::done() const {
  const cudaError_t e = cudaEventQuery(e_);
  if (e == cudaErrorNotReady) return false;
  OS_CUDA_CHECK(e);
  return true;
}
float Event::elapsed_ms_since(const Event& start) const {
  float ms = 0;
  OS_CUDA_CHECK(cudaEventElapsedTime(&ms, start.e_, e_));
  return ms;
}

// ---- PinnedBuffer ----
PinnedBuffer::PinnedBuffer(std::size_t bytes) : bytes_(bytes) {
  if (bytes > 0) OS_CUDA_CHECK(cudaMallocHost(&p_, bytes));
}
PinnedBuffer::~PinnedBuffer() {
  if (p_) (void)cudaFreeHost(p_);
}
PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  if (this != &o) {
    if (p_) (void)cudaFreeHost(p_);
    p_ = std::exchange(o.p_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

// ---- StagedCopier ----
StagedCopier::StagedCopier(std::size_t chunk_bytes) : chunk_(std::max<std::size_t>(chunk_bytes, 4096)) {
  slot_[0] = PinnedBuffer(chunk_);
  slot_[1] = PinnedBuffer(chunk_);
}

StagedCopier::~StagedCopier() {
  for (int i = 0; i < 2; ++i)
    if (pending_[i]) (void)cudaEventSynchronize(done_[i].get());
}

void StagedCopier::to_device(void* dst, const void* src, std::size_t bytes, cudaStream_t stream) {
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  int i = 0;
  for (std::size_t off = 0; off < bytes; off += chunk_, i ^= 1) {
    const std::size_t n = std::min(chunk_, bytes - off);
    if (pending_[i]) done_[i].synchronize();  // the previous DMA out of this chunk has finished
    std::memcpy(slot_[i].data(), s + off, n);
    OS_CUDA_CHECK(cudaMemcpyAsync(d + off, slot_[i].data(), n, cudaMemcpyHostToDevice, stream));
    done_[i].record(stream);
    pending_[i] = true;
  }
}

void StagedCopier::to_host(void* dst, const void* src, std::size_t bytes, cudaStream_t stream) {
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  const std::size_t chunks = (bytes + chunk_ - 1) / chunk_;
  auto issue = [&](std::size_t c) {
    const int i = static_cast<int>(c & 1);
    const std::size_t off = c * chunk_, n = std::min(chunk_, bytes - off);
    if (pending_[i]) done_[i].synchronize();
    OS_CUDA_CHECK(cudaMemcpyAsync(slot_[i].data(), s + off, n, cudaMemcpyDeviceToHost, stream));
    done_[i].record(stream);
    pending_[i] = true;
  };
  if (chunks > 0) issue(0);
  for (std::size_t c = 0; c < chunks; ++c) {
    const int i = static_cast<int>(c & 1);
    const std::size_t off = c * chunk_, n = std::min(chunk_, bytes - off);
    done_[i].synchronize();  // chunk c is in slot i (wait before issuing c + 1, which may reuse nothing of it)
    pending_[i] = false;
    if (c + 1 < chunks) issue(c + 1);  // the DMA of chunk c + 1 overlaps the memcpy of chunk c
    std::memcpy(d + off, slot_[i].data(), n);
  }
}

}  // namespace orthoshard::cuda
