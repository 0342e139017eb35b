// MPI backend of the Communicator, the MPI process lifetime, and the job-wide abort path.
#pragma once

#include "runtime/comm/communicator.hpp"

#include <mpi.h>

#include <functional>
#include <memory>

namespace orthoshard {

// Owns MPI_Init_thread .. MPI_Finalize for the process. Communicators must be destroyed first.
class MpiRuntime {
 public:
  // thread_multiple: ask for MPI_THREAD_MULTIPLE (else FUNNELED: MPI is called from the main thread only).
  MpiRuntime(int* argc, char*** argv, bool thread_multiple = false);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  // A communicator over a duplicate of MPI_COMM_WORLD (our traffic never mixes with the user's).
  std::unique_ptr<Communicator> world() const;
};

bool mpi_running();  // initialized and not yet finalized

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm` (freed on destruction) when `owned`.
  MpiCommunicator(MPI_Comm comm, bool owned);
  ~MpiCommunicator() override;

  MPI_Comm native() const { return comm_; }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  std::string backend() const override { return "mpi"; }
  std::unique_ptr<Communicator> split(int color, int key) const override;

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
  MPI_Comm comm_;
  bool owned_;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
};

// Prints "error: <message>" (rank-prefixed when several ranks run) and ends the whole job with `code`:
// MPI_Abort when MPI runs with more than one rank, so no other rank is left waiting in a collective. When every rank
// fails within half a second of the others (a bad configuration), only the lowest prints.
[[noreturn]] void abort_job(const std::string& message, int code);

// Runs `body`, turning any escaping exception into one clear line and abort_job (exit 2 for a
// UsageError, 1 otherwise). Returns body's exit code.
int run_guarded(const std::function<int()>& body);

}  // namespace orthoshard
