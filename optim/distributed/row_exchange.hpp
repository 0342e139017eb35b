// Owner exchange: an all_to_all (variable counts) brings every rank's row shards of a batch of
// matrices to their owner ranks, and a second one returns the owner's result rows. Non-blocking, so
// the next batch can move while the current one computes. One rank: plain copies, no communication.
#pragma once

#include "runtime/comm/communicator.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace orthoshard {

// Whole-matrix sums over row shards, added in global row order so that they do not depend on the rank count
// (NorMuon's two Frobenius norms per matrix; CPU and GPU optimizers). `mine` holds, for each matrix in order,
// this rank's `parts` runs of per-row values (each run this rank's rows of the matrix long); `gather` is an
// all_gather_v of doubles over the group (not called on one rank). Returns sums[part][matrix].
using GatherDoubles = std::function<void(const double* send, std::size_t count, double* recv,
                                         const std::vector<std::size_t>& counts)>;
std::vector<std::vector<double>> global_row_sums(const std::vector<double>& mine,
                                                 const std::vector<std::int64_t>& matrix_rows, int parts, int nranks,
                                                 int rank, const GatherDoubles& gather);
// The same over a communicator (Communicator or DeviceCommunicator; null: one rank).
template <typename Comm>
std::vector<std::vector<double>> global_row_sums(const std::vector<double>& mine,
                                                 const std::vector<std::int64_t>& matrix_rows, int parts, Comm* comm) {
  return global_row_sums(mine, matrix_rows, parts, comm ? comm->size() : 1, comm ? comm->rank() : 0,
                         [comm](const double* send, std::size_t count, double* recv,
                                const std::vector<std::size_t>& counts) {
                           comm->all_gather_v(send, count, recv, counts, DType::F64);
                         });
}

struct ExchangeItem {
  std::int64_t m = 0, n = 0;  // global rows and elements per row
  int owner = 0;
};

template <typename T>
class RowExchange {
 public:
  // comm may be null (one rank).
  RowExchange(Communicator* comm, std::vector<ExchangeItem> items);

  // Packs this rank's rows of every item (local[i]: rows of item i, may be null for zero rows) and
  // starts moving them to the owners.
  void start_gather(const std::vector<const T*>& local);
  // Completes the gather: full[i] (m x n) is filled for every item this rank owns (others ignored).
  void finish_gather(const std::vector<T*>& full);
  // Starts sending the owner's full[i] rows back to the ranks that hold them.
  void start_return(const std::vector<const T*>& full);
  // Completes the return into local[i] (this rank's rows of item i).
  void finish_return(const std::vector<T*>& local);

  std::uint64_t bytes_sent() const { return bytes_sent_; }
  std::uint64_t bytes_received() const { return bytes_received_; }
  const std::vector<ExchangeItem>& items() const { return items_; }
  int rank() const { return rank_; }

 private:
  std::int64_t rows_of(std::size_t item, int rank) const;
  std::int64_t begin_of(std::size_t item, int rank) const;
  Communicator* comm_;
  std::vector<ExchangeItem> items_;
  int rank_ = 0, nranks_ = 1;
  std::vector<std::size_t> to_owner_counts_, from_ranks_counts_;  // elements per peer (gather direction)
  std::vector<T> send_, recv_;
  Request pending_;
  std::uint64_t bytes_sent_ = 0, bytes_received_ = 0;
};

extern template class RowExchange<float>;
extern template class RowExchange<double>;

}  // namespace orthoshard
