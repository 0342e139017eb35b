// Where the model families are registered: the one place above the families that names them.
#include "models/family.hpp"
#include "models/gpt2/family.hpp"
#include "models/hf_config.hpp"
#include "models/llama/family.hpp"

#include "runtime/core/error.hpp"

namespace orthoshard {
namespace {

const std::vector<const ModelFamily*>& registry() {
  static const Gpt2Family gpt2;
  static const LlamaFamily llama;
  static const std::vector<const ModelFamily*> families{&gpt2, &llama};
  return families;
}

}  // namespace

std::vector<std::string> model_family_names() {
  std::vector<std::string> out;
  for (const ModelFamily* f : registry()) out.emplace_back(f->arch());
  return out;
}

const ModelFamily& model_family(std::string_view arch) {
  for (const ModelFamily* f : registry())
    if (f->arch() == arch) return *f;
  std::string known;
  for (const auto& n : model_family_names()) known += (known.empty() ? "" : ", ") + n;
  throw UsageError(fmt::format("model architecture '{}' is not known (known: {})", arch, known));
}

}  // namespace orthoshard
