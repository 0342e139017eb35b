// Distributed optimizer (run at 1-4 ranks): sharded steps equal the single-rank steps (owner scheme
// bitwise; Gram scheme and Conda within 1e-5 relative in f32), zero-row shards, fewer and more matrices
// than ranks, 1 x n and n x 1 matrices, and planner properties.
#include "tests/mpi_test.hpp"

#include "bench/optim_bench.hpp"
#include "optim/distributed/plan.hpp"
#include "optim/distributed/row_exchange.hpp"
#include "runtime/fsdp/row_sharding.hpp"
#include "optim/optimizer.hpp"
#include "runtime/core/error.hpp"

#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <random>

using namespace orthoshard;
using orthoshard::testing::MpiTest;

namespace {

using ParamList = std::vector<std::pair<std::string, Shape>>;

std::vector<float> randn(std::int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

// Runs `steps` steps on full tensors without communication (the reference) and on this rank's shards
// through `comm`; returns the largest relative difference of this rank's rows (max over ranks).
double max_rel_diff(Communicator& comm, const OptimConfig& cfg, const ParamList& ps, int steps, bool* bitwise) {
  Optimizer ref = Optimizer::with_routing(cfg, ps);
  Optimizer dist = Optimizer::with_routing(cfg, ps, DType::F32, &comm);
  std::vector<Tensor> wr, wd;
  for (std::size_t i = 0; i < ps.size(); ++i) {
    auto v = randn(shape_numel(ps[i].second), 17 + static_cast<unsigned>(i));
    Tensor full = Tensor::empty(ps[i].second, DType::F32);
    std::copy(v.begin(), v.end(), full.data<float>());
    wd.push_back(ShardedParameter::from_full(ps[i].first, full, comm.size(), comm.rank()).local);
    wr.push_back(std::move(full));
  }
  for (int s = 0; s < steps; ++s) {
    std::vector<Tensor> gr, gd;
    for (std::size_t i = 0; i < ps.size(); ++i) {
      auto v = randn(shape_numel(ps[i].second), 1000 * (s + 1) + static_cast<unsigned>(i));
      Tensor full = Tensor::empty(ps[i].second, DType::F32);
      std::copy(v.begin(), v.end(), full.data<float>());
      gd.push_back(ShardedParameter::from_full(ps[i].first, full, comm.size(), comm.rank()).local);
      gr.push_back(std::move(full));
    }
    ref.step(wr, gr);
    dist.step(wd, gd);
  }
  double worst = 0;
  bool same = true;
  for (std::size_t i = 0; i < ps.size(); ++i) {
    const RowRange rows = dist.local_rows(i);
    Tensor mine = wr[i].rows(rows.begin, rows.end);
    same &= mine.nbytes() == 0 || std::memcmp(mine.raw(), wd[i].raw(), mine.nbytes()) == 0;
    double num = 0, den = 0;
    for (std::int64_t j = 0; j < mine.numel(); ++j) {
      const double a = mine.data<float>()[j], b = wd[i].data<float>()[j];
      num += (a - b) * (a - b);
      den += a * a;
    }
    worst = std::max(worst, den > 0 ? std::sqrt(num / den) : std::sqrt(num));
  }
  std::int32_t same_all = same ? 1 : 0;
  comm.all_reduce(&same_all, &same_all, 1, DType::I32, ReduceOp::Sum);
  if (bitwise) *bitwise = same_all == comm.size();
  return comm.all_reduce_scalar(worst, ReduceOp::Max);
}

// Many shapes: tall, wide, square, 1 x n, n x 1, fewer rows than ranks (zero-row shards), 3-D, vectors.
const ParamList kMany = {{"h.0.tall", {40, 12}}, {"h.0.wide", {9, 30}},   {"h.0.square", {16, 16}},
                         {"h.0.row", {1, 11}},   {"h.0.col", {13, 1}},    {"h.0.tiny", {2, 7}},
                         {"h.0.conv", {6, 2, 3}}, {"h.0.bias", {10}},     {"h.1.tall", {40, 12}},
                         {"h.1.wide", {9, 30}},  {"h.1.fc", {33, 8}},     {"h.1.proj", {8, 33}}};
const ParamList kOne = {{"h.0.only", {21, 10}}, {"h.0.bias", {21}}};

}  // namespace

TEST_F(MpiTest, OwnerSchemeIsBitwiseEqualToOneRank) {
  for (const char* name : {"muon", "normuon"})
    for (const ParamList* ps : {&kMany, &kOne}) {
      OptimConfig c;
      c.name = name;
      c.weight_decay = 0.01;
      c.ortho_scheme = OrthoScheme::Owner;
      bool bitwise = false;
      const double d = max_rel_diff(comm(), c, *ps, 3, &bitwise);
      EXPECT_TRUE(bitwise) << name << " " << ps->size() << " params, max rel diff " << d;
    }
}

TEST_F(MpiTest, GramSchemeMatchesOneRankWithin1e5) {
  for (const char* name : {"muon", "normuon"})
    for (const ParamList* ps : {&kMany, &kOne}) {
      OptimConfig c;
      c.name = name;
      c.ortho_scheme = OrthoScheme::Gram;
      EXPECT_LT(max_rel_diff(comm(), c, *ps, 3, nullptr), 1e-5) << name;
    }
}

TEST_F(MpiTest, CondaBothSidesMatchOneRankWithin1e5) {
  for (const char* proj : {"std", "reverse_std"})
    for (const ParamList* ps : {&kMany, &kOne}) {
      OptimConfig c;
      c.name = "conda";
      c.lr = 0.01;
      c.update_proj_gap = 2;  // refreshes at steps 1 and 3 within the 4 steps
      c.proj_type = std::string(proj) == "std" ? CondaProjType::Std : CondaProjType::ReverseStd;
      EXPECT_LT(max_rel_diff(comm(), c, *ps, 4, nullptr), 1e-5) << proj;
    }
}

TEST_F(MpiTest, PlanIsBuiltOnceAndCoversEveryMatrix) {
  OptimConfig c;
  c.name = "muon";
  Optimizer o = Optimizer::with_routing(c, kMany, DType::F32, &comm());
  const std::vector<OrthoTask> before = o.plan().tasks;
  EXPECT_EQ(before.size(), 11u);  // every 2+-D weight; the bias takes AdamW
  for (const auto& t : before) {
    EXPECT_GE(t.owner, 0);
    EXPECT_LT(t.owner, comm().size());
    if (t.gram) {
      EXPECT_GE(t.m, t.n);
    }
  }
  std::vector<Tensor> w, g;
  for (std::size_t i = 0; i < kMany.size(); ++i) {
    w.push_back(Tensor::zeros(o.local_shape(i), DType::F32));
    g.push_back(Tensor::zeros(o.local_shape(i), DType::F32));
  }
  o.step(w, g);
  o.step(w, g);
  ASSERT_EQ(o.plan().tasks.size(), before.size());
  for (std::size_t j = 0; j < before.size(); ++j) {
    EXPECT_EQ(o.plan().tasks[j].owner, before[j].owner);
    EXPECT_EQ(o.plan().tasks[j].gram, before[j].gram);
  }
}

// NorMuon's whole-matrix norms from row shards: equal, bit for bit, to the sums of the global rows in order at
// every rank count, matrices with fewer rows than ranks and with none included.
TEST_F(MpiTest, GlobalRowSumsAddInGlobalRowOrder) {
  const std::vector<std::int64_t> rows = {7, 2, 1, 0, 10};
  const int n = comm().size(), me = comm().rank();
  auto value = [](int part, std::size_t matrix, std::int64_t row) {  // values whose sum depends on the order
    return std::ldexp(1.0 + 0.1 * row, static_cast<int>((row * 37 + 11 * matrix + 5 * part) % 60) - 30);
  };
  std::vector<double> mine;
  for (std::size_t j = 0; j < rows.size(); ++j) {
    const RowRange rr = shard_rows(rows[j], n, me);
    for (int p = 0; p < 2; ++p)
      for (std::int64_t i = rr.begin; i < rr.begin + rr.rows(); ++i) mine.push_back(value(p, j, i));
  }
  const auto sums = global_row_sums(mine, rows, 2, &comm());
  ASSERT_EQ(sums.size(), 2u);
  for (int p = 0; p < 2; ++p)
    for (std::size_t j = 0; j < rows.size(); ++j) {
      double expected = 0;
      for (std::int64_t i = 0; i < rows[j]; ++i) expected += value(p, j, i);
      EXPECT_EQ(sums[static_cast<std::size_t>(p)][j], expected) << "part " << p << ", matrix " << j << ", " << n
                                                                << " ranks";
    }
  EXPECT_THROW(global_row_sums(std::vector<double>(mine.size() + 1, 0.0), rows, 2, n, me, nullptr), Error);
}

TEST(Planner, LptBalancesTheGpt2MatrixSet) {
  std::vector<OrthoTask> tasks;
  for (const auto& [name, shape] : gpt2_parameter_shapes(12, 768, 50304, 1024))
    if (shape.size() == 2 && name.rfind("h.", 0) == 0) {
      OrthoTask t;
      t.m = shape[0];
      t.n = shape[1];
      tasks.push_back(t);
    }
  ASSERT_EQ(tasks.size(), 48u);
  for (int n : {2, 3, 4, 8}) {
    OrthoPlan p = make_ortho_plan(tasks, n, OrthoScheme::Owner, 5);
    EXPECT_LE(p.imbalance(), 1.10) << n << " ranks";
    int owned = 0;
    for (const auto& t : p.tasks) owned += t.gram ? 0 : 1;
    EXPECT_EQ(owned, 48);
  }
  OrthoPlan g = make_ortho_plan(tasks, 4, OrthoScheme::Gram, 5);
  for (const auto& t : g.tasks) EXPECT_EQ(t.gram, t.m >= t.n);
  OrthoPlan one = make_ortho_plan(tasks, 1, OrthoScheme::Gram, 5);
  for (const auto& t : one.tasks) EXPECT_FALSE(t.gram);  // nothing to shard on one rank
}

// The GPU's regrouping: every owner's same-shape matrices travel (and are orthogonalized) together, a batch
// never mixes shapes for one owner, the element cap splits groups, and owners and balance do not change.
TEST(Planner, GroupsEachOwnersSameShapeMatrices) {
  std::vector<OrthoTask> tasks;
  for (const auto& [name, shape] : gpt2_parameter_shapes(12, 768, 50304, 1024))
    if (shape.size() == 2 && name.rfind("h.", 0) == 0) {
      OrthoTask t;
      t.param = tasks.size();
      t.m = shape[0];
      t.n = shape[1];
      tasks.push_back(t);
    }
  ASSERT_EQ(tasks.size(), 48u);  // 4 shapes, 12 of each
  for (int n : {1, 2, 3, 4, 8}) {
    for (const std::int64_t cap : {std::int64_t(1) << 40, std::int64_t(5) * 768 * 3072}) {
      const OrthoPlan lpt = make_ortho_plan(tasks, n, OrthoScheme::Owner, 5);
      OrthoPlan p = lpt;
      group_batches_by_shape(p, cap);
      ASSERT_EQ(p.tasks.size(), lpt.tasks.size());
      EXPECT_EQ(p.rank_flops, lpt.rank_flops);
      std::map<std::pair<int, int>, std::pair<std::int64_t, std::int64_t>> shape_of;  // (owner, batch) -> shape
      std::map<std::pair<int, int>, std::int64_t> elements;
      std::vector<std::set<std::pair<std::int64_t, std::int64_t>>> shapes(static_cast<std::size_t>(n));
      std::vector<int> batches(static_cast<std::size_t>(n), 0);
      for (std::size_t j = 0; j < p.tasks.size(); ++j) {
        const OrthoTask& t = p.tasks[j];
        EXPECT_EQ(t.owner, lpt.tasks[j].owner);
        ASSERT_GE(t.batch, 0);
        ASSERT_LT(t.batch, p.batches);
        const auto key = std::make_pair(t.owner, t.batch);
        const auto shape = std::make_pair(t.m, t.n);
        auto [it, fresh] = shape_of.emplace(key, shape);
        EXPECT_EQ(it->second, shape) << n << " ranks: a batch mixes shapes on rank " << t.owner;
        elements[key] += t.m * t.n;
        shapes[static_cast<std::size_t>(t.owner)].insert(shape);
        batches[static_cast<std::size_t>(t.owner)] = std::max(batches[static_cast<std::size_t>(t.owner)], t.batch + 1);
      }
      for (const auto& [key, e] : elements) EXPECT_LE(e, cap) << n << " ranks, batch " << key.second;
      for (int r = 0; r < n; ++r) {
        // Without a cap, one batch per shape the rank owns; with room for 5 matrices, ceil(owned / 5) per shape.
        if (cap > (std::int64_t(1) << 39)) {
          EXPECT_EQ(batches[static_cast<std::size_t>(r)], static_cast<int>(shapes[static_cast<std::size_t>(r)].size()))
              << n << " ranks, rank " << r;
        }
      }
      if (n == 1) {  // 12 of each shape, floor(cap / size) to a batch
        int expected = 0;
        for (const std::int64_t size : {std::int64_t(2304) * 768, std::int64_t(768) * 768, std::int64_t(3072) * 768,
                                        std::int64_t(768) * 3072}) {
          const std::int64_t per = std::min<std::int64_t>(12, cap / size);
          expected += static_cast<int>((12 + per - 1) / per);
        }
        EXPECT_EQ(p.batches, expected);  // 4 without a cap; 2 + 1 + 3 + 3 with room for 5 fc matrices
      }
    }
  }
}

TEST(RowSharding, CeilSplitWithEmptyTrailingRanks) {
  EXPECT_EQ(shard_rows(10, 4, 0).rows(), 3);
  EXPECT_EQ(shard_rows(10, 4, 3).rows(), 1);
  EXPECT_EQ(shard_rows(2, 4, 2).rows(), 0);
  EXPECT_EQ(shard_rows(2, 4, 3).begin, 2);
  std::int64_t total = 0;
  for (int r = 0; r < 3; ++r) total += shard_rows(7, 3, r).rows();
  EXPECT_EQ(total, 7);
}
