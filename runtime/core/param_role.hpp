// What a parameter is to its network: the vocabulary a model family declares and the optimizer routes by
// (hidden matrices take the matrix rule, everything else AdamW; see optim/optimizer.hpp), so no layer of the
// runtime has to guess from a parameter's name.
#pragma once

#include "runtime/core/tensor.hpp"

#include <string>
#include <string_view>

namespace orthoshard {

enum class ParamRole {
  Embedding,  // token or position embedding (rows are vocabulary entries or positions)
  Head,       // the output projection onto the vocabulary (untied)
  Matrix,     // a hidden weight matrix inside a block (attention, MLP)
  Vector,     // norm weights, biases and other 1-D parameters
};
std::string_view param_role_name(ParamRole r);  // "embedding" | "head" | "matrix" | "vector"

// A parameter as the runtime sees it: name, global shape (rows sharded), role.
struct ParamInfo {
  std::string name;
  Shape shape;
  ParamRole role = ParamRole::Vector;
};

// The role a parameter list without roles implies (tests, benchmarks, traces): 2+ dimensions are hidden
// matrices, the rest vectors.
inline ParamRole role_from_shape(const Shape& shape) { return shape.size() >= 2 ? ParamRole::Matrix : ParamRole::Vector; }

}  // namespace orthoshard
