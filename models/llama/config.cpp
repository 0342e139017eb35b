// LlamaConfig checks and sizes.
#include "models/llama/config.hpp"

#include "runtime/core/error.hpp"

#include <cmath>

namespace orthoshard {

std::int64_t LlamaConfig::num_parameters() const {
  const std::int64_t block = 2 * C + C * qkv_width() + C * C + 3 * C * FF;
  return Vp * C * (tie_embeddings ? 1 : 2) + L * block + C;
}

std::string LlamaConfig::describe() const {
  return fmt::format("L={} C={} NH={} NKV={} FF={} V={} Vp={} maxT={} {}", L, C, NH, NKV, FF, V, Vp, maxT,
                     tie_embeddings ? "tied" : "untied");
}

void LlamaConfig::validate() const {
  const std::string where = origin.empty() ? "LLaMA config" : "'" + origin + "'";
  const std::pair<const char*, std::int64_t> sizes[] = {{"L", L},   {"C", C}, {"NH", NH},     {"NKV", NKV},
                                                        {"FF", FF}, {"V", V}, {"Vp", Vp}, {"maxT", maxT}};
  for (const auto& [name, v] : sizes)
    if (v <= 0) throw UsageError(fmt::format("{}: {} = {} must be positive", where, name, v));
  // Far beyond any real model; keeps products of sizes (and allocations) well inside 64 bits.
  constexpr std::int64_t kMax = std::int64_t{1} << 24;
  for (const auto& [name, v] : sizes)
    if (v > kMax) throw UsageError(fmt::format("{}: {} = {} is absurdly large (limit {})", where, name, v, kMax));
  if (C % NH != 0) throw UsageError(fmt::format("{}: C = {} is not divisible by NH = {}", where, C, NH));
  if ((C / NH) % 2 != 0)
    throw UsageError(fmt::format("{}: the head size C/NH = {} is odd; the rotary embedding needs it even", where,
                                 C / NH));
  if (NH % NKV != 0)
    throw UsageError(fmt::format("{}: NH = {} is not divisible by NKV = {} (key/value heads)", where, NH, NKV));
  if (Vp < V) throw UsageError(fmt::format("{}: padded vocabulary Vp = {} is smaller than V = {}", where, Vp, V));
  if (!(norm_eps > 0.0) || !std::isfinite(norm_eps))
    throw UsageError(fmt::format("{}: norm_eps = {} must be a positive number", where, norm_eps));
  if (!(rope_theta > 0.0) || !std::isfinite(rope_theta))
    throw UsageError(fmt::format("{}: rope_theta = {} must be a positive number", where, rope_theta));
}

void LlamaConfig::check_sequence_length(std::int64_t T) const {
  if (T <= 0) throw UsageError(fmt::format("sequence length T = {} must be positive", T));
  if (T > maxT)
    throw UsageError(fmt::format("sequence length T = {} exceeds the model's context maxT = {}{}", T, maxT,
                                 origin.empty() ? "" : " (from '" + origin + "')"));
}

std::int64_t llama_default_ff(std::int64_t C) {
  const std::int64_t h = (8 * C) / 3;
  return (h + 255) / 256 * 256;
}

}  // namespace orthoshard
