// FSDP on the GPU: the layout and semantics of runtime/fsdp/fsdp_engine.hpp (every parameter row-sharded over
// the shard group, a unit's shards packed in one flat buffer so one all_gather brings the unit and one
// reduce_scatter returns its gradient; padding never enters the math) with every buffer in device memory and
// every collective on the DeviceCommunicator's communication stream, ordered against the compute stream by
// events, so gathers of the next units and reductions of finished ones overlap the compute.
//
// Precision: fp32 master shards always. The all-gather moves param_dtype (bf16: the optimizer writes a bf16
// copy of each updated shard, see DeviceOptimizer's `copies`), and the model computes in param_dtype on the
// gathered full parameters. Each micro-batch's backward writes its gradients in param_dtype; with bf16 and
// several micro-batches, accumulate_grads moves them into an fp32 sum after each but the last (as the CPU
// engine, which accumulates in fp32), so only each micro-batch's gradient is rounded to bf16, not the running
// sum. The sum is reduce-scattered in reduce_dtype into fp32 gradient shards.
#pragma once

#include "runtime/comm/device_communicator.hpp"
#include "runtime/core/tensor.hpp"
#include "runtime/fsdp/fsdp_engine.hpp"

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace orthoshard {

struct DeviceFsdpOptions {
  DType param_dtype = DType::BF16;  // all-gather and compute dtype (f32 or bf16)
  DType reduce_dtype = DType::F32;  // gradient reduce-scatter dtype (f32 or bf16)
};

class DeviceFsdpEngine {
 public:
  // shard: the group parameters are sharded over; replica: ranks holding the same shards (hybrid sharding) or
  // null. Both must have `stream` as their compute stream; all work is queued there (on the current device).
  DeviceFsdpEngine(std::vector<FsdpUnitSpec> units, DeviceCommunicator& shard, DeviceCommunicator* replica,
                   DeviceFsdpOptions opt, cudaStream_t stream);
  ~DeviceFsdpEngine();
  DeviceFsdpEngine(const DeviceFsdpEngine&) = delete;
  DeviceFsdpEngine& operator=(const DeviceFsdpEngine&) = delete;

  std::size_t num_units() const { return units_.size(); }
  const FsdpUnitSpec& unit_spec(std::size_t u) const;
  std::size_t unit_of(const std::string& param) const;
  const DeviceFsdpOptions& options() const { return opt_; }

  // This rank's rows (device views into the unit's flat buffers): the fp32 master shard, its param_dtype copy
  // (bf16 only; an undefined tensor for f32), and the fp32 gradient shard.
  Tensor shard(const std::string& param) const;
  Tensor shard_copy(const std::string& param) const;
  Tensor grad_shard(const std::string& param) const;
  RowRange rows(const std::string& param) const;
  // Sets a parameter's master shard (and copy) from its full value, a host f32 tensor every rank passes alike.
  void load_full(const std::string& param, const Tensor& full_host);
  // Copies this rank's master rows to/from host f32 tensors of the shard's shape (checkpoints).
  void shard_to_host(const std::string& param, Tensor& dst) const;
  void shard_from_host(const std::string& param, const Tensor& src);
  // Refreshes every bf16 copy from the masters (after shard_from_host / load_full).
  void refresh_copies();

  // ---- parameters, unit by unit ----
  void prefetch(std::size_t u);  // start the all_gather of unit u on the communication stream
  void gather(std::size_t u);    // unit u's full parameters are usable by work queued on the stream after this
  void release(std::size_t u);   // drop unit u's full parameters (memory reused in stream order)
  bool gathered(std::size_t u) const;
  Tensor full(const std::string& param) const;  // full parameter (unit gathered): param_dtype device view

  // ---- gradients ----
  void zero_grads();                                  // before a step's first micro-batch
  Tensor full_grad(const std::string& param) const;   // param_dtype device view the model accumulates into
  // After a micro-batch's backward of unit u that is not the step's last: its param_dtype gradient is added to
  // the unit's fp32 sum and cleared (bf16 only; with f32 the model accumulates in full_grad directly).
  void accumulate_grads(std::size_t u);
  void reduce_grads(std::size_t u);  // pack unit u's gradient (with the fp32 sum) and start its reduce_scatter (mean)
  void finish_reductions();          // the stream waits for every started reduction (+ replica all-reduce)
  // Global L2 norm of the gradient shards (one host sync); scales them to max_norm when max_norm > 0 and the
  // norm is larger. Returns the norm before clipping (NaN/Inf when a gradient is not finite).
  double clip_grad_norm(double max_norm);

  FsdpMemory memory() const;
  // Host time spent in gather()/finish_reductions() waits (stream-ordered: near zero unless staged MPI).
  double comm_wait_ms() const { return comm_wait_ms_; }

 private:
  struct Unit;
  struct Memory;
  Unit& unit(std::size_t u);
  Tensor shard_view(const std::string& param, int which) const;
  void start_gather(std::size_t u);
  DeviceCommunicator& shard_;
  DeviceCommunicator* replica_;
  DeviceFsdpOptions opt_;
  cudaStream_t stream_;
  std::unique_ptr<Memory> mem_;  // before units_: their gathered buffers return to its allocator
  std::vector<std::unique_ptr<Unit>> units_;
  std::map<std::string, std::pair<std::size_t, std::size_t>> index_;
  std::uint64_t gathered_bytes_ = 0, gather_peak_ = 0;
  double comm_wait_ms_ = 0;
};

}  // namespace orthoshard
