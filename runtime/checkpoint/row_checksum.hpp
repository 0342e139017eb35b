// Checksums of row-sharded tensors that do not depend on how the rows are split across ranks:
// each row (slice along dim 0; a 0-d tensor is one row) is hashed with its global row index, and a
// dataset's checksum is the sum of its row hashes modulo 2^64. Ranks add their rows' hashes in two
// 32-bit halves (exact in i64, whatever the rank count), one all-reduce gives every dataset's sum.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace orthoshard {

inline constexpr std::string_view kRowChecksumAlgorithm = "rowhash64-sum";

// 64-bit hash of `bytes` bytes keyed by the global row index (not cryptographic; detects corruption).
std::uint64_t row_hash(const void* data, std::size_t bytes, std::uint64_t row);

// Partial checksum of some rows of one dataset, in the two halves an i64 sum can carry exactly.
struct RowChecksum {
  std::int64_t lo = 0;  // sum of the low 32 bits of the row hashes
  std::int64_t hi = 0;  // sum of the high 32 bits

  // Adds rows [first_row, first_row + rows) stored contiguously at `data`, `row_bytes` bytes each.
  void add_rows(const void* data, std::int64_t first_row, std::int64_t rows, std::size_t row_bytes);
  // The checksum of everything added (sum of row hashes modulo 2^64).
  std::uint64_t value() const;
};

}  // namespace orthoshard
