// NorMuon's global row sums, and the host instantiations of the owner exchange (row_exchange.hpp).
#include "optim/distributed/row_exchange.hpp"

#include "runtime/fsdp/row_sharding.hpp"
#include "runtime/core/error.hpp"

#include <algorithm>

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

std::vector<std::vector<double>> global_row_sums(const std::vector<double>& mine,
                                                 const std::vector<std::int64_t>& matrix_rows, int parts,
                                                 Communicator* comm) {
  return global_row_sums(mine, matrix_rows, parts, comm ? comm->size() : 1, comm ? comm->rank() : 0,
                         [comm](const double* send, std::size_t count, double* recv,
                                const std::vector<std::size_t>& counts) {
                           comm->all_gather_v(send, count, recv, counts, DType::F64);
                         });
}

template class RowExchange<float>;
template class RowExchange<double>;

}  // namespace orthoshard
