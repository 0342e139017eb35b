// Communicators on device buffers (NCCL, and MPI through host staging), at 1-4 ranks: every collective against
// values computed from every rank's deterministic contribution, ordering against a compute stream, host
// buffers, a ring of non-blocking send/recv, and split. Skips where no GPU is visible, and NCCL skips where
// ranks share a GPU (NCCL refuses that; the staged path is the one that serves it).
#include "tests/mpi_test.hpp"

#include "runtime/comm/device_comm.hpp"
#include "runtime/core/error.hpp"
#include "runtime/cuda/device.hpp"
#include "runtime/cuda/device_buffer.hpp"

#include <cmath>
#include <numeric>
#include <string>
#include <vector>

using namespace orthoshard;
using orthoshard::testing::MpiTest;

namespace {

float value(int r, std::size_t i) { return static_cast<float>((r + 1) * 100 + static_cast<int>(i % 61)) * 0.5f; }

template <typename T>
cuda::DeviceBuffer<T> upload(const std::vector<T>& h) {
  cuda::DeviceBuffer<T> d(h.size());
  d.copy_from_host(h, nullptr);
  OS_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  return d;
}

template <typename T>
std::vector<T> download(const cuda::DeviceBuffer<T>& d, cudaStream_t s = nullptr) {
  return d.to_host(s);
}

class DeviceComm : public MpiTest, public ::testing::WithParamInterface<DeviceCommKind> {
 protected:
  void SetUp() override {
    // make_device_communicator fails on every rank together when any rank has no GPU (a rank skipping alone
    // would leave the others in its collectives).
    try {
      dc_ = make_device_communicator(dynamic_cast<MpiCommunicator&>(comm()), GetParam(), DeviceCommOptions{60.0});
    } catch (const UsageError& e) {
      // Only a missing GPU (here or on another rank) or a build without NCCL is a reason to skip; any other
      // refusal (a bad device index, ...) is a failure.
      const std::string why = e.what();
      if (why.find("no CUDA device") != std::string::npos || why.find("no usable CUDA device") != std::string::npos)
        GTEST_SKIP() << "no CUDA device: " << why;
      if (why.find("this build has no NCCL") != std::string::npos) GTEST_SKIP() << "no NCCL in this build: " << why;
      if (why.find("share one GPU") != std::string::npos)
        GTEST_SKIP() << "ranks share one GPU, which NCCL refuses (runtime.comm = mpi serves that): " << why;
      throw;
    }
  }
  DeviceCommunicator& dc() { return *dc_; }
  std::unique_ptr<DeviceCommunicator> dc_;
};

}  // namespace

TEST_P(DeviceComm, AllReduceSumMeanMaxOnDeviceBuffers) {
  const int n = dc().size(), r = dc().rank();
  for (std::size_t count : {std::size_t{0}, std::size_t{1}, std::size_t{1000}, std::size_t{70001}}) {
    std::vector<float> f(count);
    std::vector<bf16> b(count);
    std::vector<std::int64_t> i(count);
    for (std::size_t k = 0; k < count; ++k) {
      f[k] = value(r, k);
      b[k] = float_to_bf16(static_cast<float>((r + 1) * (k % 7)));
      i[k] = static_cast<std::int64_t>(k) * 5000000000LL * (r + 1);
    }
    auto df = upload(f), dsum = upload(std::vector<float>(count)), dmax = upload(std::vector<float>(count));
    auto db = upload(b);
    auto di = upload(i);
    dc().all_reduce(df.data(), dsum.data(), count, DType::F32, ReduceOp::Sum);
    dc().all_reduce(df.data(), dmax.data(), count, DType::F32, ReduceOp::Max);
    dc().all_reduce(df.data(), df.data(), count, DType::F32, ReduceOp::Mean);  // in place
    dc().all_reduce(db.data(), db.data(), count, DType::BF16, ReduceOp::Sum);
    dc().all_reduce(di.data(), di.data(), count, DType::I64, ReduceOp::Sum);
    const auto hs = download(dsum), hm = download(dmax), hmean = download(df);
    const auto hb = download(db);
    const auto hi = download(di);
    for (std::size_t k = 0; k < count; ++k) {
      float sum = 0, mx = -1e30f;
      double bsum = 0;
      for (int p = 0; p < n; ++p) {
        sum += value(p, k);
        mx = std::max(mx, value(p, k));
        bsum += (p + 1) * static_cast<double>(k % 7);
      }
      ASSERT_EQ(hs[k], sum) << "sum at " << k << " of " << count;
      ASSERT_EQ(hm[k], mx) << "max at " << k;
      ASSERT_NEAR(hmean[k], sum / n, 1e-5 * std::abs(sum)) << "mean at " << k;
      ASSERT_EQ(bf16_to_float(hb[k]), static_cast<float>(bsum)) << "bf16 sum at " << k;
      ASSERT_EQ(hi[k], static_cast<std::int64_t>(k) * 5000000000LL * n * (n + 1) / 2) << "i64 sum at " << k;
    }
  }
}

// Means into a separate output that starts as NaN, so every element must be written, at counts of the form
// 2^j·32 + r: they leave a tail when split over a power-of-two number of blocks. NCCL before 2.29.7 left such a
// tail unwritten in a one-rank ncclAvg (the communicator runs a one-rank mean as a sum for that reason); the
// in-place test above cannot see it, since an unwritten element of an in-place one-rank mean is already right.
TEST_P(DeviceComm, MeanIntoAnotherBufferWritesEveryElement) {
  const int n = dc().size(), r = dc().rank();
  for (std::size_t c : {std::size_t{2053}, std::size_t{32785}, std::size_t{262147}}) {
    std::vector<float> mine(c * n);
    std::vector<bf16> mine_b(c * n);
    for (std::size_t k = 0; k < mine.size(); ++k) {
      mine[k] = value(r, k * 7 + 3);
      mine_b[k] = float_to_bf16(static_cast<float>((r + 1) * (k % 5)));
    }
    auto send = upload(mine);
    auto send_b = upload(mine_b);
    auto ar = upload(std::vector<float>(c * n, NAN)), rs = upload(std::vector<float>(c, NAN));
    auto ar_b = upload(std::vector<bf16>(c * n, float_to_bf16(NAN)));
    dc().all_reduce(send.data(), ar.data(), c * n, DType::F32, ReduceOp::Mean);
    dc().reduce_scatter(send.data(), rs.data(), c, DType::F32, ReduceOp::Mean);
    dc().all_reduce(send_b.data(), ar_b.data(), c * n, DType::BF16, ReduceOp::Mean);
    const auto har = download(ar), hrs = download(rs);
    const auto har_b = download(ar_b);
    for (std::size_t k = 0; k < c * n; ++k) {
      float s = 0, sb = 0;
      for (int p = 0; p < n; ++p) {
        s += value(p, k * 7 + 3);
        sb += static_cast<float>((p + 1) * (k % 5));
      }
      ASSERT_NEAR(har[k], s / n, 1e-5 * std::abs(s)) << "f32 all_reduce mean at " << k << " of " << c * n;
      ASSERT_NEAR(bf16_to_float(har_b[k]), sb / n, 2e-2 * std::abs(sb) + 1e-6)
          << "bf16 all_reduce mean at " << k << " of " << c * n;
      if (k / c == static_cast<std::size_t>(r)) {
        ASSERT_NEAR(hrs[k % c], s / n, 1e-5 * std::abs(s)) << "f32 reduce_scatter mean at " << k % c << " of " << c;
      }
    }
  }
}

TEST_P(DeviceComm, GatherScatterAndAllToAllWithUnevenAndEmptyBlocks) {
  const int n = dc().size(), r = dc().rank();
  // all_gather
  const std::size_t c = 257;
  std::vector<float> mine(c);
  for (std::size_t k = 0; k < c; ++k) mine[k] = value(r, k);
  auto dm = upload(mine), dall = upload(std::vector<float>(c * n));
  dc().all_gather(dm.data(), dall.data(), c, DType::F32);
  auto all = download(dall);
  for (int p = 0; p < n; ++p)
    for (std::size_t k = 0; k < c; ++k) ASSERT_EQ(all[p * c + k], value(p, k)) << "all_gather block " << p;

  // all_gather_v: rank p contributes (p % 3) * 11 elements (rank 0 none)
  std::vector<std::size_t> counts(n);
  for (int p = 0; p < n; ++p) counts[p] = static_cast<std::size_t>(p % 3) * 11;
  const std::size_t tot = std::accumulate(counts.begin(), counts.end(), std::size_t{0});
  std::vector<float> v(counts[r]);
  for (std::size_t k = 0; k < v.size(); ++k) v[k] = value(r, k);
  auto dv = upload(v), dgv = upload(std::vector<float>(tot, -1.f));
  dc().all_gather_v(dv.data(), v.size(), dgv.data(), counts, DType::F32);
  auto gv = download(dgv);
  std::size_t off = 0;
  for (int p = 0; p < n; ++p)
    for (std::size_t k = 0; k < counts[p]; ++k) ASSERT_EQ(gv[off++], value(p, k)) << "all_gather_v block " << p;

  // reduce_scatter (mean): block j of rank p is value(p, j*c + k)
  std::vector<float> full(c * n);
  for (std::size_t k = 0; k < full.size(); ++k) full[k] = value(r, k);
  auto dfull = upload(full), dblock = upload(std::vector<float>(c));
  dc().reduce_scatter(dfull.data(), dblock.data(), c, DType::F32, ReduceOp::Mean);
  auto block = download(dblock);
  for (std::size_t k = 0; k < c; ++k) {
    float s = 0;
    for (int p = 0; p < n; ++p) s += value(p, r * c + k);
    ASSERT_NEAR(block[k], s / n, 1e-5 * std::abs(s)) << "reduce_scatter at " << k;
  }

  // all_to_all_v: rank a sends ((a + b) % 3) * 5 elements to rank b, element k = 1000 a + 10 b + k
  auto amount = [](int a, int b) { return static_cast<std::size_t>((a + b) % 3) * 5; };
  std::vector<std::size_t> sc(n), rc(n);
  std::vector<float> out;
  for (int b = 0; b < n; ++b) {
    sc[b] = amount(r, b);
    rc[b] = amount(b, r);
    for (std::size_t k = 0; k < sc[b]; ++k) out.push_back(static_cast<float>(1000 * r + 10 * b + k));
  }
  auto dout = upload(out), din = upload(std::vector<float>(std::accumulate(rc.begin(), rc.end(), std::size_t{0})));
  dc().all_to_all_v(dout.data(), sc, din.data(), rc, DType::F32);
  auto in = download(din);
  off = 0;
  for (int a = 0; a < n; ++a)
    for (std::size_t k = 0; k < rc[a]; ++k)
      ASSERT_EQ(in[off++], static_cast<float>(1000 * a + 10 * r + k)) << "all_to_all_v from " << a;
}

TEST_P(DeviceComm, BroadcastBarrierAndHostBuffers) {
  const int n = dc().size(), r = dc().rank();
  std::vector<double> x(100);
  for (std::size_t k = 0; k < x.size(); ++k) x[k] = r == n - 1 ? std::sqrt(static_cast<double>(k)) : -1.0;
  auto dx = upload(x);
  dc().broadcast(dx.data(), x.size(), DType::F64, n - 1);
  auto hx = download(dx);
  for (std::size_t k = 0; k < hx.size(); ++k) ASSERT_EQ(hx[k], std::sqrt(static_cast<double>(k)));
  dc().barrier();
  // Host buffers (how norms and flags are reduced): complete when the call returns.
  EXPECT_EQ(dc().all_reduce_scalar(r + 1.0, ReduceOp::Sum), n * (n + 1) / 2.0);
  EXPECT_EQ(dc().all_reduce_scalar(static_cast<double>(r), ReduceOp::Max), n - 1.0);
  std::vector<std::int32_t> hv(5, r), hg(5 * n);
  dc().all_gather(hv.data(), hg.data(), 5, DType::I32);
  for (int p = 0; p < n; ++p) EXPECT_EQ(hg[5 * p], p);
  EXPECT_GT(dc().stats().ops, 0u);
}

TEST_P(DeviceComm, AsyncOpsAreOrderedAgainstTheComputeStream) {
  const int n = dc().size(), r = dc().rank();
  cuda::Stream compute;
  dc().set_compute_stream(compute);
  const std::size_t c = 1 << 20;
  std::vector<float> h(c);
  for (std::size_t k = 0; k < c; ++k) h[k] = value(r, k);
  cuda::DeviceBuffer<float> send(c), recv(c * n), copy(c * n);
  // The input is produced on the compute stream right before the op: the op must wait for it.
  cuda::PinnedBuffer pinned(c * sizeof(float));
  std::copy(h.begin(), h.end(), static_cast<float*>(pinned.data()));
  OS_CUDA_CHECK(cudaMemsetAsync(send.data(), 0, c * sizeof(float), compute));
  OS_CUDA_CHECK(cudaMemcpyAsync(send.data(), pinned.data(), c * sizeof(float), cudaMemcpyHostToDevice, compute));
  Request req = dc().all_gather_async(send.data(), recv.data(), c, DType::F32);
  req.wait();  // later work on the compute stream sees the result
  OS_CUDA_CHECK(cudaMemcpyAsync(copy.data(), recv.data(), c * n * sizeof(float), cudaMemcpyDeviceToDevice, compute));
  auto got = copy.to_host(compute);
  for (int p = 0; p < n; ++p)
    for (std::size_t k = 0; k < c; k += 997) ASSERT_EQ(got[p * c + k], value(p, k)) << "block " << p << " at " << k;
  dc().synchronize();
  dc().set_compute_stream(nullptr);
}

TEST_P(DeviceComm, RingOfNonBlockingSendAndRecv) {
  const int n = dc().size(), r = dc().rank();
  const std::size_t c = 300000;  // larger than NCCL's and MPI's eager buffers
  std::vector<float> h(c);
  for (std::size_t k = 0; k < c; ++k) h[k] = value(r, k);
  auto out = upload(h), in = upload(std::vector<float>(c));
  Request a = dc().recv_async(in.data(), c, DType::F32, (r + n - 1) % n, 0);
  Request b = dc().send_async(out.data(), c, DType::F32, (r + 1) % n, 0);
  a.wait();
  b.wait();
  auto got = download(in);
  for (std::size_t k = 0; k < c; k += 101) ASSERT_EQ(got[k], value((r + n - 1) % n, k));
}

TEST_P(DeviceComm, SplitIntoEvenAndOddRanks) {
  const int r = dc().rank(), n = dc().size();
  std::unique_ptr<Communicator> sub = dc().split(r % 2, r);
  ASSERT_EQ(sub->backend(), dc().backend());
  const int expect_size = (n + (r % 2 == 0 ? 1 : 0)) / 2;
  EXPECT_EQ(sub->size(), expect_size);
  std::vector<float> h(64, static_cast<float>(r));
  auto d = upload(h);
  sub->all_reduce(d.data(), d.data(), h.size(), DType::F32, ReduceOp::Sum);
  float want = 0;
  for (int p = r % 2; p < n; p += 2) want += static_cast<float>(p);
  auto got = download(d);
  EXPECT_EQ(got[0], want);
  EXPECT_EQ(got[63], want);
}

INSTANTIATE_TEST_SUITE_P(Backends, DeviceComm,
                         ::testing::Values(DeviceCommKind::Nccl, DeviceCommKind::MpiStaged, DeviceCommKind::Auto),
                         [](const ::testing::TestParamInfo<DeviceCommKind>& i) {
                           return std::string(i.param == DeviceCommKind::Nccl        ? "Nccl"
                                              : i.param == DeviceCommKind::MpiStaged ? "MpiStaged"
                                                                                     : "Auto");
                         });

// runtime.comm = auto: NCCL when every rank has a GPU of its own (and the build has NCCL), host staging when
// ranks share one (as on a one-GPU test machine at 2-4 ranks); every rank makes the same choice.
TEST_F(MpiTest, AutoPicksNcclUnlessRanksShareAGpu) {
  std::unique_ptr<DeviceCommunicator> dc;
  try {
    dc = make_device_communicator(dynamic_cast<MpiCommunicator&>(comm()), DeviceCommKind::Auto, DeviceCommOptions{60.0});
  } catch (const UsageError& e) {
    const std::string why = e.what();
    if (why.find("no CUDA device") != std::string::npos || why.find("no usable CUDA device") != std::string::npos)
      GTEST_SKIP() << "no CUDA device: " << why;
    throw;
  }
  const bool shared = ranks_sharing_a_gpu(dynamic_cast<MpiCommunicator&>(comm()), dc->device()).first >= 0;
#if ORTHOSHARD_HAVE_NCCL
  EXPECT_EQ(dc->backend(), shared ? "mpi+staging" : "nccl");
#else
  (void)shared;  // no NCCL in this build: always host staging
  EXPECT_EQ(dc->backend(), "mpi+staging");
#endif
  const double nccl = dc->backend() == "nccl" ? 1.0 : 0.0;  // the same choice on every rank
  EXPECT_EQ(comm().all_reduce_scalar(nccl, ReduceOp::Sum), nccl * comm().size());
}
