// `builtin:synthetic`: a deterministic synthetic language (an order-2 Markov source over a small alphabet of
// bytes: a sparse successor graph, probabilities set by the two previous symbols) whose entropy rate, the
// loss floor of a perfect model, is computed exactly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace orthoshard {

class SyntheticLanguage {
 public:
  static constexpr std::uint64_t kDefaultSeed = 20240520;
  static constexpr int kAlphabet = 24;    // symbols: space and 23 letters
  static constexpr int kSuccessors = 4;   // possible next symbols after a symbol

  explicit SyntheticLanguage(std::uint64_t seed = kDefaultSeed);

  // Entropy rate in nats per token: Σ_context π(context) · H(next | context), π the stationary distribution.
  double entropy_rate() const { return entropy_rate_; }
  // n byte tokens of the stationary process (the first context drawn from π); stream selects an independent
  // sample (0 = training text, 1 = validation text).
  std::vector<std::uint16_t> sample(std::int64_t n, std::uint64_t stream) const;
  std::string describe() const;  // one line with the alphabet, contexts and the entropy rate

  // Transition probability of `next` after (a, b), symbols as alphabet indices (tests).
  double probability(int a, int b, int next) const;
  const std::vector<double>& stationary() const { return pi_; }  // over contexts a·kAlphabet + b

 private:
  std::uint64_t seed_;
  std::vector<std::int8_t> next_;   // (contexts, kSuccessors) symbol indices
  std::vector<double> prob_;        // (contexts, kSuccessors)
  std::vector<double> pi_;          // (contexts)
  double entropy_rate_ = 0;
};

}  // namespace orthoshard
