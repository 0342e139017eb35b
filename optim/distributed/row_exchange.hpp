// Owner exchange: an all_to_all (variable counts) brings every rank's row shards of a batch of matrices to their
// owner ranks, and a second one returns the owner's result rows. Non-blocking, so the next batch can move while
// the current one computes. One rank: the matrices are copied straight between the caller's buffers.
//
// One template for both backends, over where its buffers live and how rows are copied (`Memory`): HostRows<T>
// (std::vector, memcpy) here, and the device's (buffers from a caching allocator on a stream, device copies) in
// optim/cuda/device_optimizer.cpp. Packing layout: the block for peer p holds, in item order, the rows of the
// items that p owns (gather) or that this rank owns (return); blocks are packed in rank order as all_to_all_v
// expects.
#pragma once

#include "runtime/comm/communicator.hpp"
#include "runtime/core/error.hpp"
#include "runtime/fsdp/row_sharding.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
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
// The same over a communicator (null: one rank).
std::vector<std::vector<double>> global_row_sums(const std::vector<double>& mine,
                                                 const std::vector<std::int64_t>& matrix_rows, int parts,
                                                 Communicator* comm);

struct ExchangeItem {
  std::int64_t m = 0, n = 0;  // global rows and elements per row
  int owner = 0;
};

// Host memory for the exchange: vectors and memcpy.
template <typename T>
struct HostRows {
  using Buffer = std::vector<T>;
  Buffer make(std::size_t count) const { return Buffer(count); }
  static T* data(Buffer& b) { return b.data(); }
  void copy(T* dst, const T* src, std::int64_t count) const {
    if (count > 0) std::memcpy(dst, src, static_cast<std::size_t>(count) * sizeof(T));
  }
};

template <typename T, typename Memory = HostRows<T>>
class RowExchange {
 public:
  // comm may be null (one rank).
  RowExchange(Communicator* comm, std::vector<ExchangeItem> items, Memory memory = {})
      : comm_(comm), items_(std::move(items)), mem_(std::move(memory)) {
    if (comm_) {
      rank_ = comm_->rank();
      nranks_ = comm_->size();
    }
    to_owner_.assign(static_cast<std::size_t>(nranks_), 0);
    from_ranks_.assign(static_cast<std::size_t>(nranks_), 0);
    for (std::size_t i = 0; i < items_.size(); ++i) {
      OS_CHECK(items_[i].owner >= 0 && items_[i].owner < nranks_, "exchange item {} owned by rank {} of {}", i,
               items_[i].owner, nranks_);
      to_owner_[static_cast<std::size_t>(items_[i].owner)] += static_cast<std::size_t>(rows(i, rank_) * items_[i].n);
      if (items_[i].owner == rank_)
        for (int s = 0; s < nranks_; ++s)
          from_ranks_[static_cast<std::size_t>(s)] += static_cast<std::size_t>(rows(i, s) * items_[i].n);
    }
    if (single()) return;
    mine_ = mem_.make(total(to_owner_));
    owned_ = mem_.make(total(from_ranks_));
  }

  // Packs this rank's rows of every item (local[i]: rows of item i, may be null for zero rows) and starts
  // moving them to the owners.
  void start_gather(const std::vector<const T*>& local) {
    OS_CHECK(local.size() == items_.size(), "exchange: {} buffers for {} items", local.size(), items_.size());
    if (single()) {
      source_ = local;
      return;
    }
    T* out = Memory::data(mine_);
    for (int d = 0; d < nranks_; ++d)
      for (std::size_t i = 0; i < items_.size(); ++i)
        if (items_[i].owner == d) {
          const std::int64_t cnt = rows(i, rank_) * items_[i].n;
          mem_.copy(out, local[i], cnt);
          out += cnt;
        }
    move(mine_, to_owner_, owned_, from_ranks_);
  }
  // Completes the gather: full[i] (m x n) is filled for every item this rank owns (others ignored).
  void finish_gather(const std::vector<T*>& full) {
    if (single()) {
      for (std::size_t i = 0; i < items_.size(); ++i) mem_.copy(full[i], source_[i], items_[i].m * items_[i].n);
      return;
    }
    pending_.wait();
    const T* in = Memory::data(owned_);
    for (int s = 0; s < nranks_; ++s)
      for (std::size_t i = 0; i < items_.size(); ++i)
        if (items_[i].owner == rank_) {
          const std::int64_t cnt = rows(i, s) * items_[i].n;
          mem_.copy(full[i] + begin(i, s) * items_[i].n, in, cnt);
          in += cnt;
        }
  }
  // Starts sending the owner's full[i] rows back to the ranks that hold them.
  void start_return(const std::vector<const T*>& full) {
    if (single()) {
      source_ = full;
      return;
    }
    T* out = Memory::data(owned_);
    for (int s = 0; s < nranks_; ++s)
      for (std::size_t i = 0; i < items_.size(); ++i)
        if (items_[i].owner == rank_) {
          const std::int64_t cnt = rows(i, s) * items_[i].n;
          mem_.copy(out, full[i] + begin(i, s) * items_[i].n, cnt);
          out += cnt;
        }
    move(owned_, from_ranks_, mine_, to_owner_);
  }
  // Completes the return into local[i] (this rank's rows of item i).
  void finish_return(const std::vector<T*>& local) {
    if (single()) {
      for (std::size_t i = 0; i < items_.size(); ++i) mem_.copy(local[i], source_[i], items_[i].m * items_[i].n);
      return;
    }
    pending_.wait();
    const T* in = Memory::data(mine_);
    for (int d = 0; d < nranks_; ++d)
      for (std::size_t i = 0; i < items_.size(); ++i)
        if (items_[i].owner == d) {
          const std::int64_t cnt = rows(i, rank_) * items_[i].n;
          mem_.copy(local[i], in, cnt);
          in += cnt;
        }
  }

  std::uint64_t bytes_sent() const { return bytes_sent_; }
  std::uint64_t bytes_received() const { return bytes_received_; }
  const std::vector<ExchangeItem>& items() const { return items_; }
  int rank() const { return rank_; }

 private:
  bool single() const { return nranks_ == 1; }
  static std::size_t total(const std::vector<std::size_t>& v) {
    std::size_t s = 0;
    for (auto x : v) s += x;
    return s;
  }
  std::int64_t rows(std::size_t item, int r) const { return shard_rows(items_[item].m, nranks_, r).rows(); }
  std::int64_t begin(std::size_t item, int r) const { return shard_rows(items_[item].m, nranks_, r).begin; }
  void move(typename Memory::Buffer& send, const std::vector<std::size_t>& send_counts,
            typename Memory::Buffer& recv, const std::vector<std::size_t>& recv_counts) {
    const auto me = static_cast<std::size_t>(rank_);
    bytes_sent_ += (total(send_counts) - send_counts[me]) * sizeof(T);
    bytes_received_ += (total(recv_counts) - recv_counts[me]) * sizeof(T);
    pending_ = comm_->all_to_all_v_async(Memory::data(send), send_counts, Memory::data(recv), recv_counts,
                                         dtype_of<T>());
  }

  Communicator* comm_;
  std::vector<ExchangeItem> items_;
  Memory mem_;
  int rank_ = 0, nranks_ = 1;
  std::vector<std::size_t> to_owner_, from_ranks_;  // elements per peer, gather direction
  typename Memory::Buffer mine_, owned_;            // this rank's rows (packed by owner); the owner's rows
  std::vector<const T*> source_;                    // one rank: what start_gather / start_return were given
  Request pending_;                                 // declared last: destroyed (waited) before the buffers
  std::uint64_t bytes_sent_ = 0, bytes_received_ = 0;
};

extern template class RowExchange<float>;
extern template class RowExchange<double>;

}  // namespace orthoshard
