// Named optimizer state of one parameter (exp_avg, momentum, conda_basis, step, ...), enumerable and
// loadable by name so checkpoints can save and restore it.
#pragma once

#include "runtime/core/tensor.hpp"

#include <map>
#include <string>

namespace orthoshard {

class ParamState {
 public:
  // The tensor called `name`, created zero-filled with this shape and dtype if absent.
  Tensor& ensure(const std::string& name, const Shape& shape, DType dtype);
  Tensor& get(const std::string& name);  // throws naming the missing state
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  void set(const std::string& name, Tensor t) { tensors_[name] = std::move(t); }
  const std::map<std::string, Tensor>& entries() const { return tensors_; }

  // Integer counters stored as 0-d i64 tensors so they are saved like any other state.
  std::int64_t get_int(const std::string& name) const;
  void set_int(const std::string& name, std::int64_t v);

 private:
  std::map<std::string, Tensor> tensors_;
};

}  // namespace orthoshard
