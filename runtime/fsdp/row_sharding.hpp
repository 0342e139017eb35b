// Row sharding (FSDP2 style): rank r of N holds rows [r·⌈m/N⌉, min(m, (r+1)·⌈m/N⌉)) of every
// parameter, gradient and optimizer state; trailing ranks may hold none. ShardedParameter pairs a
// parameter's global shape with this rank's rows.
#pragma once

#include "runtime/core/tensor.hpp"

#include <cstdint>
#include <string>

namespace orthoshard {

struct RowRange {
  std::int64_t begin = 0, end = 0;
  std::int64_t rows() const { return end - begin; }
};

// Rows of rank `rank` among `nranks` for a dimension of `m` rows.
RowRange shard_rows(std::int64_t m, int nranks, int rank);
// The shard's shape: global shape with dim 0 replaced by the rank's row count.
Shape shard_shape(const Shape& global, int nranks, int rank);

struct ShardedParameter {
  std::string name;
  Shape global_shape;
  RowRange rows;  // this rank's rows of dim 0
  Tensor local;   // (rows.rows(), global_shape[1:]...)

  // Copies this rank's rows out of a full tensor.
  static ShardedParameter from_full(std::string name, const Tensor& full, int nranks, int rank);
  std::int64_t row_elems() const;  // elements per row (product of dims after the first)
};

}  // namespace orthoshard
