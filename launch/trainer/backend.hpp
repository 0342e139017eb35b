// What a backend gives the one training loop (train.cpp): the sharded engine, the sharded optimizer and the
// model's unit runner on that backend, built over the job's communicators. The host backend (host_backend.cpp)
// runs on CPU ranks over MPI; the device backend (device_backend.cpp, CUDA builds) puts every buffer on this
// rank's GPU and its collectives on NCCL or MPI through host staging.
#pragma once

#include "launch/trainer/train_config.hpp"
#include "models/family.hpp"
#include "optim/sharded_optimizer.hpp"
#include "runtime/comm/communicator.hpp"
#include "runtime/fsdp/sharded_engine.hpp"

#include <memory>
#include <string>
#include <vector>

namespace orthoshard {

// Each backend owns its pieces, declared in the order they must be destroyed in (a GPU's stream outlives what
// queues on it), and shows them to the loop through bind().
class TrainBackend {
 public:
  virtual ~TrainBackend() = default;
  ShardedEngine& engine() { return *engine_; }
  ShardedOptimizer& optimizer() { return *optim_; }
  UnitRunner& runner() { return *runner_; }
  Communicator& shard_group() { return *shard_; }  // the group parameters are row-sharded over
  int replica_index() const { return replica_index_; }  // which copy of the shards this rank holds (hybrid)

  // One optimizer step over the engine's shards (and, on a GPU, the bf16 copies the next all-gathers send).
  void optimizer_step(double lr_scale) { optim_->step(shards_, grads_, lr_scale, copies_); }

  // For the log: how the job runs ("on the CPU (full, communication blocking)", ...), and where.
  virtual std::string describe() const = 0;
  virtual Device device() const = 0;
  // Lines every rank prints once (its GPU), or none.
  virtual std::string rank_line() const { return ""; }
  // Device memory in use on this rank's GPU (0 on the host backend).
  virtual std::uint64_t device_bytes_in_use() const { return 0; }
  // The nominal dense bf16 peak of this rank's GPU in FLOP/s, for MFU (0: the host backend, or a GPU not in
  // cuda::nominal_bf16_peak_flops's list).
  virtual double peak_flops() const { return 0; }
  // A host f32 copy of a gathered parameter (engine.full(name): host or device, f32 or bf16), for samples.
  virtual Tensor full_to_host(const Tensor& full) const;

 protected:
  // The pieces the derived backend built (and owns); lists the engine's shards, gradients and copies in the
  // optimizer's parameter order.
  void bind(ShardedEngine& engine, ShardedOptimizer& optim, UnitRunner& runner, Communicator& shard, int replica);

 private:
  ShardedEngine* engine_ = nullptr;
  ShardedOptimizer* optim_ = nullptr;
  UnitRunner* runner_ = nullptr;
  Communicator* shard_ = nullptr;
  int replica_index_ = 0;
  std::vector<Tensor> shards_, grads_, copies_;  // views of the engine's buffers
};

// The shard groups of runtime.sharding: full = one group of W; hybrid:S = shard within groups of S consecutive
// ranks, replicate across the W/S groups. UsageError when W is not a multiple of S.
int shard_group_size(const TrainConfig& cfg, int world_size);
// FSDP units from a model's units (the parameters each owns, in order).
std::vector<FsdpUnitSpec> fsdp_units(const Model& model);

// overlap: collectives overlapped with compute (prefetched all-gathers, asynchronous reductions).
std::unique_ptr<TrainBackend> make_host_backend(Communicator& world, const TrainConfig& cfg, const Model& model,
                                                bool overlap);
// One GPU per rank (or ranks sharing GPUs with runtime.comm = mpi). Fails on every rank with one line when a rank
// has no GPU, or when this build has no CUDA backend.
std::unique_ptr<TrainBackend> make_device_backend(Communicator& world, const TrainConfig& cfg, const Model& model);

}  // namespace orthoshard
