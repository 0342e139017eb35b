// The optimizer on the GPU: the same rules, routing, state names and distributed orthogonalization as
// optim/optimizer.hpp, over fp32 device shards. Muon/NorMuon send each matrix's rows of the Nesterov momentum
// to its owner rank (one all_to_all per exchange batch, through a DeviceCommunicator: NCCL or staged MPI), the
// owner runs Newton-Schulz on the GPU (bf16 with fp32 accumulation, or fp32), and the rows come back. Unlike the
// CPU plan, an exchange batch carries all of an owner's matrices of one shape (group_batches_by_shape), and the
// owner orthogonalizes them in one batched Newton-Schulz (DeviceNewtonSchulz::run_batched). NorMuon's
// row statistics stay local and its Frobenius norms are exact sums over all rows in global row order (as on
// the CPU). Conda computes its SVD basis on the owner through cuSOLVER (fp32) and projects with cuBLAS.
//
// The step is optim/step.hpp's, as on the CPU; this file supplies the device kernels behind it. Differences
// from the CPU optimizer: no Gram-sharded scheme (optim.ortho_scheme = gram is refused; auto means owner), f32
// only (no f64 reference mode), and the optional bf16 copy of each updated parameter (the FSDP all-gather's
// source) written by the same kernels that update the fp32 master.
#pragma once

#include "optim/sharded_optimizer.hpp"
#include "runtime/comm/device_communicator.hpp"

#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

namespace orthoshard {

enum class NsPrecision { F32, BF16 };

struct DeviceKernels;

class DeviceOptimizer final : public ShardedOptimizer {
 public:
  // comm: the group the parameters are row-sharded over, with `stream` as its compute stream (null: one rank,
  // whole tensors). All work runs on `stream`, on the current device.
  DeviceOptimizer(OptimConfig config, std::vector<ParamSpec> params, DeviceCommunicator* comm, cudaStream_t stream,
                  NsPrecision ns_precision = NsPrecision::BF16);
  static DeviceOptimizer with_roles(OptimConfig config, const std::vector<ParamInfo>& params,
                                    DeviceCommunicator* comm, cudaStream_t stream,
                                    NsPrecision ns_precision = NsPrecision::BF16);
  DeviceOptimizer(DeviceOptimizer&&) = delete;  // its kernels refer to it
  ~DeviceOptimizer() override;

  // params[i], grads[i]: contiguous f32 device tensors; copies: empty, or bf16 device tensors (undefined/empty
  // entries skipped) that receive bf16 of the updated parameters. Returns with the work queued on the stream
  // (NorMuon synchronizes once to read its row sums).
  void step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, double lr_scale = 1.0,
            const std::vector<Tensor>& copies = {}) override;
  DType dtype() const override { return DType::F32; }
  Device device() const override { return Device::CUDA; }
  // State tensors are device views of buffers this object owns, the counters host values. state_to_host copies
  // one to the host; load_state sets one from a host tensor (f32: created at that shape, or overwriting one of
  // the same size; 0-d i64: a counter). Both synchronous.
  Tensor state_to_host(std::size_t param, const std::string& state_name) override;
  void load_state(std::size_t param, const std::string& state_name, const Tensor& host) override;
  NsPrecision ns_precision() const { return ns_precision_; }

 private:
  DeviceCommunicator* device_comm_;
  cudaStream_t stream_;
  NsPrecision ns_precision_;
  std::unique_ptr<DeviceKernels> kernels_;
};

}  // namespace orthoshard
