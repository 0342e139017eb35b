// NCCL backend of the Communicator: one GPU per rank, bootstrapped over MPI, every op on a communication stream
// ordered against the caller's compute stream by events, and a watchdog that ends the job when an op hangs or
// NCCL reports an asynchronous error (so a dead rank never leaves the others waiting).
#pragma once

#include "runtime/comm/device_communicator.hpp"
#include "runtime/comm/mpi_communicator.hpp"
#include "runtime/comm/watchdog.hpp"

#include <nccl.h>

#include <memory>

namespace orthoshard {

// Buffers in device memory take the fast path: the op starts on comm_stream() once the work queued on the
// compute stream before the call is done; a blocking call returns without waiting on the host and makes the
// compute stream wait for the op; an _async call returns a Request whose wait() does that and whose test()
// says whether the op has finished. Buffers in host memory (scalars, flags, tests) are copied through a device
// scratch buffer and the call returns when the op is complete, like MPI. Tags of send/recv must be 0 (NCCL
// orders messages between two ranks; it has no tags).
class NcclCommunicator final : public DeviceCommunicator {
 public:
  // Collective over `mpi`: rank 0 creates the unique id, MPI broadcasts it, every rank initialises NCCL on
  // `device`. The communicator keeps `mpi` (split(), local ranks). Throws when two ranks of the job would
  // use the same GPU (NCCL cannot: use runtime.comm = mpi).
  NcclCommunicator(std::unique_ptr<MpiCommunicator> mpi, int device, DeviceCommOptions opt = {});
  ~NcclCommunicator() override;

  ncclComm_t native() const { return comm_; }
  cudaStream_t comm_stream() const { return stream_; }

  int rank() const override { return mpi_->rank(); }
  int size() const override { return mpi_->size(); }
  int local_rank() const override { return mpi_->local_rank(); }
  int local_size() const override { return mpi_->local_size(); }
  std::string backend() const override { return "nccl"; }
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
  struct Scratch;
  struct Launch;
  // Runs one op: `launch(send', recv', stream)` queues the NCCL calls; host buffers are staged through device
  // scratch. Returns the Request of a device op (empty when the op was host-synchronous).
  template <typename F>
  Request run(const char* what, const void* send, std::size_t send_bytes, void* recv, std::size_t recv_bytes,
              bool in_recv, bool async, F&& launch);
  Request p2p_async(bool is_send, void* buf, std::size_t count, DType dt, int peer, int tag);
  void flush_p2p();  // launches the deferred point-to-point ops as one group

  std::unique_ptr<MpiCommunicator> mpi_;
  int device_;
  DeviceCommOptions opt_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;   // communication stream
  cudaStream_t compute_ = nullptr;  // caller's stream (legacy default until set)
  cudaEvent_t ready_ = nullptr;     // recorded on the compute stream before each op
  std::unique_ptr<Scratch> scratch_;
  std::shared_ptr<Launch> pending_;  // deferred point-to-point ops
  std::unique_ptr<CommWatchdog> watchdog_;
  DeviceCommStats stats_;
};

}  // namespace orthoshard
