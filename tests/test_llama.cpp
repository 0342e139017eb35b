// LLaMA: the shared Hugging Face-layout reference case (logits, loss and every gradient, in f32 through the
// family's CPU runner and in f64), tied embeddings and grouped-query attention by finite differences in f64,
// activation checkpointing, Hugging Face import and export (round trip, bad configs), safetensors files fed
// malformed on purpose, and generation (KV cache against the full forward, sampling determinism).
#include "tests/test_util.hpp"
#include "models/sampling.hpp"
#include "models/data/loader.hpp"
#include "models/data/token_stream.hpp"
#include "models/family.hpp"
#include "models/hf_config.hpp"
#include "models/llama/family.hpp"
#include "models/llama/model.hpp"
#include "models/llama/params.hpp"
#include "models/safetensors.hpp"
#include "runtime/core/error.hpp"
#include "runtime/io/h5file.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

using namespace orthoshard;
using orthoshard::testing::error_of;
namespace fs = std::filesystem;

namespace {

const std::string kRef = std::string(ORTHOSHARD_TESTDATA) + "/llama";

fs::path temp_dir(const std::string& tag) {
  const fs::path d = fs::temp_directory_path() / ("orthoshard_llama_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

double rel_err(const Tensor& a, const double* b) {
  double num = 0, den = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    const double x = a.dtype() == DType::F64 ? a.data<double>()[i] : a.data<float>()[i];
    num += (x - b[i]) * (x - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

// Every parameter of a model at its initial value (dtype f32 or f64), and zero gradients of the same shapes.
std::map<std::string, Tensor> initial_params(const Model& m, DType dt = DType::F32) {
  std::map<std::string, Tensor> out;
  for (const ParamInfo& p : m.parameters()) {
    Tensor f = Tensor::empty(p.shape, DType::F32);
    m.initial_rows(p.name, 0, p.shape[0], f.data<float>());
    if (dt == DType::F64) {
      Tensor d = Tensor::empty(p.shape, DType::F64);
      for (std::int64_t i = 0; i < f.numel(); ++i) d.data<double>()[i] = f.data<float>()[i];
      f = d;
    }
    out.emplace(p.name, f);
  }
  return out;
}
std::map<std::string, Tensor> zeros_like(const std::map<std::string, Tensor>& p) {
  std::map<std::string, Tensor> out;
  for (const auto& [n, t] : p) out.emplace(n, Tensor::zeros(t.shape(), t.dtype()));
  return out;
}
TensorLookup lookup(const std::map<std::string, Tensor>& m) {
  return [&m](const std::string& n) { return m.at(n); };
}

struct Reference {
  H5File f = H5File::open_read(kRef + "/reference.h5");
  std::int64_t B = f.int_attr("/", "B"), T = f.int_attr("/", "T");
  Tensor inputs = f.read("/inputs", DType::I32), targets = f.read("/targets", DType::I32);
};

std::unique_ptr<Model> reference_model() {
  ModelSpec spec;
  spec.init_from = kRef;
  return make_model(spec);  // the family from config.json's model_type
}

// Forward and backward of the whole model through the family's CPU runner, unit by unit as the engine does.
double run_units(const Model& m, UnitRunner& r, const std::map<std::string, Tensor>& p,
                 const std::map<std::string, Tensor>& g, const Tensor& inputs, const Tensor& targets) {
  r.set_batch(inputs.dim(0), inputs.dim(1), 1);
  r.set_tokens(inputs, targets);
  for (const ModelUnit& u : m.units()) r.forward(u, lookup(p));
  for (auto it = m.units().rbegin(); it != m.units().rend(); ++it) r.backward(*it, lookup(p), lookup(g), 1.0);
  return r.take_loss_sum();
}

template <typename T>
double whole_model(LlamaModel<T>& net, const LlamaConfig& c, const std::map<std::string, Tensor>& p,
                   const std::map<std::string, Tensor>* g, const Tensor& inputs, const Tensor& targets) {
  net.embedding_forward(llama_embedding_weights(lookup(p)), inputs);
  for (int l = 0; l < c.L; ++l) net.block_forward(l, llama_block_weights(lookup(p), l));
  const double loss = net.head_forward(llama_head_weights(lookup(p), c), targets);
  if (g) {
    net.head_backward(llama_head_weights(lookup(p), c), llama_head_weights(lookup(*g), c));
    for (int l = static_cast<int>(c.L) - 1; l >= 0; --l)
      net.block_backward(l, llama_block_weights(lookup(p), l), llama_block_weights(lookup(*g), l));
    net.embedding_backward(llama_embedding_weights(lookup(*g)));
  }
  return loss;
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream o(p, std::ios::binary | std::ios::trunc);
  o.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file from a header text and `data` bytes of payload.
std::string st_bytes(const std::string& header, std::size_t data, std::uint64_t claimed_len = 0) {
  const std::uint64_t n = claimed_len ? claimed_len : header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + header + std::string(data, '\0');
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// The shared reference case.

TEST(LlamaReference, LogitsLossAndEveryGradient) {
  Reference ref;
  const std::unique_ptr<Model> m = reference_model();
  ASSERT_EQ(m->family().arch(), "llama");
  const LlamaConfig& c = dynamic_cast<const Llama&>(*m).config();
  EXPECT_EQ(c.describe(), "L=2 C=64 NH=4 NKV=2 FF=176 V=256 Vp=256 maxT=64 untied");

  // Batch 0 through our loader equals the reference's inputs and targets.
  LoaderConfig lc;
  lc.B = ref.B;
  lc.T = ref.T;
  lc.vocab_size = c.V;
  DataLoader loader(TokenStream::open(kRef + "/tokens.bin"), lc);
  Tensor inputs, targets;
  loader.load(0, inputs, targets);
  ASSERT_EQ(inputs.shape(), ref.inputs.shape());
  EXPECT_EQ(std::memcmp(inputs.raw(), ref.inputs.raw(), inputs.nbytes()), 0);
  EXPECT_EQ(std::memcmp(targets.raw(), ref.targets.raw(), targets.nbytes()), 0);

  const auto p = initial_params(*m);
  const auto g = zeros_like(p);
  const std::unique_ptr<UnitRunner> runner = m->cpu_runner();
  const double loss = run_units(*m, *runner, p, g, inputs, targets);
  const double ref_loss = ref.f.double_attr("/", "loss");
  EXPECT_NEAR(loss, ref_loss, 1e-5 * ref_loss);

  // The logits from the model itself (the runner keeps them private).
  LlamaModel<float> net(c);
  whole_model(net, c, p, nullptr, inputs, targets);
  const Tensor rl = ref.f.read("/logits", DType::F64);
  const Tensor lg = net.logits();
  ASSERT_EQ(lg.shape(), rl.shape());
  double max_ref = 0, max_err = 0;
  for (std::int64_t i = 0; i < rl.numel(); ++i) {
    max_ref = std::max(max_ref, std::abs(rl.data<double>()[i]));
    max_err = std::max(max_err, std::abs(lg.data<float>()[i] - rl.data<double>()[i]));
  }
  EXPECT_LE(max_err, 1e-4 * max_ref);
  std::printf("logits: max abs err %.3g (limit %.3g); loss %.8f vs %.8f\n", max_err, 1e-4 * max_ref, loss, ref_loss);

  double worst = 0;
  std::string worst_name;
  int n = 0;
  for (const auto& [name, t] : g) {
    const Tensor r = ref.f.read("/grads/" + name, DType::F64);
    ASSERT_EQ(r.shape(), t.shape()) << name;
    const double e = rel_err(t, r.data<double>());
    EXPECT_LE(e, 1e-3) << name;
    if (e > worst) worst = e, worst_name = name;
    ++n;
  }
  EXPECT_EQ(n, 2 * 9 + 3);
  std::printf("%d gradients: worst relative error %.3g (%s), limit 1e-3\n", n, worst, worst_name.c_str());
}

TEST(LlamaReference, Float64AgreesToRounding) {
  // In float64 the same network leaves only rounding: every kernel (RMSNorm, rotary, grouped-query attention,
  // SwiGLU) matches the independent float64 implementation far below the float32 tolerances.
  Reference ref;
  const std::unique_ptr<Model> m = reference_model();
  const LlamaConfig& c = dynamic_cast<const Llama&>(*m).config();
  const auto p = initial_params(*m, DType::F64);
  const auto g = zeros_like(p);
  LlamaModel<double> net(c);
  const double loss = whole_model(net, c, p, nullptr, ref.inputs, ref.targets);
  EXPECT_NEAR(loss, ref.f.double_attr("/", "loss"), 1e-11);
  const Tensor rl = ref.f.read("/logits", DType::F64);
  EXPECT_LT(rel_err(net.logits(), rl.data<double>()), 1e-10);
  whole_model(net, c, p, &g, ref.inputs, ref.targets);
  for (const auto& [name, t] : g) {
    const Tensor r = ref.f.read("/grads/" + name, DType::F64);
    EXPECT_LT(rel_err(t, r.data<double>()), 1e-9) << name;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Properties the reference case does not cover.

TEST(Llama, TiedEmbeddingsAndPaddedVocabularyByFiniteDifferences) {
  LlamaConfig c;
  c.L = 2, c.C = 16, c.NH = 4, c.NKV = 1, c.FF = 24, c.V = 19, c.Vp = 24, c.maxT = 8, c.tie_embeddings = true;
  const Llama m(c, 7);
  auto p = initial_params(m, DType::F64);
  // Non-trivial norm weights so their gradients matter.
  for (auto& [name, t] : p)
    if (t.ndim() == 1)
      for (std::int64_t i = 0; i < t.numel(); ++i) t.data<double>()[i] = 1.0 + 0.1 * std::sin(1.0 + i);
  const auto g = zeros_like(p);
  Tensor in = Tensor::empty({2, 5}, DType::I32), tg = Tensor::empty({2, 5}, DType::I32);
  for (int i = 0; i < 10; ++i) in.data<std::int32_t>()[i] = (i * 7 + 3) % 19, tg.data<std::int32_t>()[i] = (i * 5 + 1) % 19;
  LlamaModel<double> net(c);
  whole_model(net, c, p, &g, in, tg);
  EXPECT_EQ(m.units().back().reads, std::vector<std::string>{kLlamaEmbed});
  EXPECT_FALSE(p.count(kLlamaHead));
  for (const auto& [name, t] : p) {
    const std::int64_t stride = std::max<std::int64_t>(1, t.numel() / 5);
    for (std::int64_t i = 0; i < t.numel(); i += stride) {
      double& x = t.data<double>()[i];
      const double x0 = x, h = 1e-6;
      x = x0 + h;
      LlamaModel<double> a(c);
      const double lp = whole_model(a, c, p, nullptr, in, tg);
      x = x0 - h;
      const double lm = whole_model(a, c, p, nullptr, in, tg);
      x = x0;
      const double fd = (lp - lm) / (2 * h);
      EXPECT_NEAR(g.at(name).data<double>()[i], fd, 1e-7 + 1e-5 * std::abs(fd)) << name << "[" << i << "]";
    }
  }
  // The padded rows [V, Vp) of the tied embedding never receive gradient.
  const Tensor& ge = g.at(kLlamaEmbed);
  for (std::int64_t i = c.V * c.C; i < ge.numel(); ++i) ASSERT_EQ(ge.data<double>()[i], 0.0);
}

TEST(Llama, ActivationCheckpointingIsBitwiseEqual) {
  Reference ref;
  const std::unique_ptr<Model> m = reference_model();
  const auto p = initial_params(*m);
  const auto g1 = zeros_like(p), g2 = zeros_like(p);
  RunnerOptions ck;
  ck.checkpoint_blocks = true;
  const auto r1 = m->cpu_runner(), r2 = m->cpu_runner(ck);
  const double l1 = run_units(*m, *r1, p, g1, ref.inputs, ref.targets);
  const double l2 = run_units(*m, *r2, p, g2, ref.inputs, ref.targets);
  EXPECT_EQ(l1, l2);
  for (const auto& [name, t] : g1) EXPECT_EQ(std::memcmp(t.raw(), g2.at(name).raw(), t.nbytes()), 0) << name;
  EXPECT_LT(r2->activation_bytes(), r1->activation_bytes());
}

TEST(Llama, RolesAndUnits) {
  const std::unique_ptr<Model> m = reference_model();
  const auto& u = m->units();
  ASSERT_EQ(u.size(), 4u);  // embedding, 2 layers, head
  EXPECT_EQ(u.front().params.at(0).role, ParamRole::Embedding);
  EXPECT_EQ(u.back().params.at(1).name, kLlamaHead);
  EXPECT_EQ(u.back().params.at(1).role, ParamRole::Head);
  int matrices = 0;
  for (const ParamInfo& p : u[1].params) {
    if (p.shape.size() == 2) EXPECT_EQ(p.role, ParamRole::Matrix) << p.name;
    else EXPECT_EQ(p.role, ParamRole::Vector) << p.name;
    matrices += p.role == ParamRole::Matrix;
  }
  EXPECT_EQ(matrices, 7);  // q, k, v, o, gate, up, down
}

TEST(Llama, ConfigErrorsNameTheField) {
  ModelSpec s;
  s.arch = "llama";
  s.L = 2, s.C = 64, s.NH = 4, s.V = 256, s.Vp = 256, s.maxT = 64;
  s.NKV = 3;
  EXPECT_NE(error_of([&] { make_model(s); }).find("NH = 4 is not divisible by NKV = 3"), std::string::npos);
  s.NKV = 0;
  s.C = 60, s.NH = 8;
  EXPECT_NE(error_of([&] { make_model(s); }).find("C = 60 is not divisible by NH = 8"), std::string::npos);
  s.C = 36, s.NH = 4;  // head size 9
  EXPECT_NE(error_of([&] { make_model(s); }).find("is odd"), std::string::npos);
  s.C = 64, s.norm_eps = 0;
  EXPECT_NE(error_of([&] { make_model(s); }).find("norm_eps"), std::string::npos);
  s.norm_eps = 1e-5;
  s.FF = 0;  // Meta's default: 8·64/3 = 170 -> 256
  EXPECT_EQ(dynamic_cast<const Llama&>(*make_model(s)).config().FF, 256);
}

// ---------------------------------------------------------------------------------------------------------
// Hugging Face import and export.

TEST(LlamaHf, ExportThenImportRoundTripsBitExactly) {
  for (const bool tied : {false, true}) {
    LlamaConfig c;
    c.L = 1, c.C = 16, c.NH = 2, c.NKV = 1, c.FF = 40, c.V = 50, c.Vp = 64, c.maxT = 16, c.tie_embeddings = tied;
    c.rope_theta = 500000.0, c.norm_eps = 1e-6;
    const Llama m(c, 11);
    const auto p = initial_params(m);
    const fs::path dir = temp_dir(tied ? "tied" : "untied");
    m.export_weights("hf", lookup(p), dir.string(), "test");
    // What transformers reads: names, shapes without padding, no lm_head when tied, the config fields.
    const SafetensorsSet st(dir.string());
    EXPECT_EQ(st.at(kLlamaEmbed).shape, (Shape{50, 16}));
    EXPECT_EQ(st.has(kLlamaHead), !tied);
    EXPECT_EQ(st.at("model.layers.0.self_attn.k_proj.weight").shape, (Shape{8, 16}));
    const HfConfig hf(dir.string());
    EXPECT_EQ(hf.json()["vocab_size"], 50);
    EXPECT_EQ(hf.json()["tie_word_embeddings"], tied);
    EXPECT_EQ(hf.json()["num_key_value_heads"], 1);
    EXPECT_EQ(hf.json()["rope_theta"], 500000.0);
    // Import: the same config (Vp = V rounded up to 64) and every value bit for bit.
    ModelSpec spec;
    spec.init_from = dir.string();
    const std::unique_ptr<Model> back = make_model(spec);
    const LlamaConfig& b = dynamic_cast<const Llama&>(*back).config();
    EXPECT_EQ(b.describe(), c.describe());
    EXPECT_EQ(b.rope_theta, c.rope_theta);
    EXPECT_EQ(b.norm_eps, c.norm_eps);
    const auto q = initial_params(*back);
    for (const auto& [name, t] : p) EXPECT_EQ(std::memcmp(t.raw(), q.at(name).raw(), t.nbytes()), 0) << name;
    fs::remove_all(dir);
  }
}

TEST(LlamaHf, Bf16AndF16TensorsAndShards) {
  // The reference's tensors re-saved as BF16 and F16 across two shards with an index: values are the rounded
  // ones, and the model loads.
  const std::unique_ptr<Model> m = reference_model();
  const auto p = initial_params(*m);
  const fs::path dir = temp_dir("shards");
  fs::copy_file(kRef + "/config.json", dir / "config.json");
  std::vector<NamedTensor> a, b;
  for (const auto& [name, t] : p) (name.find("layers.1") == std::string::npos ? a : b).emplace_back(name, t);
  write_safetensors(a, (dir / "part-1.safetensors").string(), {});
  write_safetensors(b, (dir / "part-2.safetensors").string(), {});
  nlohmann::json idx;
  for (const auto& [n, t] : a) idx["weight_map"][n] = "part-1.safetensors";
  for (const auto& [n, t] : b) idx["weight_map"][n] = "part-2.safetensors";
  std::ofstream(dir / "model.safetensors.index.json") << idx.dump();
  ModelSpec spec;
  spec.init_from = dir.string();
  const auto q = initial_params(*make_model(spec));
  for (const auto& [name, t] : p) EXPECT_EQ(std::memcmp(t.raw(), q.at(name).raw(), t.nbytes()), 0) << name;

  // One tensor as BF16 and F16 by hand: 1.5, -2, 65504 (F16 max), 1e-7 (an F16 subnormal).
  const std::uint16_t bf[] = {0x3FC0, 0xC000, 0x477F, 0x33D7}, hf[] = {0x3E00, 0xC000, 0x7BFF, 0x0002};
  for (const auto& [dt, bits] : {std::pair{"BF16", bf}, std::pair{"F16", hf}}) {
    const std::string h = fmt::format(R"({{"x":{{"dtype":"{}","shape":[4],"data_offsets":[0,8]}}}})", dt);
    std::string bytes = st_bytes(h, 0);
    bytes.append(reinterpret_cast<const char*>(bits), 8);
    write_bytes(dir / "x.safetensors", bytes);
    float out[4];
    SafetensorsFile(dir / "x.safetensors").read_rows("x", 0, 4, out);
    if (std::string(dt) == "BF16") {
      EXPECT_EQ(out[0], 1.5f);
      EXPECT_EQ(out[1], -2.0f);
      EXPECT_EQ(out[2], std::bit_cast<float>(0x477F0000u));
    } else {
      EXPECT_EQ(out[0], 1.5f);
      EXPECT_EQ(out[1], -2.0f);
      EXPECT_EQ(out[2], 65504.0f);
      EXPECT_EQ(out[3], std::ldexp(2.0f, -24));
    }
  }
  fs::remove_all(dir);
}

TEST(LlamaHf, ConfigAndTensorErrorsNameTheThing) {
  const fs::path dir = temp_dir("badcfg");
  fs::copy_file(kRef + "/model.safetensors", dir / "model.safetensors");
  const auto base = nlohmann::json::parse(std::ifstream(kRef + "/config.json"));
  auto load_with = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = base;
    edit(j);
    std::ofstream(dir / "config.json", std::ios::trunc) << j.dump();
    ModelSpec spec;
    spec.init_from = dir.string();
    return error_of([&] { make_model(spec); });
  };
  EXPECT_EQ(load_with([](auto&) {}), "");
  const std::pair<std::function<void(nlohmann::json&)>, std::string> cases[] = {
      {[](auto& j) { j["num_hidden_layers"] = 0; }, "num_hidden_layers = 0 is out of range"},
      {[](auto& j) { j["hidden_size"] = -64; }, "hidden_size = -64 is out of range"},
      {[](auto& j) { j["vocab_size"] = 1099511627776; }, "vocab_size = 1099511627776 is out of range"},
      {[](auto& j) { j.erase("intermediate_size"); }, "intermediate_size is missing"},
      {[](auto& j) { j["num_attention_heads"] = "four"; }, "num_attention_heads = \"four\" is not an integer"},
      {[](auto& j) { j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}}; }, "rope_scaling"},
      {[](auto& j) { j["attention_bias"] = true; }, "attention_bias = true is not supported"},
      {[](auto& j) { j["mlp_bias"] = true; }, "mlp_bias = true is not supported"},
      {[](auto& j) { j["rms_norm_eps"] = -1; }, "rms_norm_eps = -1 is not a positive number"},
      {[](auto& j) { j["num_key_value_heads"] = 3; }, "NH = 4 is not divisible by NKV = 3"},
      {[](auto& j) { j["head_dim"] = 32; }, "head_dim = 32 is not supported"},
      {[](auto& j) { j["model_type"] = "mistral"; }, "model_type 'mistral' is not a model family"},
      {[](auto& j) { j["intermediate_size"] = 128; }, "tensor model.layers.0.mlp.gate_proj.weight has shape (176, 64), the config needs (128, 64)"},
      {[](auto& j) { j["tie_word_embeddings"] = true; }, "unexpected tensor lm_head.weight"},
      {[](auto& j) { j["num_hidden_layers"] = 3; }, "tensor model.layers.2.input_layernorm.weight is missing"},
      {[](auto& j) { j["num_hidden_layers"] = 1; }, "unexpected tensor model.layers.1."},
  };
  for (const auto& [edit, want] : cases) {
    const std::string e = load_with(edit);
    EXPECT_NE(e.find(want), std::string::npos) << "want '" << want << "', got '" << e << "'";
  }
  std::ofstream(dir / "config.json", std::ios::trunc) << "{\"model_type\": \"llama\", ";
  EXPECT_NE(error_of([&] { ModelSpec s; s.init_from = dir.string(); make_model(s); }).find("not valid JSON"),
            std::string::npos);
  fs::remove_all(dir);
}

TEST(Safetensors, MalformedFilesAreOneClearError) {
  const fs::path dir = temp_dir("malformed");
  const fs::path f = dir / "bad.safetensors";
  auto error_for = [&](const std::string& bytes) {
    write_bytes(f, bytes);
    return error_of([&] { SafetensorsFile s(f.string()); });
  };
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})";
  EXPECT_EQ(error_for(st_bytes(ok, 24)), "");
  const std::pair<std::string, std::string> cases[] = {
      {std::string("\x05\0\0", 3), "shorter than its header length"},
      {st_bytes(ok, 24, 1000), "header length 1000 runs past the end of the file"},
      {st_bytes(ok, 24, std::uint64_t{1} << 62), "runs past the end of the file"},
      {st_bytes(std::string(101u << 20, ' '), 0), "over the 100 MB limit"},
      {st_bytes("{\"a\": [1, 2", 0), "not valid JSON"},
      {st_bytes("[1, 2]", 0), "not a JSON object"},
      {st_bytes(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})", 24), "overlap"},
      {st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8), "run backwards"},
      // inside a larger tensor, with an empty one between them in offset order
      {st_bytes(R"({"a":{"dtype":"F32","shape":[6],"data_offsets":[0,24]},"b":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"c":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", 24), "overlap"},
      {st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "fall outside the 4 bytes of data"},
      {st_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "needs 12 bytes"},
      {st_bytes(R"({"a":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}})", 8), "absurdly large"},
      {st_bytes(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "non-negative integer"},
      {st_bytes(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8), "dtype 'Q4' is not supported"},
      {st_bytes(R"({"a":{"dtype":"F32","shape":[2]}})", 8), "needs dtype, shape and data_offsets"},
  };
  for (const auto& [bytes, want] : cases) {
    const std::string e = error_for(bytes);
    EXPECT_NE(e.find(want), std::string::npos) << "want '" << want << "', got '" << e << "'";
    EXPECT_NE(e.find(f.string()), std::string::npos) << e;  // names the file
  }
  // An index naming a shard outside the directory, or a tensor its shard lacks.
  const fs::path d2 = dir / "model";
  fs::create_directories(d2);
  write_bytes(d2 / "s.safetensors", st_bytes(ok, 24));
  std::ofstream(d2 / "model.safetensors.index.json") << R"({"weight_map": {"a": "../bad.safetensors"}})";
  EXPECT_NE(error_of([&] { SafetensorsSet s(d2.string()); }).find("is not a file in the directory"), std::string::npos);
  std::ofstream(d2 / "model.safetensors.index.json", std::ios::trunc) << R"({"weight_map": {"zz": "s.safetensors"}})";
  EXPECT_NE(error_of([&] { SafetensorsSet s(d2.string()); }).find("does not hold it"), std::string::npos);
  fs::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------------------
// Generation with a KV cache (orthoshard sample).

TEST(LlamaGenerate, KvCacheStepsEqualTheFullForward) {
  // Feeding sequence 0 token by token gives, at every position, the logits of the full causal forward.
  Reference ref;
  const std::unique_ptr<Model> m = reference_model();
  const LlamaConfig& c = dynamic_cast<const Llama&>(*m).config();
  const auto p = initial_params(*m);
  LlamaModel<float> net(c);
  whole_model(net, c, p, nullptr, ref.inputs, ref.targets);
  const Tensor full = net.logits();  // (B, T, V)
  const auto gen = m->cpu_generator(lookup(p));
  double worst = 0;
  for (std::int64_t t = 0; t < ref.T; ++t) {
    const float* got = gen->step(ref.inputs.data<std::int32_t>()[t]);
    for (std::int64_t v = 0; v < c.V; ++v)
      worst = std::max(worst, static_cast<double>(std::abs(got[v] - full.data<float>()[t * c.Vp + v])));
  }
  EXPECT_LT(worst, 1e-4);
  EXPECT_EQ(gen->position(), ref.T);
}

TEST(LlamaGenerate, SamplingIsDeterministicForASeed) {
  const std::unique_ptr<Model> m = reference_model();
  const auto p = initial_params(*m);
  auto run = [&](std::uint64_t seed, double temperature, std::int64_t top_k) {
    SamplingOptions o;
    o.seed = seed;
    o.temperature = temperature;
    o.top_k = top_k;
    const auto gen = m->cpu_generator(lookup(p));
    return sample_tokens(*gen, m->vocab_size(), prompt_tokens("Once upon", 256), 20, o);
  };
  EXPECT_EQ(run(1, 1.0, 0), run(1, 1.0, 0));
  EXPECT_NE(run(1, 1.0, 0), run(2, 1.0, 0));
  EXPECT_EQ(run(1, 0.0, 0), run(2, 0.0, 0));  // greedy ignores the seed
  EXPECT_EQ(run(3, 1.0, 1), run(1, 0.0, 0));  // top-1 is greedy
  EXPECT_EQ(bytes_to_utf8({'a', 0xC3, 0xA9, 0xFF, 'b'}), "a\xC3\xA9\xEF\xBF\xBD" "b");
  EXPECT_NE(error_of([] { prompt_tokens("1 2 x", 1000); }).find("'x' is not a token id"), std::string::npos);
}

TEST(LlamaHf, ExportOfTheReferenceMatchesItsHuggingFaceFiles) {
  // The shared case's files are what a Hugging Face LlamaForCausalLM layout holds: our export of the imported
  // model has the same tensor names, shapes, dtypes and values, and the same config fields.
  const std::unique_ptr<Model> m = reference_model();
  const auto p = initial_params(*m);
  const fs::path dir = temp_dir("refexport");
  m->export_weights("hf", lookup(p), dir.string(), "test");
  const SafetensorsSet ref(kRef), ours(dir.string());
  EXPECT_EQ(ours.names(), ref.names());
  for (const std::string& n : ref.names()) {
    EXPECT_EQ(ours.at(n).shape, ref.at(n).shape) << n;
    EXPECT_EQ(ours.at(n).dtype, "F32") << n;
    std::vector<float> a(static_cast<std::size_t>(ref.at(n).numel())), b(a.size());
    const std::int64_t rows = ref.at(n).shape.empty() ? 1 : ref.at(n).shape[0];
    ref.read_rows(n, 0, rows, a.data());
    ours.read_rows(n, 0, rows, b.data());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0) << n;
  }
  const HfConfig rc(kRef), oc(dir.string());
  for (const char* key : {"model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                          "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings", "rms_norm_eps",
                          "rope_theta", "tie_word_embeddings", "hidden_act", "attention_bias", "mlp_bias"})
    EXPECT_EQ(oc.json()[key], rc.json()[key]) << key;
  fs::remove_all(dir);
}
