// FSDP on the GPU: the ShardedEngine of runtime/fsdp/sharded_engine.hpp (layout, gather/release/reduce state
// machine) with every buffer in device memory and every collective on the DeviceCommunicator's communication
// stream, ordered against the compute stream by events, so gathers of the next units and reductions of finished
// ones overlap the compute.
//
// Precision: fp32 master shards always. The all-gather moves param_dtype (bf16: the optimizer writes a bf16
// copy of each updated shard, see DeviceOptimizer's `copies`), and the model computes in param_dtype on the
// gathered full parameters. Each micro-batch's backward writes its gradients in param_dtype. Reduced after every
// micro-batch, each one's gradient is reduce-scattered in reduce_dtype and added to the fp32 gradient shards;
// kept for one reduction per step, accumulate_grads moves a bf16 gradient into an fp32 sum after each micro-batch
// but the last (as the CPU engine, which accumulates in fp32), so only each micro-batch's gradient is rounded to
// bf16, not the running sum.
#pragma once

#include "runtime/comm/device_communicator.hpp"
#include "runtime/core/tensor.hpp"
#include "runtime/fsdp/sharded_engine.hpp"

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace orthoshard {

struct DeviceFsdpOptions {
  DType param_dtype = DType::BF16;  // all-gather and compute dtype (f32 or bf16)
  DType reduce_dtype = DType::F32;  // gradient reduce-scatter dtype (f32 or bf16)
};

class DeviceFsdpEngine final : public ShardedEngine {
 public:
  // shard: the group parameters are sharded over; replica: ranks holding the same shards (hybrid sharding) or
  // null. Both must have `stream` as their compute stream; all work is queued there (on the current device).
  DeviceFsdpEngine(std::vector<FsdpUnitSpec> units, DeviceCommunicator& shard, DeviceCommunicator* replica,
                   DeviceFsdpOptions opt, cudaStream_t stream);
  ~DeviceFsdpEngine() override;

  const DeviceFsdpOptions& options() const { return opt_; }
  // Device views: the fp32 master shard, its bf16 copy (an undefined tensor with f32 parameters), the fp32
  // gradient shard; the full parameters and gradients in param_dtype.
  Tensor shard(const std::string& param) const override;
  Tensor shard_copy(const std::string& param) const override;
  Tensor grad_shard(const std::string& param) const override;
  void shard_to_host(const std::string& param, Tensor& dst) const override;  // synchronous
  void shard_from_host(const std::string& param, const Tensor& src) override;  // synchronous; refreshes the copy
  Tensor full(const std::string& param) const override;
  void accumulate_grads(std::size_t u) override;
  // One host sync (the norm); scales the shards on the device.
  double clip_grad_norm(double max_norm) override;
  void synchronize() override;
  FsdpMemory memory() const override;

 private:
  struct Unit;
  struct Memory;
  // Parameters: all-gather on the communication stream, unpack with one span-copy launch.
  void start_gather(std::size_t u) override;
  void finish_gather(std::size_t u) override;
  void drop_full(std::size_t u) override;
  Tensor full_view(const std::string& param, bool grad) const;
  // Gradients: full buffers from the caching allocator; pack with one span-copy launch (the fp32 sum when
  // micro-batches were kept), reduce-scatter, add into the shard.
  void alloc_grads(std::size_t u) override;
  void free_grads(std::size_t u) override;
  Tensor grad_view(const std::string& param) const override;
  void start_reduce(std::size_t u, bool add) override;
  void finish_reduce(std::size_t u, bool add, bool replica) override;
  Tensor shard_view(const std::string& param, int which) const;

  DeviceCommunicator& shard_;
  DeviceCommunicator* replica_;
  DeviceFsdpOptions opt_;
  cudaStream_t stream_;
  std::unique_ptr<Memory> mem_;  // before units_: their gathered buffers return to its allocator
  std::vector<std::unique_ptr<Unit>> units_;
};

}  // namespace orthoshard
