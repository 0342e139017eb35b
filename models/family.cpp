// The parts of the family interface that do not depend on a family.
#include "models/family.hpp"

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

std::unique_ptr<Model> make_model(const ModelSpec& spec) { return model_family(spec.arch).create(spec); }

}  // namespace orthoshard
