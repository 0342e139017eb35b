// The optimizer on the GPU: the same rules, routing, state names and distributed orthogonalization as
// optim/optimizer.hpp, over fp32 device shards. Muon/NorMuon send each matrix's rows of the Nesterov momentum
// to its owner rank (one all_to_all per exchange batch, through a DeviceCommunicator: NCCL or staged MPI), the
// owner runs Newton-Schulz on the GPU (bf16 with fp32 accumulation, or fp32), and the rows come back. Unlike the
// CPU plan, an exchange batch carries all of an owner's matrices of one shape (group_batches_by_shape), and the
// owner orthogonalizes them in one batched Newton-Schulz (NewtonSchulzGpu::run_batched). NorMuon's
// row statistics stay local and its Frobenius norms are exact sums over all rows in global row order (as on
// the CPU). Conda computes its SVD basis on the owner through cuSOLVER (fp32) and projects with cuBLAS.
//
// Differences from the CPU optimizer: no Gram-sharded scheme (optim.ortho_scheme = gram is refused; auto means
// owner), f32 only (no f64 reference mode), and the optional bf16 copy of each updated parameter (the FSDP
// all-gather's source) written by the same kernels that update the fp32 master.
#pragma once

#include "optim/optimizer.hpp"
#include "runtime/comm/device_communicator.hpp"

#include <cuda_runtime.h>

#include <memory>
#include <vector>

namespace orthoshard {

enum class NsPrecision { F32, BF16 };

class DeviceOptimizer {
 public:
  // comm: the group the parameters are row-sharded over, with `stream` as its compute stream (null: one rank,
  // whole tensors). All work runs on `stream`, on the current device.
  DeviceOptimizer(OptimConfig config, std::vector<ParamSpec> params, DeviceCommunicator* comm, cudaStream_t stream,
                  NsPrecision ns_precision = NsPrecision::BF16);
  static DeviceOptimizer with_routing(OptimConfig config, const std::vector<std::pair<std::string, Shape>>& params,
                                      DeviceCommunicator* comm, cudaStream_t stream,
                                      NsPrecision ns_precision = NsPrecision::BF16);
  DeviceOptimizer(DeviceOptimizer&&) noexcept;
  DeviceOptimizer& operator=(DeviceOptimizer&&) noexcept;
  ~DeviceOptimizer();

  // One step. params[i], grads[i]: this rank's rows of params()[i] as contiguous f32 device tensors of shape
  // local_shape(i). copies: empty, or one bf16 device tensor per parameter (undefined/empty entries skipped)
  // that receives bf16 of the updated parameter. lr_scale multiplies every learning rate. Collective over
  // comm; returns with the work queued on the stream (NorMuon synchronizes once to read its row sums).
  void step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, double lr_scale = 1.0,
            const std::vector<Tensor>& copies = {});

  const OptimConfig& config() const { return config_; }
  const std::vector<ParamSpec>& params() const { return specs_; }
  const Shape& local_shape(std::size_t i) const { return local_shapes_.at(i); }
  RowRange local_rows(std::size_t i) const;
  // Named state as the CPU optimizer names it: f32 device tensors (Device::CUDA views of buffers this object
  // owns) and host i64 counters (step, conda_basis_step, conda_basis_side).
  ParamState& state(std::size_t i) { return states_.at(i); }
  StateHome state_home(std::size_t param, const std::string& state_name, int* owner = nullptr) const;
  // Sets a state from a host tensor (checkpoint resume): f32 tensors go to the device (created at that shape,
  // or overwriting one of the same size), 0-d i64 counters to the host counters. Synchronous.
  void load_state(std::size_t param, const std::string& state_name, const Tensor& host);
  int rank() const { return rank_; }
  int nranks() const { return nranks_; }
  const OrthoPlan& plan() const { return plan_; }
  const StepStats& last_step_stats() const { return stats_; }
  NsPrecision ns_precision() const { return ns_precision_; }

 private:
  struct Impl;
  float* state_buffer(std::size_t param, const std::string& name, const Shape& shape);
  void orthogonalize();
  void normuon_finish(const std::vector<Tensor>& params, const std::vector<Tensor>& copies, double lr);
  void conda_matrices(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                      const std::vector<Tensor>& copies, double lr);

  OptimConfig config_;
  std::vector<ParamSpec> specs_;
  std::vector<Shape> local_shapes_;
  std::vector<ParamState> states_;
  DeviceCommunicator* comm_;
  cudaStream_t stream_;
  NsPrecision ns_precision_;
  int rank_ = 0, nranks_ = 1;
  OrthoPlan plan_;
  std::vector<int> task_index_;
  StepStats stats_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace orthoshard
