// The parts of the family interface that do not depend on a family.
#include "models/family.hpp"

#include "models/hf_config.hpp"
#include "runtime/core/error.hpp"

#include <fmt/ranges.h>

#include <algorithm>

namespace orthoshard {

std::vector<ParamInfo> Model::parameters() const {
  std::vector<ParamInfo> out;
  for (const ModelUnit& u : units()) out.insert(out.end(), u.params.begin(), u.params.end());
  return out;
}

std::string_view attention_kernels_name(AttentionKernels a) {
  switch (a) {
    case AttentionKernels::Flash: return "flash";
    case AttentionKernels::Gemm: return "gemm";
    default: return "auto";
  }
}

void check_model_tokens(const Tensor& tokens, std::int64_t V, std::string_view model, const char* what) {
  if (tokens.dtype() != DType::I32 || tokens.ndim() != 2 || !tokens.is_contiguous() || tokens.dim(0) <= 0 ||
      tokens.dim(1) <= 0 || tokens.device() != Device::CPU)
    throw UsageError(fmt::format("{} {}: expected a host i32 (B, T) tensor, got {}", model, what, tokens.describe()));
  const std::int32_t* p = tokens.data<std::int32_t>();
  const std::int64_t Tn = tokens.dim(1);
  for (std::int64_t i = 0; i < tokens.numel(); ++i)
    if (p[i] < 0 || p[i] >= V)
      throw UsageError(fmt::format("{} {}: token {} at (b={}, t={}) is outside the vocabulary [0, {})", model, what,
                                   p[i], i / Tn, i % Tn, V));
}

void check_model_targets(const Tensor& targets, std::int64_t V, std::int64_t B, std::int64_t T, std::string_view model) {
  check_model_tokens(targets, V, model, "targets");
  if (targets.dim(0) != B || targets.dim(1) != T)
    throw UsageError(fmt::format("{} targets {} do not match the inputs (B={}, T={})", model,
                                 shape_str(targets.shape()), B, T));
}

std::unique_ptr<Model> make_model(const ModelSpec& spec) {
  if (!is_hf_model_dir(spec.init_from)) return model_family(spec.arch).create(spec);
  // A Hugging Face directory names its family: config.json's model_type.
  const std::string type = HfConfig(spec.init_from).model_type();
  const std::vector<std::string> known = model_family_names();
  if (std::find(known.begin(), known.end(), type) == known.end())
    throw UsageError(fmt::format("'{}/config.json': model_type '{}' is not a model family this build knows ({})",
                                 spec.init_from, type, fmt::join(known, ", ")));
  ModelSpec s = spec;
  s.arch = type;
  return model_family(type).create(s);
}

}  // namespace orthoshard
