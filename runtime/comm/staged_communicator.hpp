// MPI for device buffers through pinned host memory: the path for several ranks sharing one GPU (NCCL refuses
// that) and for runtime.comm = mpi on GPUs. Host buffers go to MPI unchanged.
#pragma once

#include "runtime/comm/device_communicator.hpp"
#include "runtime/comm/mpi_communicator.hpp"

#include <memory>

namespace orthoshard {

// Every op is blocking for the host: it waits for the compute stream, copies device inputs to pinned buffers,
// runs the MPI collective, copies the results back and waits for that copy. The _async variants do the same
// and return a completed Request (MPI on host memory makes no progress in the background anyway).
class StagedCommunicator final : public DeviceCommunicator {
 public:
  StagedCommunicator(std::unique_ptr<MpiCommunicator> mpi, int device);
  ~StagedCommunicator() override;

  int rank() const override { return mpi_->rank(); }
  int size() const override { return mpi_->size(); }
  int local_rank() const override { return mpi_->local_rank(); }
  int local_size() const override { return mpi_->local_size(); }
  std::string backend() const override { return "mpi+staging"; }
  std::unique_ptr<Communicator> split(int color, int key) const override;

  void set_compute_stream(cudaStream_t stream) override { compute_ = stream; }
  cudaStream_t compute_stream() const override { return compute_; }
  int device() const override { return device_; }
  void synchronize() override;
  DeviceCommStats stats() const override { return stats_; }

  void barrier() override;
  void broadcast(void* buf, std::size_t count, DType dt, int root) override;
  void all_reduce(const void* send, void* recv, std::size_t count, DType dt, ReduceOp op) override;
  void all_gather(const void* send, void* recv, std::size_t count, DType dt) override;
  void all_gather_v(const void* send, std::size_t send_count, void* recv, std::span<const std::size_t> recv_counts,
                    DType dt) override;
  void reduce_scatter(const void* send, void* recv, std::size_t count, DType dt, ReduceOp op) override;
  void all_to_all(const void* send, void* recv, std::size_t count, DType dt) override;
  void all_to_all_v(const void* send, std::span<const std::size_t> send_counts, void* recv,
                    std::span<const std::size_t> recv_counts, DType dt) override;
  void send(const void* buf, std::size_t count, DType dt, int dest, int tag) override;
  void recv(void* buf, std::size_t count, DType dt, int src, int tag) override;

  Request broadcast_async(void* buf, std::size_t count, DType dt, int root) override;
  Request all_reduce_async(const void* send, void* recv, std::size_t count, DType dt, ReduceOp op) override;
  Request all_gather_async(const void* send, void* recv, std::size_t count, DType dt) override;
  Request all_gather_v_async(const void* send, std::size_t send_count, void* recv,
                             std::span<const std::size_t> recv_counts, DType dt) override;
  Request reduce_scatter_async(const void* send, void* recv, std::size_t count, DType dt, ReduceOp op) override;
  Request all_to_all_async(const void* send, void* recv, std::size_t count, DType dt) override;
  Request all_to_all_v_async(const void* send, std::span<const std::size_t> send_counts, void* recv,
                             std::span<const std::size_t> recv_counts, DType dt) override;
  Request send_async(const void* buf, std::size_t count, DType dt, int dest, int tag) override;
  Request recv_async(void* buf, std::size_t count, DType dt, int src, int tag) override;

 private:
  struct Pinned;
  // Runs op(send', recv') where a device buffer is replaced by a pinned host copy: send is copied in before,
  // recv copied out after (and copied in first when in_recv, for in-place ops).
  template <typename Op>
  void staged(const void* send, std::size_t send_bytes, void* recv, std::size_t recv_bytes, bool in_recv, Op&& op);

  std::unique_ptr<MpiCommunicator> mpi_;
  int device_;
  cudaStream_t compute_ = nullptr;
  std::unique_ptr<Pinned> send_buf_, recv_buf_;
  DeviceCommStats stats_;
};

}  // namespace orthoshard
