// bench model: random GPT-2 and random tokens, one warm-up step, then timed forward+backward steps with the
// model's per-kernel profile (the GEMM share is the linear layers plus the logits products).
#include "bench/model_bench.hpp"

#include "models/gpt2/init.hpp"
#include "models/gpt2/llmc_file.hpp"
#include "models/gpt2/model.hpp"
#include "models/random.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"

#include <cblas.h>
#include <nlohmann/json.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <vector>

namespace orthoshard {

int run_model_bench(const ModelBenchOptions& o) {
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
