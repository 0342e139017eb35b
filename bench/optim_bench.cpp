// Newton-Schulz and optimizer-step benchmarks (single process; they print numbers and assert nothing).
#include "bench/optim_bench.hpp"

#include "bench/bench_json.hpp"
#include "optim/linalg.hpp"
#include "optim/optimizer.hpp"
#include "optim/orthogonalize/newton_schulz.hpp"
#include "runtime/comm/communicator.hpp"
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

void write_f32(const std::string& path, const std::vector<float>& v) {
  std::ofstream f(path, std::ios::binary);
  OS_CHECK(f.good(), "cannot write '{}'", path);
  f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
  OS_CHECK(f.good(), "cannot write '{}'", path);
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
    if (!opt.dump_dir.empty()) {  // the input and NS5(input) as computed by the timed kernel
      std::copy(src.begin(), src.end(), x.begin());
      ns.run(x.data(), m, n);
      const std::string base = fmt::format("{}/ns_{}x{}", opt.dump_dir, m, n);
      write_f32(base + "_in.f32", src);
      write_f32(base + "_out.f32", x);
    }
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
  write_bench_json(opt.json_path, {{"bench", "ns"}, {"blas_threads", openblas_get_num_threads()}, {"results", rows}});
  return 0;
}

int run_optim_bench(Communicator& comm, const OptimBenchOptions& opt) {
  OS_CHECK(opt.layers > 0 && opt.channels > 0 && opt.steps > 0, "bench optim: layers, channels, steps must be > 0");
  const OrthoScheme scheme = parse_ortho_scheme(opt.scheme);
  const auto shapes = gpt2_parameter_shapes(opt.layers, opt.channels, 50304, 1024);
  const int n = comm.size(), me = comm.rank();
  std::int64_t total = 0, matrix_elems = 0;
  for (const auto& [name, s] : shapes) total += shape_numel(s);
  log::info("# orthoshard bench optim: GPT-2-shaped set, {} layers, C = {}, {} tensors, {:.1f} M parameters, f32",
            opt.layers, opt.channels, shapes.size(), total / 1e6);
  log::info("# {} rank(s), {} BLAS thread(s) per rank, parameters row-sharded, ortho_scheme {}", n,
            openblas_get_num_threads(), opt.scheme);
  log::info("# one full step (matrix rule on hidden 2-D weights, AdamW on the rest); median of {} after 1 warm-up",
            opt.steps);
  log::info("{:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11} {:>9} {:>9}", "optimizer", "step_ms", "local_ms",
            "ortho_ms", "post_ms", "GFLOP/rk", "MB_sent/rk", "MB_recv/rk", "plan_imb", "flop_imb");
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& name : opt.optimizers) {
    if (name != "adamw" && name != "muon" && name != "normuon" && name != "conda")
      throw UsageError("bench optim: unknown optimizer '" + name + "'");
    OptimConfig c;
    c.name = name;
    c.ortho_scheme = scheme;
    c.update_proj_gap = 1000000;  // steady-state Conda steps; the SVD refresh step is reported separately
    std::vector<std::pair<std::string, Shape>> ps(shapes.begin(), shapes.end());
    Optimizer o = Optimizer::with_routing(c, ps, DType::F32, &comm);
    std::vector<Tensor> params, grads;
    matrix_elems = 0;
    for (std::size_t i = 0; i < ps.size(); ++i) {
      params.push_back(Tensor::empty(o.local_shape(i), DType::F32));
      grads.push_back(Tensor::empty(o.local_shape(i), DType::F32));
      fill_random(params.back().data<float>(), params.back().numel(), 3 + static_cast<unsigned>(i) + 7919u * me);
      fill_random(grads.back().data<float>(), grads.back().numel(), 1000 + static_cast<unsigned>(i) + 7919u * me);
      if (o.params()[i].rule != RuleKind::AdamW) matrix_elems += shape_numel(ps[i].second);
    }
    auto timed_step = [&](Optimizer& opt_) {
      comm.barrier();
      const double t = seconds([&] { opt_.step(params, grads); });
      return comm.all_reduce_scalar(t, ReduceOp::Max);
    };
    const double first = timed_step(o);  // warm-up (Conda: includes the SVD refresh)
    std::vector<double> ts;
    std::vector<StepStats> stats;
    for (int s = 0; s < opt.steps; ++s) {
      ts.push_back(timed_step(o));
      stats.push_back(o.last_step_stats());
    }
    std::vector<std::size_t> idx(ts.size());
    for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    std::sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return ts[a] < ts[b]; });
    const std::size_t med = idx[idx.size() / 2];
    const StepStats& st = stats[med];
    // Conda: also a step that refreshes its basis, in steady state (state allocated): update_proj_gap = 1.
    double refresh_s = 0;
    if (name == "conda") {
      OptimConfig c1 = c;
      c1.update_proj_gap = 1;
      Optimizer o1 = Optimizer::with_routing(c1, ps, DType::F32, &comm);
      timed_step(o1);  // warm-up
      std::vector<double> rs;
      for (int s = 0; s < opt.steps; ++s) rs.push_back(timed_step(o1));
      std::sort(rs.begin(), rs.end());
      refresh_s = rs[rs.size() / 2];
    }
    // Per-rank figures: the maximum over ranks (the slowest rank sets the pace), flops imbalance max/mean.
    const double flops_max = comm.all_reduce_scalar(st.ortho_flops, ReduceOp::Max);
    const double flops_mean = comm.all_reduce_scalar(st.ortho_flops, ReduceOp::Sum) / n;
    const double sent = comm.all_reduce_scalar(static_cast<double>(st.bytes_sent), ReduceOp::Max);
    const double recv = comm.all_reduce_scalar(static_cast<double>(st.bytes_received), ReduceOp::Max);
    const double sent_total = comm.all_reduce_scalar(static_cast<double>(st.bytes_sent), ReduceOp::Sum);
    const double local_ms = comm.all_reduce_scalar(st.local_ms, ReduceOp::Max);
    const double ortho_ms = comm.all_reduce_scalar(st.ortho_ms, ReduceOp::Max);
    const double post_ms = comm.all_reduce_scalar(st.post_ms, ReduceOp::Max);
    const double flop_imb = flops_mean > 0 ? flops_max / flops_mean : 1.0;
    log::info("{:>9} {:>9.1f} {:>9.1f} {:>9.1f} {:>9.1f} {:>9.1f} {:>11.2f} {:>11.2f} {:>9.3f} {:>9.3f}{}", name,
              ts[med] * 1e3, local_ms, ortho_ms, post_ms, flops_max / 1e9, sent / 1e6, recv / 1e6,
              o.plan().imbalance(), flop_imb,
              name == "conda" ? fmt::format("   (a step refreshing the basis: {:.1f} ms; first step: {:.1f} ms)",
                                             refresh_s * 1e3, first * 1e3)
                              : "");
    rows.push_back({{"optimizer", name},           {"ranks", n},
                    {"step_ms", ts[med] * 1e3},    {"first_step_ms", first * 1e3}, {"refresh_step_ms", refresh_s * 1e3},
                    {"local_ms", local_ms},        {"ortho_ms", ortho_ms},
                    {"post_ms", post_ms},          {"ortho_gflops_max_rank", flops_max / 1e9},
                    {"bytes_sent_max_rank", sent}, {"bytes_received_max_rank", recv},
                    {"bytes_sent_all_ranks", sent_total},
                    {"matrix_bytes", matrix_elems * 4.0}, {"plan_imbalance", o.plan().imbalance()},
                    {"flops_imbalance", flop_imb}});
    // The work itself, so a peer can repeat it: every tensor with its rule, and the hyperparameters.
    nlohmann::json plist = nlohmann::json::array();
    for (std::size_t i = 0; i < ps.size(); ++i)
      plist.push_back({{"name", ps[i].first}, {"shape", ps[i].second}, {"rule", rule_name(o.params()[i].rule)}});
    rows.back()["params"] = plist;
    rows.back()["hparams"] = {{"lr", c.lr},
                              {"weight_decay", c.weight_decay},
                              {"betas", {c.beta1, c.beta2_adam}},
                              {"eps", c.eps},
                              {"momentum", c.momentum},
                              {"nesterov", c.nesterov},
                              {"ns_steps", c.ns_steps},
                              {"beta2", c.beta2},
                              {"update_proj_gap", c.update_proj_gap},
                              {"scale", c.conda_scale},
                              {"adam_lr", c.adam.lr},
                              {"adam_betas", {c.adam.beta1, c.adam.beta2}},
                              {"adam_eps", c.adam.eps},
                              {"adam_weight_decay", c.adam.weight_decay}};
  }
  log::info("# bytes moved per step, all ranks, vs matrix bytes: {}",
            [&] {
              std::string s;
              for (const auto& r : rows)
                if (r["matrix_bytes"].get<double>() > 0)
                  s += fmt::format("{} {:.2f}x  ", r["optimizer"].get<std::string>(),
                                   r["bytes_sent_all_ranks"].get<double>() / r["matrix_bytes"].get<double>());
              return s;
            }());
  if (me == 0)
    write_bench_json(opt.json_path, {{"bench", "optim"}, {"layers", opt.layers}, {"channels", opt.channels},
                               {"ranks", n}, {"scheme", opt.scheme}, {"results", rows}});
  return 0;
}

}  // namespace orthoshard
