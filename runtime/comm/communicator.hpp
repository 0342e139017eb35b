// Communicator: the collective interface every backend (MPI now, NCCL later) implements.
// Buffers are raw pointers + element counts + dtype; Tensor overloads sit on top.
// Variable-count collectives pack each rank's block contiguously in rank order.
#pragma once

#include "runtime/core/dtype.hpp"
#include "runtime/core/tensor.hpp"

#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string>

namespace orthoshard {

enum class ReduceOp { Sum, Mean, Max };
std::string_view reduce_op_name(ReduceOp op);

// Backend half of a non-blocking operation.
class PendingOp {
 public:
  virtual ~PendingOp() = default;
  virtual bool test() = 0;  // true when complete (post-processing done)
  virtual void wait() = 0;
};

// Handle of a non-blocking collective. wait() completes it (and applies post-processing such as the
// division of a mean); the destructor waits too, so buffers are never released under a running op.
class Request {
 public:
  Request() = default;
  explicit Request(std::unique_ptr<PendingOp> op) : op_(std::move(op)) {}
  Request(Request&&) noexcept = default;
  Request& operator=(Request&& other) noexcept;
  ~Request();

  void wait();
  bool test();  // non-blocking progress check; true once complete
  bool pending() const { return op_ != nullptr; }

 private:
  std::unique_ptr<PendingOp> op_;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int local_rank() const = 0;  // rank among the processes of this node
  virtual int local_size() const = 0;
  virtual std::string backend() const = 0;
  // Sub-communicator of the ranks that pass the same color, ordered by key (then rank).
  virtual std::unique_ptr<Communicator> split(int color, int key) const = 0;

  virtual void barrier() = 0;
  virtual void broadcast(void* buf, std::size_t count, DType dt, int root) = 0;
  // send == recv means in place.
  virtual void all_reduce(const void* send, void* recv, std::size_t count, DType dt, ReduceOp op) = 0;
  // recv holds size() * count elements.
  virtual void all_gather(const void* send, void* recv, std::size_t count, DType dt) = 0;
  // recv holds sum(recv_counts); send_count must equal recv_counts[rank()].
  virtual void all_gather_v(const void* send, std::size_t send_count, void* recv,
                            std::span<const std::size_t> recv_counts, DType dt) = 0;
  // send holds size() * count elements; recv gets block rank() reduced (Sum or Mean).
  virtual void reduce_scatter(const void* send, void* recv, std::size_t count, DType dt, ReduceOp op) = 0;
  // send and recv hold size() * count elements; block j of send goes to rank j.
  virtual void all_to_all(const void* send, void* recv, std::size_t count, DType dt) = 0;
  virtual void all_to_all_v(const void* send, std::span<const std::size_t> send_counts, void* recv,
                            std::span<const std::size_t> recv_counts, DType dt) = 0;
  virtual void send(const void* buf, std::size_t count, DType dt, int dest, int tag = 0) = 0;
  virtual void recv(void* buf, std::size_t count, DType dt, int src, int tag = 0) = 0;

  // Non-blocking variants: same arguments, buffers must stay alive until the Request completes.
  virtual Request broadcast_async(void* buf, std::size_t count, DType dt, int root) = 0;
  virtual Request all_reduce_async(const void* send, void* recv, std::size_t count, DType dt, ReduceOp op) = 0;
  virtual Request all_gather_async(const void* send, void* recv, std::size_t count, DType dt) = 0;
  virtual Request all_gather_v_async(const void* send, std::size_t send_count, void* recv,
                                     std::span<const std::size_t> recv_counts, DType dt) = 0;
  virtual Request reduce_scatter_async(const void* send, void* recv, std::size_t count, DType dt, ReduceOp op) = 0;
  virtual Request all_to_all_async(const void* send, void* recv, std::size_t count, DType dt) = 0;
  virtual Request all_to_all_v_async(const void* send, std::span<const std::size_t> send_counts, void* recv,
                                     std::span<const std::size_t> recv_counts, DType dt) = 0;
  virtual Request send_async(const void* buf, std::size_t count, DType dt, int dest, int tag = 0) = 0;
  virtual Request recv_async(void* buf, std::size_t count, DType dt, int src, int tag = 0) = 0;

  // Tensor conveniences (contiguous tensors; counts and dtypes checked).
  void all_reduce(Tensor& t, ReduceOp op);
  void broadcast(Tensor& t, int root);
  void all_gather(const Tensor& shard, Tensor& full);          // full.numel() == size() * shard.numel()
  void reduce_scatter(const Tensor& full, Tensor& shard, ReduceOp op);

  // Typed scalar helpers for norms, flags and counters.
  double all_reduce_scalar(double v, ReduceOp op);
};

}  // namespace orthoshard
