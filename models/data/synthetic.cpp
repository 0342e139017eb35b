// The synthetic language. Successor sets depend on the previous symbol b only: a sparse random graph over
// the symbols with the ring edge b -> b+1 (irreducible) and 0 -> 0 (aperiodic). The probabilities over
// those successors depend on both previous symbols (a, b), Dirichlet(1) per context. So a bigram model
// gets part of the way (the sparse graph) and the rest needs the token two back (attention). The chain
// over contexts moves along the graph's edges (its line graph), which is again irreducible and
// aperiodic, so π is unique; contexts that are not edges are transient and get π = 0.
#include "models/data/synthetic.hpp"

#include "models/random.hpp"
#include "runtime/core/error.hpp"

#include <algorithm>
#include <cmath>

namespace orthoshard {

namespace {
constexpr char kSymbols[] = " abcdefghijklmnopqrstuvw";
static_assert(sizeof(kSymbols) - 1 == SyntheticLanguage::kAlphabet);
}  // namespace

SyntheticLanguage::SyntheticLanguage(std::uint64_t seed) : seed_(seed) {
  constexpr int A = kAlphabet, K = kSuccessors, S = A * A;
  next_.assign(static_cast<std::size_t>(S * K), 0);
  prob_.assign(static_cast<std::size_t>(S * K), 0.0);
  rng::Stream r(rng::key(seed, rng::hash_name("synthetic-transitions")));
  std::vector<int> succ(static_cast<std::size_t>(A * K));  // (symbol, K) successor sets
  for (int b = 0; b < A; ++b) {
    std::vector<int> sb{(b + 1) % A};
    if (b == 0) sb.push_back(0);
    while (static_cast<int>(sb.size()) < K) {
      const int c = static_cast<int>(r.below(A));
      if (std::find(sb.begin(), sb.end(), c) == sb.end()) sb.push_back(c);
    }
    std::copy(sb.begin(), sb.end(), succ.begin() + b * K);
  }
  for (int c = 0; c < S; ++c) {
    const int b = c % A;
    double total = 0;
    for (int j = 0; j < K; ++j) {
      const double w = -std::log(r.uniform());  // Dirichlet(1, ..., 1) after normalisation
      prob_[c * K + j] = w;
      total += w;
      next_[c * K + j] = static_cast<std::int8_t>(succ[b * K + j]);
    }
    for (int j = 0; j < K; ++j) prob_[c * K + j] /= total;
  }

  // Stationary distribution over contexts: context (a, b) emits c and becomes (b, c).
  pi_.assign(S, 1.0 / S);
  std::vector<double> nxt(S);
  double diff = 1;
  int it = 0;
  for (; it < 1000000 && diff > 1e-15; ++it) {
    std::fill(nxt.begin(), nxt.end(), 0.0);
    for (int c = 0; c < S; ++c)
      for (int j = 0; j < K; ++j) nxt[(c % A) * A + next_[c * K + j]] += pi_[c] * prob_[c * K + j];
    diff = 0;
    for (int c = 0; c < S; ++c) diff += std::abs(nxt[c] - pi_[c]);
    pi_.swap(nxt);
  }
  OS_CHECK(diff <= 1e-12, "synthetic language: stationary distribution did not converge ({} after {} steps)", diff,
           it);
  entropy_rate_ = 0;
  for (int c = 0; c < S; ++c)
    for (int j = 0; j < K; ++j) {
      const double p = prob_[c * K + j];
      if (p > 0) entropy_rate_ -= pi_[c] * p * std::log(p);
    }
}

double SyntheticLanguage::probability(int a, int b, int next) const {
  const int c = a * kAlphabet + b;
  double p = 0;
  for (int j = 0; j < kSuccessors; ++j)
    if (next_[c * kSuccessors + j] == next) p += prob_[c * kSuccessors + j];
  return p;
}

std::vector<std::uint16_t> SyntheticLanguage::sample(std::int64_t n, std::uint64_t stream) const {
  constexpr int A = kAlphabet, K = kSuccessors;
  std::vector<std::uint16_t> out;
  out.reserve(static_cast<std::size_t>(std::max<std::int64_t>(n, 0)));
  rng::Stream r(rng::key(seed_, rng::hash_name("synthetic-sample") ^ rng::mix64(stream)));
  // First context from π, so the whole sample is stationary.
  double u = r.uniform(), acc = 0;
  int c = static_cast<int>(pi_.size()) - 1;
  for (int i = 0; i < static_cast<int>(pi_.size()); ++i) {
    acc += pi_[i];
    if (u < acc) {
      c = i;
      break;
    }
  }
  if (n > 0) out.push_back(static_cast<std::uint16_t>(kSymbols[c / A]));
  if (n > 1) out.push_back(static_cast<std::uint16_t>(kSymbols[c % A]));
  while (static_cast<std::int64_t>(out.size()) < n) {
    u = r.uniform();
    int j = K - 1;
    acc = 0;
    for (int k = 0; k < K; ++k) {
      acc += prob_[c * K + k];
      if (u < acc) {
        j = k;
        break;
      }
    }
    const int s = next_[c * K + j];
    out.push_back(static_cast<std::uint16_t>(kSymbols[s]));
    c = (c % A) * A + s;
  }
  return out;
}

std::string SyntheticLanguage::describe() const {
  return fmt::format("order-2 Markov source over {} symbols (space, a-w), {} successors per symbol, seed {}: "
                     "entropy rate {:.6f} nats/token ({:.4f} bits), the loss floor of a perfect model",
                     kAlphabet, kSuccessors, seed_, entropy_rate_, entropy_rate_ / std::log(2.0));
}

}  // namespace orthoshard
