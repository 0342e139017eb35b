// ParamState storage.
#include "optim/state.hpp"

#include "runtime/core/error.hpp"

namespace orthoshard {

Tensor& ParamState::ensure(const std::string& name, const Shape& shape, DType dtype) {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return tensors_[name] = Tensor::zeros(shape, dtype);
  OS_CHECK(it->second.shape() == shape && it->second.dtype() == dtype,
           "optimizer state '{}' is {} but {}{} is needed", name, it->second.describe(), dtype_name(dtype),
           shape_str(shape));
  return it->second;
}

Tensor& ParamState::get(const std::string& name) {
  auto it = tensors_.find(name);
  OS_CHECK(it != tensors_.end(), "optimizer state '{}' does not exist", name);
  return it->second;
}

std::int64_t ParamState::get_int(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return 0;
  return it->second.data<std::int64_t>()[0];
}

void ParamState::set_int(const std::string& name, std::int64_t v) {
  ensure(name, {}, DType::I64).data<std::int64_t>()[0] = v;
}

}  // namespace orthoshard
