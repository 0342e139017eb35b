// Row hash: four independent multiply-rotate lanes over 8-byte words (little-endian loads), the tail
// folded in, a splitmix64-style finalizer; the row index and length key the start state.
#include "runtime/checkpoint/row_checksum.hpp"

#include <cstring>

namespace orthoshard {
namespace {

constexpr std::uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr std::uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr std::uint64_t kP3 = 0x165667B19E3779F9ull;

inline std::uint64_t rotl(std::uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

inline std::uint64_t load64(const unsigned char* p) {
  std::uint64_t w;
  std::memcpy(&w, p, 8);
  return w;
}

inline std::uint64_t lane(std::uint64_t acc, std::uint64_t w) { return rotl(acc + w * kP2, 31) * kP1; }

inline std::uint64_t finalize(std::uint64_t h) {
  h ^= h >> 30;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 27;
  h *= 0x94D049BB133111EBull;
  h ^= h >> 31;
  return h;
}

}  // namespace

std::uint64_t row_hash(const void* data, std::size_t bytes, std::uint64_t row) {
  const auto* p = static_cast<const unsigned char*>(data);
  const std::uint64_t seed = finalize(row * kP3 + 0x6A09E667F3BCC909ull);
  std::uint64_t a = seed + kP1 + kP2, b = seed + kP2, c = seed, d = seed - kP1;
  std::size_t i = 0;
  for (; i + 32 <= bytes; i += 32) {
    a = lane(a, load64(p + i));
    b = lane(b, load64(p + i + 8));
    c = lane(c, load64(p + i + 16));
    d = lane(d, load64(p + i + 24));
  }
  std::uint64_t h = rotl(a, 1) + rotl(b, 7) + rotl(c, 12) + rotl(d, 18);
  h = (h ^ static_cast<std::uint64_t>(bytes)) * kP1;
  for (; i + 8 <= bytes; i += 8) h = rotl(h ^ lane(0, load64(p + i)), 27) * kP1 + kP3;
  if (i < bytes) {
    unsigned char tail[8] = {};
    std::memcpy(tail, p + i, bytes - i);
    h = rotl(h ^ lane(0, load64(tail)), 27) * kP1 + kP3;
  }
  return finalize(h ^ seed);
}

void RowChecksum::add_rows(const void* data, std::int64_t first_row, std::int64_t rows, std::size_t row_bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::uint64_t h = row_hash(p + static_cast<std::size_t>(r) * row_bytes, row_bytes,
                                     static_cast<std::uint64_t>(first_row + r));
    lo += static_cast<std::int64_t>(h & 0xFFFFFFFFull);
    hi += static_cast<std::int64_t>(h >> 32);
  }
}

std::uint64_t RowChecksum::value() const {
  return static_cast<std::uint64_t>(lo) + (static_cast<std::uint64_t>(hi) << 32);
}

}  // namespace orthoshard
