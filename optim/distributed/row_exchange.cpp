// Packing layout: the block for peer p holds, in item order, the rows of the items that p owns (gather)
// or that this rank owns (return); blocks are packed in rank order as all_to_all_v expects.
#include "optim/distributed/row_exchange.hpp"

#include "runtime/fsdp/row_sharding.hpp"
#include "runtime/core/error.hpp"

#include <algorithm>
#include <cstring>

namespace orthoshard {

std::vector<std::vector<double>> global_row_sums(const std::vector<double>& mine,
                                                 const std::vector<std::int64_t>& matrix_rows, int parts, int nranks,
                                                 int rank, const GatherDoubles& gather) {
  OS_CHECK(parts >= 1 && nranks >= 1 && rank >= 0 && rank < nranks, "global_row_sums: {} parts, rank {} of {}",
           parts, rank, nranks);
  std::vector<std::size_t> counts(static_cast<std::size_t>(nranks), 0);
  for (int r = 0; r < nranks; ++r)
    for (const std::int64_t m : matrix_rows)
      counts[static_cast<std::size_t>(r)] += static_cast<std::size_t>(parts * shard_rows(m, nranks, r).rows());
  OS_CHECK(mine.size() == counts[static_cast<std::size_t>(rank)],
           "global_row_sums: rank {} gives {} values, its rows need {}", rank, mine.size(),
           counts[static_cast<std::size_t>(rank)]);
  std::vector<double> gathered;
  const std::vector<double>* all = &mine;
  if (nranks > 1) {
    std::size_t total = 0;
    for (auto x : counts) total += x;
    gathered.resize(total);
    gather(mine.data(), mine.size(), gathered.data(), counts);
    all = &gathered;
  }
  // Rank by rank is global row order: rank r holds the rows after those of ranks < r.
  std::vector<std::vector<double>> sums(static_cast<std::size_t>(parts), std::vector<double>(matrix_rows.size(), 0.0));
  std::size_t pos = 0;
  for (int r = 0; r < nranks; ++r)
    for (std::size_t j = 0; j < matrix_rows.size(); ++j) {
      const auto rows = static_cast<std::size_t>(shard_rows(matrix_rows[j], nranks, r).rows());
      for (int p = 0; p < parts; ++p)
        for (std::size_t i = 0; i < rows; ++i) sums[static_cast<std::size_t>(p)][j] += (*all)[pos + p * rows + i];
      pos += static_cast<std::size_t>(parts) * rows;
    }
  return sums;
}

template <typename T>
RowExchange<T>::RowExchange(Communicator* comm, std::vector<ExchangeItem> items)
    : comm_(comm), items_(std::move(items)) {
  if (comm_) {
    rank_ = comm_->rank();
    nranks_ = comm_->size();
  }
  to_owner_counts_.assign(static_cast<std::size_t>(nranks_), 0);
  from_ranks_counts_.assign(static_cast<std::size_t>(nranks_), 0);
  for (std::size_t i = 0; i < items_.size(); ++i) {
    OS_CHECK(items_[i].owner >= 0 && items_[i].owner < nranks_, "exchange item {} owned by rank {} of {}", i,
             items_[i].owner, nranks_);
    to_owner_counts_[static_cast<std::size_t>(items_[i].owner)] +=
        static_cast<std::size_t>(rows_of(i, rank_) * items_[i].n);
    if (items_[i].owner == rank_)
      for (int s = 0; s < nranks_; ++s)
        from_ranks_counts_[static_cast<std::size_t>(s)] += static_cast<std::size_t>(rows_of(i, s) * items_[i].n);
  }
}

template <typename T> std::int64_t RowExchange<T>::rows_of(std::size_t item, int rank) const {
  return shard_rows(items_[item].m, nranks_, rank).rows();
}
template <typename T> std::int64_t RowExchange<T>::begin_of(std::size_t item, int rank) const {
  return shard_rows(items_[item].m, nranks_, rank).begin;
}

static std::size_t total(const std::vector<std::size_t>& v) {
  std::size_t s = 0;
  for (auto x : v) s += x;
  return s;
}

template <typename T> void RowExchange<T>::start_gather(const std::vector<const T*>& local) {
  OS_CHECK(local.size() == items_.size(), "exchange: {} buffers for {} items", local.size(), items_.size());
  send_.resize(total(to_owner_counts_));
  recv_.resize(total(from_ranks_counts_));
  T* out = send_.data();
  for (int d = 0; d < nranks_; ++d)
    for (std::size_t i = 0; i < items_.size(); ++i)
      if (items_[i].owner == d) {
        const std::int64_t cnt = rows_of(i, rank_) * items_[i].n;
        if (cnt) std::memcpy(out, local[i], static_cast<std::size_t>(cnt) * sizeof(T));
        out += cnt;
      }
  bytes_sent_ += (send_.size() - to_owner_counts_[static_cast<std::size_t>(rank_)]) * sizeof(T);
  bytes_received_ += (recv_.size() - from_ranks_counts_[static_cast<std::size_t>(rank_)]) * sizeof(T);
  if (comm_ && nranks_ > 1)
    pending_ = comm_->all_to_all_v_async(send_.data(), to_owner_counts_, recv_.data(), from_ranks_counts_,
                                         dtype_of<T>());
  else
    recv_.swap(send_);
}

template <typename T> void RowExchange<T>::finish_gather(const std::vector<T*>& full) {
  pending_.wait();
  const T* in = recv_.data();
  for (int s = 0; s < nranks_; ++s)
    for (std::size_t i = 0; i < items_.size(); ++i)
      if (items_[i].owner == rank_) {
        const std::int64_t cnt = rows_of(i, s) * items_[i].n;
        if (cnt) std::memcpy(full[i] + begin_of(i, s) * items_[i].n, in, static_cast<std::size_t>(cnt) * sizeof(T));
        in += cnt;
      }
}

template <typename T> void RowExchange<T>::start_return(const std::vector<const T*>& full) {
  send_.resize(total(from_ranks_counts_));
  recv_.resize(total(to_owner_counts_));
  T* out = send_.data();
  for (int s = 0; s < nranks_; ++s)
    for (std::size_t i = 0; i < items_.size(); ++i)
      if (items_[i].owner == rank_) {
        const std::int64_t cnt = rows_of(i, s) * items_[i].n;
        if (cnt) std::memcpy(out, full[i] + begin_of(i, s) * items_[i].n, static_cast<std::size_t>(cnt) * sizeof(T));
        out += cnt;
      }
  bytes_sent_ += (send_.size() - from_ranks_counts_[static_cast<std::size_t>(rank_)]) * sizeof(T);
  bytes_received_ += (recv_.size() - to_owner_counts_[static_cast<std::size_t>(rank_)]) * sizeof(T);
  if (comm_ && nranks_ > 1)
    pending_ = comm_->all_to_all_v_async(send_.data(), from_ranks_counts_, recv_.data(), to_owner_counts_,
                                         dtype_of<T>());
  else
    recv_.swap(send_);
}

template <typename T> void RowExchange<T>::finish_return(const std::vector<T*>& local) {
  pending_.wait();
  const T* in = recv_.data();
  for (int d = 0; d < nranks_; ++d)
    for (std::size_t i = 0; i < items_.size(); ++i)
      if (items_[i].owner == d) {
        const std::int64_t cnt = rows_of(i, rank_) * items_[i].n;
        if (cnt) std::memcpy(local[i], in, static_cast<std::size_t>(cnt) * sizeof(T));
        in += cnt;
      }
}

template class RowExchange<float>;
template class RowExchange<double>;

}  // namespace orthoshard
