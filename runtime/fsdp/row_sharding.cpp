// Row-range arithmetic of the sharding and shard extraction.
#include "runtime/fsdp/row_sharding.hpp"

#include "runtime/core/error.hpp"

#include <algorithm>
#include <cstring>

namespace orthoshard {

RowRange shard_rows(std::int64_t m, int nranks, int rank) {
  OS_CHECK(nranks > 0 && rank >= 0 && rank < nranks, "shard_rows: rank {} of {}", rank, nranks);
  const std::int64_t per = (m + nranks - 1) / nranks;
  return {std::min(m, rank * per), std::min(m, (rank + 1) * per)};
}

Shape shard_shape(const Shape& global, int nranks, int rank) {
  OS_CHECK(!global.empty(), "a 0-d tensor cannot be row-sharded");
  Shape s = global;
  s[0] = shard_rows(global[0], nranks, rank).rows();
  return s;
}

std::int64_t ShardedParameter::row_elems() const {
  return global_shape[0] == 0 ? 0 : shape_numel(global_shape) / global_shape[0];
}

ShardedParameter ShardedParameter::from_full(std::string name, const Tensor& full, int nranks, int rank) {
  ShardedParameter p;
  p.name = std::move(name);
  p.global_shape = full.shape();
  p.rows = shard_rows(full.dim(0), nranks, rank);
  p.local = full.rows(p.rows.begin, p.rows.end).clone();
  return p;
}

}  // namespace orthoshard
