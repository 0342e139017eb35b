// The optimizer in host memory (CPU training, replay, reference checks): the ShardedOptimizer of
// sharded_optimizer.hpp with the rules of optim/rules.hpp, Newton-Schulz and the SVD basis through BLAS/LAPACK,
// and the Gram-sharded scheme for tall matrices. Works in float (training) or double (reference checks).
#pragma once

#include "optim/sharded_optimizer.hpp"

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace orthoshard {

template <typename T> struct HostKernels;

class Optimizer final : public ShardedOptimizer {
 public:
  // comm: the data-parallel group the parameters are row-sharded over (null: one rank, whole tensors).
  Optimizer(OptimConfig config, std::vector<ParamSpec> params, DType dtype = DType::F32, Communicator* comm = nullptr);
  // Routed by role (route_parameters).
  static Optimizer with_roles(OptimConfig config, const std::vector<ParamInfo>& params, DType dtype = DType::F32,
                              Communicator* comm = nullptr);
  // Routed by the roles the shapes imply (roles_from_shapes): tests and benchmarks.
  static Optimizer with_routing(OptimConfig config, const std::vector<std::pair<std::string, Shape>>& params,
                                DType dtype = DType::F32, Communicator* comm = nullptr);
  Optimizer(Optimizer&&) noexcept;
  Optimizer& operator=(Optimizer&&) noexcept;
  ~Optimizer() override;

  // params[i], grads[i]: host tensors of dtype(); copies must be empty.
  void step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, double lr_scale = 1.0,
            const std::vector<Tensor>& copies = {}) override;
  DType dtype() const override { return dtype_; }
  Device device() const override { return Device::CPU; }

 private:
  void make_kernels();
  DType dtype_;
  std::unique_ptr<HostKernels<float>> k32_;
  std::unique_ptr<HostKernels<double>> k64_;
};

}  // namespace orthoshard
