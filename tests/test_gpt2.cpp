// GPT-2: the shared reference case tensor by tensor (logits, loss, all 16 gradients, per layer), 10 AdamW
// steps' losses, finite differences of every kernel and of every parameter in float64, gradient
// accumulation across micro-batches, model files (fp32/bf16, bad files), and the initialization.
#include "bench/optim_bench.hpp"
#include "tests/test_util.hpp"
#include "models/data/loader.hpp"
#include "models/data/token_stream.hpp"
#include "models/family.hpp"
#include "models/gpt2/family.hpp"
#include "models/gpt2/init.hpp"
#include "models/gpt2/llmc_file.hpp"
#include "models/safetensors.hpp"
#include "models/gpt2/model.hpp"
#include "models/layers/attention.hpp"
#include "models/layers/cross_entropy.hpp"
#include "models/gpt2/embedding.hpp"
#include "models/layers/fast_exp.hpp"
#include "models/layers/gelu.hpp"
#include "models/layers/layernorm.hpp"
#include "models/layers/linear.hpp"
#include "models/random.hpp"
#include "optim/optimizer.hpp"
#include "runtime/core/error.hpp"
#include "runtime/io/h5file.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <cstring>
#include <functional>
#include <memory>

using namespace orthoshard;
using orthoshard::testing::error_of;
namespace fs = std::filesystem;

namespace {

const std::string kRef = std::string(ORTHOSHARD_TESTDATA) + "/gpt2";

// ‖a − b‖ / ‖b‖ over n values (b in f64).
double rel_err(const float* a, const double* b, std::int64_t n) {
  double num = 0, den = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

fs::path temp_dir(const std::string& tag) {
  const fs::path d = fs::temp_directory_path() / ("orthoshard_" + tag + "_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

struct Reference {
  H5File f = H5File::open_read(kRef + "/reference.h5");
  std::int64_t B = f.int_attr("/", "B"), T = f.int_attr("/", "T");
};

LoaderConfig ref_loader_config(const Reference& r, std::int64_t V) {
  LoaderConfig lc;
  lc.B = r.B;
  lc.T = r.T;
  lc.vocab_size = V;
  return lc;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// The shared reference case.

TEST(Gpt2Reference, LogitsLossAndEveryGradient) {
  Reference ref;
  const Gpt2Params p = load_llmc_model(kRef + "/model.bin");
  const Gpt2Config& cfg = p.config();
  const auto jc = nlohmann::json::parse(ref.f.string_attr("/", "config"));
  EXPECT_EQ(cfg.L, jc["L"].get<int>());
  EXPECT_EQ(cfg.C, jc["C"].get<int>());
  EXPECT_EQ(cfg.NH, jc["NH"].get<int>());
  EXPECT_EQ(cfg.V, jc["V"].get<int>());
  EXPECT_EQ(cfg.Vp, jc["Vp"].get<int>());
  EXPECT_EQ(cfg.maxT, jc["maxT"].get<int>());

  // Batch 0 through our loader equals the reference's inputs and targets.
  DataLoader loader(TokenStream::open(kRef + "/tokens.bin"), ref_loader_config(ref, cfg.V));
  Tensor inputs, targets;
  loader.load(0, inputs, targets);
  const Tensor ri = ref.f.read("/inputs", DType::I32), rt = ref.f.read("/targets", DType::I32);
  ASSERT_EQ(inputs.shape(), ri.shape());
  EXPECT_TRUE(std::equal(ri.data<std::int32_t>(), ri.data<std::int32_t>() + ri.numel(), inputs.data<std::int32_t>()));
  EXPECT_TRUE(std::equal(rt.data<std::int32_t>(), rt.data<std::int32_t>() + rt.numel(), targets.data<std::int32_t>()));

  Gpt2Model<float> model(cfg);
  const double loss = model.forward(p, inputs, targets);
  const double ref_loss = ref.f.double_attr("/", "loss");
  EXPECT_NEAR(loss, ref_loss, 1e-5 * ref_loss);

  const Tensor rl = ref.f.read("/logits", DType::F64);
  const Tensor lg = model.logits();
  ASSERT_EQ(lg.shape(), rl.shape());
  double max_ref = 0, max_err = 0;
  for (std::int64_t i = 0; i < rl.numel(); ++i) {
    max_ref = std::max(max_ref, std::abs(rl.data<double>()[i]));
    max_err = std::max(max_err, std::abs(lg.data<float>()[i] - rl.data<double>()[i]));
  }
  EXPECT_LE(max_err, 1e-4 * max_ref);
  std::printf("logits: max abs err %.3g (limit %.3g); loss %.8f vs %.8f (rel %.2g)\n", max_err, 1e-4 * max_ref, loss,
              ref_loss, std::abs(loss - ref_loss) / ref_loss);

  Gpt2Params g = Gpt2Params::zeros(cfg);
  model.backward(p, g);
  double worst = 0;
  std::string worst_name;
  for (const auto& [name, t] : g.stacked()) {
    const Tensor r = ref.f.read("/grads/" + name, DType::F64);
    ASSERT_EQ(r.shape(), t.shape()) << name;
    const double e = rel_err(t.data<float>(), r.data<double>(), t.numel());
    EXPECT_LE(e, 1e-3) << name;
    if (e > worst) worst = e, worst_name = name;
    // Per layer slices, under the runtime's names.
    if (t.ndim() >= 2 && name != "wte" && name != "wpe") {
      const std::int64_t per = t.numel() / cfg.L;
      for (int l = 0; l < cfg.L; ++l)
        EXPECT_LE(rel_err(t.data<float>() + l * per, r.data<double>() + l * per, per), 1e-3) << name << " layer " << l;
    }
  }
  for (const auto& [name, t] : g.named()) {  // the named views are the same memory as the stacked tensors
    const Tensor gt = g.get(name);
    EXPECT_EQ(gt.raw(), t.raw()) << name;
  }
  std::printf("gradients: worst relative error %.3g (%s), limit 1e-3\n", worst, worst_name.c_str());
}

TEST(Gpt2Reference, TenAdamWStepsMatchLosses) {
  Reference ref;
  Gpt2Params p = load_llmc_model(kRef + "/model.bin");
  const Gpt2Config cfg = p.config();
  auto hp = nlohmann::json::parse(ref.f.string_attr("/", "adamw"));
  hp["name"] = "adamw";
  Optimizer opt = Optimizer::with_routing(optim_config_from_json(hp), gpt2_parameter_specs(cfg));
  for (const auto& s : opt.params()) ASSERT_EQ(s.rule, RuleKind::AdamW) << s.name;
  std::vector<Tensor> params, grads;
  Gpt2Params g = Gpt2Params::zeros(cfg);
  for (const auto& [name, t] : p.named()) params.push_back(t);
  for (const auto& [name, t] : g.named()) grads.push_back(t);

  const Tensor ref_losses = ref.f.read("/adamw_losses", DType::F64);
  DataLoader loader(TokenStream::open(kRef + "/tokens.bin"), ref_loader_config(ref, cfg.V));
  Gpt2Model<float> model(cfg);
  Tensor inputs, targets;
  double worst = 0;
  for (std::int64_t k = 0; k < ref_losses.numel(); ++k) {
    loader.load(0, inputs, targets);
    const double loss = model.forward(p, inputs, targets);
    const double want = ref_losses.data<double>()[k];
    worst = std::max(worst, std::abs(loss - want) / want);
    EXPECT_NEAR(loss, want, 1e-4 * want) << "step " << k;
    g.zero();
    model.backward(p, g);
    opt.step(params, grads);
    loader.advance();
  }
  std::printf("AdamW: %ld losses, worst relative error %.3g (limit 1e-4)\n", static_cast<long>(ref_losses.numel()),
              worst);
}

TEST(Gpt2Reference, SequenceLongerThanMaxTNamesTheModelFile) {
  const Gpt2Params p = load_llmc_model(kRef + "/model.bin");
  Gpt2Model<float> model(p.config());
  const std::string msg = error_of([&] { model.set_batch(1, p.config().maxT + 1); });
  EXPECT_NE(msg.find("maxT"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.bin"), std::string::npos) << msg;
  Tensor bad = Tensor::zeros({1, 4}, DType::I32);
  bad.data<std::int32_t>()[2] = static_cast<std::int32_t>(p.config().V);
  const std::string m2 = error_of([&] { model.forward(p, bad, Tensor()); });
  EXPECT_NE(m2.find("outside the vocabulary"), std::string::npos) << m2;
}

// ---------------------------------------------------------------------------------------------------------
// Finite differences in float64: every kernel's backward against its forward.

namespace {

std::vector<double> randn(std::int64_t n, std::uint64_t seed, double scale = 1.0) {
  std::vector<double> v(static_cast<std::size_t>(n));
  const auto k = rng::key(seed, 99);
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = scale * rng::normal_at(k, static_cast<std::uint64_t>(i));
  return v;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Checks grad (w.r.t. x) of loss(x) by central differences on every coordinate; returns the worst error
// relative to the gradient's largest entry.
double fd_check(std::vector<double>& x, const std::vector<double>& grad, const std::function<double()>& loss) {
  double worst = 0, gmax = 1e-12;
  for (double g : grad) gmax = std::max(gmax, std::abs(g));
  const double h = 1e-5;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double lp = loss();
    x[i] = x0 - h;
    const double lm = loss();
    x[i] = x0;
    worst = std::max(worst, std::abs((lp - lm) / (2 * h) - grad[i]) / gmax);
  }
  return worst;
}

}  // namespace

// The vectorizable float exp/tanh the cross-entropy and GELU kernels use are as accurate as fp32 needs.
TEST(Gpt2Kernels, FastExpAndTanhAccuracy) {
  double worst_exp = 0, worst_tanh = 0;
  for (int i = -870000; i <= 880000; ++i) {
    const float x = static_cast<float>(i) * 1e-4f;
    const double e = std::exp(static_cast<double>(x));
    worst_exp = std::max(worst_exp, std::abs(ops::fast_exp(x) - e) / e);
    if (std::abs(x) < 20) worst_tanh = std::max(worst_tanh, std::abs(ops::fast_tanh(x) - std::tanh(double(x))));
  }
  EXPECT_LT(worst_exp, 3e-7);
  EXPECT_LT(worst_tanh, 3e-7);
  EXPECT_EQ(ops::fast_exp(-INFINITY) < 1e-37f, true);
  std::printf("fast_exp max relative error %.3g, fast_tanh max absolute error %.3g\n", worst_exp, worst_tanh);
}

TEST(Gpt2FiniteDifferences, LayerNorm) {
  const std::int64_t N = 3, C = 7;
  auto x = randn(N * C, 1), w = randn(C, 2), b = randn(C, 3), r = randn(N * C, 4);
  std::vector<double> out(N * C), mean(N), rstd(N);
  auto loss = [&] {
    ops::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    return dot(out, r);
  };
  loss();
  std::vector<double> dx(N * C, 0.5), dw(C, 0.25), db(C, -1.0);  // accumulate onto non-zero values
  ops::layernorm_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), mean.data(), rstd.data(), N,
                          C);
  for (auto& v : dx) v -= 0.5;
  for (auto& v : dw) v -= 0.25;
  for (auto& v : db) v += 1.0;
  EXPECT_LT(fd_check(x, dx, loss), 1e-7);
  EXPECT_LT(fd_check(w, dw, loss), 1e-7);
  EXPECT_LT(fd_check(b, db, loss), 1e-7);
}

TEST(Gpt2FiniteDifferences, Linear) {
  const std::int64_t N = 5, IC = 4, OC = 6;
  auto x = randn(N * IC, 5), w = randn(OC * IC, 6), b = randn(OC, 7), res = randn(N * OC, 8), r = randn(N * OC, 9);
  std::vector<double> out(N * OC);
  auto loss = [&] {
    ops::linear_forward(out.data(), x.data(), w.data(), b.data(), res.data(), N, IC, OC);
    return dot(out, r);
  };
  loss();
  std::vector<double> dx(N * IC), dw(OC * IC, 0.0), db(OC, 0.0);
  ops::linear_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), N, IC, OC);
  EXPECT_LT(fd_check(x, dx, loss), 1e-7);
  EXPECT_LT(fd_check(w, dw, loss), 1e-7);
  EXPECT_LT(fd_check(b, db, loss), 1e-7);
  EXPECT_LT(fd_check(res, r, loss), 1e-7);  // the fused residual passes the gradient through unchanged
}

TEST(Gpt2FiniteDifferences, Gelu) {
  const std::int64_t n = 41;
  auto x = randn(n, 10, 2.0), r = randn(n, 11);
  std::vector<double> out(n), dx(n);
  auto loss = [&] {
    ops::gelu_forward(out.data(), x.data(), n);
    return dot(out, r);
  };
  ops::gelu_backward(dx.data(), x.data(), r.data(), n);
  EXPECT_LT(fd_check(x, dx, loss), 1e-7);
  auto wrong = dx;  // the check can fail
  wrong[3] += 1e-3;
  EXPECT_GT(fd_check(x, wrong, loss), 1e-4);
}

TEST(Gpt2FiniteDifferences, CausalAttention) {
  const std::int64_t B = 2, T = 5, C = 6, NH = 2;
  auto qkv = randn(B * T * 3 * C, 12), r = randn(B * T * C, 13);
  std::vector<double> out(B * T * C), att(B * NH * T * T), dqkv(B * T * 3 * C, 123.0);
  auto loss = [&] {
    ops::attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
    return dot(out, r);
  };
  loss();
  // Causality: row t of every head's probabilities sums to 1 over columns <= t and is 0 beyond.
  for (std::int64_t bh = 0; bh < B * NH; ++bh)
    for (std::int64_t t = 0; t < T; ++t) {
      double s = 0;
      for (std::int64_t j = 0; j < T; ++j) {
        const double pj = att[static_cast<std::size_t>((bh * T + t) * T + j)];
        if (j > t) {
          EXPECT_EQ(pj, 0.0);
        }
        s += pj;
      }
      EXPECT_NEAR(s, 1.0, 1e-12);
    }
  ops::attention_backward(dqkv.data(), r.data(), qkv.data(), att.data(), B, T, C, NH);  // overwrites dqkv
  EXPECT_LT(fd_check(qkv, dqkv, loss), 1e-7);
}

TEST(Gpt2FiniteDifferences, EmbeddingAndCrossEntropy) {
  const std::int64_t B = 2, T = 3, C = 4, Vrows = 6;
  const std::vector<std::int32_t> tok{1, 4, 1, 0, 5, 1};  // repeated tokens accumulate
  auto wte = randn(Vrows * C, 14), wpe = randn(T * C, 15), r = randn(B * T * C, 16);
  std::vector<double> out(B * T * C);
  auto loss = [&] {
    ops::embedding_forward(out.data(), tok.data(), wte.data(), wpe.data(), B, T, C);
    return dot(out, r);
  };
  std::vector<double> dwte(Vrows * C, 0.0), dwpe(T * C, 0.0);
  ops::embedding_backward(dwte.data(), dwpe.data(), r.data(), tok.data(), B, T, C);
  EXPECT_LT(fd_check(wte, dwte, loss), 1e-7);
  EXPECT_LT(fd_check(wpe, dwpe, loss), 1e-7);

  // Cross-entropy over the first V = 5 of Vp = 8 columns; the padded columns get exactly zero gradient.
  const std::int64_t N = 4, V = 5, Vp = 8;
  auto logits = randn(N * Vp, 17, 3.0);
  const std::vector<std::int32_t> targets{0, 4, 2, 4};
  std::vector<double> losses(N), lse(N);
  auto xent = [&] {
    ops::cross_entropy_forward(losses.data(), lse.data(), logits.data(), targets.data(), N, V, Vp);
    double s = 0;
    for (double l : losses) s += 0.75 * l;
    return s;
  };
  xent();
  std::vector<double> dlogits = logits;
  ops::cross_entropy_backward_inplace(dlogits.data(), lse.data(), targets.data(), 0.75, N, V, Vp);
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t j = V; j < Vp; ++j) EXPECT_EQ(dlogits[static_cast<std::size_t>(n * Vp + j)], 0.0);
  EXPECT_LT(fd_check(logits, dlogits, xent), 1e-7);
}

// Every parameter of a whole tiny model (padded vocabulary, two layers) in float64.
TEST(Gpt2FiniteDifferences, WholeModelEveryParameter) {
  Gpt2Config cfg;
  cfg.L = 2, cfg.C = 8, cfg.NH = 2, cfg.V = 11, cfg.Vp = 16, cfg.maxT = 6;
  Gpt2Params p = gpt2_random_init(cfg, 5, DType::F64);
  // Larger, non-trivial values everywhere (layernorm weights around 1, biases non-zero).
  const auto k = rng::key(77, 1);
  double* flat = p.flat().data<double>();
  for (std::int64_t i = 0; i < p.flat().numel(); ++i) flat[i] += 0.3 * rng::normal_at(k, static_cast<std::uint64_t>(i));
  const std::int64_t B = 2, T = 5;
  Tensor in = Tensor::empty({B, T}, DType::I32), tg = Tensor::empty({B, T}, DType::I32);
  for (std::int64_t i = 0; i < B * T; ++i) {
    in.data<std::int32_t>()[i] = static_cast<std::int32_t>((7 * i + 3) % cfg.V);
    tg.data<std::int32_t>()[i] = static_cast<std::int32_t>((5 * i + 1) % cfg.V);
  }
  Gpt2Model<double> model(cfg);
  model.forward(p, in, tg);
  Gpt2Params g = Gpt2Params::zeros(cfg, DType::F64);
  model.backward(p, g);
  for (const auto& [name, t] : p.named()) {
    double* w = t.data<double>();
    const double* gw = g.get(name).data<double>();
    double gmax = 1e-12, worst = 0;
    for (std::int64_t i = 0; i < t.numel(); ++i) gmax = std::max(gmax, std::abs(gw[i]));
    for (std::int64_t i = 0; i < t.numel(); ++i) {
      const double w0 = w[i], h = 1e-5;
      w[i] = w0 + h;
      const double lp = model.forward(p, in, tg);
      w[i] = w0 - h;
      const double lm = model.forward(p, in, tg);
      w[i] = w0;
      worst = std::max(worst, std::abs((lp - lm) / (2 * h) - gw[i]) / gmax);
    }
    EXPECT_LT(worst, 1e-6) << name;
  }
  // The padded rows of wte get no gradient.
  const double* gwte = g.get("wte").data<double>();
  for (std::int64_t i = cfg.V * cfg.C; i < cfg.Vp * cfg.C; ++i) EXPECT_EQ(gwte[i], 0.0);
}

// Two micro-batches with grad_scale 1/2, run unit by unit, accumulate to the gradient of one batch of both.
TEST(Gpt2Units, MicroBatchesAccumulateToTheFullBatchGradient) {
  Gpt2Config cfg;
  cfg.L = 2, cfg.C = 8, cfg.NH = 2, cfg.V = 11, cfg.Vp = 12, cfg.maxT = 8;
  const Gpt2Params p = gpt2_random_init(cfg, 9, DType::F64);
  const std::int64_t B = 4, T = 6;
  Tensor in = Tensor::empty({B, T}, DType::I32), tg = Tensor::empty({B, T}, DType::I32);
  for (std::int64_t i = 0; i < B * T; ++i) {
    in.data<std::int32_t>()[i] = static_cast<std::int32_t>((3 * i + 2) % cfg.V);
    tg.data<std::int32_t>()[i] = static_cast<std::int32_t>((4 * i + 5) % cfg.V);
  }
  Gpt2Model<double> model(cfg);
  Gpt2Params full = Gpt2Params::zeros(cfg, DType::F64);
  const double full_loss = model.forward(p, in, tg);
  model.backward(p, full);

  Gpt2Params acc = Gpt2Params::zeros(cfg, DType::F64);
  double loss_sum = 0;
  for (std::int64_t half = 0; half < 2; ++half) {
    Tensor hi = in.rows(half * 2, half * 2 + 2).clone(), ht = tg.rows(half * 2, half * 2 + 2).clone();
    model.embedding_forward(p.embedding(), hi);
    for (int l = 0; l < cfg.L; ++l) model.block_forward(l, p.block(l));
    loss_sum += model.head_forward(p.head(), ht);
    model.head_backward(p.head(), acc.head(), 0.5);
    for (int l = static_cast<int>(cfg.L) - 1; l >= 0; --l) model.block_backward(l, p.block(l), acc.block(l));
    model.embedding_backward(acc.embedding());
  }
  EXPECT_NEAR(loss_sum / 2, full_loss, 1e-12);
  const double* a = acc.flat().data<double>();
  const double* f = full.flat().data<double>();
  for (std::int64_t i = 0; i < full.flat().numel(); ++i) ASSERT_NEAR(a[i], f[i], 1e-12) << i;
}

// Activation checkpointing keeps one block's activations and recomputes the block in its backward: the same
// loss and every gradient bit for bit, with fewer activation bytes.
TEST(Gpt2Units, ActivationCheckpointingGivesTheSameGradients) {
  Gpt2Config cfg;
  cfg.L = 3, cfg.C = 16, cfg.NH = 2, cfg.V = 11, cfg.Vp = 12, cfg.maxT = 8;
  const Gpt2Params p = gpt2_random_init(cfg, 4);
  Tensor in = Tensor::empty({2, 8}, DType::I32), tg = Tensor::empty({2, 8}, DType::I32);
  for (std::int64_t i = 0; i < 16; ++i) {
    in.data<std::int32_t>()[i] = static_cast<std::int32_t>((5 * i + 1) % cfg.V);
    tg.data<std::int32_t>()[i] = static_cast<std::int32_t>((7 * i + 3) % cfg.V);
  }
  Gpt2Model<float> plain(cfg), ckpt(cfg, true);
  Gpt2Params gp = Gpt2Params::zeros(cfg), gc = Gpt2Params::zeros(cfg);
  const double lp = plain.forward(p, in, tg), lc = ckpt.forward(p, in, tg);
  plain.backward(p, gp);
  ckpt.backward(p, gc);
  EXPECT_EQ(lp, lc);
  EXPECT_EQ(std::memcmp(gp.flat().raw(), gc.flat().raw(), gp.flat().nbytes()), 0);
  EXPECT_LT(ckpt.activation_bytes(), plain.activation_bytes());
}

TEST(Gpt2Units, OrderAndShapesAreChecked) {
  Gpt2Config cfg;
  cfg.L = 1, cfg.C = 8, cfg.NH = 2, cfg.V = 11, cfg.Vp = 12, cfg.maxT = 8;
  const Gpt2Params p = gpt2_random_init(cfg, 1);
  Gpt2Model<float> model(cfg);
  EXPECT_NE(error_of([&] { model.block_forward(0, p.block(0)); }).find("before the embedding"), std::string::npos);
  BlockWeights w = p.block(0);
  w.fc_w = w.fc_w.reshape({8, 32});
  Tensor in = Tensor::zeros({1, 4}, DType::I32);
  model.embedding_forward(p.embedding(), in);
  const std::string msg = error_of([&] { model.block_forward(0, w); });
  EXPECT_NE(msg.find("mlp.fc.weight"), std::string::npos) << msg;
  model.head_forward(p.head(), Tensor());
  EXPECT_NE(error_of([&] { model.head_backward(p.head(), p.head()); }).find("targets"), std::string::npos);
  // The units and their parameter names cover every named parameter exactly once (wte with the embedding).
  std::vector<std::string> names;
  for (const auto& u : gpt2_units(cfg))
    for (const auto& n : unit_parameter_names(u)) names.push_back(n);
  std::vector<std::string> want;
  for (const auto& [n, s] : gpt2_parameter_specs(cfg)) want.push_back(n);
  std::sort(names.begin(), names.end());
  std::sort(want.begin(), want.end());
  EXPECT_EQ(names, want);
}

// The runtime's names and shapes are those the optimizer benchmark (and routing) use.
TEST(Gpt2Units, NamesMatchTheOptimizerBenchmarkSet) {
  Gpt2Config cfg;
  cfg.L = 3, cfg.C = 48, cfg.NH = 4, cfg.V = 100, cfg.Vp = 128, cfg.maxT = 16;
  const auto ours = gpt2_parameter_specs(cfg);
  const auto bench = gpt2_parameter_shapes(3, 48, 128, 16);
  ASSERT_EQ(ours.size(), bench.size());
  for (std::size_t i = 0; i < ours.size(); ++i) {
    EXPECT_EQ(ours[i].first, bench[i].first);
    EXPECT_EQ(ours[i].second, Shape(bench[i].second.begin(), bench[i].second.end())) << ours[i].first;
  }
  const Gpt2Params p = Gpt2Params::zeros(cfg);
  ASSERT_EQ(p.named().size(), ours.size());
  for (std::size_t i = 0; i < ours.size(); ++i) {
    EXPECT_EQ(p.named()[i].first, ours[i].first);
    EXPECT_EQ(p.named()[i].second.shape(), ours[i].second);
  }
  EXPECT_EQ(p.flat().numel(), cfg.num_parameters());
}

// ---------------------------------------------------------------------------------------------------------
// GPT-2 as a model family: what the trainer, the optimizer's routing and the checkpoints see.

namespace {
// Attributes as a checkpoint's /model group would hold them.
class MapAttributes final : public AttributeSource {
 public:
  explicit MapAttributes(std::vector<ModelAttribute> a) : attrs_(std::move(a)) {}
  std::string where() const override { return "attributes"; }
  bool has(const std::string& n) const override { return find(n) != nullptr; }
  std::int64_t get_int(const std::string& n) const override { return std::get<std::int64_t>(at(n)); }
  double get_double(const std::string& n) const override { return std::get<double>(at(n)); }
  std::string get_string(const std::string& n) const override { return std::get<std::string>(at(n)); }

 private:
  const ModelAttribute* find(const std::string& n) const {
    for (const auto& a : attrs_)
      if (a.name == n) return &a;
    return nullptr;
  }
  const ModelAttribute::Value& at(const std::string& n) const {
    const ModelAttribute* a = find(n);
    if (!a) throw Error("no attribute " + n);
    return a->value;
  }
  std::vector<ModelAttribute> attrs_;
};
}  // namespace

TEST(Gpt2Family, UnitsRolesAndTiedWeights) {
  ModelSpec spec;
  spec.L = 2, spec.C = 16, spec.NH = 2, spec.V = 50, spec.Vp = 64, spec.maxT = 8;
  const std::unique_ptr<Model> m = make_model(spec);
  EXPECT_EQ(m->family().arch(), "gpt2");
  const auto& units = m->units();
  ASSERT_EQ(units.size(), 4u);  // embedding, h.0, h.1, head
  EXPECT_EQ(units.front().kind, UnitKind::Embedding);
  EXPECT_FALSE(units.front().backward_reads_params);
  EXPECT_EQ(units.back().kind, UnitKind::Head);
  EXPECT_EQ(units.back().reads, std::vector<std::string>{"wte"});  // the logits use the tied embedding
  // Every parameter once, in the optimizer benchmark's order, with the role its place in the network gives it.
  const auto params = m->parameters();
  const auto specs = gpt2_parameter_specs(gpt2_config(spec));
  ASSERT_EQ(params.size(), specs.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(params[i].name, specs[i].first);
    EXPECT_EQ(params[i].shape, specs[i].second);
    const ParamRole want = params[i].name == "wte" || params[i].name == "wpe" ? ParamRole::Embedding
                           : params[i].shape.size() == 2                       ? ParamRole::Matrix
                                                                               : ParamRole::Vector;
    EXPECT_EQ(params[i].role, want) << params[i].name;
  }
}

// Initial values come by rows (each rank reads only its shard): the seeded init's rows are gpt2_random_init's,
// and a model file's rows are what load_llmc_model reads, for fp32 and bf16 files.
TEST(Gpt2Family, InitialRowsAttributesAndUnknownArchitectures) {
  ModelSpec spec;
  spec.L = 2, spec.C = 8, spec.NH = 2, spec.V = 11, spec.Vp = 12, spec.maxT = 8, spec.seed = 5;
  const Gpt2Params want = gpt2_random_init(gpt2_config(spec), 5);
  const fs::path dir = temp_dir("gpt2family");
  save_llmc_model(want, (dir / "model.bin").string());
  {  // the same as bf16 (llm.c version 5)
    std::array<std::int32_t, 256> h{};
    std::ifstream(dir / "model.bin", std::ios::binary).read(reinterpret_cast<char*>(h.data()), sizeof h);
    h[1] = 5;
    std::vector<bf16> half(static_cast<std::size_t>(want.flat().numel()));
    for (std::size_t i = 0; i < half.size(); ++i) half[i] = float_to_bf16(want.flat().data<float>()[i]);
    std::ofstream out(dir / "model16.bin", std::ios::binary);
    out.write(reinterpret_cast<const char*>(h.data()), sizeof h);
    out.write(reinterpret_cast<const char*>(half.data()), static_cast<std::streamsize>(half.size() * 2));
  }
  const std::unique_ptr<Model> seeded = make_model(spec);
  spec.init_from = (dir / "model.bin").string();
  const std::unique_ptr<Model> from_file = make_model(spec);
  spec.init_from = (dir / "model16.bin").string();
  const std::unique_ptr<Model> from_bf16 = make_model(spec);
  const Gpt2Params want16 = load_llmc_model(spec.init_from);
  for (const auto& [m, ref] : {std::pair{seeded.get(), &want}, {from_file.get(), &want}, {from_bf16.get(), &want16}})
    for (const auto& [name, t] : ref->named()) {
      const std::int64_t rows = t.dim(0), per_row = t.numel() / rows, b = rows / 3, e = rows - rows / 4;
      std::vector<float> got(static_cast<std::size_t>((e - b) * per_row));
      m->initial_rows(name, b, e, got.data());
      ASSERT_EQ(std::memcmp(got.data(), t.data<float>() + b * per_row, got.size() * sizeof(float)), 0) << name;
    }
  EXPECT_EQ(from_file->describe(), seeded->describe());
  // A checkpoint's attributes give the same model back, without initial values.
  const auto again = model_family("gpt2").from_attributes(MapAttributes(seeded->attributes()));
  EXPECT_EQ(again->describe(), seeded->describe());
  EXPECT_EQ(again->num_parameters(), seeded->num_parameters());
  float x = 0;
  EXPECT_THROW(again->initial_rows("wte", 0, 1, &x), Error);
  spec.arch = "llama2000";
  const std::string msg = error_of([&] { make_model(spec); });
  EXPECT_NE(msg.find("'llama2000' is not known (known: gpt2, llama)"), std::string::npos) << msg;
  fs::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------------------
// Model files and initialization.

TEST(Gpt2Files, SaveLoadRoundTripAndBf16) {
  const fs::path dir = temp_dir("gpt2files");
  Gpt2Config cfg;
  cfg.L = 2, cfg.C = 16, cfg.NH = 4, cfg.V = 50, cfg.Vp = 64, cfg.maxT = 12;
  const Gpt2Params p = gpt2_random_init(cfg, 3);
  save_llmc_model(p, (dir / "m.bin").string());
  const Gpt2Params q = load_llmc_model((dir / "m.bin").string());
  EXPECT_EQ(q.config().describe(), cfg.describe());
  EXPECT_EQ(std::memcmp(p.flat().raw(), q.flat().raw(), p.flat().nbytes()), 0);
  EXPECT_EQ(fs::file_size(dir / "m.bin"), 1024 + 4 * static_cast<std::uintmax_t>(cfg.num_parameters()));

  // Version 5 (bf16): same header with version 5, parameters as bf16.
  std::array<std::int32_t, 256> h{};
  std::ifstream(dir / "m.bin", std::ios::binary).read(reinterpret_cast<char*>(h.data()), sizeof h);
  h[1] = 5;
  std::vector<bf16> half(static_cast<std::size_t>(cfg.num_parameters()));
  for (std::size_t i = 0; i < half.size(); ++i) half[i] = float_to_bf16(p.flat().data<float>()[i]);
  {
    std::ofstream out(dir / "m16.bin", std::ios::binary);
    out.write(reinterpret_cast<const char*>(h.data()), sizeof h);
    out.write(reinterpret_cast<const char*>(half.data()), static_cast<std::streamsize>(half.size() * 2));
  }
  const Gpt2Params r = load_llmc_model((dir / "m16.bin").string());
  for (std::size_t i = 0; i < half.size(); ++i) ASSERT_EQ(r.flat().data<float>()[i], bf16_to_float(half[i])) << i;
  fs::remove_all(dir);
}

TEST(Gpt2Files, BadModelFilesNameTheFile) {
  const fs::path dir = temp_dir("gpt2bad");
  std::vector<char> good;
  {
    std::ifstream in(kRef + "/model.bin", std::ios::binary);
    good.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& name, const std::vector<char>& bytes) {
    std::ofstream(dir / name, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return (dir / name).string();
  };
  auto set_header = [](std::vector<char> b, int i, std::int32_t v) {
    std::memcpy(b.data() + 4 * i, &v, 4);
    return b;
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {write("magic.bin", set_header(good, 0, 20240520)), "not an llm.c GPT-2 model file"},
      {write("version.bin", set_header(good, 1, 2)), "version 2 is not supported"},
      {write("short.bin", std::vector<char>(good.begin(), good.end() - 100)), "truncated"},
      {write("tiny.bin", std::vector<char>(good.begin(), good.begin() + 64)), "truncated"},
      {write("extra.bin", [&] { auto b = good; b.push_back(0); return b; }()), "unexpected bytes"},
      {write("heads.bin", set_header(good, 5, 3)), "not divisible by NH"},
      {(dir / "missing.bin").string(), "no such model file"},
  };
  for (const auto& [path, want] : cases) {
    std::string msg;
    try {
      load_llmc_model(path);
    } catch (const UsageError& e) {
      msg = e.what();
    }
    EXPECT_NE(msg.find(want), std::string::npos) << path << ": " << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
  }
  fs::remove_all(dir);
}

TEST(Gpt2Files, RandomInitIsGpt2AndDeterministic) {
  Gpt2Config cfg;
  cfg.L = 4, cfg.C = 64, cfg.NH = 4, cfg.V = 1000, cfg.Vp = 1024, cfg.maxT = 128;
  const Gpt2Params a = gpt2_random_init(cfg, 42), b = gpt2_random_init(cfg, 42), c = gpt2_random_init(cfg, 43);
  EXPECT_EQ(std::memcmp(a.flat().raw(), b.flat().raw(), a.flat().nbytes()), 0);
  EXPECT_NE(std::memcmp(a.flat().raw(), c.flat().raw(), a.flat().nbytes()), 0);
  auto stats = [](const Tensor& t, std::int64_t n) {
    double s = 0, s2 = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      const double v = t.data<float>()[i];
      s += v;
      s2 += v * v;
    }
    return std::pair{s / n, std::sqrt(s2 / n - (s / n) * (s / n))};
  };
  const double resid_std = 0.02 / std::sqrt(2.0 * cfg.L);
  for (const auto& [name, t] : a.named()) {
    const bool bias = name.ends_with(".bias");
    const bool lnw = name.ends_with("ln1.weight") || name.ends_with("ln2.weight") || name == "lnf.weight";
    const bool resid = name.ends_with("attn.proj.weight") || name.ends_with("mlp.proj.weight");
    const std::int64_t n = name == "wte" ? cfg.V * cfg.C : t.numel();
    const auto [mean, sd] = stats(t, n);
    if (bias || lnw) {
      EXPECT_EQ(sd, 0.0) << name;
      EXPECT_EQ(mean, bias ? 0.0 : 1.0) << name;
    } else {
      EXPECT_NEAR(sd, resid ? resid_std : 0.02, 0.05 * (resid ? resid_std : 0.02)) << name;
      EXPECT_NEAR(mean, 0.0, 0.1 * (resid ? resid_std : 0.02)) << name;
    }
  }
  const float* wte = a.get("wte").data<float>();
  for (std::int64_t i = cfg.V * cfg.C; i < cfg.Vp * cfg.C; ++i) ASSERT_EQ(wte[i], 0.0f);
  // Any block of rows can be generated alone (a rank's shard), equal to the full initialization.
  std::vector<float> rows(static_cast<std::size_t>(5 * cfg.C));
  gpt2_init_rows(cfg, 42, "h.2.mlp.fc.weight", 17, 22, rows.data());
  EXPECT_EQ(std::memcmp(rows.data(), a.get("h.2.mlp.fc.weight").data<float>() + 17 * cfg.C, rows.size() * 4), 0);
  std::vector<float> tail(static_cast<std::size_t>(30 * cfg.C));
  gpt2_init_rows(cfg, 42, "wte", cfg.Vp - 30, cfg.Vp, tail.data());
  EXPECT_EQ(std::memcmp(tail.data(), wte + (cfg.Vp - 30) * cfg.C, tail.size() * 4), 0);
  // Keyed by name: a layer's weights do not depend on how many layers the model has.
  Gpt2Config deeper = cfg;
  deeper.L = 6;
  const Gpt2Params d = gpt2_random_init(deeper, 42);
  const Tensor x = a.get("h.1.attn.qkv.weight"), y = d.get("h.1.attn.qkv.weight");
  EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0);
}

// ---------------------------------------------------------------------------------------------------------
// End to end: a tiny model learns the built-in synthetic language, and its held-out loss stays above the
// entropy rate the program computes (the floor is a floor).
#include "models/data/synthetic.hpp"

TEST(Gpt2Training, LearnsTheSyntheticLanguageDownTowardsItsFloor) {
  Gpt2Config cfg;
  cfg.L = 2, cfg.C = 32, cfg.NH = 2, cfg.V = 256, cfg.Vp = 256, cfg.maxT = 32;
  Gpt2Params p = gpt2_random_init(cfg, 1);
  Gpt2Params g = Gpt2Params::zeros(cfg);
  OptimConfig oc;
  oc.name = "adamw";
  oc.lr = 1e-2;
  oc.beta2_adam = 0.99;
  Optimizer opt = Optimizer::with_routing(oc, gpt2_parameter_specs(cfg));
  std::vector<Tensor> params, grads;
  for (const auto& [n, t] : p.named()) params.push_back(t);
  for (const auto& [n, t] : g.named()) grads.push_back(t);
  LoaderConfig lc;
  lc.B = 8, lc.T = 32, lc.vocab_size = cfg.V, lc.order = DataOrder::Shuffled, lc.seed = 3;
  DataLoader train(TokenStream::open("builtin:synthetic"), lc);
  lc.order = DataOrder::Sequential;
  DataLoader val(TokenStream::open("builtin:synthetic:val"), lc);
  const double floor = SyntheticLanguage().entropy_rate();
  Gpt2Model<float> model(cfg);
  Tensor in, tg;
  double first = 0, last = 0;
  for (int step = 0; step < 300; ++step) {
    train.load(0, in, tg);
    const double loss = model.forward(p, in, tg);
    if (step == 0) first = loss;
    g.zero();
    model.backward(p, g);
    opt.step(params, grads);
    train.advance();
    last = loss;
  }
  double val_loss = 0;
  for (int k = 0; k < 8; ++k, val.advance()) {
    val.load(0, in, tg);
    val_loss += model.forward(p, in, tg) / 8;
  }
  std::printf("synthetic: loss %.3f -> %.3f (train), %.3f (held out); entropy rate %.3f\n", first, last, val_loss,
              floor);
  EXPECT_NEAR(first, std::log(256.0), 0.1);
  EXPECT_LT(val_loss, floor + 0.45);  // learnt the sparse successor structure at least
  EXPECT_GT(val_loss, floor - 0.05);  // but cannot beat the source's entropy rate
}

// ---------------------------------------------------------------------------------------------------------
// Hugging Face layout (GPT2LMHeadModel).

TEST(Gpt2Hf, ExportThenImportRoundTripsBitExactlyWithConv1DLayout) {
  const Gpt2Params p = load_llmc_model(kRef + "/model.bin");
  const Gpt2Config& cfg = p.config();
  const fs::path dir = temp_dir("gpt2_hf");
  const Gpt2 m(cfg, std::nullopt);
  m.export_weights("hf", [&](const std::string& n) { return p.get(n); }, dir.string(), "test");
  // The file: transformers' names, Conv1D weights (in, out), no lm_head (tied), no padded rows.
  const SafetensorsSet st(dir.string());
  EXPECT_FALSE(st.has("lm_head.weight"));
  EXPECT_EQ(st.at("transformer.wte.weight").shape, (Shape{cfg.V, cfg.C}));
  EXPECT_EQ(st.at("transformer.h.1.attn.c_attn.weight").shape, (Shape{cfg.C, 3 * cfg.C}));
  EXPECT_EQ(st.at("transformer.h.1.mlp.c_proj.weight").shape, (Shape{4 * cfg.C, cfg.C}));
  std::vector<float> c_attn(static_cast<std::size_t>(cfg.C * 3 * cfg.C));
  st.read_rows("transformer.h.1.attn.c_attn.weight", 0, cfg.C, c_attn.data());
  const Tensor qkv = p.get("h.1.attn.qkv.weight");  // (3C, C)
  EXPECT_EQ(c_attn[static_cast<std::size_t>(5 * 3 * cfg.C + 7)], qkv.data<float>()[7 * cfg.C + 5]);
  // Import: every parameter bit for bit, the family from model_type.
  ModelSpec spec;
  spec.init_from = dir.string();
  const std::unique_ptr<Model> back = make_model(spec);
  ASSERT_EQ(back->family().arch(), "gpt2");
  for (const auto& [name, t] : p.named()) {
    Tensor got = Tensor::empty(t.shape(), DType::F32);
    back->initial_rows(name, 0, t.dim(0), got.data<float>());
    EXPECT_EQ(std::memcmp(got.raw(), t.raw(), t.nbytes()), 0) << name;
  }
  // What this GPT-2 does not compute is refused by name.
  const auto base = nlohmann::json::parse(std::ifstream(dir / "config.json"));
  const std::pair<const char*, nlohmann::json> bad[] = {{"activation_function", "gelu"},
                                                        {"tie_word_embeddings", false},
                                                        {"layer_norm_epsilon", 1e-6},
                                                        {"n_inner", 7},
                                                        {"n_layer", 0}};
  for (const auto& [key, value] : bad) {
    nlohmann::json j = base;
    j[key] = value;
    std::ofstream(dir / "config.json", std::ios::trunc) << j.dump();
    const std::string e = error_of([&] { make_model(spec); });
    EXPECT_NE(e.find(key), std::string::npos) << key << ": " << e;
  }
  fs::remove_all(dir);
}

TEST(Gpt2Generate, KvCacheStepsEqualTheFullForward) {
  // orthoshard sample's generator: token by token, the logits of the full causal forward at every position.
  Reference ref;
  const Gpt2Params p = load_llmc_model(kRef + "/model.bin");
  const Gpt2Config& cfg = p.config();
  const Tensor inputs = ref.f.read("/inputs", DType::I32), targets = ref.f.read("/targets", DType::I32);
  Gpt2Model<float> model(cfg);
  model.forward(p, inputs, targets);
  const Tensor full = model.logits();
  const Gpt2 m(cfg, std::nullopt);
  const auto gen = m.cpu_generator([&](const std::string& n) { return p.get(n); });
  double worst = 0;
  for (std::int64_t t = 0; t < ref.T; ++t) {
    const float* got = gen->step(inputs.data<std::int32_t>()[t]);
    for (std::int64_t v = 0; v < cfg.V; ++v)
      worst = std::max(worst, static_cast<double>(std::abs(got[v] - full.data<float>()[t * cfg.Vp + v])));
  }
  EXPECT_LT(worst, 1e-4);
  EXPECT_THROW(
      {
        for (std::int64_t t = ref.T; t <= cfg.maxT; ++t) gen->step(0);
      },
      UsageError);  // the context is full
}
