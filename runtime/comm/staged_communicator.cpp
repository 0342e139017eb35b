// Host staging of device buffers around the MPI backend (see the header for the contract).
#include "runtime/comm/staged_communicator.hpp"

#include "runtime/core/error.hpp"
#include "runtime/cuda/check.hpp"
#include "runtime/cuda/device.hpp"

#include <algorithm>
#include <numeric>

namespace orthoshard {

bool is_device_pointer(const void* p) {
  if (p == nullptr) return false;
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error of an unknown pointer
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

// A pinned host buffer that only grows (page-locking is expensive: reuse it across ops).
struct StagedCommunicator::Pinned {
  cuda::PinnedBuffer buf;
  void* reserve(std::size_t bytes) {
    if (bytes > buf.bytes()) buf = cuda::PinnedBuffer(std::max(bytes, buf.bytes() * 2));
    return buf.data();
  }
};

StagedCommunicator::StagedCommunicator(std::unique_ptr<MpiCommunicator> mpi, int device)
    : mpi_(std::move(mpi)), device_(device), send_buf_(std::make_unique<Pinned>()), recv_buf_(std::make_unique<Pinned>()) {
  OS_CHECK(mpi_ != nullptr, "StagedCommunicator: no MPI communicator");
  OS_CUDA_CHECK(cudaSetDevice(device_));
}

StagedCommunicator::~StagedCommunicator() = default;

std::unique_ptr<Communicator> StagedCommunicator::split(int color, int key) const {
  std::unique_ptr<Communicator> sub = mpi_->split(color, key);
  auto* m = dynamic_cast<MpiCommunicator*>(sub.get());
  OS_CHECK(m != nullptr, "StagedCommunicator::split: MPI split returned a {} communicator", sub->backend());
  sub.release();
  auto child = std::make_unique<StagedCommunicator>(std::unique_ptr<MpiCommunicator>(m), device_);
  child->set_compute_stream(compute_);
  return child;
}

void StagedCommunicator::synchronize() { OS_CUDA_CHECK(cudaStreamSynchronize(compute_)); }

template <typename Op>
void StagedCommunicator::staged(const void* send, std::size_t send_bytes, void* recv, std::size_t recv_bytes,
                                bool in_recv, Op&& op) {
  const bool dev_send = send_bytes > 0 && is_device_pointer(send);
  const bool dev_recv = recv_bytes > 0 && is_device_pointer(recv);
  ++stats_.ops;
  if (!dev_send && !dev_recv) {
    op(send, recv);
    return;
  }
  // Inputs produced on the compute stream must be complete before MPI reads them.
  OS_CUDA_CHECK(cudaStreamSynchronize(compute_));
  const bool in_place = send == recv;
  void* hrecv = dev_recv ? recv_buf_->reserve(recv_bytes) : recv;
  const void* hsend = send;
  if (dev_recv && (in_recv || in_place)) {
    OS_CUDA_CHECK(cudaMemcpyAsync(hrecv, recv, recv_bytes, cudaMemcpyDeviceToHost, compute_));
    stats_.staged_bytes += recv_bytes;
  }
  if (in_place) {
    hsend = hrecv;
  } else if (dev_send) {
    void* h = send_buf_->reserve(send_bytes);
    OS_CUDA_CHECK(cudaMemcpyAsync(h, send, send_bytes, cudaMemcpyDeviceToHost, compute_));
    stats_.staged_bytes += send_bytes;
    hsend = h;
  }
  OS_CUDA_CHECK(cudaStreamSynchronize(compute_));
  stats_.device_bytes += std::max(send_bytes, recv_bytes);
  op(hsend, hrecv);
  if (dev_recv) {
    OS_CUDA_CHECK(cudaMemcpyAsync(recv, hrecv, recv_bytes, cudaMemcpyHostToDevice, compute_));
    stats_.staged_bytes += recv_bytes;
    // The pinned buffer is reused by the next op: the copy out of it must be done.
    OS_CUDA_CHECK(cudaStreamSynchronize(compute_));
  }
}

namespace {
std::size_t total(std::span<const std::size_t> counts) {
  return std::accumulate(counts.begin(), counts.end(), std::size_t{0});
}
}  // namespace

void StagedCommunicator::barrier() { mpi_->barrier(); }

void StagedCommunicator::broadcast(void* buf, std::size_t count, DType dt, int root) {
  const std::size_t b = count * dtype_size(dt);
  staged(buf, b, buf, b, true, [&](const void*, void* r) { mpi_->broadcast(r, count, dt, root); });
}

void StagedCommunicator::all_reduce(const void* send, void* recv, std::size_t count, DType dt, ReduceOp op) {
  const std::size_t b = count * dtype_size(dt);
  staged(send, b, recv, b, false, [&](const void* s, void* r) {
    mpi_->all_reduce(send == recv ? r : s, r, count, dt, op);
  });
}

void StagedCommunicator::all_gather(const void* send, void* recv, std::size_t count, DType dt) {
  const std::size_t es = dtype_size(dt);
  const std::size_t n = static_cast<std::size_t>(size());
  staged(send, count * es, recv, n * count * es, false,
         [&](const void* s, void* r) { mpi_->all_gather(s, r, count, dt); });
}

void StagedCommunicator::all_gather_v(const void* send, std::size_t send_count, void* recv,
                                      std::span<const std::size_t> recv_counts, DType dt) {
  const std::size_t es = dtype_size(dt);
  staged(send, send_count * es, recv, total(recv_counts) * es, false,
         [&](const void* s, void* r) { mpi_->all_gather_v(s, send_count, r, recv_counts, dt); });
}

void StagedCommunicator::reduce_scatter(const void* send, void* recv, std::size_t count, DType dt, ReduceOp op) {
  const std::size_t es = dtype_size(dt);
  const std::size_t n = static_cast<std::size_t>(size());
  staged(send, n * count * es, recv, count * es, false,
         [&](const void* s, void* r) { mpi_->reduce_scatter(s, r, count, dt, op); });
}

void StagedCommunicator::all_to_all(const void* send, void* recv, std::size_t count, DType dt) {
  const std::size_t b = static_cast<std::size_t>(size()) * count * dtype_size(dt);
  staged(send, b, recv, b, false, [&](const void* s, void* r) { mpi_->all_to_all(s, r, count, dt); });
}

void StagedCommunicator::all_to_all_v(const void* send, std::span<const std::size_t> send_counts, void* recv,
                                      std::span<const std::size_t> recv_counts, DType dt) {
  const std::size_t es = dtype_size(dt);
  staged(send, total(send_counts) * es, recv, total(recv_counts) * es, false,
         [&](const void* s, void* r) { mpi_->all_to_all_v(s, send_counts, r, recv_counts, dt); });
}

void StagedCommunicator::send(const void* buf, std::size_t count, DType dt, int dest, int tag) {
  staged(buf, count * dtype_size(dt), nullptr, 0, false,
         [&](const void* s, void*) { mpi_->send(s, count, dt, dest, tag); });
}

void StagedCommunicator::recv(void* buf, std::size_t count, DType dt, int src, int tag) {
  staged(nullptr, 0, buf, count * dtype_size(dt), false,
         [&](const void*, void* r) { mpi_->recv(r, count, dt, src, tag); });
}

// ---- non-blocking: blocking, then a completed handle ----

Request StagedCommunicator::broadcast_async(void* buf, std::size_t count, DType dt, int root) {
  broadcast(buf, count, dt, root);
  return {};
}
Request StagedCommunicator::all_reduce_async(const void* send, void* recv, std::size_t count, DType dt, ReduceOp op) {
  all_reduce(send, recv, count, dt, op);
  return {};
}
Request StagedCommunicator::all_gather_async(const void* send, void* recv, std::size_t count, DType dt) {
  all_gather(send, recv, count, dt);
  return {};
}
Request StagedCommunicator::all_gather_v_async(const void* send, std::size_t send_count, void* recv,
                                               std::span<const std::size_t> recv_counts, DType dt) {
  all_gather_v(send, send_count, recv, recv_counts, dt);
  return {};
}
Request StagedCommunicator::reduce_scatter_async(const void* send, void* recv, std::size_t count, DType dt,
                                                 ReduceOp op) {
  reduce_scatter(send, recv, count, dt, op);
  return {};
}
Request StagedCommunicator::all_to_all_async(const void* send, void* recv, std::size_t count, DType dt) {
  all_to_all(send, recv, count, dt);
  return {};
}
Request StagedCommunicator::all_to_all_v_async(const void* send, std::span<const std::size_t> send_counts,
                                               void* recv, std::span<const std::size_t> recv_counts, DType dt) {
  all_to_all_v(send, send_counts, recv, recv_counts, dt);
  return {};
}
// Point-to-point ops really are non-blocking (a ring of send_async + recv_async must not deadlock): each
// request owns its pinned buffer; a receive copies to the device when it completes.
namespace {
class StagedP2P final : public PendingOp {
 public:
  StagedP2P(Request inner, cuda::PinnedBuffer pinned, void* device_dst, std::size_t bytes, cudaStream_t stream)
      : inner_(std::move(inner)), pinned_(std::move(pinned)), dst_(device_dst), bytes_(bytes), stream_(stream) {}
  bool test() override {
    if (!inner_.test()) return false;
    finish();
    return true;
  }
  void wait() override {
    inner_.wait();
    finish();
  }

 private:
  void finish() {
    if (dst_ == nullptr) return;
    OS_CUDA_CHECK(cudaMemcpyAsync(dst_, pinned_.data(), bytes_, cudaMemcpyHostToDevice, stream_));
    OS_CUDA_CHECK(cudaStreamSynchronize(stream_));
    dst_ = nullptr;
  }
  Request inner_;
  cuda::PinnedBuffer pinned_;
  void* dst_;
  std::size_t bytes_;
  cudaStream_t stream_;
};
}  // namespace

Request StagedCommunicator::send_async(const void* buf, std::size_t count, DType dt, int dest, int tag) {
  const std::size_t bytes = count * dtype_size(dt);
  ++stats_.ops;
  if (bytes == 0 || !is_device_pointer(buf)) return mpi_->send_async(buf, count, dt, dest, tag);
  cuda::PinnedBuffer pinned(bytes);
  OS_CUDA_CHECK(cudaStreamSynchronize(compute_));
  OS_CUDA_CHECK(cudaMemcpy(pinned.data(), buf, bytes, cudaMemcpyDeviceToHost));
  stats_.staged_bytes += bytes;
  stats_.device_bytes += bytes;
  Request inner = mpi_->send_async(pinned.data(), count, dt, dest, tag);
  return Request(std::make_unique<StagedP2P>(std::move(inner), std::move(pinned), nullptr, 0, compute_));
}

Request StagedCommunicator::recv_async(void* buf, std::size_t count, DType dt, int src, int tag) {
  const std::size_t bytes = count * dtype_size(dt);
  ++stats_.ops;
  if (bytes == 0 || !is_device_pointer(buf)) return mpi_->recv_async(buf, count, dt, src, tag);
  cuda::PinnedBuffer pinned(bytes);
  stats_.staged_bytes += bytes;
  stats_.device_bytes += bytes;
  Request inner = mpi_->recv_async(pinned.data(), count, dt, src, tag);
  return Request(std::make_unique<StagedP2P>(std::move(inner), std::move(pinned), buf, bytes, compute_));
}

}  // namespace orthoshard
