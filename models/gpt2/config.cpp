// Gpt2Config checks and sizes.
#include "models/gpt2/config.hpp"

#include "runtime/core/error.hpp"

namespace orthoshard {

std::int64_t Gpt2Config::num_parameters() const {
  return Vp * C + maxT * C + L * (12 * C * C + 13 * C) + 2 * C;
}

std::string Gpt2Config::describe() const {
  return fmt::format("L={} C={} NH={} V={} Vp={} maxT={}", L, C, NH, V, Vp, maxT);
}

void Gpt2Config::validate() const {
  const std::string where = origin.empty() ? "GPT-2 config" : "'" + origin + "'";
  if (L <= 0 || C <= 0 || NH <= 0 || V <= 0 || Vp <= 0 || maxT <= 0)
    throw UsageError(fmt::format("{}: every size must be positive ({})", where, describe()));
  if (C % NH != 0)
    throw UsageError(fmt::format("{}: C = {} is not divisible by NH = {}", where, C, NH));
  if (Vp < V) throw UsageError(fmt::format("{}: padded vocabulary Vp = {} is smaller than V = {}", where, Vp, V));
}

void Gpt2Config::check_sequence_length(std::int64_t T) const {
  if (T <= 0) throw UsageError(fmt::format("sequence length T = {} must be positive", T));
  if (T > maxT)
    throw UsageError(fmt::format("sequence length T = {} exceeds the model's context maxT = {}{}", T, maxT,
                                 origin.empty() ? "" : " (from '" + origin + "')"));
}

}  // namespace orthoshard
