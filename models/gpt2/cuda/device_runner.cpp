// GPT-2 on the GPU behind the UnitRunner interface: each micro-batch's per-token losses are copied
// asynchronously into pinned host memory and read only when the trainer asks for the step's losses (after its
// first synchronization), so the host never waits for a micro-batch.
#include "models/gpt2/cuda/device_runner.hpp"

#include "models/gpt2/cuda/device_model.hpp"
#include "models/device_runner.hpp"
#include "models/gpt2/unit_runner.hpp"
#include "runtime/core/error.hpp"
#include "runtime/cuda/check.hpp"
#include "runtime/cuda/device.hpp"

namespace orthoshard {
namespace {

template <typename T>
class Gpt2DeviceRunner final : public Gpt2UnitRunner<DeviceGpt2Model<T>> {
  using Base = Gpt2UnitRunner<DeviceGpt2Model<T>>;

 public:
  Gpt2DeviceRunner(const Gpt2Config& cfg, cuda::Blas& blas, cudaStream_t stream, const DeviceRunnerOptions& opt)
      : Base(cfg, blas, stream, opt.attention, opt.checkpoint_blocks) {}

  void set_batch(std::int64_t B, std::int64_t Tn, int micro_batches) override {
    this->net_.set_batch(B, Tn);
    losses_.resize(B * Tn, micro_batches);
  }
  double take_loss_sum() override { return losses_.take_sum(this->net_.stream()); }
  std::uint64_t activation_bytes() const override { return this->net_.activation_bytes(); }
  std::string describe() const override {
    return fmt::format("attention {}", this->net_.flash_attention() ? "flash (fused)" : "cuBLAS GEMMs");
  }

 private:
  void head_forward(const HeadWeights& w, const Tensor& targets) override {
    this->net_.head_forward_async(w, targets);
    this->net_.copy_losses_async(losses_.next("GPT-2"));
  }

  DeviceLossSlots losses_;  // the step's per-token losses
};

}  // namespace

std::unique_ptr<UnitRunner> make_gpt2_device_runner(const Gpt2Config& cfg, cuda::Blas& blas, cudaStream_t stream,
                                                    const DeviceRunnerOptions& opt) {
  if (opt.dtype == DType::BF16) return std::make_unique<Gpt2DeviceRunner<__nv_bfloat16>>(cfg, blas, stream, opt);
  OS_CHECK(opt.dtype == DType::F32, "GPT-2 (cuda): compute dtype {} is not f32 or bf16", dtype_name(opt.dtype));
  return std::make_unique<Gpt2DeviceRunner<float>>(cfg, blas, stream, opt);
}

}  // namespace orthoshard
