// The device backend (runtime.backend = cuda): one GPU per rank; FSDP units gathered on the communication stream
// (NCCL, or MPI through host staging) ahead of use; the model computes in runtime.param_dtype (bf16: fp32
// statistics and losses); gradients reduce-scattered in runtime.reduce_dtype into fp32 shards; the optimizer on
// the GPU with fp32 master shards (Newton-Schulz in param_dtype) writes the bf16 copies the next all-gathers send.
#include "launch/trainer/backend.hpp"

#include "models/device_runner.hpp"
#include "optim/cuda/device_optimizer.hpp"
#include "runtime/comm/device_comm.hpp"
#include "runtime/core/error.hpp"
#include "runtime/cuda/check.hpp"
#include "runtime/cuda/device.hpp"
#include "runtime/fsdp/cuda/device_fsdp_engine.hpp"

#include <fmt/format.h>

namespace orthoshard {
namespace {

MpiCommunicator& as_mpi(Communicator& c) {
  auto* m = dynamic_cast<MpiCommunicator*>(&c);
  OS_CHECK(m != nullptr, "runtime.backend = cuda: needs MPI communicators, got {}", c.backend());
  return *m;
}

class DeviceBackend final : public TrainBackend {
 public:
  DeviceBackend(Communicator& world, const TrainConfig& cfg, const Model& model) : cfg_(cfg) {
    const int W = world.size(), me = world.rank(), S = shard_group_size(cfg, W);
    // Devices and communicators: the GPU is chosen once from the world's local rank; the shard (and replica)
    // groups get device communicators on it.
    const cuda::DeviceQuery q = cuda::query_devices();
    DeviceCommOptions dopt;
    dopt.timeout_s = cfg.runtime.comm_timeout_s;
    dopt.device = q.count > 0 ? pick_device(world.local_rank(), q.count) : -1;
    const DeviceCommKind kind = cfg.runtime.comm == CommBackend::Nccl  ? DeviceCommKind::Nccl
                                : cfg.runtime.comm == CommBackend::Mpi ? DeviceCommKind::MpiStaged
                                                                       : DeviceCommKind::Auto;
    shard_ = world.split(me / S, me);
    device_shard_ = make_device_communicator(as_mpi(*shard_), kind, dopt);
    if (S < W) {
      replica_ = world.split(me % S, me);
      device_replica_ = make_device_communicator(as_mpi(*replica_), kind, dopt);
    }
    stream_ = std::make_unique<cuda::Stream>(true);  // after make_device_communicator selected the GPU
    device_shard_->set_compute_stream(*stream_);
    if (device_replica_) device_replica_->set_compute_stream(*stream_);

    engine_ = std::make_unique<DeviceFsdpEngine>(fsdp_units(model), *device_shard_, device_replica_.get(),
                                                 DeviceFsdpOptions{cfg.runtime.param_dtype, cfg.runtime.reduce_dtype},
                                                 stream_->get());
    ns_ = cfg.runtime.param_dtype == DType::BF16 ? NsPrecision::BF16 : NsPrecision::F32;
    optim_ = std::make_unique<DeviceOptimizer>(cfg.optim, route_parameters(model.parameters(), cfg.optim),
                                               device_shard_.get(), stream_->get(), ns_);
    blas_ = std::make_unique<cuda::Blas>();
    DeviceRunnerOptions ropt;
    ropt.checkpoint_blocks = cfg.runtime.checkpoint_blocks;
    ropt.dtype = cfg.runtime.param_dtype;
    ropt.attention = cfg.runtime.attention;
    runner_ = make_device_runner(model, *blas_, stream_->get(), ropt);
    bind(*engine_, *optim_, *runner_, *shard_, me / S);
  }

  std::string describe() const override {
    return fmt::format("on GPUs ({}, comm {}, compute {}, reduce {}, prefetch {}, Newton-Schulz in {}, {})",
                       cfg_.runtime.sharding(),
                       device_replica_ ? fmt::format("{} in shard groups, {} across replicas", device_shard_->backend(),
                                                     device_replica_->backend())
                                       : device_shard_->backend(),
                       dtype_name(cfg_.runtime.param_dtype), dtype_name(cfg_.runtime.reduce_dtype),
                       cfg_.runtime.prefetch, ns_ == NsPrecision::BF16 ? "bf16" : "f32", runner_->describe());
  }
  Device device() const override { return Device::CUDA; }
  std::uint64_t device_bytes_in_use() const override {
    std::size_t free = 0, total = 0;
    OS_CUDA_CHECK(cudaMemGetInfo(&free, &total));
    return total - free;
  }
  std::string rank_line() const override {
    return fmt::format("device: GPU {} ({})", device_shard_->device(),
                       cuda::device_description(device_shard_->device()));
  }
  double peak_flops() const override { return cuda::nominal_bf16_peak_flops(device_shard_->device()); }
  Tensor full_to_host(const Tensor& full) const override {
    if (full.device() != Device::CUDA) return TrainBackend::full_to_host(full);
    Tensor host = Tensor::empty(full.shape(), full.dtype());
    if (full.numel())
      OS_CUDA_CHECK(cudaMemcpyAsync(host.raw(), full.raw(), full.nbytes(), cudaMemcpyDeviceToHost, stream_->get()));
    OS_CUDA_CHECK(cudaStreamSynchronize(stream_->get()));
    return TrainBackend::full_to_host(host);
  }

 private:
  // Destroyed in reverse order: what queues on the stream first, then the communicators, the stream last.
  const TrainConfig& cfg_;
  NsPrecision ns_ = NsPrecision::BF16;
  std::unique_ptr<cuda::Stream> stream_;
  std::unique_ptr<Communicator> shard_, replica_;
  std::unique_ptr<DeviceCommunicator> device_shard_, device_replica_;
  std::unique_ptr<DeviceFsdpEngine> engine_;
  std::unique_ptr<DeviceOptimizer> optim_;
  std::unique_ptr<cuda::Blas> blas_;
  std::unique_ptr<UnitRunner> runner_;
};

}  // namespace

std::unique_ptr<TrainBackend> make_device_backend(Communicator& world, const TrainConfig& cfg, const Model& model) {
  return std::make_unique<DeviceBackend>(world, cfg, model);
}

}  // namespace orthoshard
