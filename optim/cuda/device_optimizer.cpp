// The optimizer step on the GPU, in the order of optim/optimizer.cpp: (A) elementwise rules and momentum,
// (B) owner exchange batches (pipelined: batch k+1's rows travel on the communication stream while batch k is
// orthogonalized) or Conda's basis and projections, (C) NorMuon's row statistics and exact global norms, and
// the parameter update.
#include "optim/cuda/device_optimizer.hpp"

#include "optim/distributed/row_exchange.hpp"
#include "runtime/core/error.hpp"
#include "runtime/kernels/cuda/allocator.hpp"
#include "runtime/kernels/cuda/device_buffer.hpp"
#include "runtime/kernels/cuda/gemm.hpp"
#include "runtime/kernels/cuda/newton_schulz.hpp"
#include "runtime/kernels/cuda/optim_kernels.hpp"
#include "runtime/kernels/cuda/svd.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

namespace orthoshard {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

template <typename T> void grow(cuda::DeviceBuffer<T>& b, std::int64_t count) {
  if (b.size() < static_cast<std::size_t>(count)) b = cuda::DeviceBuffer<T>(static_cast<std::size_t>(count));
}

void copy_d2d(float* dst, const float* src, std::int64_t count, cudaStream_t s) {
  if (count > 0)
    OS_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(count) * sizeof(float), cudaMemcpyDeviceToDevice, s));
}

// The owner exchange of optim/distributed/row_exchange.hpp on device buffers: the same packing (the block for
// peer p holds, in item order, the rows of the items p owns, or that this rank owns on the way back), packed
// and unpacked by device copies on the compute stream, moved by all_to_all_v on the communicator (which orders
// it after the packing and makes the stream wait for it at wait()). Buffers come from a caching allocator on
// the compute stream; every Request is waited before its buffers are returned.
class DeviceRowExchange {
 public:
  DeviceRowExchange(DeviceCommunicator* comm, int rank, int nranks, std::vector<ExchangeItem> items,
                    cuda::CachingAllocator& alloc, cudaStream_t stream)
      : comm_(comm), rank_(rank), nranks_(nranks), items_(std::move(items)), stream_(stream) {
    to_owner_.assign(static_cast<std::size_t>(nranks_), 0);
    from_ranks_.assign(static_cast<std::size_t>(nranks_), 0);
    for (std::size_t i = 0; i < items_.size(); ++i) {
      OS_CHECK(items_[i].owner >= 0 && items_[i].owner < nranks_, "exchange item {} owned by rank {} of {}", i,
               items_[i].owner, nranks_);
      to_owner_[static_cast<std::size_t>(items_[i].owner)] += static_cast<std::size_t>(rows(i, rank_) * items_[i].n);
      if (items_[i].owner == rank_)
        for (int s = 0; s < nranks_; ++s)
          from_ranks_[static_cast<std::size_t>(s)] += static_cast<std::size_t>(rows(i, s) * items_[i].n);
    }
    if (single()) return;  // one rank: the matrices are copied straight between the caller's buffers
    a_ = cuda::DeviceBuffer<float>(total(to_owner_), alloc, stream_);
    b_ = cuda::DeviceBuffer<float>(total(from_ranks_), alloc, stream_);
  }

  void start_gather(const std::vector<const float*>& local) {
    OS_CHECK(local.size() == items_.size(), "exchange: {} buffers for {} items", local.size(), items_.size());
    if (single()) {
      source_ = local;
      return;
    }
    float* out = a_.data();
    for (int d = 0; d < nranks_; ++d)
      for (std::size_t i = 0; i < items_.size(); ++i)
        if (items_[i].owner == d) {
          const std::int64_t cnt = rows(i, rank_) * items_[i].n;
          copy_d2d(out, local[i], cnt, stream_);
          out += cnt;
        }
    move(a_, to_owner_, b_, from_ranks_);
  }
  void finish_gather(const std::vector<float*>& full) {
    if (single()) {
      for (std::size_t i = 0; i < items_.size(); ++i) copy_d2d(full[i], source_[i], items_[i].m * items_[i].n, stream_);
      return;
    }
    pending_.wait();
    const float* in = b_.data();
    for (int s = 0; s < nranks_; ++s)
      for (std::size_t i = 0; i < items_.size(); ++i)
        if (items_[i].owner == rank_) {
          const std::int64_t cnt = rows(i, s) * items_[i].n;
          copy_d2d(full[i] + begin(i, s) * items_[i].n, in, cnt, stream_);
          in += cnt;
        }
  }
  void start_return(const std::vector<const float*>& full) {
    if (single()) {
      source_ = full;
      return;
    }
    float* out = b_.data();
    for (int s = 0; s < nranks_; ++s)
      for (std::size_t i = 0; i < items_.size(); ++i)
        if (items_[i].owner == rank_) {
          const std::int64_t cnt = rows(i, s) * items_[i].n;
          copy_d2d(out, full[i] + begin(i, s) * items_[i].n, cnt, stream_);
          out += cnt;
        }
    move(b_, from_ranks_, a_, to_owner_);
  }
  void finish_return(const std::vector<float*>& local) {
    if (single()) {
      for (std::size_t i = 0; i < items_.size(); ++i)
        copy_d2d(local[i], source_[i], items_[i].m * items_[i].n, stream_);
      return;
    }
    pending_.wait();
    const float* in = a_.data();
    for (int d = 0; d < nranks_; ++d)
      for (std::size_t i = 0; i < items_.size(); ++i)
        if (items_[i].owner == d) {
          const std::int64_t cnt = rows(i, rank_) * items_[i].n;
          copy_d2d(local[i], in, cnt, stream_);
          in += cnt;
        }
  }
  std::uint64_t bytes_sent = 0, bytes_received = 0;

 private:
  bool single() const { return nranks_ == 1; }
  static std::size_t total(const std::vector<std::size_t>& v) {
    std::size_t s = 0;
    for (auto x : v) s += x;
    return s;
  }
  std::int64_t rows(std::size_t item, int r) const { return shard_rows(items_[item].m, nranks_, r).rows(); }
  std::int64_t begin(std::size_t item, int r) const { return shard_rows(items_[item].m, nranks_, r).begin; }
  void move(cuda::DeviceBuffer<float>& send, const std::vector<std::size_t>& send_counts,
            cuda::DeviceBuffer<float>& recv, const std::vector<std::size_t>& recv_counts) {
    const auto me = static_cast<std::size_t>(rank_);
    bytes_sent += (total(send_counts) - send_counts[me]) * sizeof(float);
    bytes_received += (total(recv_counts) - recv_counts[me]) * sizeof(float);
    if (comm_ && nranks_ > 1)
      pending_ = comm_->all_to_all_v_async(send.data(), send_counts, recv.data(), recv_counts, DType::F32);
    else
      copy_d2d(recv.data(), send.data(), static_cast<std::int64_t>(total(send_counts)), stream_);
  }

  DeviceCommunicator* comm_;
  int rank_, nranks_;
  std::vector<ExchangeItem> items_;
  cudaStream_t stream_;
  std::vector<std::size_t> to_owner_, from_ranks_;  // elements per peer, gather direction
  cuda::DeviceBuffer<float> a_, b_;                 // this rank's rows (packed by owner); the owner's rows
  std::vector<const float*> source_;                // one rank: what start_gather / start_return were given
  Request pending_;                                 // declared last: destroyed (waited) before the buffers
};

// The bf16 copy of parameter i to write, or null (no copies, or an undefined/empty entry).
cuda::bf16* copy_ptr(const std::vector<Tensor>& copies, std::size_t i) {
  return copies.empty() || !copies[i].defined() || copies[i].numel() == 0 ? nullptr
                                                                         : static_cast<cuda::bf16*>(copies[i].raw());
}

// The most matrix elements one owner orthogonalizes in one batched Newton-Schulz (256 MiB of fp32; the bf16
// iterates and workspaces add about as much again).
constexpr std::int64_t kNsGroupElements = std::int64_t(1) << 26;

cuda::NewtonSchulzGpu::Precision to_cuda(NsPrecision p) {
  return p == NsPrecision::BF16 ? cuda::NewtonSchulzGpu::Precision::BF16 : cuda::NewtonSchulzGpu::Precision::F32;
}


}  // namespace

struct DeviceOptimizer::Impl {
  Impl(NsPrecision p, int ns_steps) : ns(blas, to_cuda(p), ns_steps) {}
  cuda::Blas blas;
  cuda::NewtonSchulzGpu ns;
  std::unique_ptr<cuda::SvdGpu> svd;
  cuda::CachingAllocator alloc;
  std::vector<std::map<std::string, cuda::DeviceBuffer<float>>> state;  // per parameter, by state name
  std::vector<cuda::DeviceBuffer<float>> update;                        // per parameter: this rank's rows
  std::vector<cuda::DeviceBuffer<float>> group;  // per exchange batch: this rank's owned matrices, one after another
  std::map<std::size_t, cuda::DeviceBuffer<float>> full;  // Conda's left basis, per owned task: G and the moment
  cuda::DeviceBuffer<float> proj_g, proj_m, normed, refresh, svd_other, svd_s;
  cuda::DeviceBuffer<double> row_ss;
};

DeviceOptimizer::DeviceOptimizer(OptimConfig config, std::vector<ParamSpec> params, DeviceCommunicator* comm,
                                 cudaStream_t stream, NsPrecision ns_precision)
    : config_(std::move(config)), specs_(std::move(params)), states_(specs_.size()), comm_(comm), stream_(stream),
      ns_precision_(ns_precision) {
  if (config_.ortho_scheme == OrthoScheme::Gram)
    throw UsageError("optim.ortho_scheme = gram is not available on the GPU (runtime.backend = cuda orthogonalizes "
                     "each matrix on its owner rank): use auto or owner");
  if (comm_) {
    rank_ = comm_->rank();
    nranks_ = comm_->size();
  }
  for (const auto& s : specs_) {
    OS_CHECK(!s.shape.empty(), "optimizer: parameter {} is 0-d; give it shape (1,)", s.name);
    local_shapes_.push_back(shard_shape(s.shape, nranks_, rank_));
  }
  std::vector<OrthoTask> tasks = matrix_tasks(specs_, config_, task_index_);
  for (auto& t : tasks) t.allow_gram = false;  // the GPU orthogonalizes every matrix on its owner
  plan_ = make_ortho_plan(std::move(tasks), nranks_, OrthoScheme::Owner, config_.ns_steps);
  // Each owner's same-shape matrices travel in one batch and go through one batched Newton-Schulz.
  group_batches_by_shape(plan_, kNsGroupElements);
  impl_ = std::make_unique<Impl>(ns_precision_, config_.ns_steps);
  impl_->group.resize(static_cast<std::size_t>(plan_.batches));
  impl_->state.resize(specs_.size());
  impl_->update.resize(specs_.size());
}

DeviceOptimizer::DeviceOptimizer(DeviceOptimizer&&) noexcept = default;
DeviceOptimizer& DeviceOptimizer::operator=(DeviceOptimizer&&) noexcept = default;
DeviceOptimizer::~DeviceOptimizer() = default;

DeviceOptimizer DeviceOptimizer::with_routing(OptimConfig config,
                                              const std::vector<std::pair<std::string, Shape>>& params,
                                              DeviceCommunicator* comm, cudaStream_t stream, NsPrecision ns_precision) {
  std::vector<ParamSpec> specs;
  for (const auto& [name, shape] : params) specs.push_back({name, shape, route_parameter(name, shape, config)});
  return DeviceOptimizer(std::move(config), std::move(specs), comm, stream, ns_precision);
}

RowRange DeviceOptimizer::local_rows(std::size_t i) const { return shard_rows(specs_.at(i).shape[0], nranks_, rank_); }

StateHome DeviceOptimizer::state_home(std::size_t param, const std::string& name, int* owner) const {
  const int ti = task_index_.at(param);
  return state_home_of(specs_[param].rule, ti < 0 ? nullptr : &plan_.tasks[static_cast<std::size_t>(ti)], config_,
                       name, owner);
}

// The device buffer of a state tensor, created zero-filled (and registered in the ParamState as a device view).
float* DeviceOptimizer::state_buffer(std::size_t param, const std::string& name, const Shape& shape) {
  auto& m = impl_->state[param];
  auto it = m.find(name);
  if (it != m.end()) {
    OS_CHECK(static_cast<std::int64_t>(it->second.size()) == shape_numel(shape),
             "optimizer: state {} of {} has {} elements, {} expected", name, specs_[param].name, it->second.size(),
             shape_numel(shape));
    return it->second.data();
  }
  cuda::DeviceBuffer<float> b(static_cast<std::size_t>(shape_numel(shape)));
  b.zero(stream_);
  float* p = b.data();
  m.emplace(name, std::move(b));
  states_[param].set(name, Tensor::borrow(p, shape, DType::F32, Device::CUDA));
  return p;
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
  float* d = state_buffer(param, name, host.shape());
  if (host.numel())
    OS_CUDA_CHECK(cudaMemcpyAsync(d, host.raw(), host.nbytes(), cudaMemcpyHostToDevice, stream_));
  OS_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void DeviceOptimizer::step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, double lr_scale,
                           const std::vector<Tensor>& copies) {
  OS_CHECK(params.size() == specs_.size() && grads.size() == specs_.size(),
           "optimizer step: {} parameters and {} gradients given for {} registered parameters", params.size(),
           grads.size(), specs_.size());
  OS_CHECK(copies.empty() || copies.size() == specs_.size(), "optimizer step: {} bf16 copies for {} parameters",
           copies.size(), specs_.size());
  for (std::size_t i = 0; i < specs_.size(); ++i) {
    const auto& s = specs_[i];
    const Shape& ls = local_shapes_[i];
    for (const Tensor* t : {&params[i], &grads[i]})
      OS_CHECK(t->shape() == ls && t->dtype() == DType::F32 && t->device() == Device::CUDA && t->is_contiguous(),
               "optimizer step: parameter {} {} expects this rank's shard as a contiguous f32 cuda tensor {}, got {}",
               s.name, shape_str(s.shape), shape_str(ls), t->describe());
    if (!copies.empty() && copies[i].defined() && copies[i].numel() > 0)
      OS_CHECK(copies[i].numel() == shape_numel(ls) && copies[i].dtype() == DType::BF16 &&
                   copies[i].device() == Device::CUDA && copies[i].is_contiguous(),
               "optimizer step: the bf16 copy of {} must be a contiguous bf16 cuda tensor of {} elements, got {}",
               s.name, shape_numel(ls), copies[i].describe());
  }
  if (comm_)
    OS_CHECK(comm_->compute_stream() == stream_,
             "optimizer step: the communicator's compute stream is not the optimizer's stream");
  const OptimConfig& c = config_;
  stats_ = {};
  const double lr = c.lr * lr_scale;

  // (A) Local: elementwise rules, Muon/NorMuon momentum, Conda's first moment.
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < specs_.size(); ++i) {
    const ParamSpec& s = specs_[i];
    const Shape& ls = local_shapes_[i];
    const std::int64_t n = shape_numel(ls);
    float* w = params[i].data<float>();
    const float* g = grads[i].data<float>();
    ParamState& st = states_[i];
    try {
      switch (s.rule) {
        case RuleKind::AdamW: {
          AdamHparams hp = c.adam;
          if (c.name == "adamw") hp = {c.lr, c.beta1, c.beta2_adam, c.eps, c.weight_decay};
          float* m = state_buffer(i, "exp_avg", ls);
          float* v = state_buffer(i, "exp_avg_sq", ls);
          const std::int64_t t = advance_step(st);
          const auto sc = cuda::adamw_scalars(hp.lr * lr_scale, hp.beta1, hp.beta2, hp.eps, hp.weight_decay, t);
          cuda::adamw_update<float>(w, copy_ptr(copies, i), g, m, v, n, sc, stream_);
          break;
        }
        case RuleKind::CondaPlain: {
          float* mom = state_buffer(i, "exp_avg", ls);
          float* v = state_buffer(i, "exp_avg_sq", ls);
          const std::int64_t t = advance_step(st);
          cuda::conda_plain_update(w, copy_ptr(copies, i), g, mom, v, n, c.beta1, c.beta2_adam, c.eps,
                                   conda_step_size(c, t, lr), lr, c.weight_decay, stream_);
          break;
        }
        case RuleKind::Muon:
        case RuleKind::NorMuon: {
          advance_step(st);
          grow(impl_->update[i], n);
          cuda::momentum_update<float>(state_buffer(i, "momentum", ls), impl_->update[i].data(), g, n, c.momentum,
                                       c.nesterov, stream_);
          break;
        }
        case RuleKind::Conda:
          advance_step(st);
          cuda::conda_momentum(state_buffer(i, "exp_avg", ls), g, n, c.beta1, stream_);
          break;
      }
    } catch (...) {
      rethrow_with_context("optimizer step, parameter " + s.name);
    }
  }
  stats_.local_ms = ms_since(t0);

  // (B) + (C)
  const RuleKind matrix = c.matrix_rule();
  if (plan_.tasks.empty()) return;
  if (matrix == RuleKind::Conda) {
    t0 = Clock::now();
    conda_matrices(params, grads, copies, lr);
    stats_.ortho_ms = ms_since(t0);
    return;
  }
  t0 = Clock::now();
  orthogonalize();
  stats_.ortho_ms = ms_since(t0);
  t0 = Clock::now();
  if (matrix == RuleKind::NorMuon) {
    normuon_finish(params, copies, lr);
  } else {
    for (const auto& t : plan_.tasks)
      cuda::decay_then_apply<float>(params[t.param].data<float>(), copy_ptr(copies, t.param), impl_->update[t.param].data(),
                                    shape_numel(local_shapes_[t.param]), lr, c.weight_decay,
                                    matrix_scale_factor(c.scale, t.m, t.n), stream_);
  }
  stats_.post_ms = ms_since(t0);
}

void DeviceOptimizer::orthogonalize() {
  std::vector<std::vector<const OrthoTask*>> batches(static_cast<std::size_t>(plan_.batches));
  for (const auto& t : plan_.tasks) batches[static_cast<std::size_t>(t.batch)].push_back(&t);
  std::vector<std::unique_ptr<DeviceRowExchange>> ex;
  auto start = [&](std::size_t k) {
    std::vector<ExchangeItem> items;
    std::vector<const float*> local;
    for (const OrthoTask* t : batches[k]) {
      items.push_back({t->m, t->n, t->owner});
      local.push_back(impl_->update[t->param].data());
    }
    ex.push_back(std::make_unique<DeviceRowExchange>(comm_, rank_, nranks_, std::move(items), impl_->alloc, stream_));
    ex.back()->start_gather(local);
  };
  if (!batches.empty()) start(0);
  for (std::size_t k = 0; k < batches.size(); ++k) {
    if (k + 1 < batches.size()) start(k + 1);
    // This rank's matrices of the batch (one shape, see group_batches_by_shape) land one after another.
    std::int64_t count = 0, m = 0, n = 0;
    for (const OrthoTask* t : batches[k])
      if (t->owner == rank_) {
        OS_CHECK(count == 0 || (t->m == m && t->n == n), "optimizer: exchange batch {} mixes shapes on rank {}", k,
                 rank_);
        m = t->m;
        n = t->n;
        ++count;
      }
    auto& group = impl_->group[k];
    grow(group, count * m * n);
    std::vector<float*> full;
    std::int64_t slot = 0;
    for (const OrthoTask* t : batches[k]) full.push_back(t->owner == rank_ ? group.data() + m * n * slot++ : nullptr);
    ex[k]->finish_gather(full);
    if (count > 0 && m > 0 && n > 0) {
      impl_->ns.run_batched(group.data(), count, m, n, stream_);
      stats_.ortho_flops += static_cast<double>(count) * ns_flops(m, n, config_.ns_steps);
    }
    std::vector<const float*> back(full.size());  // (not the iterator-range constructor: GCC 12 misreports it)
    std::copy(full.begin(), full.end(), back.begin());
    ex[k]->start_return(back);
  }
  for (std::size_t k = 0; k < batches.size(); ++k) {
    std::vector<float*> local;
    for (const OrthoTask* t : batches[k]) local.push_back(impl_->update[t->param].data());
    ex[k]->finish_return(local);
    stats_.bytes_sent += ex[k]->bytes_sent;
    stats_.bytes_received += ex[k]->bytes_received;
  }
}

void DeviceOptimizer::normuon_finish(const std::vector<Tensor>& params, const std::vector<Tensor>& copies, double lr) {
  const OptimConfig& c = config_;
  // Per-row sums of squares before and after the normalization, computed on the device, then (as on the CPU)
  // gathered from every rank and added in global row order, so the norms do not depend on the rank count.
  std::int64_t total_rows = 0;
  for (const auto& t : plan_.tasks) total_rows += local_shapes_[t.param][0];
  grow(impl_->row_ss, 2 * total_rows);
  std::vector<std::int64_t> matrix_rows;
  std::int64_t off = 0;
  for (const auto& t : plan_.tasks) {
    const std::int64_t rows = local_shapes_[t.param][0];
    float* v = state_buffer(t.param, "row_second_moment", {rows, 1});
    double* ss = impl_->row_ss.data() + off;
    cuda::normuon_normalize_rows<float>(impl_->update[t.param].data(), rows, t.n, v, c.beta2, ss, ss + rows, stream_);
    off += 2 * rows;
    matrix_rows.push_back(t.m);
  }
  std::vector<double> mine(static_cast<std::size_t>(2 * total_rows));
  if (!mine.empty())
    OS_CUDA_CHECK(cudaMemcpyAsync(mine.data(), impl_->row_ss.data(), mine.size() * sizeof(double),
                                  cudaMemcpyDeviceToHost, stream_));
  OS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  const auto sums = global_row_sums(mine, matrix_rows, 2, nranks_ > 1 ? comm_ : nullptr);
  const std::vector<double>& before = sums[0];
  const std::vector<double>& after = sums[1];
  for (std::size_t j = 0; j < plan_.tasks.size(); ++j) {
    const OrthoTask& t = plan_.tasks[j];
    float* o = impl_->update[t.param].data();
    const std::int64_t size = shape_numel(local_shapes_[t.param]);
    const double hat_norm = std::sqrt(after[j]);
    double factor;
    if (c.scale == MatrixScale::Paper) {
      factor = 0.2 * std::sqrt(static_cast<double>(t.m) * static_cast<double>(t.n)) / (hat_norm + 1e-10);
    } else {
      // Reference order: rescale to ‖O‖_F first (rounded to float), then the shape factor.
      cuda::scale_inplace<float>(o, size, std::sqrt(before[j]) / (hat_norm + 1e-10), stream_);
      factor = matrix_scale_factor(c.scale, t.m, t.n);
    }
    cuda::decay_then_apply<float>(params[t.param].data<float>(), copy_ptr(copies, t.param), o, size, lr, c.weight_decay, factor, stream_);
  }
}

void DeviceOptimizer::conda_matrices(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                                     const std::vector<Tensor>& copies, double lr) {
  const OptimConfig& c = config_;
  Impl& im = *impl_;
  std::vector<const OrthoTask*> refresh, left;
  for (const auto& t : plan_.tasks) {
    const ParamState& st = states_[t.param];
    if ((st.get_int("step") - 1) % c.update_proj_gap == 0 || st.get_int("conda_basis_step") == 0)
      refresh.push_back(&t);
  }

  // Basis refresh: the owner gathers the whole first moment and takes its SVD (cuSOLVER, fp32); a right basis
  // (Vᵀ, k x n) is broadcast to every rank, a left basis (U, m x k) stays with the owner.
  for (const OrthoTask* tp : refresh) {
    const OrthoTask& t = *tp;
    ParamState& st = states_[t.param];
    const bool right = conda_right_side(c.proj_type, t.m, t.n);
    const std::int64_t k = std::min(t.m, t.n);
    const Shape bshape = right ? Shape{k, t.n} : Shape{t.m, k};
    if (t.owner == rank_) grow(im.refresh, t.m * t.n);
    DeviceRowExchange ex(comm_, rank_, nranks_, {{t.m, t.n, t.owner}}, im.alloc, stream_);
    ex.start_gather({state_buffer(t.param, "exp_avg", local_shapes_[t.param])});
    ex.finish_gather({t.owner == rank_ ? im.refresh.data() : nullptr});
    stats_.bytes_sent += ex.bytes_sent;
    stats_.bytes_received += ex.bytes_received;
    float* basis = (right || t.owner == rank_) ? state_buffer(t.param, "conda_basis", bshape) : nullptr;
    std::string failure;
    if (t.owner == rank_ && k > 0) {
      try {
        if (!im.svd) im.svd = std::make_unique<cuda::SvdGpu>();
        grow(im.svd_other, right ? t.m * k : k * t.n);
        grow(im.svd_s, k);
        // thin() writes U (m x k) and Vᵀ (k x n); the basis buffer takes the one Conda keeps.
        im.svd->thin(im.refresh.data(), t.m, t.n, right ? im.svd_other.data() : basis, im.svd_s.data(),
                     right ? basis : im.svd_other.data(), stream_);
        stats_.ortho_flops += svd_flops(t.m, t.n);
      } catch (const std::exception& e) {
        failure = e.what();
      }
    }
    // Every rank learns whether the owner's SVD failed before anyone leaves (the others would otherwise wait
    // in the broadcast or the next exchange).
    if (comm_ && nranks_ > 1 && comm_->all_reduce_scalar(failure.empty() ? 0.0 : 1.0, ReduceOp::Max) > 0)
      fail("optimizer step, parameter {}: Conda's basis SVD failed on rank {}{}", specs_[t.param].name, t.owner,
           failure.empty() ? "" : ": " + failure);
    if (!failure.empty())
      fail("optimizer step, parameter {}: Conda's basis SVD failed: {}", specs_[t.param].name, failure);
    if (right && nranks_ > 1) comm_->broadcast(basis, static_cast<std::size_t>(k * t.n), DType::F32, t.owner);
    st.set_int("conda_basis_step", st.get_int("step"));
    st.set_int("conda_basis_side", right ? 0 : 1);
  }

  // Right basis: row-local projections (rows x n)(n x k), normalization, back (rows x k)(k x n).
  for (const auto& t : plan_.tasks) {
    const std::int64_t rows = local_shapes_[t.param][0], k = std::min(t.m, t.n);
    grow(im.update[t.param], rows * t.n);
    if (!conda_right_side(c.proj_type, t.m, t.n)) {
      left.push_back(&t);
      continue;
    }
    float* v = state_buffer(t.param, "exp_avg_sq", {rows, k});
    if (rows == 0) continue;
    const float* p = state_buffer(t.param, "conda_basis", {k, t.n});
    grow(im.proj_g, rows * k);
    grow(im.proj_m, rows * k);
    grow(im.normed, rows * k);
    cuda::gemm<float>(im.blas, false, true, rows, k, t.n, 1.f, grads[t.param].data<float>(), t.n, p, t.n, 0.f,
                      im.proj_g.data(), k, stream_);
    cuda::gemm<float>(im.blas, false, true, rows, k, t.n, 1.f, state_buffer(t.param, "exp_avg", local_shapes_[t.param]),
                      t.n, p, t.n, 0.f, im.proj_m.data(), k, stream_);
    cuda::conda_normalize(v, im.proj_g.data(), im.proj_m.data(), im.normed.data(), rows * k, c.beta2_adam, c.eps,
                          stream_);
    cuda::gemm<float>(im.blas, false, false, rows, t.n, k, 1.f, im.normed.data(), k, p, t.n, 0.f,
                      im.update[t.param].data(), t.n, stream_);
    stats_.ortho_flops += 6.0 * static_cast<double>(rows * t.n * k);
  }

  // Left basis: the owner gathers G and the first moment, projects Uᵀ X (k x n), normalizes, maps back U N.
  if (!left.empty()) {
    std::vector<ExchangeItem> gather_items, return_items;
    std::vector<const float*> local;
    std::vector<float*> full;
    for (const OrthoTask* t : left) {
      for (int part = 0; part < 2; ++part) gather_items.push_back({t->m, t->n, t->owner});
      return_items.push_back({t->m, t->n, t->owner});
      local.push_back(grads[t->param].data<float>());
      local.push_back(state_buffer(t->param, "exp_avg", local_shapes_[t->param]));
      float* f = nullptr;
      if (t->owner == rank_) {
        auto& b = im.full[t->param];
        grow(b, 2 * t->m * t->n);
        f = b.data();
      }
      full.push_back(f);
      full.push_back(f ? f + t->m * t->n : nullptr);
    }
    DeviceRowExchange in(comm_, rank_, nranks_, gather_items, im.alloc, stream_);
    DeviceRowExchange out(comm_, rank_, nranks_, return_items, im.alloc, stream_);
    in.start_gather(local);
    in.finish_gather(full);
    std::vector<const float*> results;
    for (std::size_t j = 0; j < left.size(); ++j) {
      const OrthoTask& t = *left[j];
      if (t.owner != rank_) {
        results.push_back(nullptr);
        continue;
      }
      const std::int64_t k = std::min(t.m, t.n);
      const float* p = state_buffer(t.param, "conda_basis", {t.m, k});
      float* g_full = full[2 * j];
      float* m_full = full[2 * j + 1];
      grow(im.proj_g, k * t.n);
      grow(im.proj_m, k * t.n);
      grow(im.normed, k * t.n);
      cuda::gemm<float>(im.blas, true, false, k, t.n, t.m, 1.f, p, k, g_full, t.n, 0.f, im.proj_g.data(), t.n, stream_);
      cuda::gemm<float>(im.blas, true, false, k, t.n, t.m, 1.f, p, k, m_full, t.n, 0.f, im.proj_m.data(), t.n, stream_);
      float* v = state_buffer(t.param, "exp_avg_sq", {k, t.n});
      cuda::conda_normalize(v, im.proj_g.data(), im.proj_m.data(), im.normed.data(), k * t.n, c.beta2_adam, c.eps,
                            stream_);
      cuda::gemm<float>(im.blas, false, false, t.m, t.n, k, 1.f, p, k, im.normed.data(), t.n, 0.f, g_full, t.n,
                        stream_);  // the update, in G's buffer
      results.push_back(g_full);
      stats_.ortho_flops += 6.0 * static_cast<double>(t.m * t.n * k);
    }
    std::vector<float*> dest;
    for (const OrthoTask* t : left) dest.push_back(im.update[t->param].data());
    out.start_return(results);
    out.finish_return(dest);
    stats_.bytes_sent += in.bytes_sent + out.bytes_sent;
    stats_.bytes_received += in.bytes_received + out.bytes_received;
  }

  for (const auto& t : plan_.tasks) {
    const std::int64_t step_t = states_[t.param].get_int("step");
    const double step = conda_step_size(c, step_t, lr) * c.conda_scale;
    cuda::conda_apply(params[t.param].data<float>(), copy_ptr(copies, t.param), im.update[t.param].data(),
                      shape_numel(local_shapes_[t.param]), step, lr, c.weight_decay, stream_);
  }
}

}  // namespace orthoshard
