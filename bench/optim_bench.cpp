// Newton-Schulz and optimizer-step benchmarks (single process; they print numbers and assert nothing).
#include "bench/optim_bench.hpp"

#include "optim/linalg.hpp"
#include "optim/optimizer.hpp"
#include "optim/orthogonalize/newton_schulz.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <random>

extern "C" int openblas_get_num_threads(void);

namespace orthoshard {
namespace {

double seconds(const std::function<void()>& f) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median_time(int repeats, const std::function<void()>& prepare, const std::function<void()>& f) {
  std::vector<double> ts;
  prepare();
  f();  // warm-up
  for (int i = 0; i < repeats; ++i) {
    prepare();
    ts.push_back(seconds(f));
  }
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

void fill_random(float* x, std::int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (std::int64_t i = 0; i < n; ++i) x[i] = d(rng);
}

void write_json(const std::string& path, const nlohmann::json& doc) {
  if (path.empty()) return;
  std::ofstream f(path);
  OS_CHECK(f.good(), "cannot write JSON to '{}'", path);
  f << doc.dump(2) << "\n";
  log::info("# JSON written to {}", path);
}

}  // namespace

std::vector<std::pair<std::string, std::vector<std::int64_t>>> gpt2_parameter_shapes(int layers, int channels,
                                                                                      std::int64_t vocab_padded,
                                                                                      std::int64_t max_t) {
  const std::int64_t C = channels;
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> p = {{"wte", {vocab_padded, C}}, {"wpe", {max_t, C}}};
  for (int l = 0; l < layers; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    p.push_back({h + "ln1.weight", {C}});
    p.push_back({h + "ln1.bias", {C}});
    p.push_back({h + "attn.qkv.weight", {3 * C, C}});
    p.push_back({h + "attn.qkv.bias", {3 * C}});
    p.push_back({h + "attn.proj.weight", {C, C}});
    p.push_back({h + "attn.proj.bias", {C}});
    p.push_back({h + "ln2.weight", {C}});
    p.push_back({h + "ln2.bias", {C}});
    p.push_back({h + "mlp.fc.weight", {4 * C, C}});
    p.push_back({h + "mlp.fc.bias", {4 * C}});
    p.push_back({h + "mlp.proj.weight", {C, 4 * C}});
    p.push_back({h + "mlp.proj.bias", {C}});
  }
  p.push_back({"lnf.weight", {C}});
  p.push_back({"lnf.bias", {C}});
  return p;
}

int run_ns_bench(const NsBenchOptions& opt) {
  std::vector<std::pair<std::int64_t, std::int64_t>> cases;
  if (!opt.shape.empty()) {
    std::int64_t m = 0, n = 0;
    char x = 0;
    if (std::sscanf(opt.shape.c_str(), "%ld%c%ld", &m, &x, &n) != 3 || x != 'x' || m <= 0 || n <= 0)
      throw UsageError("--shape: '" + opt.shape + "' is not MxN (e.g. 768x3072)");
    cases.push_back({m, n});
  } else {
    for (auto s : opt.sizes) {
      if (s <= 0) throw UsageError(fmt::format("--sizes: {} is not a positive size", s));
      cases.push_back({s, s});
    }
  }
  log::info("# orthoshard bench ns: NS5 in f32 through BLAS (syrk for X Xᵀ and A²), {} BLAS threads",
            openblas_get_num_threads());
  log::info("# GFLOP/s counts GEMM-equivalent flops: 5 x (2 r² s + 2 r³ + 2 r² s), r = min(m,n), s = max(m,n)");
  log::info("# sgemm: the machine's rate on (r x s)·(s x r), measured here; ratio = NS rate / sgemm rate");
  log::info("{:>12} {:>10} {:>10} {:>12} {:>8}", "shape", "ns_ms", "ns_gflops", "sgemm_gflops", "ratio");
  nlohmann::json rows = nlohmann::json::array();
  for (auto [m, n] : cases) {
    const std::int64_t r = std::min(m, n), s = std::max(m, n);
    std::vector<float> src(static_cast<std::size_t>(m * n)), x(src.size());
    fill_random(src.data(), m * n, 1);
    NewtonSchulz<float> ns;
    const double t_ns = median_time(
        opt.repeats, [&] { std::copy(src.begin(), src.end(), x.begin()); }, [&] { ns.run(x.data(), m, n); });
    const double ns_gflops = ns_gemm_equivalent_flops(m, n, 5) / t_ns / 1e9;
    // sgemm on the dominant product shape: (r x s)(s x r) = 2 r² s flops.
    std::vector<float> a(static_cast<std::size_t>(r * s)), c(static_cast<std::size_t>(r * r));
    fill_random(a.data(), r * s, 2);
    const double t_gemm = median_time(
        opt.repeats, [] {},
        [&] { linalg::gemm<float>(false, true, r, r, s, 1.0f, a.data(), s, a.data(), s, 0.0f, c.data(), r); });
    const double gemm_gflops = 2.0 * r * r * s / t_gemm / 1e9;
    const double ratio = ns_gflops / gemm_gflops;
    log::info("{:>12} {:>10.2f} {:>10.1f} {:>12.1f} {:>8.3f}", fmt::format("{}x{}", m, n), t_ns * 1e3, ns_gflops,
              gemm_gflops, ratio);
    rows.push_back({{"m", m}, {"n", n}, {"ns_ms", t_ns * 1e3}, {"ns_gflops", ns_gflops},
                    {"sgemm_gflops", gemm_gflops}, {"ratio", ratio}});
  }
  write_json(opt.json_path, {{"bench", "ns"}, {"blas_threads", openblas_get_num_threads()}, {"results", rows}});
  return 0;
}

int run_optim_bench(const OptimBenchOptions& opt) {
  OS_CHECK(opt.layers > 0 && opt.channels > 0 && opt.steps > 0, "bench optim: layers, channels, steps must be > 0");
  const auto shapes = gpt2_parameter_shapes(opt.layers, opt.channels, 50304, 1024);
  std::int64_t total = 0;
  for (const auto& [n, s] : shapes) total += shape_numel(s);
  log::info("# orthoshard bench optim: GPT-2-shaped set, {} layers, C = {}, {} tensors, {:.1f} M parameters, f32, "
            "{} BLAS threads", opt.layers, opt.channels, shapes.size(), total / 1e6, openblas_get_num_threads());
  log::info("# one full step (matrix rule on hidden 2-D weights, AdamW on the rest); median of {} after 1 warm-up",
            opt.steps);
  log::info("{:>10} {:>12} {:>14}", "optimizer", "step_ms", "matrices");
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& name : opt.optimizers) {
    OptimConfig c;
    c.name = name;
    c.update_proj_gap = 1000000;  // steady-state Conda steps; the SVD refresh is timed separately below
    if (name != "adamw" && name != "muon" && name != "normuon" && name != "conda")
      throw UsageError("bench optim: unknown optimizer '" + name + "'");
    std::vector<std::pair<std::string, Shape>> ps(shapes.begin(), shapes.end());
    Optimizer o = Optimizer::with_routing(c, ps);
    std::vector<Tensor> params, grads;
    int matrices = 0;
    for (std::size_t i = 0; i < ps.size(); ++i) {
      params.push_back(Tensor::empty(ps[i].second, DType::F32));
      grads.push_back(Tensor::empty(ps[i].second, DType::F32));
      fill_random(params.back().data<float>(), params.back().numel(), 3 + static_cast<unsigned>(i));
      fill_random(grads.back().data<float>(), grads.back().numel(), 1000 + static_cast<unsigned>(i));
      matrices += o.params()[i].rule != RuleKind::AdamW ? 1 : 0;
    }
    const double first = seconds([&] { o.step(params, grads); });  // warm-up (Conda: includes the SVD refresh)
    std::vector<double> ts;
    for (int s = 0; s < opt.steps; ++s) ts.push_back(seconds([&] { o.step(params, grads); }));
    std::sort(ts.begin(), ts.end());
    const double t = ts[ts.size() / 2];
    log::info("{:>10} {:>12.1f} {:>14}{}", name, t * 1e3, matrices,
              name == "conda" ? fmt::format("   (first step with SVD refresh: {:.1f} ms)", first * 1e3) : "");
    rows.push_back({{"optimizer", name}, {"step_ms", t * 1e3}, {"first_step_ms", first * 1e3},
                    {"matrices", matrices}});
  }
  write_json(opt.json_path, {{"bench", "optim"}, {"layers", opt.layers}, {"channels", opt.channels},
                             {"results", rows}});
  return 0;
}

}  // namespace orthoshard
