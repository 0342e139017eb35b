// Sampling (see sampling.hpp).
#include "models/sampling.hpp"

#include "models/random.hpp"
#include "runtime/core/error.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

namespace orthoshard {

std::vector<std::int32_t> prompt_tokens(const std::string& prompt, std::int64_t V) {
  std::vector<std::int32_t> out;
  if (prompt.empty()) {
    out.push_back(V == 256 ? '\n' : V == 50257 ? 50256 : 0);
    return out;
  }
  if (V == 256) {
    for (unsigned char c : prompt) out.push_back(c);
    return out;
  }
  std::istringstream in(prompt);
  std::string word;
  while (in >> word) {
    std::int64_t id = -1;
    try {
      std::size_t used = 0;
      id = std::stoll(word, &used);
      if (used != word.size()) id = -1;
    } catch (const std::exception&) {
    }
    if (id < 0 || id >= V)
      throw UsageError(fmt::format("sample --prompt: '{}' is not a token id in [0, {}) (a model with V = {} takes "
                                   "space-separated token ids)", word, V, V));
    out.push_back(static_cast<std::int32_t>(id));
  }
  return out;
}

std::vector<std::int32_t> sample_tokens(TokenGenerator& gen, std::int64_t V, const std::vector<std::int32_t>& prompt,
                                        std::int64_t n, const SamplingOptions& opt) {
  OS_CHECK(!prompt.empty(), "sample: empty prompt");
  const float* logits = nullptr;
  for (std::int32_t t : prompt) logits = gen.step(t);
  rng::Stream r(rng::key(opt.seed, rng::hash_name("sample")));
  std::vector<std::int32_t> out;
  std::vector<std::int32_t> order(static_cast<std::size_t>(V));
  std::vector<double> p(static_cast<std::size_t>(V));
  for (std::int64_t i = 0; i < n; ++i) {
    std::iota(order.begin(), order.end(), 0);
    std::int32_t next = 0;
    if (opt.temperature <= 0) {
      next = static_cast<std::int32_t>(std::max_element(logits, logits + V) - logits);  // greedy: the first maximum
    } else {
      std::size_t k = opt.top_k > 0 && opt.top_k < V ? static_cast<std::size_t>(opt.top_k) : order.size();
      // The k most likely tokens, ties by id, in a fixed order: the draw depends only on the seed.
      std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                        [&](std::int32_t a, std::int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
      const double mx = logits[order[0]];
      double sum = 0;
      for (std::size_t j = 0; j < k; ++j) sum += (p[j] = std::exp((logits[order[j]] - mx) / opt.temperature));
      double u = r.uniform() * sum;
      next = order[k - 1];
      for (std::size_t j = 0; j < k; ++j) {
        u -= p[j];
        if (u <= 0) {
          next = order[j];
          break;
        }
      }
    }
    out.push_back(next);
    if (i + 1 < n) logits = gen.step(next);
  }
  return out;
}

std::string bytes_to_utf8(const std::vector<std::int32_t>& bytes) {
  std::string out;
  const std::size_t n = bytes.size();
  for (std::size_t i = 0; i < n;) {
    const auto b = static_cast<unsigned char>(bytes[i]);
    const std::size_t len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
    bool ok = len > 0 && i + len <= n;
    for (std::size_t j = 1; ok && j < len; ++j) ok = (static_cast<unsigned char>(bytes[i + j]) >> 6) == 0x2;
    if (ok && len == 2) ok = b >= 0xC2;  // no overlong encodings
    if (!ok) {
      out += "\xEF\xBF\xBD";
      ++i;
      continue;
    }
    for (std::size_t j = 0; j < len; ++j) out.push_back(static_cast<char>(bytes[i + j]));
    i += len;
  }
  return out;
}

std::string sample_text(const std::string& prompt, const std::vector<std::int32_t>& prompt_ids,
                        const std::vector<std::int32_t>& out, std::int64_t V) {
  if (V == 256) return prompt + bytes_to_utf8(out);
  std::string s;
  for (std::size_t i = 0; i < prompt_ids.size(); ++i) s += (i ? " " : "") + std::to_string(prompt_ids[i]);
  s += " |";
  for (std::int32_t t : out) s += " " + std::to_string(t);
  return s;
}

}  // namespace orthoshard
