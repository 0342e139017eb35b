// `orthoshard replay --backend cuda`: device shards, one GPU per rank, the optimizer of optim/cuda/.
#include "launch/cli/device_replay.hpp"

#include "optim/cuda/device_optimizer.hpp"
#include "runtime/comm/device_comm.hpp"
#include "runtime/core/error.hpp"
#include "runtime/cuda/device.hpp"
#include "runtime/cuda/device_buffer.hpp"

namespace orthoshard {
namespace {

class CudaReplay final : public ReplayStepper {
 public:
  CudaReplay(MpiCommunicator& world, const OptimConfig& cfg, const std::vector<ParamSpec>& specs,
             const std::vector<Tensor>& params, bool bf16, DeviceCommKind kind)
      : comm_(make_device_communicator(world, kind)), stream_(std::make_unique<cuda::Stream>(true)) {
    // The stream is made after make_device_communicator selected this rank's GPU.
    comm_->set_compute_stream(*stream_);
    optim_ = std::make_unique<DeviceOptimizer>(cfg, specs, comm_.get(), stream_->get(),
                                               bf16 ? NsPrecision::BF16 : NsPrecision::F32);
    cudaStream_t s = *stream_;
    for (const Tensor& p : params) {
      w_.emplace_back(static_cast<std::size_t>(p.numel()));
      g_.emplace_back(static_cast<std::size_t>(p.numel()));
      w_.back().copy_from_host(p.data<float>(), static_cast<std::size_t>(p.numel()), s);
    }
  }
  ~CudaReplay() override {
    // Nothing may outlive the stream it queues on: the optimizer and the communicator go first.
    w_.clear();
    g_.clear();
    optim_.reset();
    comm_.reset();
  }

  void step(std::vector<Tensor>& params, const std::vector<Tensor>& grads) override {
    cudaStream_t s = *stream_;
    std::vector<Tensor> dw, dg;
    for (std::size_t i = 0; i < params.size(); ++i) {
      g_[i].copy_from_host(grads[i].data<float>(), static_cast<std::size_t>(grads[i].numel()), s);
      dw.push_back(Tensor::borrow(w_[i].data(), params[i].shape(), DType::F32, Device::CUDA));
      dg.push_back(Tensor::borrow(g_[i].data(), grads[i].shape(), DType::F32, Device::CUDA));
    }
    optim_->step(dw, dg);
    for (std::size_t i = 0; i < params.size(); ++i)
      if (params[i].numel())
        OS_CUDA_CHECK(cudaMemcpyAsync(params[i].raw(), w_[i].data(), params[i].nbytes(), cudaMemcpyDeviceToHost, s));
    stream_->synchronize();
  }

  const OrthoPlan& plan() const override { return optim_->plan(); }

 private:
  std::unique_ptr<DeviceCommunicator> comm_;
  std::unique_ptr<cuda::Stream> stream_;
  std::unique_ptr<DeviceOptimizer> optim_;
  std::vector<cuda::DeviceBuffer<float>> w_, g_;
};

}  // namespace

std::unique_ptr<ReplayStepper> make_cuda_replay(Communicator& world, const OptimConfig& cfg,
                                                const std::vector<ParamSpec>& specs,
                                                const std::vector<Tensor>& params, bool bf16,
                                                const std::string& comm) {
  auto* mpi = dynamic_cast<MpiCommunicator*>(&world);
  OS_CHECK(mpi != nullptr, "replay --backend cuda: needs the MPI world communicator, got {}", world.backend());
  if (comm != "nccl" && comm != "mpi") throw UsageError("--comm: '" + comm + "' is not nccl or mpi");
  return std::make_unique<CudaReplay>(*mpi, cfg, specs, params, bf16,
                                      comm == "nccl" ? DeviceCommKind::Nccl : DeviceCommKind::MpiStaged);
}

}  // namespace orthoshard
