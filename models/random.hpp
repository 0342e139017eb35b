// Deterministic, platform-independent random numbers for models and data (initialization, shuffling,
// synthetic corpora): splitmix64 counters, so a value depends only on (key, index), never on thread order.
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>

namespace orthoshard::rng {

// One round of splitmix64: a bijective 64-bit mix with good avalanche.
inline std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// FNV-1a of a name, so per-tensor streams are keyed by name (independent of storage order).
inline std::uint64_t hash_name(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

inline std::uint64_t key(std::uint64_t seed, std::uint64_t stream) { return mix64(mix64(seed) ^ stream); }

// Standard normal at counter i of stream k (Box-Muller on two counter-based uniforms).
inline double normal_at(std::uint64_t k, std::uint64_t i) {
  const double u1 = (static_cast<double>(mix64(k ^ mix64(2 * i)) >> 11) + 0.5) * 0x1.0p-53;
  const double u2 = (static_cast<double>(mix64(k ^ mix64(2 * i + 1)) >> 11) + 0.5) * 0x1.0p-53;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// A sequential generator (for shuffles and sampling): state advances by one counter per draw.
class Stream {
 public:
  explicit Stream(std::uint64_t k) : key_(k) {}
  std::uint64_t next() { return mix64(key_ ^ mix64(counter_++)); }
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * 0x1.0p-53; }  // (0, 1)
  // Uniform integer in [0, n), n > 0 (Lemire's multiply-shift with rejection: unbiased).
  std::uint64_t below(std::uint64_t n) {
    for (;;) {
      const unsigned __int128 m = static_cast<unsigned __int128>(next()) * n;
      const auto lo = static_cast<std::uint64_t>(m);
      if (lo >= (0 - n) % n) return static_cast<std::uint64_t>(m >> 64);
    }
  }
  std::uint64_t counter() const { return counter_; }

 private:
  std::uint64_t key_;
  std::uint64_t counter_ = 0;
};

}  // namespace orthoshard::rng
