// GPT-2 on the GPU against the CPU model: a small random model against the float64 CPU model (loss, logits,
// every gradient) in f32 and bf16, and the shared GPT-2 reference case (loss, logits, all gradients) at f32 and
// bf16 tolerances; bf16 with both attention paths (fused flash kernels, cuBLAS GEMMs). Skips where no GPU is
// visible.
#include "models/gpt2/llmc_file.hpp"
#include "models/gpt2/cuda/device_model.hpp"
#include "models/gpt2/model.hpp"
#include "models/data/loader.hpp"
#include "models/random.hpp"
#include "runtime/core/error.hpp"
#include "runtime/io/h5file.hpp"
#include "runtime/cuda/check.hpp"
#include "runtime/cuda/device.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>

using namespace orthoshard;

namespace {

#define SKIP_WITHOUT_GPU()                                                                              \
  do {                                                                                                  \
    const cuda::DeviceQuery q = cuda::query_devices();                                                  \
    if (q.count == 0) GTEST_SKIP() << "no CUDA device: skipping GPT-2 on the GPU (" << q.why_none << ")"; \
  } while (0)

template <typename T> DType dt();
template <> DType dt<float>() { return DType::F32; }
template <> DType dt<__nv_bfloat16>() { return DType::BF16; }

// A Gpt2Params layout in device memory (dtype T): the flat buffer and named views at the host's offsets.
template <typename T>
struct DeviceParams {
  cuda::DeviceBuffer<T> flat;
  std::map<std::string, Tensor> views;
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> where;  // name -> (offset, numel)

  // From host values (f32 or f64), converted to T.
  explicit DeviceParams(const Gpt2Params& host) : flat(static_cast<std::size_t>(host.flat().numel())) {
    const Tensor f = host.flat();
    std::vector<T> h(static_cast<std::size_t>(f.numel()));
    for (std::int64_t i = 0; i < f.numel(); ++i)
      h[i] = static_cast<T>(f.dtype() == DType::F64 ? static_cast<float>(f.data<double>()[i]) : f.data<float>()[i]);
    flat.copy_from_host(h, nullptr);
    OS_CUDA_CHECK(cudaStreamSynchronize(nullptr));  // the model runs on another (non-blocking) stream
    const std::size_t es = dtype_size(f.dtype());
    for (const auto& [name, t] : host.named()) {
      const std::int64_t off =
          static_cast<std::int64_t>((static_cast<const std::byte*>(t.raw()) - static_cast<const std::byte*>(f.raw())) / es);
      where[name] = {off, t.numel()};
      views[name] = Tensor::borrow(flat.data() + off, t.shape(), dt<T>(), Device::CUDA);
    }
  }
  Tensor get(const std::string& n) const { return views.at(n); }
  std::vector<double> to_host_f64() const {
    const std::vector<T> h = flat.to_host(nullptr);
    std::vector<double> out(h.size());
    for (std::size_t i = 0; i < h.size(); ++i) out[i] = static_cast<double>(static_cast<float>(h[i]));
    return out;
  }
};

double rel_err(const double* a, const double* b, std::int64_t n) {
  double num = 0, den = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// ‖got − ref‖ / ‖ref‖ over the defined logits (the first V of each row's Vp columns).
double logits_rel_err(const std::vector<float>& got, const double* ref, std::int64_t rows, std::int64_t V,
                      std::int64_t Vp) {
  double num = 0, den = 0;
  for (std::int64_t n = 0; n < rows; ++n)
    for (std::int64_t j = 0; j < V; ++j) {
      const double a = got[n * Vp + j], b = ref[n * Vp + j];
      num += (a - b) * (a - b);
      den += b * b;
    }
  return std::sqrt(num / den);
}

// Runs forward + backward on the GPU; returns loss, host logits and host gradients (f64, flat layout).
template <typename T>
struct GpuRun {
  double loss = 0;
  std::vector<float> logits;
  std::vector<double> grads;
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> where;
};

template <typename T>
GpuRun<T> run_gpu(const Gpt2Params& host, const Tensor& inputs, const Tensor& targets,
                  AttentionKernels attention = AttentionKernels::Auto) {
  const Gpt2Config& cfg = host.config();
  DeviceParams<T> p(host);
  DeviceParams<T> g(Gpt2Params::zeros(cfg, DType::F32));
  cuda::Stream stream;
  cuda::Blas blas;
  DeviceGpt2Model<T> m(cfg, blas, stream, attention);
  auto pl = [&](const std::string& n) { return p.get(n); };
  auto gl = [&](const std::string& n) { return g.get(n); };
  m.embedding_forward(embedding_weights(pl), inputs);
  for (int l = 0; l < cfg.L; ++l) m.block_forward(l, block_weights(pl, l));
  GpuRun<T> r;
  r.loss = m.head_forward(head_weights(pl), targets);
  r.logits = m.logits_to_host();
  m.head_backward(head_weights(pl), head_weights(gl));
  for (int l = static_cast<int>(cfg.L) - 1; l >= 0; --l) m.block_backward(l, block_weights(pl, l), block_weights(gl, l));
  m.embedding_backward(embedding_weights(gl));
  stream.synchronize();
  r.grads = g.to_host_f64();
  r.where = g.where;
  return r;
}

Gpt2Config small_config() {
  Gpt2Config c;
  c.L = 2;
  c.C = 64;
  c.NH = 4;
  c.V = 97;
  c.Vp = 128;
  c.maxT = 32;
  return c;
}

Gpt2Params random_params(const Gpt2Config& cfg) {
  Gpt2Params p = Gpt2Params::zeros(cfg, DType::F64);
  std::uint64_t k = 0;
  for (const auto& [name, t] : p.named()) {
    const bool ln_weight = name.find("ln") != std::string::npos && name.find("weight") != std::string::npos;
    double* d = t.data<double>();
    for (std::int64_t i = 0; i < t.numel(); ++i)
      d[i] = (ln_weight ? 1.0 : 0.0) + 0.08 * rng::normal_at(1000 + k, static_cast<std::uint64_t>(i));
    ++k;
  }
  return p;
}

template <typename T>
void check_against_cpu_f64(double loss_tol, double logit_tol, double grad_tol,
                           AttentionKernels attention = AttentionKernels::Auto) {
  const Gpt2Config cfg = small_config();
  const Gpt2Params p64 = random_params(cfg);
  const std::int64_t B = 3, Tn = 17;
  Tensor inputs = Tensor::empty({B, Tn}, DType::I32), targets = Tensor::empty({B, Tn}, DType::I32);
  for (std::int64_t i = 0; i < B * Tn; ++i) {
    inputs.data<std::int32_t>()[i] = static_cast<std::int32_t>((i * 37 + 11) % cfg.V);
    targets.data<std::int32_t>()[i] = static_cast<std::int32_t>((i * 53 + 5) % cfg.V);
  }
  Gpt2Model<double> cpu(cfg);
  const double ref_loss = cpu.forward(p64, inputs, targets);
  const Tensor ref_logits = cpu.logits().clone();
  Gpt2Params g64 = Gpt2Params::zeros(cfg, DType::F64);
  cpu.backward(p64, g64);

  const GpuRun<T> gpu = run_gpu<T>(p64, inputs, targets, attention);
  EXPECT_NEAR(gpu.loss, ref_loss, loss_tol * ref_loss);
  EXPECT_LE(logits_rel_err(gpu.logits, ref_logits.data<double>(), B * Tn, cfg.V, cfg.Vp), logit_tol) << "logits";
  double worst = 0;
  std::string worst_name;
  for (const auto& [name, t] : g64.named()) {
    const auto [off, n] = gpu.where.at(name);
    const double e = rel_err(gpu.grads.data() + off, t.template data<double>(), n);
    EXPECT_LE(e, grad_tol) << name;
    if (e > worst) worst = e, worst_name = name;
  }
  std::printf("%s (attention %s): loss %.8f vs %.8f, worst gradient error %.3g (%s; limit %.3g)\n",
              dtype_name(dt<T>()).data(), attention_kernels_name(attention).data(), gpu.loss, ref_loss, worst,
              worst_name.c_str(), grad_tol);
}

}  // namespace

TEST(Gpt2Cuda, F32MatchesTheCpuModelInDouble) {
  SKIP_WITHOUT_GPU();
  check_against_cpu_f64<float>(1e-5, 1e-5, 1e-4);
}

TEST(Gpt2Cuda, Bf16MatchesTheCpuModelInDoubleAtBf16Tolerance) {
  SKIP_WITHOUT_GPU();
  check_against_cpu_f64<__nv_bfloat16>(1e-2, 2e-2, 5e-2, AttentionKernels::Flash);
  check_against_cpu_f64<__nv_bfloat16>(1e-2, 2e-2, 5e-2, AttentionKernels::Gemm);
}

TEST(Gpt2Cuda, AttentionKernelsAreChosenAndRefusedByName) {
  SKIP_WITHOUT_GPU();
  cuda::Stream stream;
  cuda::Blas blas;
  const Gpt2Config cfg = small_config();  // head size 16
  EXPECT_TRUE(DeviceGpt2Model<__nv_bfloat16>(cfg, blas, stream).flash_attention());
  EXPECT_FALSE(DeviceGpt2Model<__nv_bfloat16>(cfg, blas, stream, AttentionKernels::Gemm).flash_attention());
  EXPECT_FALSE(DeviceGpt2Model<float>(cfg, blas, stream).flash_attention());
  Gpt2Config odd = cfg;
  odd.NH = 8;  // head size 8
  EXPECT_FALSE(DeviceGpt2Model<__nv_bfloat16>(odd, blas, stream).flash_attention());
  for (const bool f32 : {true, false}) {
    try {
      if (f32) DeviceGpt2Model<float>(cfg, blas, stream, AttentionKernels::Flash);
      else DeviceGpt2Model<__nv_bfloat16>(odd, blas, stream, AttentionKernels::Flash);
      FAIL() << "flash accepted for " << (f32 ? "an f32 model" : "head size 8");
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(f32 ? "this one: f32" : "head size 8"), std::string::npos) << e.what();
    }
  }
}

TEST(Gpt2Cuda, PhaseMarkersCoverEveryLayerAndChangeNothing) {
  SKIP_WITHOUT_GPU();
  const Gpt2Config cfg = small_config();
  const Gpt2Params p64 = random_params(cfg);
  Tensor inputs = Tensor::empty({2, 9}, DType::I32), targets = Tensor::empty({2, 9}, DType::I32);
  for (std::int64_t i = 0; i < 18; ++i) {
    inputs.data<std::int32_t>()[i] = static_cast<std::int32_t>((i * 31 + 7) % cfg.V);
    targets.data<std::int32_t>()[i] = static_cast<std::int32_t>((i * 17 + 3) % cfg.V);
  }
  DeviceParams<__nv_bfloat16> p(p64);
  auto pl = [&](const std::string& n) { return p.get(n); };
  cuda::Stream stream;
  cuda::Blas blas;
  std::vector<double> losses;
  std::map<std::string, int> seen;
  for (const bool marked : {false, true}) {
    DeviceParams<__nv_bfloat16> g(Gpt2Params::zeros(cfg, DType::F32));
    auto gl = [&](const std::string& n) { return g.get(n); };
    DeviceGpt2Model<__nv_bfloat16> m(cfg, blas, stream);
    if (marked) m.set_phase_marker([&](const char* phase) { ++seen[phase]; });
    m.embedding_forward(embedding_weights(pl), inputs);
    for (int l = 0; l < cfg.L; ++l) m.block_forward(l, block_weights(pl, l));
    losses.push_back(m.head_forward(head_weights(pl), targets));
    m.head_backward(head_weights(pl), head_weights(gl));
    for (int l = static_cast<int>(cfg.L) - 1; l >= 0; --l) m.block_backward(l, block_weights(pl, l), block_weights(gl, l));
    m.embedding_backward(embedding_weights(gl));
    stream.synchronize();
  }
  EXPECT_EQ(losses[0], losses[1]) << "the markers changed the computation";
  const int L = static_cast<int>(cfg.L);
  EXPECT_EQ(seen["fwd attention"], L);
  EXPECT_EQ(seen["bwd attention"], L);
  EXPECT_EQ(seen["fwd matmul"], 3 * L);
  EXPECT_EQ(seen["bwd matmul"], 3 * L);
  EXPECT_EQ(seen["fwd layernorm"], 2 * L + 1);
  EXPECT_EQ(seen["bwd layernorm"], 2 * L + 1);
  for (const char* once : {"fwd embedding", "fwd head matmul", "fwd cross-entropy", "bwd cross-entropy",
                           "bwd head matmul", "bwd embedding"})
    EXPECT_EQ(seen[once], 1) << once;
}

TEST(Gpt2Cuda, BadInputsNameTheProblem) {
  SKIP_WITHOUT_GPU();
  const Gpt2Config cfg = small_config();
  cuda::Stream stream;
  cuda::Blas blas;
  DeviceGpt2Model<float> m(cfg, blas, stream);
  const Gpt2Params host = Gpt2Params::zeros(cfg, DType::F32);
  Tensor inputs = Tensor::zeros({1, 4}, DType::I32);
  // Host tensors where device tensors are expected.
  auto hl = [&](const std::string& n) { return host.get(n); };
  try {
    m.embedding_forward(embedding_weights(hl), inputs);
    FAIL() << "host weights accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("wte must be a contiguous f32"), std::string::npos) << e.what();
  }
  DeviceParams<float> p(host);
  auto pl = [&](const std::string& n) { return p.get(n); };
  inputs.data<std::int32_t>()[2] = static_cast<std::int32_t>(cfg.V);
  try {
    m.embedding_forward(embedding_weights(pl), inputs);
    FAIL() << "token outside the vocabulary accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("outside the vocabulary"), std::string::npos) << e.what();
  }
}

#ifdef ORTHOSHARD_TESTDATA
// The shared reference case (llm.c's GPT-2 test model and batch) at f32 and bf16 tolerances.
// $ORTHOSHARD_TESTDATA overrides the build's path (the GPU kit carries the data elsewhere).
std::string testdata() {
  const char* e = std::getenv("ORTHOSHARD_TESTDATA");
  return e && *e ? e : ORTHOSHARD_TESTDATA;
}

template <typename T>
void reference_case(double loss_tol, double logit_tol, double grad_tol,
                    AttentionKernels attention = AttentionKernels::Auto) {
  const std::string ref = testdata() + "/gpt2";
  const Gpt2Params p = load_llmc_model(ref + "/model.bin");
  H5File f = H5File::open_read(ref + "/reference.h5");
  const Tensor inputs = f.read("/inputs", DType::I32), targets = f.read("/targets", DType::I32);
  const GpuRun<T> gpu = run_gpu<T>(p, inputs, targets, attention);
  const double ref_loss = f.double_attr("/", "loss");
  EXPECT_NEAR(gpu.loss, ref_loss, loss_tol * ref_loss);
  const Tensor rl = f.read("/logits", DType::F64);
  ASSERT_EQ(static_cast<std::int64_t>(gpu.logits.size()), rl.numel());
  const Gpt2Config& cfg = p.config();
  EXPECT_LE(logits_rel_err(gpu.logits, rl.data<double>(), rl.numel() / cfg.Vp, cfg.V, cfg.Vp), logit_tol) << "logits";
  // Gradients: the reference stores llm.c's stacked tensors; ours are the same memory as the named views.
  Gpt2Params layout = Gpt2Params::zeros(cfg, DType::F32);
  const std::byte* base = static_cast<const std::byte*>(layout.flat().raw());
  double worst = 0;
  std::string worst_name;
  for (const auto& [name, t] : layout.stacked()) {
    const Tensor r = f.read("/grads/" + name, DType::F64);
    const std::int64_t off = (static_cast<const std::byte*>(t.raw()) - base) / 4;
    const double e = rel_err(gpu.grads.data() + off, r.data<double>(), t.numel());
    EXPECT_LE(e, grad_tol) << name;
    if (e > worst) worst = e, worst_name = name;
  }
  std::printf("reference %s (attention %s): loss %.8f vs %.8f, worst gradient error %.3g (%s; limit %.3g)\n",
              dtype_name(dt<T>()).data(), attention_kernels_name(attention).data(), gpu.loss, ref_loss, worst,
              worst_name.c_str(), grad_tol);
}

TEST(Gpt2CudaReference, F32LossLogitsAndEveryGradient) {
  SKIP_WITHOUT_GPU();
  reference_case<float>(1e-5, 1e-4, 1e-3);
}

TEST(Gpt2CudaReference, Bf16LossLogitsAndEveryGradient) {
  SKIP_WITHOUT_GPU();
  reference_case<__nv_bfloat16>(1e-2, 3e-2, 8e-2, AttentionKernels::Flash);
  reference_case<__nv_bfloat16>(1e-2, 3e-2, 8e-2, AttentionKernels::Gemm);
}
#endif
