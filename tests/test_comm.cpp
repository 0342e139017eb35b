// Multi-rank communicator tests (run by ctest at 1, 2, 3 and 4 ranks): every collective against a
// reference computed locally from every rank's deterministic contribution.
#include "tests/mpi_test.hpp"

#include "runtime/core/error.hpp"

#include <chrono>
#include <cmath>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

using namespace orthoshard;
using orthoshard::testing::MpiTest;

namespace {

// Element i of rank r's contribution: distinct per rank and index, exact in f32.
float value(int r, std::size_t i) { return static_cast<float>((r + 1) * 1000 + static_cast<int>(i % 997)) * 0.25f; }

// A size every rank agrees on, drawn from a seeded generator.
std::size_t shared_random_size(std::mt19937& rng, std::size_t max) {
  return std::uniform_int_distribution<std::size_t>(0, max)(rng);
}

}  // namespace

TEST_F(MpiTest, RankSizeAndLocalRank) {
  const int n = comm().size(), r = comm().rank();
  EXPECT_GE(r, 0);
  EXPECT_LT(r, n);
  EXPECT_GE(comm().local_rank(), 0);
  EXPECT_LT(comm().local_rank(), comm().local_size());
  // Local ranks of one node are 0..local_size-1: their sum over the node is fixed.
  std::int64_t lr = comm().local_rank(), sum = 0;
  comm().all_reduce(&lr, &sum, 1, DType::I64, ReduceOp::Sum);
  if (comm().local_size() == n) {
    EXPECT_EQ(sum, static_cast<std::int64_t>(n) * (n - 1) / 2);
  }
}

TEST_F(MpiTest, AllReduceSumMeanMaxAllDtypesRandomSizes) {
  const int n = comm().size(), r = comm().rank();
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 6; ++trial) {
    const std::size_t count = shared_random_size(rng, 5000);
    std::vector<float> f(count), fo(count);
    std::vector<double> d(count), dout(count);
    std::vector<std::int32_t> i32(count), i32o(count);
    std::vector<std::int64_t> i64(count), i64o(count);
    for (std::size_t i = 0; i < count; ++i) {
      f[i] = value(r, i);
      d[i] = value(r, i) / 3.0;
      i32[i] = static_cast<std::int32_t>(i) * (r + 1) - 7;
      i64[i] = static_cast<std::int64_t>(i) * 3000000000LL * (r + 1);
    }
    comm().all_reduce(f.data(), fo.data(), count, DType::F32, ReduceOp::Sum);
    comm().all_reduce(d.data(), dout.data(), count, DType::F64, ReduceOp::Mean);
    comm().all_reduce(i32.data(), i32o.data(), count, DType::I32, ReduceOp::Max);
    comm().all_reduce(i64.data(), i64.data(), count, DType::I64, ReduceOp::Sum);  // in place
    for (std::size_t i = 0; i < count; ++i) {
      double fsum = 0, dsum = 0;
      for (int q = 0; q < n; ++q) {
        fsum += value(q, i);
        dsum += value(q, i) / 3.0;
      }
      ASSERT_EQ(fo[i], static_cast<float>(fsum)) << "f32 sum, element " << i;
      ASSERT_NEAR(dout[i], dsum / n, 1e-12 * std::abs(dsum)) << "f64 mean, element " << i;
      ASSERT_EQ(i32o[i], static_cast<std::int32_t>(i) * n - 7) << "i32 max, element " << i;
      ASSERT_EQ(i64[i], static_cast<std::int64_t>(i) * 3000000000LL * n * (n + 1) / 2) << "i64 sum";
    }
  }
}

TEST_F(MpiTest, Bf16SumsAgainstFloat64Reference) {
  const int n = comm().size(), r = comm().rank();
  const std::size_t count = 4099;
  std::mt19937 gen(99);
  std::uniform_real_distribution<float> u(0.5f, 2.0f);
  // Every rank draws all ranks' values so it can form the f64 reference of the exact bf16 inputs.
  std::vector<std::vector<bf16>> all(static_cast<std::size_t>(n), std::vector<bf16>(count));
  for (auto& row : all)
    for (auto& x : row) x = float_to_bf16(u(gen));
  std::vector<bf16> out(count), mean(count), mx(count);
  comm().all_reduce(all[r].data(), out.data(), count, DType::BF16, ReduceOp::Sum);
  comm().all_reduce(all[r].data(), mean.data(), count, DType::BF16, ReduceOp::Mean);
  comm().all_reduce(all[r].data(), mx.data(), count, DType::BF16, ReduceOp::Max);
  // Positive terms: each of the <= n-1 pairwise fp32 additions rounds once to bf16 (rel. error <= 2^-9).
  const double tol = std::max(1, n - 1) * std::ldexp(1.0, -8);
  for (std::size_t i = 0; i < count; ++i) {
    double ref = 0, ref_max = 0;
    for (int q = 0; q < n; ++q) {
      ref += bf16_to_float(all[q][i]);
      ref_max = std::max<double>(ref_max, bf16_to_float(all[q][i]));
    }
    ASSERT_NEAR(bf16_to_float(out[i]), ref, tol * ref) << "element " << i;
    ASSERT_NEAR(bf16_to_float(mean[i]), ref / n, (tol + std::ldexp(1.0, -8)) * ref / n) << "element " << i;
    ASSERT_EQ(bf16_to_float(mx[i]), ref_max) << "element " << i;
  }
}

TEST_F(MpiTest, AllGatherEqualAndUnevenWithEmptyContributions) {
  const int n = comm().size(), r = comm().rank();
  std::vector<float> mine(37);
  for (std::size_t i = 0; i < mine.size(); ++i) mine[i] = value(r, i);
  std::vector<float> out(37 * static_cast<std::size_t>(n));
  comm().all_gather(mine.data(), out.data(), mine.size(), DType::F32);
  for (int q = 0; q < n; ++q)
    for (std::size_t i = 0; i < 37; ++i) ASSERT_EQ(out[q * 37 + i], value(q, i));

  // Uneven row shards as FSDP makes them: ceil(m/n) rows each, the last ranks possibly empty.
  for (std::size_t m : {std::size_t{0}, std::size_t{1}, std::size_t{5}, std::size_t{7}, std::size_t{1001}}) {
    const std::size_t per = (m + n - 1) / n, cols = 3;
    std::vector<std::size_t> counts(static_cast<std::size_t>(n));
    for (int q = 0; q < n; ++q) {
      std::size_t lo = std::min(m, q * per), hi = std::min(m, (q + 1) * per);
      counts[q] = (hi - lo) * cols;
    }
    std::vector<double> shard(counts[r]);
    std::size_t base = std::min(m, r * per) * cols;
    for (std::size_t i = 0; i < shard.size(); ++i) shard[i] = static_cast<double>(base + i);
    std::vector<double> full(m * cols, -1);
    comm().all_gather_v(shard.data(), shard.size(), full.data(), counts, DType::F64);
    for (std::size_t i = 0; i < full.size(); ++i) ASSERT_EQ(full[i], static_cast<double>(i)) << "m=" << m;
  }
  // A wrong send count is refused with a message, on the rank that made it (checked before any MPI call).
  std::vector<std::size_t> counts(static_cast<std::size_t>(n), 1);
  float one = 1, sink[8];
  EXPECT_THROW(comm().all_gather_v(&one, 2, sink, counts, DType::F32), Error);
}

TEST_F(MpiTest, ReduceScatterSumAndMean) {
  const int n = comm().size(), r = comm().rank();
  for (std::size_t per : {std::size_t{0}, std::size_t{1}, std::size_t{33}, std::size_t{10000}}) {
    std::vector<float> full(per * n);
    for (std::size_t i = 0; i < full.size(); ++i) full[i] = value(r, i);
    std::vector<float> sum(per), mean(per);
    comm().reduce_scatter(full.data(), sum.data(), per, DType::F32, ReduceOp::Sum);
    comm().reduce_scatter(full.data(), mean.data(), per, DType::F32, ReduceOp::Mean);
    for (std::size_t i = 0; i < per; ++i) {
      double ref = 0;
      for (int q = 0; q < n; ++q) ref += value(q, r * per + i);
      ASSERT_EQ(sum[i], static_cast<float>(ref));
      ASSERT_NEAR(mean[i], ref / n, 1e-6 * ref);
    }
  }
  // Tensor overload checks shapes.
  Tensor full = Tensor::zeros({static_cast<std::int64_t>(4 * n)}, DType::F32);
  Tensor bad = Tensor::zeros({3}, DType::F32);
  EXPECT_THROW(comm().reduce_scatter(full, bad, ReduceOp::Sum), Error);
}

TEST_F(MpiTest, AllToAllEqualAndVariable) {
  const int n = comm().size(), r = comm().rank();
  std::vector<std::int32_t> send(5 * n), recv(5 * n);
  for (int j = 0; j < n; ++j)
    for (int c = 0; c < 5; ++c) send[j * 5 + c] = 10000 * r + 100 * j + c;
  comm().all_to_all(send.data(), recv.data(), 5, DType::I32);
  for (int j = 0; j < n; ++j)
    for (int c = 0; c < 5; ++c) ASSERT_EQ(recv[j * 5 + c], 10000 * j + 100 * r + c);

  // Variable: rank r sends (r + j) % 3 elements to rank j (zero-length blocks included).
  auto cnt = [](int from, int to) { return static_cast<std::size_t>((from + to) % 3); };
  std::vector<std::size_t> sc(n), rc(n);
  std::vector<double> vs, vr;
  for (int j = 0; j < n; ++j) {
    sc[j] = cnt(r, j);
    rc[j] = cnt(j, r);
    for (std::size_t c = 0; c < sc[j]; ++c) vs.push_back(1000.0 * r + 10 * j + c);
  }
  vr.resize(std::accumulate(rc.begin(), rc.end(), std::size_t{0}));
  comm().all_to_all_v(vs.data(), sc, vr.data(), rc, DType::F64);
  std::size_t pos = 0;
  for (int j = 0; j < n; ++j)
    for (std::size_t c = 0; c < rc[j]; ++c) ASSERT_EQ(vr[pos++], 1000.0 * j + 10 * r + c);
}

TEST_F(MpiTest, BroadcastFromEveryRootAndSendRecv) {
  const int n = comm().size(), r = comm().rank();
  for (int root = 0; root < n; ++root) {
    std::vector<std::uint8_t> buf(300, r == root ? static_cast<std::uint8_t>(root + 1) : 0);
    comm().broadcast(buf.data(), buf.size(), DType::U8, root);
    for (auto b : buf) ASSERT_EQ(b, root + 1);
  }
  if (n < 2) return;
  // Ring: blocking send after a posted receive, then the reverse direction with both sides non-blocking.
  std::vector<float> out(100, static_cast<float>(r)), in(100, -1);
  Request rq = comm().recv_async(in.data(), in.size(), DType::F32, (r + n - 1) % n, 3);
  comm().send(out.data(), out.size(), DType::F32, (r + 1) % n, 3);
  rq.wait();
  for (float x : in) ASSERT_EQ(x, static_cast<float>((r + n - 1) % n));
  Request a = comm().recv_async(in.data(), in.size(), DType::F32, (r + 1) % n, 4);
  Request b = comm().send_async(out.data(), out.size(), DType::F32, (r + n - 1) % n, 4);
  a.wait();
  b.wait();
  for (float x : in) ASSERT_EQ(x, static_cast<float>((r + 1) % n));
}

TEST_F(MpiTest, LargeMessagesOf64MiB) {
  const int n = comm().size(), r = comm().rank();
  const std::size_t count = (64u << 20) / sizeof(float);  // 64 MiB per buffer
  std::vector<float> buf(count);
  for (std::size_t i = 0; i < count; ++i) buf[i] = static_cast<float>(i % 4096) + r;
  comm().all_reduce(buf.data(), buf.data(), count, DType::F32, ReduceOp::Sum);
  const float add = static_cast<float>(n * (n - 1) / 2);
  for (std::size_t i = 0; i < count; i += 4093) ASSERT_EQ(buf[i], static_cast<float>(i % 4096) * n + add);
  ASSERT_EQ(buf[count - 1], static_cast<float>((count - 1) % 4096) * n + add);

  // all_gather whose output is 64 MiB.
  const std::size_t per = count / n;
  std::vector<float> shard(per, static_cast<float>(r)), full(per * n);
  comm().all_gather(shard.data(), full.data(), per, DType::F32);
  for (int q = 0; q < n; ++q) {
    ASSERT_EQ(full[q * per], static_cast<float>(q));
    ASSERT_EQ(full[q * per + per - 1], static_cast<float>(q));
  }
}

TEST_F(MpiTest, SubCommunicatorsForHybridSharding) {
  const int n = comm().size(), r = comm().rank();
  // Shard groups of 2 consecutive ranks, replica groups across them (hybrid:2).
  auto shard = comm().split(r / 2, r);
  auto replica = comm().split(r % 2, r);
  EXPECT_EQ(shard->rank(), r % 2);
  EXPECT_EQ(shard->size(), std::min(2, n - (r / 2) * 2));
  EXPECT_EQ(replica->rank(), r / 2);
  EXPECT_EQ(replica->size(), (n - r % 2 + 1) / 2);
  double v = r;
  double shard_sum = shard->all_reduce_scalar(v, ReduceOp::Sum);
  double expect = 0;
  for (int q = (r / 2) * 2; q < std::min(n, (r / 2) * 2 + 2); ++q) expect += q;
  EXPECT_EQ(shard_sum, expect);
  double rep_max = replica->all_reduce_scalar(v, ReduceOp::Max);
  int last = r % 2;
  while (last + 2 < n) last += 2;
  EXPECT_EQ(rep_max, last);
  // Split of a split still works and reversing the key reverses the order.
  auto rev = shard->split(0, -shard->rank());
  EXPECT_EQ(rev->rank(), shard->size() - 1 - shard->rank());
}

TEST_F(MpiTest, NonBlockingCollectivesCompleteWithPostProcessing) {
  const int n = comm().size(), r = comm().rank();
  const std::size_t per = 2048;
  std::vector<float> red(per * n), red_out(per * n);
  std::vector<float> rs_in(per * n), rs_out(per);
  std::vector<float> ag_in(per), ag_out(per * n);
  for (std::size_t i = 0; i < red.size(); ++i) red[i] = rs_in[i] = value(r, i);
  for (std::size_t i = 0; i < per; ++i) ag_in[i] = value(r, i);
  std::vector<std::size_t> sc(n, 3), rc(n, 3);
  std::vector<std::int64_t> a2a_in(3 * n), a2a_out(3 * n);
  for (int j = 0; j < n; ++j)
    for (int c = 0; c < 3; ++c) a2a_in[j * 3 + c] = r * 100 + j;

  Request q1 = comm().all_reduce_async(red.data(), red_out.data(), red.size(), DType::F32, ReduceOp::Mean);
  Request q2 = comm().reduce_scatter_async(rs_in.data(), rs_out.data(), per, DType::F32, ReduceOp::Mean);
  Request q3 = comm().all_gather_async(ag_in.data(), ag_out.data(), per, DType::F32);
  Request q4;
  {
    // The counts vectors die before completion: the request must own copies.
    std::vector<std::size_t> sct(sc), rct(rc);
    q4 = comm().all_to_all_v_async(a2a_in.data(), sct, a2a_out.data(), rct, DType::I64);
  }
  // Poll while "computing"; everything must finish.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool all_done = false;
  while (!all_done && std::chrono::steady_clock::now() < deadline) {
    all_done = q1.test() & q2.test() & q3.test() & q4.test();
    if (!all_done) std::this_thread::yield();
  }
  ASSERT_TRUE(all_done);
  EXPECT_FALSE(q1.pending());
  for (std::size_t i = 0; i < red.size(); ++i) {
    double ref = 0;
    for (int q = 0; q < n; ++q) ref += value(q, i);
    ASSERT_NEAR(red_out[i], ref / n, 1e-6 * ref) << "mean applied on completion";
  }
  for (std::size_t i = 0; i < per; ++i) {
    double ref = 0;
    for (int q = 0; q < n; ++q) ref += value(q, r * per + i);
    ASSERT_NEAR(rs_out[i], ref / n, 1e-6 * ref);
  }
  for (int q = 0; q < n; ++q) ASSERT_EQ(ag_out[q * per + 5], value(q, 5));
  for (int j = 0; j < n; ++j) ASSERT_EQ(a2a_out[j * 3 + 2], j * 100 + r);

  // A handle that is destroyed without wait() still completes the operation first.
  std::vector<double> x(1000, 1.0);
  { Request q = comm().all_reduce_async(x.data(), x.data(), x.size(), DType::F64, ReduceOp::Sum); }
  EXPECT_EQ(x[999], static_cast<double>(n));
}

TEST_F(MpiTest, InvalidReductionsAreRefusedWithAMessage) {
  std::int32_t v = 1;
  try {
    comm().all_reduce(&v, &v, 1, DType::I32, ReduceOp::Mean);
    ADD_FAILURE() << "mean of integers must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("i32"), std::string::npos) << e.what();
  }
  std::vector<std::size_t> wrong(static_cast<std::size_t>(comm().size()) + 1, 0);
  EXPECT_THROW(comm().all_to_all_v(nullptr, wrong, nullptr, wrong, DType::F32), Error);
}
