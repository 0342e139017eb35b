// bench gpu: every timing is the median of `repeats` runs after warm-ups, timed with CUDA events (GEMM, NS) or
// the host clock around a synchronised training step (model). Inputs are random, never zeros.
#include "bench/gpu_bench.hpp"

#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"

#if ORTHOSHARD_HAVE_CUDA
#include "models/gpt2/init.hpp"
#include "models/gpt2/llmc_file.hpp"
#include "models/gpt2/cuda/device_model.hpp"
#include "models/random.hpp"
#include "optim/orthogonalize/newton_schulz.hpp"
#include "models/layers/cuda/attention.hpp"
#include "runtime/cuda/copy_kernels.hpp"
#include "runtime/cuda/device.hpp"
#include "models/layers/cuda/flash_attention.hpp"
#include "models/layers/cuda/layer_kernels.hpp"
#include "optim/orthogonalize/cuda/device_newton_schulz.hpp"
#include "optim/cuda/optim_kernels.hpp"
#endif

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <fstream>
#include <functional>
#include <map>

namespace orthoshard {

#if !ORTHOSHARD_HAVE_CUDA
int run_gpu_bench(const GpuBenchOptions&) {
  throw UsageError("bench gpu: this build has no CUDA backend (CMake found no nvcc)");
}
#else
namespace {

using bf16d = __nv_bfloat16;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median milliseconds of f() on `stream`, timed by events, after `warm` untimed runs.
template <typename F>
double time_ms(F&& f, int warm, int reps, cudaStream_t stream) {
  for (int i = 0; i < warm; ++i) f();
  cuda::Event a(true), b(true);
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    a.record(stream);
    f();
    b.record(stream);
    b.synchronize();
    t.push_back(b.elapsed_ms_since(a));
  }
  return median(t);
}

template <typename T>
cuda::DeviceBuffer<T> random_device(std::size_t n, std::uint64_t seed, float scale, cudaStream_t stream) {
  std::vector<T> h(n);
  rng::Stream r(rng::key(seed, 17));
  for (auto& x : h) x = static_cast<T>(scale * static_cast<float>(r.uniform() * 2.0 - 1.0));
  cuda::DeviceBuffer<T> d(n);
  d.copy_from_host(h, stream);
  OS_CUDA_CHECK(cudaStreamSynchronize(stream));
  return d;
}

}  // namespace

int run_gpu_bench(const GpuBenchOptions& o) {
  const cuda::DeviceQuery q = cuda::query_devices();
  if (q.count == 0) throw UsageError(fmt::format("bench gpu: no CUDA device ({})", q.why_none));
  if (o.repeats <= 0) throw UsageError("bench gpu: --repeats must be positive");
  OS_CUDA_CHECK(cudaSetDevice(0));
  cudaDeviceProp prop{};
  OS_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const std::string dev = cuda::device_description(0);
  auto want = [&](const char* w) { return std::find(o.what.begin(), o.what.end(), w) != o.what.end(); };
  log::info("# orthoshard bench gpu on {}", dev);
  cuda::Stream stream;
  cuda::Blas blas;
  nlohmann::json out = {{"device", dev}};
  double gemm_bf16 = 0, gemm_f32 = 0;

  // ---- the device's GEMM rates: the reference for everything else ----
  if (want("gemm") || want("ns") || want("attention") || want("model")) {
    const std::int64_t n = o.gemm_size;
    auto a = random_device<bf16d>(n * n, 1, 1.f, stream), b = random_device<bf16d>(n * n, 2, 1.f, stream);
    cuda::DeviceBuffer<bf16d> c(n * n);
    const double ms = time_ms([&] { cuda::gemm<bf16d>(blas, false, true, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f,
                                                      c.data(), n, stream); },
                              3, o.repeats, stream);
    gemm_bf16 = 2.0 * n * n * n / (ms * 1e-3);
    const std::int64_t nf = std::min<std::int64_t>(n, 4096);
    auto af = random_device<float>(nf * nf, 3, 1.f, stream), bf = random_device<float>(nf * nf, 4, 1.f, stream);
    cuda::DeviceBuffer<float> cf(nf * nf);
    const double msf = time_ms([&] { cuda::gemm<float>(blas, false, true, nf, nf, nf, 1.f, af.data(), nf, bf.data(),
                                                       nf, 0.f, cf.data(), nf, stream); },
                               2, o.repeats, stream);
    gemm_f32 = 2.0 * nf * nf * nf / (msf * 1e-3);
    log::info("gemm  bf16 {}^3: {:.1f} TFLOP/s   f32 {}^3: {:.1f} TFLOP/s (cuBLAS{}, random inputs)", n, gemm_bf16 / 1e12,
              nf, gemm_f32 / 1e12, blas.lt_calls > 0 ? "Lt" : "");
    out["gemm"] = {{"bf16_n", n}, {"bf16_tflops", gemm_bf16 / 1e12}, {"f32_n", nf}, {"f32_tflops", gemm_f32 / 1e12}};
  }

  // ---- Newton-Schulz (5 steps), flops counted as the CPU benchmark does ----
  if (want("ns")) {
    log::info("# NS TFLOP/s counts GEMM-equivalent flops 5 x (2 r² s + 2 r³ + 2 r² s), as `bench ns`; ratio: against "
              "the GEMM rate of the same precision above");
    log::info("# bf16 rows: 'sym' = X Xᵀ and A² by upper tiles (DeviceNewtonSchulz::symmetric), 'full' = full GEMMs "
              "(the default)");
    log::info("{:>10} {:>10} {:>10} {:>10} {:>8}", "shape", "prec", "ms", "TFLOP/s", "ratio");
    nlohmann::json rows = nlohmann::json::array();
    for (int s : o.ns_sizes) {
      const std::int64_t n = s;
      for (int variant = 0; variant < 3; ++variant) {  // bf16 symmetric, bf16 full, f32
        const bool is_bf16 = variant < 2, symmetric = variant == 0;
        using Precision = cuda::DeviceNewtonSchulz::Precision;
        cuda::DeviceNewtonSchulz ns(blas, is_bf16 ? Precision::BF16 : Precision::F32, 5);
        ns.symmetric = symmetric;
        const char* label = !is_bf16 ? "f32" : symmetric ? "bf16 sym" : "bf16 full";
        auto src = random_device<float>(n * n, 10 + s, 1.f, stream);
        cuda::DeviceBuffer<float> x(n * n);
        cuda::DeviceBuffer<bf16d> xb(n * n);
        const double ms = time_ms(
            [&] {
              if (is_bf16) {
                cuda::convert(src.data(), xb.data(), n * n, stream);
                ns.run(xb.data(), n, n, stream);
              } else {
                OS_CUDA_CHECK(cudaMemcpyAsync(x.data(), src.data(), n * n * 4, cudaMemcpyDeviceToDevice, stream));
                ns.run(x.data(), n, n, stream);
              }
            },
            2, o.repeats, stream);
        const double tf = ns_gemm_equivalent_flops(n, n, 5) / (ms * 1e-3);
        const double ratio = tf / (is_bf16 ? gemm_bf16 : gemm_f32);
        log::info("{:>10} {:>10} {:>10.3f} {:>10.1f} {:>8.3f}", fmt::format("{}x{}", n, n), label, ms, tf / 1e12, ratio);
        rows.push_back({{"n", n}, {"precision", is_bf16 ? "bf16" : "f32"}, {"symmetric_tiles", is_bf16 && symmetric},
                        {"tiles", is_bf16 && symmetric ? cuda::DeviceNewtonSchulz::symmetric_tiles(n) : 0}, {"ms", ms},
                        {"tflops", tf / 1e12}, {"ratio_to_gemm", ratio}});
      }
    }
    out["ns"] = rows;

    // The optimizer's real work: the GPT-2 matrix set of the model options (L layers of (3C, C), (C, C), (4C, C)
    // and (C, 4C)) in bf16, one NS per matrix against one batched NS per shape (what DeviceOptimizer runs).
    const std::int64_t C = o.channels, L = o.layers;
    const std::vector<std::array<std::int64_t, 2>> shapes = {{3 * C, C}, {C, C}, {4 * C, C}, {C, 4 * C}};
    std::vector<cuda::DeviceBuffer<float>> srcs;
    std::vector<cuda::DeviceBuffer<bf16d>> xs;
    double set_flops = 0;
    for (std::size_t k = 0; k < shapes.size(); ++k) {
      const std::int64_t count_elems = L * shapes[k][0] * shapes[k][1];
      srcs.push_back(random_device<float>(static_cast<std::size_t>(count_elems), 40 + k, 1.f, stream));
      xs.emplace_back(static_cast<std::size_t>(count_elems));
      set_flops += static_cast<double>(L) * ns_gemm_equivalent_flops(shapes[k][0], shapes[k][1], 5);
    }
    cuda::DeviceNewtonSchulz ns(blas, cuda::DeviceNewtonSchulz::Precision::BF16, 5);
    // 0: one NS per matrix, 1: batched per shape with the tiled symmetric products, 2: batched per shape with full
    // GEMMs (the optimizer's way).
    const char* set_label[3] = {"one per matrix", "batched, symmetric", "batched, full GEMMs"};
    double set_ms[3] = {0, 0, 0};
    for (int variant = 0; variant < 3; ++variant) {
      ns.symmetric = variant == 1;
      set_ms[variant] = time_ms(
          [&] {
            for (std::size_t k = 0; k < shapes.size(); ++k) {
              const std::int64_t m = shapes[k][0], n = shapes[k][1];
              cuda::convert(srcs[k].data(), xs[k].data(), L * m * n, stream);
              if (variant > 0) ns.run_batched(xs[k].data(), L, m, n, stream);
              else
                for (std::int64_t j = 0; j < L; ++j) ns.run(xs[k].data() + j * m * n, m, n, stream);
            }
          },
          2, o.repeats, stream);
    }
    log::info("# GPT-2 matrix set, {} layers x 4 shapes (C = {}), bf16 (symmetric products unless said):", L, C);
    nlohmann::json set_rows = nlohmann::json::array();
    for (int variant = 0; variant < 3; ++variant) {
      const double tf = set_flops / (set_ms[variant] * 1e-3);
      log::info("{:>21} {:>10.3f} ms {:>8.1f} TFLOP/s {:>8.3f} of GEMM", set_label[variant], set_ms[variant],
                tf / 1e12, tf / gemm_bf16);
      set_rows.push_back({{"variant", set_label[variant]}, {"ms", set_ms[variant]}, {"tflops", tf / 1e12},
                          {"ratio_to_gemm", tf / gemm_bf16}});
    }
    log::info("# batched / one per matrix: {:.2f}x faster", set_ms[0] / set_ms[1]);
    out["ns_matrix_set"] = {{"layers", L}, {"channels", C}, {"rows", set_rows}, {"gemm_bf16_tflops", gemm_bf16 / 1e12}};
  }

  // ---- causal attention alone, bf16: the fused kernels against batched GEMMs + softmax kernels ----
  if (want("attention")) {
    const std::int64_t C = o.channels, NH = std::max(1, o.channels / 64), B = o.batch, T = o.seq_len;
    if (!cuda::flash_attention_supported(C, NH)) {
      log::info("attention: head size {} has no fused kernels; skipped", C / NH);
    } else {
      auto qkv = random_device<bf16d>(static_cast<std::size_t>(B * T * 3 * C), 50, 1.f, stream);
      auto dout = random_device<bf16d>(static_cast<std::size_t>(B * T * C), 51, 1.f, stream);
      cuda::DeviceBuffer<bf16d> out_f(B * T * C), out_g(B * T * C), dqkv_f(B * T * 3 * C), dqkv_g(B * T * 3 * C);
      cuda::DeviceBuffer<bf16d> att(B * NH * T * T);
      cuda::DeviceBuffer<bf16d> ws(std::max(cuda::attention_forward_workspace(B, T, C, NH),
                                            cuda::attention_backward_workspace(B, T, C, NH)));
      cuda::DeviceBuffer<float> stats(cuda::flash_attention_stats_floats(B, T, NH)),
          delta(cuda::flash_attention_stats_floats(B, T, NH));
      const double f_fwd = time_ms([&] { cuda::flash_attention_forward(out_f.data(), stats.data(), qkv.data(), B, T, C,
                                                                       NH, stream); },
                                   2, o.repeats, stream);
      const double f_bwd = time_ms([&] { cuda::flash_attention_backward(dqkv_f.data(), delta.data(), dout.data(),
                                                                        qkv.data(), out_f.data(), stats.data(), B, T, C,
                                                                        NH, stream); },
                                   2, o.repeats, stream);
      const double g_fwd = time_ms([&] { cuda::attention_forward<bf16d>(blas, out_g.data(), att.data(), ws.data(),
                                                                         qkv.data(), B, T, C, NH, stream); },
                                   2, o.repeats, stream);
      const double g_bwd = time_ms([&] { cuda::attention_backward<bf16d>(blas, dqkv_g.data(), ws.data(), dout.data(),
                                                                          qkv.data(), att.data(), B, T, C, NH, stream); },
                                   2, o.repeats, stream);
      // The two paths must agree (bf16 resolution): max |difference| over max |value|.
      auto rel_diff = [&](cuda::DeviceBuffer<bf16d>& a, cuda::DeviceBuffer<bf16d>& b) {
        const std::vector<bf16d> x = a.to_host(stream), y = b.to_host(stream);
        double d = 0, mx = 0;
        for (std::size_t i = 0; i < x.size(); ++i) {
          d = std::max(d, std::abs(static_cast<double>(x[i]) - static_cast<double>(y[i])));
          mx = std::max(mx, std::abs(static_cast<double>(y[i])));
        }
        return mx > 0 ? d / mx : d;
      };
      const double diff_out = rel_diff(out_f, out_g), diff_grad = rel_diff(dqkv_f, dqkv_g);
      // Causal flops as usually counted: forward 2 products over half the T x T square, backward 2.5x that.
      const double fwd_flops = 2.0 * B * NH * T * T * (C / NH), bwd_flops = 2.5 * fwd_flops;
      log::info("# attention B={} T={} C={} NH={}, bf16; TFLOP/s count the causal half (forward 2·B·NH·T²·hs, "
                "backward 2.5x); ratio: against the bf16 GEMM rate above",
                B, T, C, NH);
      log::info("{:>20} {:>10} {:>10} {:>8}", "", "ms", "TFLOP/s", "ratio");
      const double gr = gemm_bf16 > 0 ? gemm_bf16 : 1;
      const auto row = [&](const char* what, double ms, double flops) {
        log::info("{:>20} {:>10.3f} {:>10.1f} {:>8.3f}", what, ms, flops / ms / 1e9, flops / (ms * 1e-3) / gr);
      };
      row("flash forward", f_fwd, fwd_flops);
      row("flash backward", f_bwd, bwd_flops);
      row("gemm forward", g_fwd, fwd_flops);
      row("gemm backward", g_bwd, bwd_flops);
      log::info("attention: flash takes {:.2f}x the GEMM path's forward time and {:.2f}x its backward time; outputs "
                "differ by {:.2g}, gradients by {:.2g} (max |diff| / max |value|)",
                f_fwd / g_fwd, f_bwd / g_bwd, diff_out, diff_grad);
      out["attention"] = {{"B", B}, {"T", T}, {"C", C}, {"NH", NH}, {"flash_forward_ms", f_fwd},
                          {"flash_backward_ms", f_bwd}, {"gemm_forward_ms", g_fwd}, {"gemm_backward_ms", g_bwd},
                          {"rel_diff_out", diff_out}, {"rel_diff_dqkv", diff_grad}};
    }
  }

  // ---- GPT-2 training steps in bf16 ----
  if (want("model")) {
    Gpt2Config cfg;
    cfg.L = o.layers;
    cfg.C = o.channels;
    cfg.NH = std::max(1, o.channels / 64);
    cfg.V = o.vocab;
    cfg.Vp = o.vocab_padded;
    cfg.maxT = o.seq_len;
    cfg.origin = "bench gpu";
    cfg.validate();
    const std::int64_t B = o.batch, T = o.seq_len, N = B * T, P = cfg.num_parameters();
    const Gpt2Params host = gpt2_random_init(cfg, 1);
    const Tensor flat = host.flat();
    cuda::DeviceBuffer<float> master(P), m(P), v(P);
    master.copy_from_host(flat.data<float>(), static_cast<std::size_t>(P), stream);
    m.zero(stream);
    v.zero(stream);
    cuda::DeviceBuffer<bf16d> params(P), grads(P);
    cuda::convert(master.data(), params.data(), P, stream);
    std::map<std::string, std::int64_t> offset;
    for (const auto& [name, t] : host.named())
      offset[name] = (static_cast<const std::byte*>(t.raw()) - static_cast<const std::byte*>(flat.raw())) / 4;
    auto view = [&](cuda::DeviceBuffer<bf16d>& buf) {
      return [&, b = &buf](const std::string& name) {
        return Tensor::borrow(b->data() + offset.at(name), host.get(name).shape(), DType::BF16, Device::CUDA);
      };
    };
    const TensorLookup pl = view(params), gl = view(grads);
    Tensor inputs = Tensor::empty({B, T}, DType::I32), targets = Tensor::empty({B, T}, DType::I32);
    rng::Stream r(rng::key(7, rng::hash_name("bench-gpu-tokens")));
    for (std::int64_t i = 0; i < N; ++i) {
      inputs.data<std::int32_t>()[i] = static_cast<std::int32_t>(r.below(static_cast<std::uint64_t>(cfg.V)));
      targets.data<std::int32_t>()[i] = static_cast<std::int32_t>(r.below(static_cast<std::uint64_t>(cfg.V)));
    }
    const double flops_per_token = 6.0 * static_cast<double>(P) + 6.0 * cfg.L * cfg.C * T;
    const double peak = cuda::nominal_bf16_peak_flops(std::string(prop.name));
    log::info("# GPT-2 {} ({:.1f} M parameters), B={} T={}, bf16 (fp32 master weights, AdamW), one GPU; "
              "flops/token = 6N + 6·L·C·T = {:.3g}; attention by the fused kernels, then by cuBLAS GEMMs",
              cfg.describe(), P / 1e6, B, T, flops_per_token);
    nlohmann::json model_rows = nlohmann::json::array();
    std::vector<AttentionKernels> kinds = {AttentionKernels::Gemm};
    if (cuda::flash_attention_supported(cfg.C, cfg.NH)) kinds.insert(kinds.begin(), AttentionKernels::Flash);
    double first_s = 0;
    for (const AttentionKernels kind : kinds) {
      DeviceGpt2Model<bf16d> model(cfg, blas, stream, kind);
      std::int64_t t = 0;
      double loss = 0;
      // Every variant starts from the same weights and optimizer state.
      master.copy_from_host(flat.data<float>(), static_cast<std::size_t>(P), stream);
      m.zero(stream);
      v.zero(stream);
      cuda::convert(master.data(), params.data(), P, stream);
      std::function<void(const char*)> phase;  // set for the profiled step only
      auto step = [&] {
        if (phase) phase("inputs, zero gradients");
        grads.zero(stream);
        model.embedding_forward(embedding_weights(pl), inputs);
        for (int l = 0; l < cfg.L; ++l) model.block_forward(l, block_weights(pl, l));
        model.head_forward_async(head_weights(pl), targets);
        model.head_backward(head_weights(pl), head_weights(gl));
        for (int l = static_cast<int>(cfg.L) - 1; l >= 0; --l)
          model.block_backward(l, block_weights(pl, l), block_weights(gl, l));
        model.embedding_backward(embedding_weights(gl));
        if (phase) phase("AdamW");
        cuda::adamw_update<bf16d>(master.data(), params.data(), grads.data(), m.data(), v.data(), P,
                                  cuda::adamw_scalars(3e-4, 0.9, 0.95, 1e-8, 0.1, ++t), stream);
        if (phase) phase("loss to host");
        loss = model.mean_loss();  // the trainer reads each step's loss: part of the step
        stream.synchronize();
      };
      for (int i = 0; i < 2; ++i) step();
      std::vector<double> times;
      for (int i = 0; i < o.repeats; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        step();
        times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      const double s = median(times);
      if (first_s == 0) first_s = s;
      // One more step with an event at every phase change: where the step's GPU time goes (nsys does not run
      // on the machines we borrow). Events cost a little; the timed steps above had none.
      std::vector<cuda::Event> events;
      std::vector<std::string> labels;
      phase = [&](const char* what) {
        if (labels.size() == events.size()) events.emplace_back(true);
        events[labels.size()].record(stream);
        labels.emplace_back(what);
      };
      model.set_phase_marker(phase);
      step();
      phase("end");
      events[labels.size() - 1].synchronize();
      model.set_phase_marker(nullptr);
      phase = nullptr;
      std::map<std::string, double> phase_ms;
      double profiled_ms = 0;
      for (std::size_t i = 0; i + 1 < labels.size(); ++i) {
        const double ms = events[i + 1].elapsed_ms_since(events[i]);
        phase_ms[labels[i]] += ms;
        profiled_ms += ms;
      }
      std::vector<std::pair<double, std::string>> by_time;
      for (const auto& [label, ms] : phase_ms) by_time.emplace_back(ms, label);
      std::sort(by_time.rbegin(), by_time.rend());
      const double tok_s = static_cast<double>(N) / s;
      const double achieved = tok_s * flops_per_token;
      const char* name = kind == AttentionKernels::Flash ? "flash" : "gemm";
      log::info("model step ({} attention) {:.2f} ms, {:.0f} tokens/s, {:.1f} TFLOP/s = {:.3f} of this GPU's measured "
                "bf16 GEMM rate{}; activations {:.2f} GiB; loss {:.4f}{}",
                name, s * 1e3, tok_s, achieved / 1e12, achieved / gemm_bf16,
                peak > 0 ? fmt::format(", MFU {:.1f}% of the nominal {:.0f} TFLOP/s", 100 * achieved / peak, peak / 1e12)
                         : "",
                model.activation_bytes() / double(1 << 30), loss,
                s != first_s ? fmt::format("; {:.2f}x the first row's step time", s / first_s) : "");
      log::info("# where the {} attention step's GPU time goes (one step with events at phase changes, {:.2f} ms "
                "from first to last event):", name, profiled_ms);
      nlohmann::json phases = nlohmann::json::object();
      for (const auto& [ms, label] : by_time) {
        log::info("{:>26} {:>9.3f} ms {:>6.1f}%", label, ms, 100 * ms / profiled_ms);
        phases[label] = ms;
      }
      model_rows.push_back({{"phases_ms", phases}, {"attention", name}, {"config", cfg.describe()}, {"B", B},
                            {"T", T}, {"parameters", P},
                            {"step_ms", s * 1e3}, {"tokens_per_s", tok_s}, {"tflops", achieved / 1e12},
                            {"ratio_to_gemm", achieved / gemm_bf16}, {"mfu_nominal", peak > 0 ? achieved / peak : 0.0},
                            {"activation_bytes", model.activation_bytes()}, {"loss", loss}});
    }
    out["model"] = model_rows;
  }

  if (!o.json_path.empty()) {
    std::ofstream f(o.json_path);
    if (!f) throw UsageError("bench gpu: cannot write " + o.json_path);
    f << out.dump(2) << "\n";
  }
  return 0;
}
#endif

}  // namespace orthoshard
