// Rotary position embeddings in Hugging Face's rotate_half convention: for a head vector x of size hs (even)
// at position t, with inv_freq_i = theta^(−2i/hs) and angle a_i = t · inv_freq_i (i < hs/2),
//   x'[i]        = x[i] · cos a_i − x[i + hs/2] · sin a_i
//   x'[i + hs/2] = x[i + hs/2] · cos a_i + x[i] · sin a_i.
#pragma once

#include <cstdint>
#include <vector>

namespace orthoshard::ops {

// cos and sin of every (position, frequency) angle for positions [0, maxT): (maxT, hs/2) each, computed in
// float64 and rounded to T once.
template <typename T>
struct RopeTable {
  std::int64_t maxT = 0, half = 0;
  std::vector<T> cos, sin;
  RopeTable() = default;
  RopeTable(std::int64_t maxT, std::int64_t hs, double theta);
};

// Rotates `heads` heads of size hs in place, for rows (B, T) of x whose row stride is `stride` elements (the
// heads start at x); row t is at position pos0 + t. inverse = true rotates by −a: the backward (the rotation is
// orthogonal).
template <typename T>
void rope_apply(T* x, const RopeTable<T>& table, std::int64_t B, std::int64_t Tn, std::int64_t stride,
                std::int64_t heads, std::int64_t hs, bool inverse, std::int64_t pos0 = 0);

}  // namespace orthoshard::ops
