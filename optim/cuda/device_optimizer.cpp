// The device kernels behind the optimizer step of optim/step.hpp: the rule kernels of optim_kernels.hpp on
// device buffers, the owner exchange over device memory (RowExchange with buffers from a caching allocator on
// the compute stream, moved by all_to_all_v on the communicator, which orders it after the packing and makes the
// stream wait for it at wait()), batched Newton-Schulz through cuBLAS, and Conda's basis through cuSOLVER.
#include "optim/cuda/device_optimizer.hpp"

#include "optim/cuda/optim_kernels.hpp"
#include "optim/orthogonalize/cuda/device_newton_schulz.hpp"
#include "optim/orthogonalize/cuda/device_svd.hpp"
#include "optim/step.hpp"
#include "runtime/core/error.hpp"
#include "runtime/cuda/allocator.hpp"
#include "runtime/cuda/device_buffer.hpp"
#include "runtime/cuda/gemm.hpp"

#include <algorithm>
#include <map>

namespace orthoshard {
namespace {

template <typename T> void grow(cuda::DeviceBuffer<T>& b, std::int64_t count) {
  if (b.size() < static_cast<std::size_t>(count)) b = cuda::DeviceBuffer<T>(static_cast<std::size_t>(count));
}

// Device memory for the owner exchange: buffers from a caching allocator on the compute stream, device copies.
// Every Request is waited (RowExchange declares it last) before its buffers return to the allocator.
struct DeviceRows {
  using Buffer = cuda::DeviceBuffer<float>;
  cuda::CachingAllocator* alloc = nullptr;
  cudaStream_t stream = nullptr;
  Buffer make(std::size_t count) const { return Buffer(count, *alloc, stream); }
  static float* data(Buffer& b) { return b.data(); }
  void copy(float* dst, const float* src, std::int64_t count) const {
    if (count > 0)
      OS_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(count) * sizeof(float),
                                    cudaMemcpyDeviceToDevice, stream));
  }
};

// The bf16 copy to write, or null (no copies, or an undefined/empty entry).
cuda::bf16* copy_ptr(const Tensor& copy) {
  return !copy.defined() || copy.numel() == 0 ? nullptr : static_cast<cuda::bf16*>(copy.raw());
}
float* ptr(const Tensor& t) { return static_cast<float*>(t.raw()); }

// The most matrix elements one owner orthogonalizes in one batched Newton-Schulz (256 MiB of fp32; the bf16
// iterates and workspaces add about as much again).
constexpr std::int64_t kNsGroupElements = std::int64_t(1) << 26;

cuda::DeviceNewtonSchulz::Precision to_cuda(NsPrecision p) {
  return p == NsPrecision::BF16 ? cuda::DeviceNewtonSchulz::Precision::BF16 : cuda::DeviceNewtonSchulz::Precision::F32;
}

}  // namespace

struct DeviceKernels {
  using Elem = float;
  using Exchange = RowExchange<float, DeviceRows>;

  DeviceKernels(ShardedOptimizer& o, Communicator* c, cudaStream_t s, NsPrecision p)
      : opt(o), comm(c), stream(s), ns(blas, to_cuda(p), o.config().ns_steps) {
    state_buffers.resize(o.params().size());
    updates.resize(o.params().size());
    groups.resize(static_cast<std::size_t>(o.plan().batches));
  }

  ShardedOptimizer& opt;
  Communicator* comm;
  cudaStream_t stream;
  cuda::Blas blas;
  cuda::DeviceNewtonSchulz ns;
  std::unique_ptr<cuda::DeviceSvd> svd;
  cuda::CachingAllocator alloc;
  std::vector<std::map<std::string, cuda::DeviceBuffer<float>>> state_buffers;  // per parameter, by state name
  std::vector<cuda::DeviceBuffer<float>> updates;                       // per parameter: this rank's rows
  std::vector<cuda::DeviceBuffer<float>> groups;  // per exchange batch: this rank's owned matrices, one after another
  std::map<std::size_t, cuda::DeviceBuffer<float>> full;  // Conda's left basis, per owned task: G and the moment
  cuda::DeviceBuffer<float> proj_g, proj_m, normed, refresh_buf, svd_other, svd_s;
  cuda::DeviceBuffer<double> row_ss;
  std::int64_t row_ss_count = 0;

  // ---- buffers ----
  float* update(std::size_t i, std::int64_t count) {
    grow(updates[i], count);
    return updates[i].data();
  }
  // The device buffer of a state tensor, created zero-filled (and registered in the ParamState as a device view).
  float* state(std::size_t i, const std::string& name, const Shape& shape) {
    auto& m = state_buffers[i];
    auto it = m.find(name);
    if (it != m.end()) {
      OS_CHECK(static_cast<std::int64_t>(it->second.size()) == shape_numel(shape),
               "optimizer: state {} of {} has {} elements, {} expected", name, opt.params()[i].name, it->second.size(),
               shape_numel(shape));
      return it->second.data();
    }
    cuda::DeviceBuffer<float> b(static_cast<std::size_t>(shape_numel(shape)));
    b.zero(stream);
    float* p = b.data();
    m.emplace(name, std::move(b));
    opt.state(i).set(name, Tensor::borrow(p, shape, DType::F32, Device::CUDA));
    return p;
  }
  // Each owner's same-shape matrices travel in one batch (group_batches_by_shape) and land one after another.
  std::vector<float*> owned(std::size_t batch, const std::vector<const OrthoTask*>& tasks) {
    const std::int64_t m = tasks[0]->m, n = tasks[0]->n;
    for (const OrthoTask* t : tasks)
      OS_CHECK(t->m == m && t->n == n, "optimizer: exchange batch {} mixes shapes on rank {}", batch, opt.rank());
    auto& g = groups[batch];
    grow(g, static_cast<std::int64_t>(tasks.size()) * m * n);
    std::vector<float*> out;
    for (std::size_t j = 0; j < tasks.size(); ++j) out.push_back(g.data() + static_cast<std::int64_t>(j) * m * n);
    return out;
  }
  void release_owned(std::size_t) {}  // the group buffers stay: the return's copies read them in stream order
  float* refresh(std::int64_t count) {
    grow(refresh_buf, count);
    return refresh_buf.data();
  }
  float* left(std::size_t param, std::int64_t count) {
    auto& b = full[param];
    grow(b, count);
    return b.data();
  }
  std::unique_ptr<Exchange> exchange(std::vector<ExchangeItem> items) {
    return std::make_unique<Exchange>(comm, std::move(items), DeviceRows{&alloc, stream});
  }

  // ---- rules ----
  void adamw(std::size_t i, const Tensor& w, const Tensor& g, const Tensor& copy, const AdamHparams& hp, double lr) {
    const Shape& ls = opt.local_shape(i);
    float* m = state(i, "exp_avg", ls);
    float* v = state(i, "exp_avg_sq", ls);
    const std::int64_t t = advance_step(opt.state(i));
    const auto sc = cuda::adamw_scalars(lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay, t);
    cuda::adamw_update<float>(ptr(w), copy_ptr(copy), ptr(g), m, v, shape_numel(ls), sc, stream);
  }
  void conda_plain(std::size_t i, const Tensor& w, const Tensor& g, const Tensor& copy, double lr) {
    const OptimConfig& c = opt.config();
    const Shape& ls = opt.local_shape(i);
    float* mom = state(i, "exp_avg", ls);
    float* v = state(i, "exp_avg_sq", ls);
    const std::int64_t t = advance_step(opt.state(i));
    cuda::conda_plain_update(ptr(w), copy_ptr(copy), ptr(g), mom, v, shape_numel(ls), c.beta1, c.beta2_adam, c.eps,
                             conda_step_size(c, t, lr), lr, c.weight_decay, stream);
  }
  void momentum(std::size_t i, const Tensor& g) {
    const Shape& ls = opt.local_shape(i);
    const std::int64_t n = shape_numel(ls);
    cuda::momentum_update<float>(state(i, "momentum", ls), update(i, n), ptr(g), n, opt.config().momentum,
                                 opt.config().nesterov, stream);
  }
  void conda_momentum(std::size_t i, const Tensor& g) {
    const Shape& ls = opt.local_shape(i);
    cuda::conda_momentum(state(i, "exp_avg", ls), ptr(g), shape_numel(ls), opt.config().beta1, stream);
  }
  void decay_then_apply(std::size_t i, const Tensor& w, const Tensor& copy, double lr, double wd, double factor) {
    const std::int64_t n = shape_numel(opt.local_shape(i));
    cuda::decay_then_apply<float>(ptr(w), copy_ptr(copy), update(i, n), n, lr, wd, factor, stream);
  }
  void scale(std::size_t i, double f) {
    const std::int64_t n = shape_numel(opt.local_shape(i));
    cuda::scale_inplace<float>(update(i, n), n, f, stream);
  }
  void conda_apply(std::size_t i, const Tensor& w, const Tensor& copy, double step, double lr, double wd) {
    const std::int64_t n = shape_numel(opt.local_shape(i));
    cuda::conda_apply(ptr(w), copy_ptr(copy), update(i, n), n, step, lr, wd, stream);
  }

  // ---- matrices ----
  std::uint64_t gram(const std::vector<const OrthoTask*>&) {
    fail("optimizer: the GPU plan has no Gram-sharded tasks");
  }
  void newton_schulz(const std::vector<const OrthoTask*>& tasks, const std::vector<float*>& mats) {
    const std::int64_t m = tasks[0]->m, n = tasks[0]->n;
    if (m > 0 && n > 0) ns.run_batched(mats[0], static_cast<std::int64_t>(tasks.size()), m, n, stream);
  }
  // Per-row sums of squares before and after the normalization, computed on the device, read once by the host.
  void begin_row_sums(std::int64_t count) {
    grow(row_ss, count);
    row_ss_count = count;
  }
  void normuon_rows(std::size_t i, std::int64_t rows, std::int64_t n, float* v, double beta2, std::int64_t off) {
    double* ss = row_ss.data() + off;
    cuda::normuon_normalize_rows<float>(update(i, rows * n), rows, n, v, beta2, ss, ss + rows, stream);
  }
  std::vector<double> row_sums() {
    std::vector<double> mine(static_cast<std::size_t>(row_ss_count));
    if (!mine.empty())
      OS_CUDA_CHECK(cudaMemcpyAsync(mine.data(), row_ss.data(), mine.size() * sizeof(double), cudaMemcpyDeviceToHost,
                                    stream));
    OS_CUDA_CHECK(cudaStreamSynchronize(stream));
    return mine;
  }
  // Thin SVD (cuSOLVER, fp32): U (m x k) and Vᵀ (k x n); the basis buffer takes the one Conda keeps.
  void basis(float* a, std::int64_t m, std::int64_t n, bool right, float* out) {
    const std::int64_t k = std::min(m, n);
    if (!svd) svd = std::make_unique<cuda::DeviceSvd>();
    grow(svd_other, right ? m * k : k * n);
    grow(svd_s, k);
    svd->thin(a, m, n, right ? svd_other.data() : out, svd_s.data(), right ? out : svd_other.data(), stream);
  }
  // Right basis P (k x n): (rows x n)(n x k) projections, normalization, back (rows x k)(k x n).
  void conda_right(const Tensor& g, const float* mom, std::int64_t rows, std::int64_t n, const float* p,
                   std::int64_t k, float* v, float* upd) {
    const OptimConfig& c = opt.config();
    grow(proj_g, rows * k);
    grow(proj_m, rows * k);
    grow(normed, rows * k);
    cuda::gemm<float>(blas, false, true, rows, k, n, 1.f, ptr(g), n, p, n, 0.f, proj_g.data(), k, stream);
    cuda::gemm<float>(blas, false, true, rows, k, n, 1.f, mom, n, p, n, 0.f, proj_m.data(), k, stream);
    cuda::conda_normalize(v, proj_g.data(), proj_m.data(), normed.data(), rows * k, c.beta2_adam, c.eps, stream);
    cuda::gemm<float>(blas, false, false, rows, n, k, 1.f, normed.data(), k, p, n, 0.f, upd, n, stream);
  }
  // Left basis P = U (m x k): Uᵀ X (k x n) projections, normalization, back U N into G's buffer.
  void conda_left(float* g_full, const float* m_full, std::int64_t m, std::int64_t n, const float* p, std::int64_t k,
                  float* v) {
    const OptimConfig& c = opt.config();
    grow(proj_g, k * n);
    grow(proj_m, k * n);
    grow(normed, k * n);
    cuda::gemm<float>(blas, true, false, k, n, m, 1.f, p, k, g_full, n, 0.f, proj_g.data(), n, stream);
    cuda::gemm<float>(blas, true, false, k, n, m, 1.f, p, k, m_full, n, 0.f, proj_m.data(), n, stream);
    cuda::conda_normalize(v, proj_g.data(), proj_m.data(), normed.data(), k * n, c.beta2_adam, c.eps, stream);
    cuda::gemm<float>(blas, false, false, m, n, k, 1.f, p, k, normed.data(), n, 0.f, g_full, n, stream);
  }
};

DeviceOptimizer::DeviceOptimizer(OptimConfig config, std::vector<ParamSpec> params, DeviceCommunicator* comm,
                                 cudaStream_t stream, NsPrecision ns_precision)
    : ShardedOptimizer(std::move(config), std::move(params), comm),
      device_comm_(comm),
      stream_(stream),
      ns_precision_(ns_precision) {
  if (config_.ortho_scheme == OrthoScheme::Gram)
    throw UsageError("optim.ortho_scheme = gram is not available on the GPU (runtime.backend = cuda orthogonalizes "
                     "each matrix on its owner rank): use auto or owner");
  std::vector<OrthoTask> tasks = matrix_tasks(specs_, config_, task_index_);
  for (auto& t : tasks) t.allow_gram = false;  // the GPU orthogonalizes every matrix on its owner
  plan_ = make_ortho_plan(std::move(tasks), nranks_, OrthoScheme::Owner, config_.ns_steps);
  // Each owner's same-shape matrices travel in one batch and go through one batched Newton-Schulz.
  group_batches_by_shape(plan_, kNsGroupElements);
  kernels_ = std::make_unique<DeviceKernels>(*this, comm_, stream_, ns_precision_);
}

DeviceOptimizer::~DeviceOptimizer() = default;

DeviceOptimizer DeviceOptimizer::with_roles(OptimConfig config, const std::vector<ParamInfo>& params,
                                            DeviceCommunicator* comm, cudaStream_t stream, NsPrecision ns_precision) {
  std::vector<ParamSpec> specs = route_parameters(params, config);
  return DeviceOptimizer(std::move(config), std::move(specs), comm, stream, ns_precision);
}

Tensor DeviceOptimizer::state_to_host(std::size_t param, const std::string& name) {
  const Tensor& t = state(param).get(name);
  if (t.device() == Device::CPU) return t;
  Tensor h = Tensor::empty(t.shape(), t.dtype());
  if (h.numel()) OS_CUDA_CHECK(cudaMemcpyAsync(h.raw(), t.raw(), h.nbytes(), cudaMemcpyDeviceToHost, stream_));
  OS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return h;
}

void DeviceOptimizer::load_state(std::size_t param, const std::string& name, const Tensor& host) {
  OS_CHECK(param < specs_.size(), "optimizer: parameter {} of {}", param, specs_.size());
  OS_CHECK(host.device() == Device::CPU && host.is_contiguous(), "optimizer: state {} of {} must be a host tensor, got {}",
           name, specs_[param].name, host.describe());
  if (host.dtype() == DType::I64 && host.ndim() == 0) {
    states_[param].set_int(name, *host.data<std::int64_t>());
    return;
  }
  OS_CHECK(host.dtype() == DType::F32, "optimizer: state {} of {} must be f32 or a 0-d i64 counter, got {}", name,
           specs_[param].name, host.describe());
  float* d = kernels_->state(param, name, host.shape());
  if (host.numel())
    OS_CUDA_CHECK(cudaMemcpyAsync(d, host.raw(), host.nbytes(), cudaMemcpyHostToDevice, stream_));
  OS_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void DeviceOptimizer::step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, double lr_scale,
                           const std::vector<Tensor>& copies) {
  check_step_args(params, grads, copies);
  if (device_comm_)
    OS_CHECK(device_comm_->compute_stream() == stream_,
             "optimizer step: the communicator's compute stream is not the optimizer's stream");
  OptimizerStep<DeviceKernels>(*this, *kernels_).run(params, grads, lr_scale, copies);
}

}  // namespace orthoshard
