// The host backend: CPU ranks over MPI, the FSDP engine in host memory, the host optimizer, the model's CPU
// runner; and what both backends share (shard groups, units, the shard lists).
#include "launch/trainer/backend.hpp"

#include "optim/optimizer.hpp"
#include "runtime/core/error.hpp"
#include "runtime/fsdp/fsdp_engine.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace orthoshard {

int shard_group_size(const TrainConfig& cfg, int world_size) {
  const int S = cfg.runtime.hybrid_group_size > 0 ? cfg.runtime.hybrid_group_size : world_size;
  if (world_size % S != 0)
    throw UsageError(fmt::format("runtime.sharding = hybrid:{}: the job's {} ranks are not a multiple of {}", S,
                                 world_size, S));
  return S;
}

std::vector<FsdpUnitSpec> fsdp_units(const Model& model) {
  std::vector<FsdpUnitSpec> out;
  for (const ModelUnit& u : model.units()) {
    FsdpUnitSpec spec{u.name, {}};
    for (const ParamInfo& p : u.params) spec.params.push_back({p.name, p.shape});
    out.push_back(std::move(spec));
  }
  return out;
}

void TrainBackend::bind(ShardedEngine& engine, ShardedOptimizer& optim, UnitRunner& runner, Communicator& shard,
                        int replica) {
  engine_ = &engine;
  optim_ = &optim;
  runner_ = &runner;
  shard_ = &shard;
  replica_index_ = replica;
  bool any_copy = false;
  for (const ParamSpec& p : optim.params()) {
    shards_.push_back(engine.shard(p.name));
    grads_.push_back(engine.grad_shard(p.name));
    copies_.push_back(engine.shard_copy(p.name));
    any_copy |= copies_.back().defined() && copies_.back().raw() != nullptr;
  }
  if (!any_copy) copies_.clear();
}

Tensor TrainBackend::full_to_host(const Tensor& full) const {
  OS_CHECK(full.device() == Device::CPU && full.is_contiguous(), "full_to_host: {} is not a host tensor",
           full.describe());
  Tensor out = Tensor::empty(full.shape(), DType::F32);
  if (full.dtype() == DType::F32) {
    std::copy_n(full.data<float>(), full.numel(), out.data<float>());
  } else {
    OS_CHECK(full.dtype() == DType::BF16, "full_to_host: {} is not f32 or bf16", full.describe());
    for (std::int64_t i = 0; i < full.numel(); ++i) out.data<float>()[i] = bf16_to_float(full.data<bf16>()[i]);
  }
  return out;
}

namespace {

class HostBackend final : public TrainBackend {
 public:
  HostBackend(Communicator& world, const TrainConfig& cfg, const Model& model, bool overlap)
      : sharding_(cfg.runtime.sharding()), overlap_(overlap) {
    if (cfg.runtime.comm == CommBackend::Nccl)
      throw UsageError("runtime.comm = nccl needs runtime.backend = cuda; CPU training uses runtime.comm = mpi");
    const int W = world.size(), me = world.rank(), S = shard_group_size(cfg, W);
    shard_ = world.split(me / S, me);
    if (S < W) replica_ = world.split(me % S, me);
    engine_ = std::make_unique<FsdpEngine>(fsdp_units(model), *shard_, replica_.get(),
                                           FsdpOptions{cfg.runtime.param_dtype, cfg.runtime.reduce_dtype, overlap});
    optim_ = std::make_unique<Optimizer>(
        Optimizer::with_roles(cfg.optim, model.parameters(), DType::F32, shard_.get()));
    runner_ = model.cpu_runner({cfg.runtime.checkpoint_blocks});
    bind(*engine_, *optim_, *runner_, *shard_, me / S);
  }
  std::string describe() const override {
    return fmt::format("on the CPU ({}, communication {})", sharding_, overlap_ ? "overlapped with compute" : "blocking");
  }
  Device device() const override { return Device::CPU; }

 private:
  std::string sharding_;
  bool overlap_;
  std::unique_ptr<Communicator> shard_, replica_;
  std::unique_ptr<FsdpEngine> engine_;
  std::unique_ptr<Optimizer> optim_;
  std::unique_ptr<UnitRunner> runner_;
};

}  // namespace

std::unique_ptr<TrainBackend> make_host_backend(Communicator& world, const TrainConfig& cfg, const Model& model,
                                                bool overlap) {
  return std::make_unique<HostBackend>(world, cfg, model, overlap);
}

#if !ORTHOSHARD_HAVE_CUDA
std::unique_ptr<TrainBackend> make_device_backend(Communicator&, const TrainConfig&, const Model&) {
  throw UsageError("runtime.backend = cuda: this build has no CUDA backend (CMake found no nvcc); use "
                   "runtime.backend = cpu");
}
#endif

}  // namespace orthoshard
