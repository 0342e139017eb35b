// FSDP engine at 1-4 ranks: gather gives back the full parameters (uneven and empty shards included),
// reduce_grads is the mean over ranks into each rank's rows, hybrid sharding adds the replica mean,
// bf16 transport stays within bf16 rounding, the clipped norm is the global norm, and shards are ~1/N.
#include "tests/mpi_test.hpp"

#include "runtime/core/error.hpp"
#include "runtime/fsdp/fsdp_engine.hpp"

#include <cmath>
#include <cstring>
#include <random>

using namespace orthoshard;
using orthoshard::testing::MpiTest;

namespace {

std::vector<FsdpUnitSpec> units() {
  return {{"emb", {{"wte", {13, 4}}, {"wpe", {2, 4}}}},
          {"h.0", {{"h.0.w", {9, 5}}, {"h.0.b", {9}}, {"h.0.conv", {3, 2, 2}}}},
          {"head", {{"lnf.weight", {4}}}}};
}

Tensor value(const Shape& s, unsigned seed, float scale = 1.0f) {
  Tensor t = Tensor::empty(s, DType::F32);
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(rng);
  return t;
}

}  // namespace

TEST_F(MpiTest, GatherReturnsTheFullParameters) {
  for (DType pd : {DType::F32, DType::BF16}) {
    FsdpEngine e(units(), comm(), nullptr, {pd, DType::F32});
    std::map<std::string, Tensor> full;
    unsigned seed = 1;
    for (std::size_t u = 0; u < e.num_units(); ++u)
      for (const auto& p : e.unit_spec(u).params) {
        full[p.name] = value(p.shape, seed++);
        e.load_full(p.name, full[p.name]);
      }
    e.prefetch(1);
    for (std::size_t u = 0; u < e.num_units(); ++u) {
      e.gather(u);
      for (const auto& p : e.unit_spec(u).params) {
        Tensor got = e.full(p.name);
        ASSERT_EQ(got.shape(), p.shape);
        for (std::int64_t i = 0; i < got.numel(); ++i) {
          const float want = pd == DType::F32 ? full[p.name].data<float>()[i]
                                              : bf16_to_float(float_to_bf16(full[p.name].data<float>()[i]));
          ASSERT_EQ(got.data<float>()[i], want) << p.name << " element " << i;
        }
      }
      e.release(u);
      EXPECT_FALSE(e.gathered(u));
    }
    EXPECT_THROW(e.full("wte"), Error);  // released
  }
}

TEST_F(MpiTest, ReduceGradsIsTheMeanOverRanksIntoEachShard) {
  const int n = comm().size(), r = comm().rank();
  for (DType rd : {DType::F32, DType::BF16}) {
    FsdpEngine e(units(), comm(), nullptr, {DType::F32, rd});
    e.zero_grads();
    for (std::size_t u = 0; u < e.num_units(); ++u)
      for (const auto& p : e.unit_spec(u).params) {
        Tensor g = e.full_grad(p.name);
        for (std::int64_t i = 0; i < g.numel(); ++i) g.data<float>()[i] = static_cast<float>((r + 1) * (i + 1));
      }
    for (std::size_t u = e.num_units(); u-- > 0;) e.reduce_grads(u);
    e.finish_reductions();
    for (std::size_t u = 0; u < e.num_units(); ++u)
      for (const auto& p : e.unit_spec(u).params) {
        Tensor s = e.grad_shard(p.name);
        const RowRange rows = e.rows(p.name);
        const std::int64_t per_row = p.shape[0] ? shape_numel(p.shape) / p.shape[0] : 0;
        ASSERT_EQ(s.numel(), rows.rows() * per_row);
        for (std::int64_t i = 0; i < s.numel(); ++i) {
          const double idx = static_cast<double>(rows.begin * per_row + i + 1);
          const double want = idx * (n + 1) / 2.0;  // mean of (q+1)·idx over ranks q
          ASSERT_NEAR(s.data<float>()[i], want, rd == DType::F32 ? 1e-5 * want : 1.6e-2 * want) << p.name;
        }
      }
  }
}

TEST_F(MpiTest, HybridShardingAddsTheReplicaMean) {
  const int n = comm().size(), r = comm().rank();
  if (n % 2 != 0) return;  // hybrid:2 needs an even job
  auto shard = comm().split(r / 2, r);
  auto replica = comm().split(r % 2, r);
  FsdpEngine e(units(), *shard, replica.get());
  e.zero_grads();
  Tensor g = e.full_grad("h.0.w");
  for (std::int64_t i = 0; i < g.numel(); ++i) g.data<float>()[i] = static_cast<float>(r);
  for (std::size_t u = 0; u < e.num_units(); ++u) e.reduce_grads(u);
  e.finish_reductions();
  Tensor s = e.grad_shard("h.0.w");
  for (std::int64_t i = 0; i < s.numel(); ++i) ASSERT_FLOAT_EQ(s.data<float>()[i], (n - 1) / 2.0f);
}

TEST_F(MpiTest, ClipUsesTheGlobalNormAndShardsAreAboutOneNth) {
  const int n = comm().size();
  FsdpEngine e(units(), comm(), nullptr);
  e.zero_grads();
  double ss = 0;
  unsigned seed = 7;
  for (std::size_t u = 0; u < e.num_units(); ++u)
    for (const auto& p : e.unit_spec(u).params) {
      Tensor v = value(p.shape, seed++);  // the same on every rank, so the mean is v
      Tensor g = e.full_grad(p.name);
      std::copy(v.data<float>(), v.data<float>() + v.numel(), g.data<float>());
      for (std::int64_t i = 0; i < v.numel(); ++i) ss += double(v.data<float>()[i]) * v.data<float>()[i];
    }
  for (std::size_t u = 0; u < e.num_units(); ++u) e.reduce_grads(u);
  e.finish_reductions();
  const double norm = e.clip_grad_norm(0.5);
  EXPECT_NEAR(norm, std::sqrt(ss), 1e-5 * std::sqrt(ss));
  EXPECT_NEAR(e.clip_grad_norm(0), 0.5, 1e-5);  // after clipping
  const FsdpMemory m = e.memory();
  const double full_bytes = 4.0 * (13 * 4 + 2 * 4 + 9 * 5 + 9 + 12 + 4);
  EXPECT_LE(static_cast<double>(m.param_shards), full_bytes / n + 4.0 * 3 * 5 * 2);  // padding: < 1 row/param
  EXPECT_EQ(static_cast<double>(m.grad_accumulation), full_bytes);
}

// Full-size gradients exist only for the units in flight: backward in reverse order with the tied embedding open
// from the head's backward to its own, each unit reduced right after its backward. Two micro-batches reduced
// one by one add up in the shards to what one reduction of their sum gives (multiples of N: every mean is exact).
TEST_F(MpiTest, GradientBuffersAreTransientAndMicroBatchesAddUp) {
  const int n = comm().size(), r = comm().rank();
  auto fill = [&](FsdpEngine& e, std::size_t u, int micro) {
    for (const auto& p : e.unit_spec(u).params) {
      Tensor g = e.full_grad(p.name);
      for (std::int64_t i = 0; i < g.numel(); ++i)
        g.data<float>()[i] += static_cast<float>(n * (r + 1) * ((i + micro) % 7 + 1));
    }
  };
  std::uint64_t unit_bytes_max = 0, emb_bytes = 0, total = 0;
  FsdpEngine per_micro(units(), comm(), nullptr), once(units(), comm(), nullptr);
  for (std::size_t u = 0; u < per_micro.num_units(); ++u) {
    std::uint64_t b = 0;
    for (const auto& p : per_micro.unit_spec(u).params) b += 4 * static_cast<std::uint64_t>(shape_numel(p.shape));
    unit_bytes_max = std::max(unit_bytes_max, b);
    if (u == 0) emb_bytes = b;
    total += b;
  }
  per_micro.zero_grads();
  once.zero_grads();
  for (int micro = 0; micro < 2; ++micro) {
    for (std::size_t u = per_micro.num_units(); u-- > 0;) {
      per_micro.open_grads(u);
      if (u + 1 == per_micro.num_units()) per_micro.open_grads(0);  // the head writes into the tied embedding
      fill(per_micro, u, micro);
      per_micro.reduce_grads(u, micro == 1);
      fill(once, u, micro);
      if (micro == 1) once.reduce_grads(u);
    }
  }
  per_micro.finish_reductions();
  once.finish_reductions();
  for (std::size_t u = 0; u < once.num_units(); ++u)
    for (const auto& p : once.unit_spec(u).params) {
      const Tensor a = per_micro.grad_shard(p.name), b = once.grad_shard(p.name);
      ASSERT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << p.name;
    }
  // One unit plus the tied embedding at most, against all of them kept for the step.
  EXPECT_LE(per_micro.memory().grad_accumulation, unit_bytes_max + emb_bytes);
  EXPECT_EQ(once.memory().grad_accumulation, total);
  EXPECT_LE(static_cast<double>(per_micro.memory().grad_shards), static_cast<double>(total) / n + 4.0 * 3 * 5 * 2);
}
