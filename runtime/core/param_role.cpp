// Names of the parameter roles (logs, errors, checkpoint attributes).
#include "runtime/core/param_role.hpp"

namespace orthoshard {

std::string_view param_role_name(ParamRole r) {
  switch (r) {
    case ParamRole::Embedding: return "embedding";
    case ParamRole::Head: return "head";
    case ParamRole::Matrix: return "matrix";
    case ParamRole::Vector: return "vector";
  }
  return "?";
}

}  // namespace orthoshard
