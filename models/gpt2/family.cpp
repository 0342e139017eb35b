// GPT-2 as a model family (see family.hpp), with its CPU runner.
#include "models/gpt2/family.hpp"

#include "models/gpt2/generator.hpp"
#include "models/gpt2/init.hpp"
#include "models/gpt2/llmc_file.hpp"
#include "models/gpt2/model.hpp"
#include "models/gpt2/unit_runner.hpp"
#include "models/safetensors.hpp"
#include "runtime/core/error.hpp"

#include <cstring>
#include <map>
#include <utility>

namespace orthoshard {
namespace {

const Gpt2Family kFamily;

TensorLookup lookup_of(const Gpt2Params& p) {
  return [&p](const std::string& name) { return p.get(name); };
}

// The CPU: losses are known when the head's forward returns.
class Gpt2CpuRunner final : public Gpt2UnitRunner<Gpt2Model<float>> {
 public:
  Gpt2CpuRunner(const Gpt2Config& cfg, bool checkpoint_blocks) : Gpt2UnitRunner(cfg, checkpoint_blocks) {}
  void set_batch(std::int64_t B, std::int64_t T, int) override { net_.set_batch(B, T); }
  double take_loss_sum() override { return std::exchange(loss_sum_, 0.0); }
  std::uint64_t activation_bytes() const override { return net_.activation_bytes(); }

 private:
  void head_forward(const HeadWeights& w, const Tensor& targets) override { loss_sum_ += net_.head_forward(w, targets); }
  double loss_sum_ = 0;
};

}  // namespace

Gpt2Config gpt2_config(const ModelSpec& spec) {
  Gpt2Config g;
  g.L = spec.L;
  g.C = spec.C;
  g.NH = spec.NH;
  g.V = spec.V;
  g.Vp = spec.Vp;
  g.maxT = spec.maxT;
  g.origin = spec.origin;
  return g;
}

std::vector<ModelUnit> gpt2_model_units(const Gpt2Config& cfg) {
  std::map<std::string, Shape> shapes;
  for (const auto& [name, shape] : gpt2_parameter_specs(cfg)) shapes[name] = shape;
  std::vector<ModelUnit> units;
  for (const Gpt2Unit& u : gpt2_units(cfg)) {
    ModelUnit m;
    m.name = u.name();
    m.kind = u.kind;
    m.layer = u.layer;
    for (const auto& name : unit_parameter_names(u)) {
      const Shape& s = shapes.at(name);
      const ParamRole role = u.kind == UnitKind::Embedding ? ParamRole::Embedding
                             : s.size() >= 2              ? ParamRole::Matrix
                                                          : ParamRole::Vector;
      m.params.push_back({name, s, role});
    }
    if (u.kind == UnitKind::Head) m.reads = {"wte"};            // the logits use the embedding's wte (tied)
    if (u.kind == UnitKind::Embedding) m.backward_reads_params = false;  // a lookup: gradients only
    units.push_back(std::move(m));
  }
  return units;
}

Gpt2::Gpt2(Gpt2Config cfg, std::optional<std::uint64_t> seed, std::shared_ptr<const LlmcReader> file,
           std::shared_ptr<const Gpt2HfReader> hf)
    : cfg_(std::move(cfg)), seed_(seed), file_(std::move(file)), hf_(std::move(hf)), units_(gpt2_model_units(cfg_)) {}

const ModelFamily& Gpt2::family() const { return kFamily; }

std::string Gpt2::describe() const { return "GPT-2 " + cfg_.describe(); }

double Gpt2::flops_per_token(std::int64_t T) const {
  return 6.0 * static_cast<double>(cfg_.num_parameters()) + 6.0 * static_cast<double>(cfg_.L * cfg_.C * T);
}

void Gpt2::initial_rows(const std::string& name, std::int64_t begin, std::int64_t end, float* out) const {
  if (file_) return file_->read_rows(name, begin, end, out);
  if (hf_) return hf_->read_rows(name, begin, end, out);
  OS_CHECK(seed_.has_value(), "GPT-2 {}: no initial values (the model describes a checkpoint)", cfg_.describe());
  gpt2_init_rows(cfg_, *seed_, name, begin, end, out);
}

std::vector<ModelAttribute> Gpt2::attributes() const {
  return {{"L", cfg_.L}, {"C", cfg_.C}, {"NH", cfg_.NH}, {"V", cfg_.V}, {"Vp", cfg_.Vp}, {"maxT", cfg_.maxT}};
}

void Gpt2::export_weights(const std::string& format, const TensorLookup& weights, const std::string& path,
                          const std::string& source) const {
  Gpt2Params p = Gpt2Params::zeros(cfg_, DType::F32);
  for (const auto& [name, t] : p.named()) {
    const Tensor v = weights(name);
    if (v.shape() != t.shape() || v.dtype() != DType::F32)
      fail("'{}': {} is {}, expected f32{}", source, name, v.describe(), shape_str(t.shape()));
    std::memcpy(t.raw(), v.raw(), t.nbytes());
  }
  if (format == "llmc") return save_llmc_model(p, path);
  if (format == "hf") return export_gpt2_hf(cfg_, lookup_of(p), path, source);
  if (format == "safetensors")
    return write_safetensors(p.named(), path, {{"format", "pt"}, {"source", source}, {"model", cfg_.describe()}});
  throw UsageError(fmt::format("GPT-2 exports as llmc, hf or safetensors, not '{}'", format));
}

std::unique_ptr<UnitRunner> Gpt2::cpu_runner(const RunnerOptions& opt) const {
  return std::make_unique<Gpt2CpuRunner>(cfg_, opt.checkpoint_blocks);
}

std::unique_ptr<TokenGenerator> Gpt2::cpu_generator(const TensorLookup& weights) const {
  return make_gpt2_generator(cfg_, weights);
}

std::unique_ptr<Model> Gpt2Family::create(const ModelSpec& spec) const {
  if (is_hf_model_dir(spec.init_from)) {
    auto hf = std::make_shared<const Gpt2HfReader>(spec.init_from);
    return std::make_unique<Gpt2>(hf->config(), std::nullopt, nullptr, hf);
  }
  if (!spec.init_from.empty()) {
    auto file = std::make_shared<const LlmcReader>(spec.init_from);
    return std::make_unique<Gpt2>(file->config(), std::nullopt, file);
  }
  const Gpt2Config c = gpt2_config(spec);
  c.validate();
  return std::make_unique<Gpt2>(c, spec.seed);
}

std::unique_ptr<Model> Gpt2Family::from_attributes(const AttributeSource& attrs) const {
  Gpt2Config c;
  c.L = attrs.get_int("L");
  c.C = attrs.get_int("C");
  c.NH = attrs.get_int("NH");
  c.V = attrs.get_int("V");
  c.Vp = attrs.get_int("Vp");
  c.maxT = attrs.get_int("maxT");
  c.origin = attrs.where();
  c.validate();
  return std::make_unique<Gpt2>(c, std::nullopt);
}

}  // namespace orthoshard
