// bench model: random GPT-2 and random tokens, one warm-up step, then timed forward+backward steps with the
// model's per-kernel profile (the GEMM share is the linear layers plus the logits products).
#include "bench/model_bench.hpp"

#include "models/family.hpp"
#include "models/gpt2/init.hpp"
#include "models/gpt2/llmc_file.hpp"
#include "models/gpt2/model.hpp"
#include "models/random.hpp"
#include "runtime/core/blas.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"

#include <cblas.h>
#include <nlohmann/json.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <vector>

namespace orthoshard {

namespace {

// The sgemm rate of this machine for the shapes a model's linear layers run: (N x C) · (C x 4C), best of 5.
double sgemm_gflops(std::int64_t N, std::int64_t C) {
  std::vector<float> a(static_cast<std::size_t>(N * C), 0.5f), b(static_cast<std::size_t>(4 * C * C), 0.25f),
      c(static_cast<std::size_t>(N * 4 * C));
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    linalg::gemm<float>(false, true, N, 4 * C, C, 1.0f, a.data(), C, b.data(), C, 0.0f, c.data(), 4 * C);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * static_cast<double>(N) * 4.0 * static_cast<double>(C * C) / s / 1e9);
  }
  return best;
}

struct ArchResult {
  std::string describe;
  double params_m = 0, step_ms = 0, tokens_per_s = 0, gflops = 0;
};

// Forward+backward of a model through its family's CPU runner, unit by unit; the median of `steps` after one
// warm-up. Model flops: flops_per_token(T) per token (6 per weight plus attention).
ArchResult time_model(const ModelSpec& spec, std::int64_t B, std::int64_t T, int steps) {
  const std::unique_ptr<Model> m = make_model(spec);
  std::map<std::string, Tensor> p, g;
  for (const ParamInfo& info : m->parameters()) {
    Tensor t = Tensor::empty(info.shape, DType::F32);
    m->initial_rows(info.name, 0, info.shape[0], t.data<float>());
    p.emplace(info.name, t);
    g.emplace(info.name, Tensor::zeros(info.shape, DType::F32));
  }
  Tensor inputs = Tensor::empty({B, T}, DType::I32), targets = Tensor::empty({B, T}, DType::I32);
  rng::Stream r(rng::key(7, rng::hash_name("bench-model-tokens")));
  for (std::int64_t i = 0; i < B * T; ++i) {
    inputs.data<std::int32_t>()[i] = static_cast<std::int32_t>(r.below(static_cast<std::uint64_t>(spec.V)));
    targets.data<std::int32_t>()[i] = static_cast<std::int32_t>(r.below(static_cast<std::uint64_t>(spec.V)));
  }
  const std::unique_ptr<UnitRunner> run = m->cpu_runner();
  run->set_batch(B, T, 1);
  const TensorLookup params = [&](const std::string& n) { return p.at(n); };
  const TensorLookup grads = [&](const std::string& n) { return g.at(n); };
  auto step = [&] {
    run->set_tokens(inputs, targets);
    for (const ModelUnit& u : m->units()) run->forward(u, params);
    for (auto it = m->units().rbegin(); it != m->units().rend(); ++it) run->backward(*it, params, grads, 1.0);
    run->take_loss_sum();
  };
  step();
  std::vector<double> times;
  for (int s = 0; s < steps; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  const double med = times[times.size() / 2];
  ArchResult res;
  res.describe = m->describe();
  res.params_m = static_cast<double>(m->num_parameters()) / 1e6;
  res.step_ms = med * 1e3;
  res.tokens_per_s = static_cast<double>(B * T) / med;
  res.gflops = m->flops_per_token(T) * res.tokens_per_s / 1e9;
  return res;
}

int run_llama_comparison(const ModelBenchOptions& o) {
  if (o.batch <= 0 || o.steps <= 0) throw UsageError("bench model: --B and --steps must be positive");
  struct Shape_ {
    std::int64_t L, C, NH, FF, V, T;
  };
  const std::map<std::string, Shape_> known = {{"60m", {8, 512, 8, 1376, 32000, 256}},
                                               {"130m", {12, 768, 12, 2048, 32000, 256}},
                                               {"tiny", {2, 64, 4, 176, 256, 64}}};
  log::info("# orthoshard bench model --arch llama: forward+backward through each family's CPU runner, f32, B={}, "
            "median of {} steps after 1 warm-up, {} OpenMP threads, {} BLAS threads", o.batch, o.steps,
            omp_get_max_threads(), openblas_get_num_threads());
  log::info("# share = model GFLOP/s (6 per weight per token plus attention) / sgemm GFLOP/s of (B·T x C)·(C x 4C) "
            "measured in this run; GPT-2 has the same L, C, NH, V (about the same flops)");
  log::info("{:>6} {:>6} {:>9} {:>10} {:>10} {:>10} {:>10} {:>8} {:>12}", "shape", "arch", "params_M", "step_ms",
            "tokens/s", "GFLOP/s", "sgemm", "share", "llama/gpt2");
  nlohmann::json rows = nlohmann::json::array();
  for (const std::string& name : o.shapes) {
    const auto it = known.find(name);
    if (it == known.end()) throw UsageError(fmt::format("bench model: --shapes takes 60m, 130m or tiny, not '{}'", name));
    const Shape_ s = it->second;
    ModelSpec spec;
    spec.L = s.L, spec.C = s.C, spec.NH = s.NH, spec.V = s.V, spec.Vp = s.V, spec.maxT = s.T, spec.seed = 1;
    const double sgemm = sgemm_gflops(o.batch * s.T, s.C);
    spec.arch = "gpt2";
    const ArchResult gpt2 = time_model(spec, o.batch, s.T, o.steps);
    spec.arch = "llama";
    spec.FF = s.FF;
    const ArchResult llama = time_model(spec, o.batch, s.T, o.steps);
    const double sg = gpt2.gflops / sgemm, sl = llama.gflops / sgemm;
    for (const auto& [arch, r, share] : {std::tuple{"gpt2", gpt2, sg}, std::tuple{"llama", llama, sl}}) {
      log::info("{:>6} {:>6} {:>9.2f} {:>10.1f} {:>10.0f} {:>10.2f} {:>10.2f} {:>8.3f} {:>12}", name, arch, r.params_m,
                r.step_ms, r.tokens_per_s, r.gflops, sgemm, share,
                std::string(arch) == "llama" ? fmt::format("{:.3f}", sl / sg) : "");
      rows.push_back({{"shape", name}, {"arch", arch}, {"model", r.describe}, {"params_m", r.params_m},
                      {"step_ms", r.step_ms}, {"tokens_per_s", r.tokens_per_s}, {"gflops", r.gflops},
                      {"sgemm_gflops", sgemm}, {"share_of_sgemm", share}});
    }
  }
  if (!o.json_path.empty()) {
    std::ofstream out(o.json_path);
    if (!out) throw UsageError("'" + o.json_path + "': cannot write");
    out << rows.dump(2) << "\n";
  }
  return 0;
}

}  // namespace

int run_model_bench(const ModelBenchOptions& o) {
  if (o.arch == "llama") return run_llama_comparison(o);
  if (o.arch != "gpt2") throw UsageError(fmt::format("bench model: --arch is gpt2 or llama, not '{}'", o.arch));
  Gpt2Config cfg;
  cfg.L = o.layers;
  cfg.C = o.channels;
  cfg.NH = o.heads > 0 ? o.heads : std::max(1, o.channels / 64);
  cfg.V = o.vocab;
  cfg.Vp = o.vocab_padded;
  cfg.maxT = o.seq_len;
  cfg.origin = "bench model";
  cfg.validate();
  if (o.batch <= 0 || o.steps <= 0) throw UsageError("bench model: --B and --steps must be positive");
  const std::int64_t B = o.batch, T = o.seq_len, N = B * T;

  Gpt2Params params = gpt2_random_init(cfg, 1);
  Gpt2Params grads = Gpt2Params::zeros(cfg);
  Gpt2Model<float> model(cfg);
  Tensor inputs = Tensor::empty({B, T}, DType::I32), targets = Tensor::empty({B, T}, DType::I32);
  rng::Stream r(rng::key(7, rng::hash_name("bench-model-tokens")));
  for (std::int64_t i = 0; i < N; ++i) {
    inputs.data<std::int32_t>()[i] = static_cast<std::int32_t>(r.below(static_cast<std::uint64_t>(cfg.V)));
    targets.data<std::int32_t>()[i] = static_cast<std::int32_t>(r.below(static_cast<std::uint64_t>(cfg.V)));
  }
  log::info("# orthoshard bench model: GPT-2 {} ({:.1f} M parameters), B={} T={}, f32 on the CPU, {} OpenMP threads, "
            "{} BLAS threads", cfg.describe(), cfg.num_parameters() / 1e6, B, T, omp_get_max_threads(),
            openblas_get_num_threads());
  log::info("# forward+backward per step, median of {} after 1 warm-up; shares of the step time", o.steps);
  const char* wait = std::getenv("OMP_WAIT_POLICY");
  if (!wait || std::string(wait) != "passive")
    log::info("# note: OMP_WAIT_POLICY={}; with OpenBLAS's own threads, OMP_WAIT_POLICY=passive avoids spinning "
              "OpenMP workers taking the GEMMs' cores", wait ? wait : "(unset)");

  auto step = [&] {
    model.forward(params, inputs, targets);
    model.backward(params, grads);
  };
  step();
  model.profile().enabled = true;
  std::vector<double> times;
  Gpt2Profile total{true};
  for (int s = 0; s < o.steps; ++s) {
    model.profile().reset();
    const auto t0 = std::chrono::steady_clock::now();
    step();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    const Gpt2Profile& p = model.profile();
    total.matmul_s += p.matmul_s;
    total.attention_s += p.attention_s;
    total.layernorm_s += p.layernorm_s;
    total.gelu_s += p.gelu_s;
    total.cross_entropy_s += p.cross_entropy_s;
    total.embedding_s += p.embedding_s;
  }
  std::vector<double> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  const double med = sorted[sorted.size() / 2];
  double wall = 0;
  for (double t : times) wall += t;
  const double tok_s = static_cast<double>(N) / med;
  // GEMM FLOPs: forward 2·N·(12·C²·L + C·Vp); backward twice that (logits backward over V columns only).
  const double C = static_cast<double>(cfg.C);
  const double fwd = 2.0 * static_cast<double>(N) * (12.0 * C * C * static_cast<double>(cfg.L));
  const double gemm_flops = 3.0 * fwd + 2.0 * static_cast<double>(N) * C *
                                            (static_cast<double>(cfg.Vp) + 2.0 * static_cast<double>(cfg.V));
  const double gemm_gflops = gemm_flops * o.steps / total.matmul_s / 1e9;
  auto pct = [&](double s) { return 100.0 * s / wall; };
  const double other = wall - total.total_s();
  log::info("{:>10} {:>12} {:>7} {:>10} {:>10} {:>7} {:>7} {:>9} {:>7} {:>14}", "step_ms", "tokens/s", "gemm%",
            "attention%", "layernorm%", "gelu%", "xent%", "embedding%", "other%", "gemm_GFLOP/s");
  log::info("{:>10.1f} {:>12.0f} {:>7.1f} {:>10.1f} {:>10.1f} {:>7.1f} {:>7.1f} {:>9.1f} {:>7.1f} {:>14.1f}",
            med * 1e3, tok_s, pct(total.matmul_s), pct(total.attention_s), pct(total.layernorm_s), pct(total.gelu_s),
            pct(total.cross_entropy_s), pct(total.embedding_s), pct(other), gemm_gflops);
  if (!o.json_path.empty()) {
    nlohmann::json j = {{"config", cfg.describe()},
                        {"B", B},
                        {"T", T},
                        {"step_ms", med * 1e3},
                        {"tokens_per_s", tok_s},
                        {"gemm_fraction", total.matmul_s / wall},
                        {"attention_fraction", total.attention_s / wall},
                        {"gemm_gflops", gemm_gflops},
                        {"omp_threads", omp_get_max_threads()},
                        {"blas_threads", openblas_get_num_threads()}};
    std::ofstream out(o.json_path);
    if (!out) throw UsageError("'" + o.json_path + "': cannot write");
    out << j.dump(2) << "\n";
  }
  return 0;
}

}  // namespace orthoshard
