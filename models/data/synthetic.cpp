// The synthetic language: transitions seeded from the seed, a de Bruijn cycle through every context so the
// chain is irreducible, a self-loop at context (0, 0) so it is aperiodic, then π by power iteration.
#include "models/data/synthetic.hpp"

#include "models/random.hpp"
#include "runtime/core/error.hpp"

#include <algorithm>
#include <cmath>
#include <functional>

namespace orthoshard {

namespace {

constexpr char kSymbols[] = " abcdefghijklmnopqrstuvw";
static_assert(sizeof(kSymbols) - 1 == SyntheticLanguage::kAlphabet);

// de Bruijn sequence B(k, 2) by the FKM (Lyndon word) construction: every ordered pair of the k symbols
// appears exactly once as adjacent symbols of the cyclic sequence (length k²).
std::vector<int> de_bruijn_pairs(int k) {
  const int n = 2;
  std::vector<int> a(static_cast<std::size_t>(k * n + 1), 0), seq;
  std::function<void(int, int)> gen = [&](int t, int p) {
    if (t > n) {
      if (n % p == 0)
        for (int i = 1; i <= p; ++i) seq.push_back(a[static_cast<std::size_t>(i)]);
      return;
    }
    a[static_cast<std::size_t>(t)] = a[static_cast<std::size_t>(t - p)];
    gen(t + 1, p);
    for (int j = a[static_cast<std::size_t>(t - p)] + 1; j < k; ++j) {
      a[static_cast<std::size_t>(t)] = j;
      gen(t + 1, t);
    }
  };
  gen(1, 1);
  return seq;
}

}  // namespace

SyntheticLanguage::SyntheticLanguage(std::uint64_t seed) : seed_(seed) {
  constexpr int A = kAlphabet, K = kSuccessors, S = A * A;
  next_.assign(static_cast<std::size_t>(S * K), 0);
  prob_.assign(static_cast<std::size_t>(S * K), 0.0);
  const std::vector<int> db = de_bruijn_pairs(A);
  OS_CHECK(static_cast<int>(db.size()) == S, "synthetic language: de Bruijn sequence of length {}", db.size());
  std::vector<int> cycle_next(S);
  for (int i = 0; i < S; ++i) cycle_next[db[i] * A + db[(i + 1) % S]] = db[(i + 2) % S];

  rng::Stream r(rng::key(seed, rng::hash_name("synthetic-transitions")));
  for (int c = 0; c < S; ++c) {
    std::vector<int> succ{cycle_next[c]};
    if (c == 0 && cycle_next[c] != 0) succ.push_back(0);  // self-loop of context (0, 0): aperiodic
    while (static_cast<int>(succ.size()) < K) {
      const int s = static_cast<int>(r.below(A));
      if (std::find(succ.begin(), succ.end(), s) == succ.end()) succ.push_back(s);
    }
    double total = 0;
    for (int j = 0; j < K; ++j) {
      const double w = -std::log(r.uniform());  // Dirichlet(1, ..., 1) after normalisation
      prob_[c * K + j] = w;
      total += w;
      next_[c * K + j] = static_cast<std::int8_t>(succ[j]);
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
  return fmt::format("order-2 Markov source over {} symbols (space, a-w), {} contexts x {} successors, seed {}: "
                     "entropy rate {:.6f} nats/token ({:.4f} bits), the loss floor of a perfect model",
                     kAlphabet, kAlphabet * kAlphabet, kSuccessors, seed_, entropy_rate_, entropy_rate_ / std::log(2.0));
}

}  // namespace orthoshard
