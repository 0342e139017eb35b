// LLaMA on the GPU through the family's device runner: the shared Hugging Face-layout reference case (loss,
// logits, every gradient) in f32 at the reference's tolerances and in bf16 with grouped-query GEMM attention; a
// tied, ungrouped model in bf16 with the fused flash kernels and with GEMMs, against the float64 CPU model.
// Skips where no GPU is visible.
#include "models/device_runner.hpp"
#include "models/family.hpp"
#include "models/llama/cuda/device_model.hpp"
#include "models/llama/family.hpp"
#include "models/llama/model.hpp"
#include "runtime/cuda/device.hpp"
#include "runtime/cuda/device_buffer.hpp"
#include "runtime/io/h5file.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <map>

using namespace orthoshard;

namespace {

#define SKIP_WITHOUT_GPU()                                                                              \
  do {                                                                                                  \
    const cuda::DeviceQuery q = cuda::query_devices();                                                  \
    if (q.count == 0) GTEST_SKIP() << "no CUDA device: skipping LLaMA on the GPU (" << q.why_none << ")"; \
  } while (0)

// $ORTHOSHARD_TESTDATA overrides the build's path (the GPU kit carries the data elsewhere).
std::string testdata() {
  const char* e = std::getenv("ORTHOSHARD_TESTDATA");
  return e && *e ? e : ORTHOSHARD_TESTDATA;
}
const std::string kRef = testdata() + "/llama";

// Every parameter of a model in device memory (dtype T), from host f64 values.
template <typename T>
struct DeviceTensors {
  std::map<std::string, cuda::DeviceBuffer<T>> bufs;
  std::map<std::string, Tensor> views;
  DeviceTensors(const std::map<std::string, Tensor>& host) {
    for (const auto& [name, t] : host) {
      std::vector<T> h(static_cast<std::size_t>(t.numel()));
      for (std::int64_t i = 0; i < t.numel(); ++i) h[static_cast<std::size_t>(i)] = static_cast<T>(static_cast<float>(t.template data<double>()[i]));
      auto& b = bufs.emplace(name, cuda::DeviceBuffer<T>(h.size())).first->second;
      b.copy_from_host(h, nullptr);
      views.emplace(name, Tensor::borrow(b.data(), t.shape(), std::is_same_v<T, float> ? DType::F32 : DType::BF16,
                                         Device::CUDA));
    }
    OS_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  }
  std::vector<double> host(const std::string& name) const {
    const std::vector<T> h = bufs.at(name).to_host(nullptr);
    std::vector<double> out(h.size());
    for (std::size_t i = 0; i < h.size(); ++i) out[i] = static_cast<double>(static_cast<float>(h[i]));
    return out;
  }
};

std::map<std::string, Tensor> host_params(const Model& m, std::uint64_t salt, bool perturb_norms) {
  std::map<std::string, Tensor> out;
  for (const ParamInfo& p : m.parameters()) {
    Tensor f = Tensor::empty(p.shape, DType::F32), d = Tensor::empty(p.shape, DType::F64);
    m.initial_rows(p.name, 0, p.shape[0], f.data<float>());
    for (std::int64_t i = 0; i < f.numel(); ++i)
      d.data<double>()[i] = f.data<float>()[i] + (perturb_norms && p.shape.size() == 1 ? 0.1 * std::sin(1.0 + i + salt) : 0.0);
    out.emplace(p.name, d);
  }
  return out;
}

double rel_err(const std::vector<double>& a, const double* b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

struct GpuResult {
  double loss = 0;
  std::vector<float> logits;  // (B, T, Vp)
  std::map<std::string, std::vector<double>> grads;
};

// Forward and backward of every unit through the device runner; the logits from a second forward-only model.
template <typename T>
GpuResult run_gpu(const Llama& m, const std::map<std::string, Tensor>& host, const Tensor& inputs,
                  const Tensor& targets, AttentionKernels attention) {
  DeviceTensors<T> p(host);
  std::map<std::string, Tensor> zeros;
  for (const auto& [n, t] : host) zeros.emplace(n, Tensor::zeros(t.shape(), DType::F64));
  DeviceTensors<T> g(zeros);
  cuda::Stream stream;
  cuda::Blas blas;
  DeviceRunnerOptions opt;
  opt.dtype = std::is_same_v<T, float> ? DType::F32 : DType::BF16;
  opt.attention = attention;
  const auto run = make_device_runner(m, blas, stream, opt);
  const TensorLookup pl = [&](const std::string& n) { return p.views.at(n); };
  const TensorLookup gl = [&](const std::string& n) { return g.views.at(n); };
  run->set_batch(inputs.dim(0), inputs.dim(1), 1);
  run->set_tokens(inputs, targets);
  for (const ModelUnit& u : m.units()) run->forward(u, pl);
  for (auto it = m.units().rbegin(); it != m.units().rend(); ++it) run->backward(*it, pl, gl, 1.0);
  GpuResult r;
  r.loss = run->take_loss_sum();
  for (const auto& [n, t] : host) r.grads[n] = g.host(n);
  DeviceLlamaModel<T> fwd(m.config(), blas, stream, attention);
  fwd.embedding_forward(llama_embedding_weights(pl), inputs);
  for (int l = 0; l < m.config().L; ++l) fwd.block_forward(l, llama_block_weights(pl, l));
  fwd.head_forward_async(llama_head_weights(pl, m.config()), targets);
  r.logits = fwd.logits_to_host();
  return r;
}

template <typename T>
void reference_case(double loss_tol, double logit_tol, double grad_tol, AttentionKernels attention) {
  ModelSpec spec;
  spec.init_from = kRef;
  const std::unique_ptr<Model> model = make_model(spec);
  const Llama& m = dynamic_cast<const Llama&>(*model);
  H5File f = H5File::open_read(kRef + "/reference.h5");
  const Tensor inputs = f.read("/inputs", DType::I32), targets = f.read("/targets", DType::I32);
  const GpuResult r = run_gpu<T>(m, host_params(m, 0, false), inputs, targets, attention);
  const double ref_loss = f.double_attr("/", "loss");
  EXPECT_NEAR(r.loss, ref_loss, loss_tol * ref_loss);
  const Tensor rl = f.read("/logits", DType::F64);
  std::vector<double> got(r.logits.begin(), r.logits.end());  // Vp = V here
  EXPECT_LE(rel_err(got, rl.data<double>()), logit_tol);
  double worst = 0;
  for (const auto& [name, g] : r.grads) {
    const Tensor ref = f.read("/grads/" + name, DType::F64);
    const double e = rel_err(g, ref.data<double>());
    EXPECT_LE(e, grad_tol) << name;
    worst = std::max(worst, e);
  }
  std::printf("LLaMA reference %s (attention %s): loss %.8f vs %.8f, worst gradient error %.3g (limit %.3g)\n",
              std::is_same_v<T, float> ? "f32" : "bf16", attention_kernels_name(attention).data(), r.loss, ref_loss,
              worst, grad_tol);
}

}  // namespace

TEST(LlamaCudaReference, F32LossLogitsAndEveryGradient) {
  SKIP_WITHOUT_GPU();
  reference_case<float>(1e-5, 1e-4, 1e-3, AttentionKernels::Auto);
}

TEST(LlamaCudaReference, Bf16GroupedQueryAttentionFlashAndGemm) {
  SKIP_WITHOUT_GPU();
  reference_case<__nv_bfloat16>(1e-2, 3e-2, 8e-2, AttentionKernels::Flash);
  reference_case<__nv_bfloat16>(1e-2, 3e-2, 8e-2, AttentionKernels::Gemm);
}

TEST(LlamaCuda, Bf16TiedFlashAndGemmAgainstTheCpuInDouble) {
  SKIP_WITHOUT_GPU();
  for (const std::int64_t nkv : {4, 1}) {
    LlamaConfig c;
    c.L = 2, c.C = 64, c.NH = 4, c.NKV = nkv, c.FF = 96, c.V = 97, c.Vp = 128, c.maxT = 32, c.tie_embeddings = true;
    const Llama m(c, 5);
    const auto host = host_params(m, 3, true);
    const std::int64_t B = 2, Tn = 17;
    Tensor inputs = Tensor::empty({B, Tn}, DType::I32), targets = Tensor::empty({B, Tn}, DType::I32);
    for (std::int64_t i = 0; i < B * Tn; ++i) {
      inputs.data<std::int32_t>()[i] = static_cast<std::int32_t>((i * 37 + 11) % c.V);
      targets.data<std::int32_t>()[i] = static_cast<std::int32_t>((i * 53 + 5) % c.V);
    }
    std::map<std::string, Tensor> g64;
    for (const auto& [n, t] : host) g64.emplace(n, Tensor::zeros(t.shape(), DType::F64));
    LlamaModel<double> cpu(c);
    const TensorLookup pl = [&](const std::string& n) { return host.at(n); };
    const TensorLookup gl = [&](const std::string& n) { return g64.at(n); };
    cpu.embedding_forward(llama_embedding_weights(pl), inputs);
    for (int l = 0; l < c.L; ++l) cpu.block_forward(l, llama_block_weights(pl, l));
    const double ref_loss = cpu.head_forward(llama_head_weights(pl, c), targets);
    cpu.head_backward(llama_head_weights(pl, c), llama_head_weights(gl, c));
    for (int l = 1; l >= 0; --l) cpu.block_backward(l, llama_block_weights(pl, l), llama_block_weights(gl, l));
    cpu.embedding_backward(llama_embedding_weights(gl));
    for (const AttentionKernels a : {AttentionKernels::Flash, AttentionKernels::Gemm}) {
      const GpuResult r = run_gpu<__nv_bfloat16>(m, host, inputs, targets, a);
      EXPECT_NEAR(r.loss, ref_loss, 1e-2 * ref_loss) << attention_kernels_name(a);
      for (const auto& [name, g] : r.grads)
        EXPECT_LE(rel_err(g, g64.at(name).data<double>()), 8e-2) << name << " " << attention_kernels_name(a)
                                                                    << " NKV " << nkv;
    }
  }
  // Flash needs bf16: refused by name for an f32 model.
  LlamaConfig c;
  c.L = 1, c.C = 64, c.NH = 4, c.NKV = 2, c.FF = 96, c.V = 97, c.Vp = 128, c.maxT = 32;
  cuda::Stream stream;
  cuda::Blas blas;
  try {
    DeviceLlamaModel<float> bad(c, blas, stream, AttentionKernels::Flash);
    ADD_FAILURE() << "flash on an f32 model must be refused";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("needs a bf16 LLaMA"), std::string::npos) << e.what();
  }
}
