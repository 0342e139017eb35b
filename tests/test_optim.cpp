// Optimizer properties that could fail: Newton-Schulz acts on singular values as the quintic predicts,
// transpose symmetry, zero in -> zero out, Conda's refresh schedule, routing of a GPT-2-shaped set,
// state save/restore, N-D weights as matrices, and f32 tracking the f64 path on odd shapes.
#include "optim/linalg.hpp"
#include "optim/optimizer.hpp"
#include "optim/orthogonalize/newton_schulz.hpp"
#include "runtime/core/error.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <map>

#include <algorithm>
#include <cmath>
#include <random>

using namespace orthoshard;

namespace {

std::vector<double> randn(std::int64_t n, unsigned seed, double scale = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> d(0.0, scale);
  std::vector<double> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<double> singular_values(std::vector<double> a, std::int64_t m, std::int64_t n) {
  std::vector<double> u, s, vt;
  linalg::svd_thin(a.data(), m, n, u, s, vt);
  return s;
}

double quintic5(double x) {
  const NsCoefficients c;
  for (int i = 0; i < 5; ++i) x = c.a * x + c.b * x * x * x + c.c * x * x * x * x * x;
  return x;
}

const std::vector<std::pair<std::int64_t, std::int64_t>> kShapes = {{1, 7}, {7, 1}, {16, 16}, {24, 40},
                                                                     {40, 24}, {64, 13}, {3, 100}, {1, 1}};

}  // namespace

TEST(NewtonSchulz, SingularValuesFollowTheQuinticInF64AndF32) {
  for (auto [m, n] : kShapes) {
    auto x = randn(m * n, static_cast<unsigned>(m * 131 + n));
    auto s_in = singular_values(x, m, n);
    const double fro = std::sqrt(linalg::sum_squares(x.data(), m * n));
    std::vector<double> want;
    for (double s : s_in) want.push_back(quintic5(s / (fro + 1e-7)));
    std::sort(want.begin(), want.end());

    std::vector<double> y = x;
    NewtonSchulz<double>().run(y.data(), m, n);
    auto got = singular_values(y, m, n);
    std::sort(got.begin(), got.end());
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-9) << m << "x" << n;

    std::vector<float> yf(x.begin(), x.end());
    NewtonSchulz<float>().run(yf.data(), m, n);
    auto gotf = singular_values(std::vector<double>(yf.begin(), yf.end()), m, n);
    std::sort(gotf.begin(), gotf.end());
    for (std::size_t i = 0; i < gotf.size(); ++i) EXPECT_NEAR(gotf[i], want[i], 2e-3) << m << "x" << n << " f32";
    // The quintic's band: outputs stay within (0, 1.25) for full-rank inputs.
    for (double s : got) {
      EXPECT_GT(s, 0.0);
      EXPECT_LT(s, 1.25);
    }
  }
}

TEST(NewtonSchulz, TransposeSymmetry) {
  // The wide path (X Xᵀ, left products) and the tall path (Xᵀ X, right products) must agree.
  const std::int64_t m = 24, n = 56;
  auto x = randn(m * n, 5);
  std::vector<double> xt(static_cast<std::size_t>(m * n));
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) xt[j * m + i] = x[i * n + j];
  NewtonSchulz<double> ns;
  ns.run(x.data(), m, n);
  ns.run(xt.data(), n, m);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) ASSERT_NEAR(x[i * n + j], xt[j * m + i], 1e-12);
}

TEST(NewtonSchulz, ZeroInZeroOut) {
  for (auto [m, n] : kShapes) {
    std::vector<float> z(static_cast<std::size_t>(m * n), 0.0f);
    NewtonSchulz<float>().run(z.data(), m, n);
    for (float v : z) ASSERT_EQ(v, 0.0f);
  }
}

TEST(NewtonSchulz, FlopCountFormula) {
  // n x m input with n <= m: 5 x (2 n² m + 2 n³ + 2 n² m).
  EXPECT_DOUBLE_EQ(ns_gemm_equivalent_flops(4, 10, 5), 5.0 * (2 * 16 * 10 + 2 * 64 + 2 * 16 * 10));
  EXPECT_DOUBLE_EQ(ns_gemm_equivalent_flops(10, 4, 5), ns_gemm_equivalent_flops(4, 10, 5));
}

TEST(Conda, F32SingularBasisMatchesF64Svd) {
  // Conda's f32 basis comes from the f64 Gram eigendecomposition; each vector must be the f64 SVD's up to sign.
  for (auto [m, n] : std::vector<std::pair<std::int64_t, std::int64_t>>{{60, 20}, {20, 60}, {30, 30}, {1, 7}, {7, 1}}) {
    const auto a = randn(m * n, static_cast<unsigned>(100 + m * n));
    std::vector<double> copy = a, u, s, vt;
    linalg::svd_thin(copy.data(), m, n, u, s, vt);
    const std::vector<float> af(a.begin(), a.end());
    const std::int64_t k = std::min(m, n);
    for (bool right : {true, false}) {
      std::vector<float> b(static_cast<std::size_t>(right ? k * n : m * k));
      linalg::singular_basis(af.data(), m, n, right, b.data());
      for (std::int64_t i = 0; i < k; ++i) {
        double dot = 0;
        if (right)
          for (std::int64_t c = 0; c < n; ++c) dot += b[i * n + c] * vt[i * n + c];
        else
          for (std::int64_t r = 0; r < m; ++r) dot += b[r * k + i] * u[r * k + i];
        EXPECT_NEAR(std::abs(dot), 1.0, 1e-5) << m << "x" << n << (right ? " right" : " left") << " vector " << i;
      }
    }
  }
}

TEST(Optimizers, AllZeroGradientGivesNoNaN) {
  for (const char* name : {"muon", "normuon", "conda", "adamw"}) {
    OptimConfig c;
    c.name = name;
    c.weight_decay = 0.1;
    Optimizer opt = Optimizer::with_routing(c, {{"h.0.w", {12, 8}}, {"h.0.b", {8}}, {"h.0.wide", {3, 17}}});
    std::vector<Tensor> p, g;
    for (const auto& s : opt.params()) {
      p.push_back(Tensor::empty(s.shape, DType::F32));
      std::fill_n(p.back().data<float>(), p.back().numel(), 0.5f);
      g.push_back(Tensor::zeros(s.shape, DType::F32));
    }
    for (int step = 0; step < 3; ++step) opt.step(p, g);
    for (const auto& t : p)
      for (std::int64_t i = 0; i < t.numel(); ++i) ASSERT_TRUE(std::isfinite(t.data<float>()[i])) << name;
  }
}

TEST(Conda, BasisRefreshesAtSteps1AndEveryGap) {
  OptimConfig c;
  c.name = "conda";
  c.update_proj_gap = 3;
  for (Shape shape : {Shape{12, 8}, Shape{6, 10}}) {
    Optimizer opt(c, {{"w", shape, RuleKind::Conda}}, DType::F64);
    Tensor w = Tensor::zeros(shape, DType::F64);
    std::vector<std::int64_t> refreshed_at;
    Tensor prev;
    for (int t = 1; t <= 8; ++t) {
      auto gv = randn(shape_numel(shape), 100 + t);
      Tensor g = Tensor::borrow(gv.data(), shape);
      opt.step({w}, {g});
      ParamState& st = opt.state("w");
      Tensor basis = st.get("conda_basis");
      const bool changed = !prev.defined() || prev.numel() == 0 ||
                           std::memcmp(prev.raw(), basis.raw(), basis.nbytes()) != 0;
      if (changed) refreshed_at.push_back(t);
      EXPECT_EQ(st.get_int("conda_basis_step"), 1 + 3 * ((t - 1) / 3));
      EXPECT_EQ(st.get_int("conda_basis_side"), shape[0] >= shape[1] ? 0 : 1);
      prev = basis.clone();
    }
    EXPECT_EQ(refreshed_at, (std::vector<std::int64_t>{1, 4, 7}));
    // Basis shape: right = Vᵀ (n x n) for tall, left = U (m x m) for wide.
    const std::int64_t k = std::min(shape[0], shape[1]);
    EXPECT_EQ(opt.state("w").get("conda_basis").shape(), shape[0] >= shape[1] ? (Shape{k, shape[1]}) : (Shape{shape[0], k}));
  }
}

TEST(Routing, Gpt2ShapedParameterSet) {
  using R = ParamRole;
  const std::vector<ParamInfo> gpt2 = {
      {"wte", {50304, 768}, R::Embedding},          {"wpe", {1024, 768}, R::Embedding},
      {"h.0.ln1.weight", {768}, R::Vector},         {"h.0.ln1.bias", {768}, R::Vector},
      {"h.0.attn.qkv.weight", {2304, 768}, R::Matrix}, {"h.0.attn.qkv.bias", {2304}, R::Vector},
      {"h.0.attn.proj.weight", {768, 768}, R::Matrix}, {"h.0.mlp.fc.weight", {3072, 768}, R::Matrix},
      {"h.0.mlp.proj.weight", {768, 3072}, R::Matrix}, {"lnf.weight", {768}, R::Vector},
      {"lm_head.weight", {50304, 768}, R::Head}};
  OptimConfig c;
  c.name = "normuon";
  std::map<std::string, RuleKind> got;
  for (const auto& [name, shape, role] : gpt2) got[name] = route_parameter(name, shape, role, c);
  for (const char* n : {"h.0.attn.qkv.weight", "h.0.attn.proj.weight", "h.0.mlp.fc.weight", "h.0.mlp.proj.weight"})
    EXPECT_EQ(got[n], RuleKind::NorMuon) << n;
  for (const char* n : {"wte", "wpe", "h.0.ln1.weight", "h.0.ln1.bias", "h.0.attn.qkv.bias", "lnf.weight",
                        "lm_head.weight"})
    EXPECT_EQ(got[n], RuleKind::AdamW) << n;
  c.adam_params = {"h.*.attn.proj.*"};
  EXPECT_EQ(route_parameter("h.0.attn.proj.weight", {768, 768}, R::Matrix, c), RuleKind::AdamW);
  c.matrix_params = {"h.*.ln1.weight"};
  EXPECT_THROW(route_parameter("h.0.ln1.weight", {768}, R::Vector, c), UsageError);
  c.name = "adamw";
  EXPECT_EQ(route_parameter("h.0.mlp.fc.weight", {3072, 768}, R::Matrix, c), RuleKind::AdamW);
}

// Routing follows the role, whatever the name: a Meta-style head called output.weight takes AdamW, a hidden
// matrix whose name mentions an embedding takes the matrix rule.
TEST(Routing, ByRoleNotByName) {
  OptimConfig c;
  c.name = "muon";
  EXPECT_EQ(route_parameter("output.weight", {32000, 512}, ParamRole::Head, c), RuleKind::AdamW);
  EXPECT_EQ(route_parameter("tok_embeddings.weight", {32000, 512}, ParamRole::Embedding, c), RuleKind::AdamW);
  EXPECT_EQ(route_parameter("h.0.embed_proj.weight", {512, 512}, ParamRole::Matrix, c), RuleKind::Muon);
  EXPECT_EQ(route_parameter("norm.weight", {512}, ParamRole::Vector, c), RuleKind::AdamW);
  c.matrix_params = {"output.*"};  // the globs still override
  EXPECT_EQ(route_parameter("output.weight", {32000, 512}, ParamRole::Head, c), RuleKind::Muon);
}

TEST(Optimizers, StateRestoredByNameContinuesBitwise) {
  for (const char* name : {"muon", "normuon", "conda"}) {
    OptimConfig c;
    c.name = name;
    c.update_proj_gap = 2;
    const std::vector<std::pair<std::string, Shape>> ps = {{"w", {9, 5}}, {"b", {5}}};
    Optimizer a = Optimizer::with_routing(c, ps), b = Optimizer::with_routing(c, ps);
    std::vector<Tensor> pa, pb, g;
    for (const auto& [n, s] : ps) {
      auto v = randn(shape_numel(s), 7);
      pa.push_back(Tensor::empty(s, DType::F32));
      std::copy(v.begin(), v.end(), pa.back().data<float>());
      g.push_back(Tensor::empty(s, DType::F32));
    }
    auto fill_grads = [&](int t) {
      for (std::size_t i = 0; i < g.size(); ++i) {
        auto v = randn(g[i].numel(), 1000 + t * 10 + static_cast<unsigned>(i));
        std::copy(v.begin(), v.end(), g[i].data<float>());
      }
    };
    for (int t = 0; t < 3; ++t) {
      fill_grads(t);
      a.step(pa, g);
    }
    // "Checkpoint": params and every named state tensor, copied into a fresh optimizer.
    for (const auto& t : pa) pb.push_back(t.clone());
    for (std::size_t i = 0; i < ps.size(); ++i)
      for (const auto& [sname, tensor] : a.state(i).entries()) b.state(i).set(sname, tensor.clone());
    for (int t = 3; t < 6; ++t) {
      fill_grads(t);
      a.step(pa, g);
      b.step(pb, g);
    }
    for (std::size_t i = 0; i < pa.size(); ++i)
      ASSERT_EQ(std::memcmp(pa[i].raw(), pb[i].raw(), pa[i].nbytes()), 0) << name;
    EXPECT_TRUE(a.state("w").has(std::string(name) == "conda" ? "exp_avg_sq" : "momentum"));
    if (std::string(name) == "normuon") {
      EXPECT_EQ(a.state("w").get("row_second_moment").shape(), (Shape{9, 1}));
    }
    EXPECT_EQ(a.state("w").get_int("step"), 6);
  }
}

TEST(Optimizers, FourDWeightIsItsRowsMatrix) {
  OptimConfig c;
  c.name = "muon";
  Shape nd{4, 3, 2, 5}, flat{4, 30};
  Optimizer a(c, {{"conv", nd, RuleKind::Muon}}, DType::F64), b(c, {{"conv", flat, RuleKind::Muon}}, DType::F64);
  auto w0 = randn(120, 3), g0 = randn(120, 4);
  std::vector<double> wa = w0, wb = w0;
  a.step({Tensor::borrow(wa.data(), nd)}, {Tensor::borrow(g0.data(), nd)});
  b.step({Tensor::borrow(wb.data(), flat)}, {Tensor::borrow(g0.data(), flat)});
  EXPECT_EQ(wa, wb);
}

TEST(Optimizers, Float32TracksFloat64OnOddShapesOverManySteps) {
  // The f64 path is checked against the references' traces; f32 must stay close on shapes the traces lack.
  for (const char* name : {"muon", "normuon", "conda"}) {
    for (Shape shape : {Shape{1, 9}, Shape{9, 1}, Shape{5, 3}, Shape{3, 4, 5}, Shape{33, 17}}) {
      OptimConfig c;
      c.name = name;
      c.lr = 0.01;
      c.weight_decay = 0.05;
      c.update_proj_gap = 4;
      const RuleKind rule = c.matrix_rule();
      Optimizer o32(c, {{"w", shape, rule}}, DType::F32), o64(c, {{"w", shape, rule}}, DType::F64);
      const std::int64_t n = shape_numel(shape);
      auto w0 = randn(n, 11);
      std::vector<double> w64 = w0;
      std::vector<float> w32(w0.begin(), w0.end());
      for (int t = 0; t < 12; ++t) {
        auto gv = randn(n, 50 + t);
        std::vector<float> gf(gv.begin(), gv.end());
        std::vector<double> gd(gf.begin(), gf.end());  // identical inputs
        o32.step({Tensor::borrow(w32.data(), shape)}, {Tensor::borrow(gf.data(), shape)});
        o64.step({Tensor::borrow(w64.data(), shape)}, {Tensor::borrow(gd.data(), shape)});
      }
      double num = 0, den = 0;
      for (std::int64_t i = 0; i < n; ++i) {
        num += (w32[i] - w64[i]) * (w32[i] - w64[i]);
        den += (w64[i] - w0[i]) * (w64[i] - w0[i]);
      }
      EXPECT_LT(std::sqrt(num / den), 1e-4) << name << " " << shape_str(shape);
    }
  }
}

TEST(OptimConfig, JsonKeysAndErrorsNameTheKey) {
  auto c = optim_config_from_json(nlohmann::json::parse(
      R"({"name":"conda","lr":0.01,"betas":[0.9,0.99],"scale":0.25,"proj_type":"left","update_proj_gap":7})"));
  EXPECT_EQ(c.matrix_rule(), RuleKind::Conda);
  EXPECT_DOUBLE_EQ(c.beta2_adam, 0.99);
  EXPECT_DOUBLE_EQ(c.conda_scale, 0.25);
  EXPECT_EQ(c.proj_type, CondaProjType::Left);
  auto expect_msg = [](const char* json, const char* needle) {
    try {
      optim_config_from_json(nlohmann::json::parse(json));
      ADD_FAILURE() << "accepted " << json;
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_msg(R"({"name":"muon","lrr":0.1})", "optim.lrr");
  expect_msg(R"({"name":"muon","lr":"fast"})", "optim.lr");
  expect_msg(R"({"name":"muon","scale":"paper"})", "optim.scale");
  expect_msg(R"({"name":"sgd"})", "optim.name");
  expect_msg(R"({"name":"muon","momentum":1.5})", "optim.momentum");
}
