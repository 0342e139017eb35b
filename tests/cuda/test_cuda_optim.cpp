// Optimizer math on the GPU against double-precision references of optim/rules.cpp and
// optim/orthogonalize/newton_schulz.cpp: sum of squares, AdamW, momentum/apply, NorMuon rows, Newton-Schulz
// (fp32: tight; bf16: <= 2e-2 relative to fp64 NS, the bound), and the cuSOLVER SVD.
#include "models/layers/cuda/layer_kernels.hpp"
#include "optim/orthogonalize/cuda/device_newton_schulz.hpp"
#include "optim/cuda/optim_kernels.hpp"
#include "optim/orthogonalize/cuda/device_svd.hpp"
#include "tests/cuda/cuda_test.hpp"

#include <array>
#include <cmath>

using namespace orthoshard::cuda;
using namespace orthoshard::cuda_test;

namespace {

double lerp_ref(double a, double b, double w) { return w < 0.5 ? a + w * (b - a) : b - (b - a) * (1 - w); }

template <typename T> void sum_squares_case() {
  const std::int64_t n = 1000003;  // several blocks of partials and a ragged tail
  const auto x = rounded<T>(randn(n, 70));
  double ref = 0;
  for (double v : x) ref += v * v;
  auto d_x = upload<T>(x);
  DeviceBuffer<double> out(1), scratch(kSumSquaresScratch);
  sum_squares<T>(out.data(), d_x.data(), n, scratch.data(), false, nullptr);
  const double first = out.to_host(nullptr)[0];
  OS_EXPECT(std::abs(first - ref) <= 1e-12 * ref, "sum of squares " << first << " vs " << ref);
  sum_squares<T>(out.data(), d_x.data(), n, scratch.data(), true, nullptr);  // accumulates
  const double twice = out.to_host(nullptr)[0];
  OS_EXPECT(twice == first + first, "accumulate: " << twice << " vs 2 x " << first);
  sum_squares<T>(out.data(), d_x.data(), n, scratch.data(), false, nullptr);
  OS_EXPECT(out.to_host(nullptr)[0] == first, "not bitwise reproducible");
  sum_squares<T>(out.data(), d_x.data(), 0, scratch.data(), false, nullptr);
  OS_EXPECT(out.to_host(nullptr)[0] == 0.0, "empty sum");
}
OS_TEST(CudaOptim, SumSquaresF32) { OS_REQUIRE_GPU(); sum_squares_case<float>(); }
OS_TEST(CudaOptim, SumSquaresBF16) { OS_REQUIRE_GPU(); sum_squares_case<bf16>(); }

template <typename G> void adamw_case() {
  const std::int64_t n = 5000;
  const double lr = 3e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1, clip = 0.5;
  std::vector<double> w = rounded<float>(randn(n, 80)), m(n, 0.0), v(n, 0.0);
  auto d_w = upload<float>(w), d_m = upload<float>(m), d_v = upload<float>(v);
  DeviceBuffer<bf16> copy(n);
  for (int t = 1; t <= 3; ++t) {
    const auto g = rounded<G>(randn(n, 81 + t));
    const double step = lr / (1 - std::pow(b1, t)), bc2s = std::sqrt(1 - std::pow(b2, t));
    for (std::int64_t i = 0; i < n; ++i) {
      const double gi = g[i] * clip;
      w[i] *= 1 - lr * wd;
      m[i] = lerp_ref(m[i], gi, 1 - b1);
      v[i] = v[i] * b2 + (1 - b2) * gi * gi;
      w[i] -= step * m[i] / (std::sqrt(v[i]) / bc2s + eps);
    }
    auto d_g = upload<G>(g);
    adamw_update<G>(d_w.data(), copy.data(), d_g.data(), d_m.data(), d_v.data(), n,
                    adamw_scalars(lr, b1, b2, eps, wd, t, clip), nullptr);
  }
  OS_EXPECT_CLOSE("adamw weights", download(d_w), w, 1e-6, 1e-5);
  OS_EXPECT_CLOSE("adamw exp_avg", download(d_m), m, 1e-7, 1e-5);
  OS_EXPECT_CLOSE("adamw exp_avg_sq", download(d_v), v, 1e-9, 1e-5);
  const auto wf = download(d_w), wc = download(copy);
  std::vector<double> expect(n);
  for (std::int64_t i = 0; i < n; ++i) expect[i] = round_to<bf16>(wf[i]);
  OS_EXPECT(wc == expect, "bf16 copy is not the rounding of the fp32 master");
}
OS_TEST(CudaOptim, AdamWF32Grad) { OS_REQUIRE_GPU(); adamw_case<float>(); }
OS_TEST(CudaOptim, AdamWBF16Grad) { OS_REQUIRE_GPU(); adamw_case<bf16>(); }

OS_TEST(CudaOptim, MomentumAndApply) {
  OS_REQUIRE_GPU();
  const std::int64_t n = 3000;
  const double beta = 0.95, lr = 0.02, wd = 0.01, factor = 1.7;
  for (int nesterov = 0; nesterov < 2; ++nesterov) {
    const auto g = rounded<float>(randn(n, 90)), mom0 = rounded<float>(randn(n, 91)), w0 = rounded<float>(randn(n, 92));
    std::vector<double> mom(n), u(n), w(n);
    for (std::int64_t i = 0; i < n; ++i) {
      mom[i] = lerp_ref(mom0[i], g[i], 1 - beta);
      u[i] = nesterov ? lerp_ref(g[i], mom[i], beta) : mom[i];
      w[i] = w0[i] * (1 - lr * wd) - lr * factor * u[i];
    }
    auto d_g = upload<float>(g), d_mom = upload<float>(mom0), d_u = upload<float>(std::vector<double>(n)),
         d_w = upload<float>(w0);
    momentum_update<float>(d_mom.data(), d_u.data(), d_g.data(), n, beta, nesterov, nullptr);
    decay_then_apply<float>(d_w.data(), nullptr, d_u.data(), n, lr, wd, factor, nullptr);
    OS_EXPECT_CLOSE("momentum", download(d_mom), mom, 1e-6, 1e-5);
    OS_EXPECT_CLOSE("update", download(d_u), u, 1e-6, 1e-5);
    OS_EXPECT_CLOSE("decay then apply", download(d_w), w, 1e-6, 1e-5);
  }
}

template <typename T> void normuon_case() {
  const std::int64_t rows = 9, n = 700;
  const double beta2 = 0.95;
  const auto o0 = rounded<T>(randn(rows * n, 100, 0.05));
  std::vector<double> v = rounded<float>(randn(rows, 101, 1e-3));
  for (auto& x : v) x = std::abs(x);
  const std::vector<double> v0 = v;
  std::vector<double> o = o0, before(rows), after(rows);
  for (std::int64_t i = 0; i < rows; ++i) {
    double ss = 0;
    for (std::int64_t j = 0; j < n; ++j) ss += o[i * n + j] * o[i * n + j];
    before[i] = ss;
    v[i] = lerp_ref(v[i], ss / n, 1 - beta2);
    const double d = std::sqrt(v[i]) + 1e-10;
    double s2 = 0;
    for (std::int64_t j = 0; j < n; ++j) {
      o[i * n + j] /= d;
      s2 += o[i * n + j] * o[i * n + j];
    }
    after[i] = s2;
  }
  auto d_o = upload<T>(o0), d_v = upload<float>(v0);
  DeviceBuffer<double> d_before(rows), d_after(rows);
  normuon_normalize_rows<T>(d_o.data(), rows, n, d_v.data(), beta2, d_before.data(), d_after.data(), nullptr);
  const bool f32 = std::is_same_v<T, float>;
  OS_EXPECT_CLOSE("normuon rows", download(d_o), o, f32 ? 1e-5 : 2e-2, f32 ? 1e-5 : 8e-3);
  OS_EXPECT_CLOSE("normuon v", download(d_v), v, 0, 1e-5);
  OS_EXPECT_CLOSE("normuon Σ before", d_before.to_host(nullptr), before, 0, 1e-12);
  // After: the sums of the stored (rounded) rows; within rounding of the exact ones.
  OS_EXPECT_CLOSE("normuon Σ after", d_after.to_host(nullptr), after, 0, f32 ? 1e-5 : 8e-3);
}
OS_TEST(CudaOptim, NorMuonRowsF32) { OS_REQUIRE_GPU(); normuon_case<float>(); }
OS_TEST(CudaOptim, NorMuonRowsBF16) { OS_REQUIRE_GPU(); normuon_case<bf16>(); }

// fp64 Newton-Schulz with the algorithm of optim/orthogonalize/newton_schulz.cpp.
std::vector<double> ns_reference(std::vector<double> x, std::int64_t m, std::int64_t n) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / (std::sqrt(ss) + 1e-7);
  for (double& v : x) v *= inv;
  const bool wide = m <= n;
  const std::int64_t r = wide ? m : n;
  const double a = 3.4445, b = -4.7750, c = 2.0315;
  std::vector<double> A(r * r), P(r * r), next(m * n);
  for (int it = 0; it < 5; ++it) {
    for (std::int64_t i = 0; i < r; ++i)
      for (std::int64_t j = 0; j < r; ++j) {
        double s = 0;
        if (wide) for (std::int64_t k = 0; k < n; ++k) s += x[i * n + k] * x[j * n + k];
        else for (std::int64_t k = 0; k < m; ++k) s += x[k * n + i] * x[k * n + j];
        A[i * r + j] = s;
      }
    for (std::int64_t i = 0; i < r; ++i)
      for (std::int64_t j = 0; j < r; ++j) {
        double s = 0;
        for (std::int64_t k = 0; k < r; ++k) s += A[i * r + k] * A[k * r + j];
        P[i * r + j] = c * s + b * A[i * r + j] + (i == j ? a : 0.0);
      }
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) {
        double s = 0;
        if (wide) for (std::int64_t k = 0; k < m; ++k) s += P[i * r + k] * x[k * n + j];
        else for (std::int64_t k = 0; k < n; ++k) s += x[i * n + k] * P[k * r + j];
        next[i * n + j] = s;
      }
    x.swap(next);
  }
  return x;
}

OS_TEST(CudaOptim, NewtonSchulz) {
  OS_REQUIRE_GPU();
  Blas blas;
  DeviceNewtonSchulz ns32(blas, DeviceNewtonSchulz::Precision::F32), ns16(blas, DeviceNewtonSchulz::Precision::BF16);
  // Wide, tall, square; multiples of 8 (cuBLASLt) and odd shapes (GemmEx fallback).
  // A CPU emulation of the bf16 rounding points (fp32 sums) gives 1.1e-2 to 1.4e-2 on these inputs.
  for (const auto& [m, n] : {std::array<std::int64_t, 2>{64, 192}, std::array<std::int64_t, 2>{192, 64},
                             std::array<std::int64_t, 2>{128, 128}, std::array<std::int64_t, 2>{13, 29},
                             std::array<std::int64_t, 2>{45, 7}}) {
    const auto g = rounded<float>(randn(m * n, 110 + static_cast<std::uint32_t>(m), 0.3));
    const auto ref = ns_reference(g, m, n);
    const std::string shape = std::to_string(m) + "x" + std::to_string(n);
    auto d32 = upload<float>(g), d16 = upload<float>(g);
    ns32.run(d32.data(), m, n, nullptr);
    ns16.run(d16.data(), m, n, nullptr);
    const double e32 = rel_fro(download(d32), ref), e16 = rel_fro(download(d16), ref);
    auto h = upload<bf16>(g);  // bf16 storage end to end (normalized from the bf16 values)
    ns16.run(h.data(), m, n, nullptr);
    const double eh = rel_fro(download(h), ns_reference(rounded<bf16>(g), m, n));
    std::printf("  NS %s: fp32 %.2e, bf16 (fp32 in/out) %.2e, bf16 in place %.2e (relative Frobenius vs fp64)\n",
                shape.c_str(), e32, e16, eh);
    OS_EXPECT(e32 <= 1e-4, "fp32 NS " << shape << " relative error " << e32);
    OS_EXPECT(e16 <= 2e-2, "bf16 NS " << shape << " relative error " << e16);
    OS_EXPECT(eh <= 2e-2, "bf16 in-place NS " << shape << " relative error " << eh);
  }
  DeviceBuffer<float> zero(6 * 10);
  zero.zero(nullptr);
  ns32.run(zero.data(), 6, 10, nullptr);
  const auto z = download(zero);
  OS_EXPECT(std::all_of(z.begin(), z.end(), [](double x) { return x == 0.0; }), "a zero matrix must stay zero");
}

// Host-side rule, no GPU needed: which sides get the tiled symmetric products and with how many tiles.
OS_TEST(CudaOptim, SymmetricTiles) {
  OS_EXPECT(DeviceNewtonSchulz::symmetric_tiles(768) == 4, "768: 4 tiles of 192");
  OS_EXPECT(DeviceNewtonSchulz::symmetric_tiles(512) == 4, "512: 4 tiles of 128");
  OS_EXPECT(DeviceNewtonSchulz::symmetric_tiles(384) == 3, "384: 3 tiles of 128");
  OS_EXPECT(DeviceNewtonSchulz::symmetric_tiles(256) == 2, "256: 2 tiles of 128");
  OS_EXPECT(DeviceNewtonSchulz::symmetric_tiles(200) == 0, "200: tiles under 128 rows");
  OS_EXPECT(DeviceNewtonSchulz::symmetric_tiles(1000) == 0, "1000: no tile a multiple of 8");
  OS_EXPECT(DeviceNewtonSchulz::symmetric_tiles(64) == 0, "64: too small");
}

// bf16 NS with the tiled symmetric products (2, 3 and 4 tiles; wide, tall, square) against fp64 and against the
// same iteration with full GEMMs.
OS_TEST(CudaOptim, NewtonSchulzSymmetricProducts) {
  OS_REQUIRE_GPU();
  Blas blas;
  DeviceNewtonSchulz sym(blas, DeviceNewtonSchulz::Precision::BF16), full(blas, DeviceNewtonSchulz::Precision::BF16);
  sym.symmetric = true;
  full.symmetric = false;
  for (const auto& [m, n] : {std::array<std::int64_t, 2>{256, 384}, std::array<std::int64_t, 2>{384, 256},
                             std::array<std::int64_t, 2>{384, 640}, std::array<std::int64_t, 2>{640, 384},
                             std::array<std::int64_t, 2>{512, 512}}) {
    const std::string shape = std::to_string(m) + "x" + std::to_string(n);
    OS_EXPECT(DeviceNewtonSchulz::symmetric_tiles(std::min(m, n)) >= 2, shape << " should be tiled");
    const auto g = rounded<float>(randn(m * n, 910 + static_cast<std::uint32_t>(m + n), 0.3));
    const auto ref = ns_reference(g, m, n);
    auto ds = upload<float>(g), df = upload<float>(g);
    sym.run(ds.data(), m, n, nullptr);
    full.run(df.data(), m, n, nullptr);
    const auto xs = download(ds), xf = download(df);
    const double es = rel_fro(xs, ref), ef = rel_fro(xf, ref), between = rel_fro(xs, xf);
    std::printf("  NS bf16 %s: symmetric %.2e, full %.2e vs fp64; symmetric vs full %.2e\n", shape.c_str(), es, ef,
                between);
    OS_EXPECT(es <= 2e-2, "bf16 NS (symmetric products) " << shape << " relative error " << es);
    OS_EXPECT(ef <= 2e-2, "bf16 NS (full GEMMs) " << shape << " relative error " << ef);
    OS_EXPECT(between <= 2e-2, "symmetric vs full " << shape << ": " << between);
  }
}

// run_batched on `count` same-shape matrices of very different scales (each must get its own norm) against run()
// on each matrix alone and against fp64: bf16 with the tiled symmetric products (where the sides tile) and with
// full GEMMs (the default), and fp32 (matrix by matrix, so bitwise equal to run()).
OS_TEST(CudaOptim, NewtonSchulzBatched) {
  OS_REQUIRE_GPU();
  Blas blas;
  DeviceNewtonSchulz ns16(blas, DeviceNewtonSchulz::Precision::BF16), ns16f(blas, DeviceNewtonSchulz::Precision::BF16),
      ns32(blas, DeviceNewtonSchulz::Precision::F32);
  ns16.symmetric = true;
  ns16f.symmetric = false;
  for (const auto& [m, n] : {std::array<std::int64_t, 2>{256, 384}, std::array<std::int64_t, 2>{512, 256},
                             std::array<std::int64_t, 2>{64, 192}, std::array<std::int64_t, 2>{45, 7}}) {
    for (const std::int64_t count : {1, 2, 3, 5}) {
      const std::string what = std::to_string(count) + " x " + std::to_string(m) + "x" + std::to_string(n);
      std::vector<double> all;
      std::vector<std::vector<double>> each;
      for (std::int64_t j = 0; j < count; ++j) {
        const double scale = 0.3 * std::pow(10.0, static_cast<double>(j % 3) - 1);  // 0.03, 0.3, 3
        auto g = rounded<float>(randn(m * n, 930 + static_cast<std::uint32_t>(m + 7 * n + 31 * j), scale));
        all.insert(all.end(), g.begin(), g.end());
        each.push_back(std::move(g));
      }
      for (DeviceNewtonSchulz* ns : {&ns16, &ns16f, &ns32}) {
        const bool bf = ns != &ns32;
        auto batch = upload<float>(all);
        ns->run_batched(batch.data(), count, m, n, nullptr);
        const auto got = download(batch);
        for (std::int64_t j = 0; j < count; ++j) {
          auto single = upload<float>(each[static_cast<std::size_t>(j)]);
          ns->run(single.data(), m, n, nullptr);
          const auto alone = download(single);
          const std::vector<double> mine(got.begin() + j * m * n, got.begin() + (j + 1) * m * n);
          const double vs_ref = rel_fro(mine, ns_reference(each[static_cast<std::size_t>(j)], m, n));
          const double vs_alone = rel_fro(mine, alone);
          if (j == count - 1)
            std::printf("  NS batched %s %s, matrix %lld: %.2e vs fp64, %.2e vs run() alone\n", what.c_str(),
                        bf ? "bf16" : "f32", static_cast<long long>(j), vs_ref, vs_alone);
          OS_EXPECT(vs_ref <= (bf ? 2e-2 : 1e-4), what << (bf ? " bf16" : " f32") << " matrix " << j
                                                     << ": relative error " << vs_ref << " vs fp64");
          if (bf) OS_EXPECT(vs_alone <= 2e-2, what << " bf16 matrix " << j << ": " << vs_alone << " from run() alone");
          else OS_EXPECT(mine == alone, what << " f32 matrix " << j << ": batched differs from run() alone");
        }
      }
    }
  }
  // Empty batches and empty matrices are no-ops.
  DeviceBuffer<float> none(1);
  ns16.run_batched(none.data(), 0, 8, 8, nullptr);
  ns16.run_batched(none.data(), 3, 0, 8, nullptr);
  OS_CUDA_CHECK(cudaDeviceSynchronize());
}

OS_TEST(CudaOptim, SvdThin) {
  OS_REQUIRE_GPU();
  DeviceSvd svd;
  for (const auto& [m, n] : {std::array<std::int64_t, 2>{40, 24}, std::array<std::int64_t, 2>{24, 40},
                             std::array<std::int64_t, 2>{33, 33}}) {
    const std::int64_t k = std::min(m, n);
    const auto a = rounded<float>(randn(m * n, 120 + static_cast<std::uint32_t>(m)));
    auto d_a = upload<float>(a);
    DeviceBuffer<float> u(m * k), s(k), vt(k * n);
    svd.thin(d_a.data(), m, n, u.data(), s.data(), vt.data(), nullptr);
    const auto U = download(u), S = download(s), Vt = download(vt);
    const std::string shape = std::to_string(m) + "x" + std::to_string(n);
    std::vector<double> rec(m * n, 0.0), utu(k * k, 0.0), vvt(k * k, 0.0), eye(k * k, 0.0);
    for (std::int64_t i = 0; i < k; ++i) eye[i * k + i] = 1.0;
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j)
        for (std::int64_t p = 0; p < k; ++p) rec[i * n + j] += U[i * k + p] * S[p] * Vt[p * n + j];
    for (std::int64_t p = 0; p < k; ++p)
      for (std::int64_t q = 0; q < k; ++q) {
        for (std::int64_t i = 0; i < m; ++i) utu[p * k + q] += U[i * k + p] * U[i * k + q];
        for (std::int64_t j = 0; j < n; ++j) vvt[p * k + q] += Vt[p * n + j] * Vt[q * n + j];
      }
    OS_EXPECT(rel_fro(rec, a) <= 1e-5, "SVD " << shape << " reconstruction error " << rel_fro(rec, a));
    // Orthogonality to a few hundred fp32 ulps: the Jacobi rotations accumulate rounding in the vectors (an H100
    // gave 1.07e-5 for the 33x33 case's Vt).
    OS_EXPECT_CLOSE("UᵀU = I " + shape, utu, eye, 5e-5, 0);
    OS_EXPECT_CLOSE("Vt Vtᵀ = I " + shape, vvt, eye, 5e-5, 0);
    for (std::int64_t p = 0; p < k; ++p) {
      OS_EXPECT(S[p] >= 0, "negative singular value");
      if (p > 0) {
        OS_EXPECT(S[p] <= S[p - 1], "singular values not descending at " << p);
      }
    }
  }
}

// Sweep limits from 1 up: a result is either refused (CudaError naming the non-convergence) or reproduces A with
// orthonormal vectors, and an unconverged result is accepted only with its measured error within the bound.
OS_TEST(CudaOptim, SvdUnconvergedResultIsRefusedOrAccurate) {
  OS_REQUIRE_GPU();
  const std::int64_t m = 96, n = 64, k = 64;
  const auto a = rounded<float>(randn(m * n, 777));
  int refused = 0, accepted = 0;
  for (int sweeps = 1; sweeps <= 12; ++sweeps) {
    DeviceSvd svd;
    svd.set_max_sweeps(sweeps);
    auto d_a = upload<float>(a);
    DeviceBuffer<float> u(m * k), s(k), vt(k * n);
    try {
      svd.thin(d_a.data(), m, n, u.data(), s.data(), vt.data(), nullptr);
    } catch (const CudaError& e) {
      OS_EXPECT(std::string(e.what()).find("did not converge") != std::string::npos, "unexpected error: " << e.what());
      ++refused;
      continue;
    }
    ++accepted;
    const auto U = download(u), S = download(s), Vt = download(vt);
    std::vector<double> rec(m * n, 0.0);
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j)
        for (std::int64_t p = 0; p < k; ++p) rec[i * n + j] += U[i * k + p] * S[p] * Vt[p * n + j];
    const double bound = DeviceSvd::kAcceptedRelativeResidual;
    if (!svd.last_converged()) {
      OS_EXPECT(svd.last_relative_residual() <= bound,
                sweeps << " sweeps: accepted with relative residual " << svd.last_relative_residual());
    }
    OS_EXPECT(rel_fro(rec, a) <= 4 * bound,
              sweeps << " sweeps (converged " << svd.last_converged() << "): reconstruction error " << rel_fro(rec, a));
    // Orthonormal vectors too (Conda projects onto them): ‖UᵀU − I‖_F / √k, and the same for V.
    double eu = 0, ev = 0;
    for (std::int64_t p = 0; p < k; ++p)
      for (std::int64_t q = 0; q < k; ++q) {
        double gu = 0, gv = 0;
        for (std::int64_t i = 0; i < m; ++i) gu += double(U[i * k + p]) * U[i * k + q];
        for (std::int64_t j = 0; j < n; ++j) gv += double(Vt[p * n + j]) * Vt[q * n + j];
        eu += (gu - (p == q)) * (gu - (p == q));
        ev += (gv - (p == q)) * (gv - (p == q));
      }
    eu = std::sqrt(eu / k);
    ev = std::sqrt(ev / k);
    OS_EXPECT(eu <= 4 * bound && ev <= 4 * bound, sweeps << " sweeps (converged " << svd.last_converged()
                                                         << "): orthogonality error U " << eu << ", V " << ev);
  }
  OS_EXPECT(refused >= 1, "one Jacobi sweep should not reach the accepted residual");
  OS_EXPECT(accepted >= 1, "12 sweeps should give an accepted result");
}

}  // namespace
