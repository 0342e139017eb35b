// FSDP engine on the GPU. Layouts per unit (N ranks in the shard group), as runtime/fsdp/fsdp_engine.cpp:
//   full      the unit's parameters concatenated in order, each (rows, cols) row-major (param_dtype);
//   shard     this rank's rows of every parameter, concatenated, padded to S = max over ranks;
//   gathered  N blocks of S (block r = rank r's shard), what all_gather produces and reduce_scatter takes.
// One copy_spans launch moves a unit between the gathered and the full layout (one span per rank and parameter,
// the span table uploaded once). Only real rows are ever copied, so the padding of the reduce-scatter's send
// buffer stays zero.
#include "runtime/fsdp/cuda/device_fsdp_engine.hpp"

#include "runtime/core/error.hpp"
#include "runtime/kernels/cuda/allocator.hpp"
#include "runtime/kernels/cuda/copy_kernels.hpp"
#include "runtime/kernels/cuda/device_buffer.hpp"
#include "runtime/kernels/cuda/optim_kernels.hpp"

#include <chrono>
#include <cmath>

namespace orthoshard {

using Bytes = cuda::DeviceBuffer<std::uint8_t>;

struct DeviceFsdpEngine::Unit {
  FsdpUnitSpec spec;
  std::vector<std::int64_t> cols, full_offset;
  std::vector<std::vector<std::int64_t>> block_offset;  // [rank][param]
  std::vector<std::vector<RowRange>> rows;              // [rank][param]
  std::int64_t full_numel = 0, shard_numel = 0;         // shard_numel = S (padded)
  cuda::DeviceBuffer<float> master, grad;               // f32 (S)
  Bytes copy;                                           // param_dtype copy of master (bf16 only), S
  Bytes gathered;                                       // param_dtype N·S, between start_gather and gather
  Bytes full;                                           // param_dtype full_numel, while gathered
  Bytes full_grad;                                      // param_dtype full_numel
  cuda::DeviceBuffer<float> grad_sum;                   // fp32 full_numel: earlier micro-batches (bf16 only)
  bool summed = false;                                  // grad_sum holds this step's earlier micro-batches
  Bytes rs_send, rs_recv;                               // reduce_dtype N·S; S (bf16 reductions only)
  cuda::DeviceBuffer<cuda::CopySpan> to_full, to_blocks;  // gathered -> full; full -> gathered layout
  int spans = 0;
  std::int64_t max_span = 0;
  Request gather_req, reduce_req;  // after the buffers: destroyed (waited) first
  bool is_gathered = false, gathering = false, reducing = false;
};

struct DeviceFsdpEngine::Memory {
  cuda::CachingAllocator alloc;
  cuda::DeviceBuffer<double> norm{1 + cuda::kSumSquaresScratch};
};

namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

void spans(const cuda::DeviceBuffer<cuda::CopySpan>& sp, int n, std::int64_t max_count, const void* src, DType sdt,
           void* dst, DType ddt, cudaStream_t s) {
  using cuda::bf16;
  const cuda::CopySpan* p = sp.data();
  if (sdt == DType::F32 && ddt == DType::F32)
    cuda::copy_spans(p, n, max_count, static_cast<const float*>(src), static_cast<float*>(dst), s);
  else if (sdt == DType::F32 && ddt == DType::BF16)
    cuda::copy_spans(p, n, max_count, static_cast<const float*>(src), static_cast<bf16*>(dst), s);
  else if (sdt == DType::BF16 && ddt == DType::F32)
    cuda::copy_spans(p, n, max_count, static_cast<const bf16*>(src), static_cast<float*>(dst), s);
  else
    cuda::copy_spans(p, n, max_count, static_cast<const bf16*>(src), static_cast<bf16*>(dst), s);
}

void convert(const void* src, DType sdt, void* dst, DType ddt, std::int64_t n, cudaStream_t s) {
  using cuda::bf16;
  if (sdt == DType::F32 && ddt == DType::BF16) cuda::convert(static_cast<const float*>(src), static_cast<bf16*>(dst), n, s);
  else if (sdt == DType::BF16 && ddt == DType::F32) cuda::convert(static_cast<const bf16*>(src), static_cast<float*>(dst), n, s);
  else if (n > 0)
    OS_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(n) * dtype_size(sdt), cudaMemcpyDeviceToDevice, s));
}

std::uint8_t* at(Bytes& b, std::int64_t elem, DType dt) { return b.data() + elem * static_cast<std::int64_t>(dtype_size(dt)); }
Shape local_shape(const Shape& global, std::int64_t rows) {
  Shape s = global;
  s[0] = rows;
  return s;
}
}  // namespace

DeviceFsdpEngine::DeviceFsdpEngine(std::vector<FsdpUnitSpec> units, DeviceCommunicator& shard,
                                   DeviceCommunicator* replica, DeviceFsdpOptions opt, cudaStream_t stream)
    : shard_(shard), replica_(replica), opt_(opt), stream_(stream), mem_(std::make_unique<Memory>()) {
  for (DType d : {opt_.param_dtype, opt_.reduce_dtype})
    OS_CHECK(d == DType::F32 || d == DType::BF16, "fsdp: param/reduce dtype must be f32 or bf16, got {}",
             dtype_name(d));
  OS_CHECK(shard_.compute_stream() == stream_ && (!replica_ || replica_->compute_stream() == stream_),
           "fsdp: the communicators' compute stream must be the engine's stream");
  const int n = shard_.size();
  const std::size_t pe = dtype_size(opt_.param_dtype);
  for (auto& spec : units) {
    auto u = std::make_unique<Unit>();
    u->spec = std::move(spec);
    const std::size_t np = u->spec.params.size();
    u->block_offset.assign(static_cast<std::size_t>(n), std::vector<std::int64_t>(np, 0));
    u->rows.assign(static_cast<std::size_t>(n), std::vector<RowRange>(np));
    for (std::size_t p = 0; p < np; ++p) {
      const FsdpParam& fp = u->spec.params[p];
      OS_CHECK(!fp.shape.empty(), "fsdp: parameter {} is 0-d", fp.name);
      OS_CHECK(index_.count(fp.name) == 0, "fsdp: parameter {} appears twice", fp.name);
      index_[fp.name] = {units_.size(), p};
      u->cols.push_back(fp.shape[0] ? shape_numel(fp.shape) / fp.shape[0] : 0);
      u->full_offset.push_back(u->full_numel);
      u->full_numel += shape_numel(fp.shape);
    }
    std::vector<cuda::CopySpan> to_full, to_blocks;
    for (int r = 0; r < n; ++r) {
      std::int64_t off = 0;
      for (std::size_t p = 0; p < np; ++p) {
        u->rows[r][p] = shard_rows(u->spec.params[p].shape[0], n, r);
        u->block_offset[r][p] = off;
        off += u->rows[r][p].rows() * u->cols[p];
      }
      u->shard_numel = std::max(u->shard_numel, off);
    }
    for (int r = 0; r < n; ++r)
      for (std::size_t p = 0; p < np; ++p) {
        const std::int64_t count = u->rows[r][p].rows() * u->cols[p];
        if (count == 0) continue;
        const std::int64_t g = r * u->shard_numel + u->block_offset[r][p];
        const std::int64_t f = u->full_offset[p] + u->rows[r][p].begin * u->cols[p];
        to_full.push_back({g, f, count});
        to_blocks.push_back({f, g, count});
        u->max_span = std::max(u->max_span, count);
      }
    u->spans = static_cast<int>(to_full.size());
    u->to_full = cuda::DeviceBuffer<cuda::CopySpan>(to_full.size());
    u->to_blocks = cuda::DeviceBuffer<cuda::CopySpan>(to_blocks.size());
    u->to_full.copy_from_host(to_full, stream_);
    u->to_blocks.copy_from_host(to_blocks, stream_);
    const auto S = static_cast<std::size_t>(u->shard_numel);
    u->master = cuda::DeviceBuffer<float>(S);
    u->grad = cuda::DeviceBuffer<float>(S);
    u->master.zero(stream_);
    u->grad.zero(stream_);
    if (opt_.param_dtype != DType::F32) {
      u->copy = Bytes(S * pe);
      u->copy.zero(stream_);
    }
    u->full_grad = Bytes(static_cast<std::size_t>(u->full_numel) * pe);
    u->full_grad.zero(stream_);
    units_.push_back(std::move(u));
  }
  OS_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the span tables came from pageable host vectors
}

DeviceFsdpEngine::~DeviceFsdpEngine() {
  // Every collective completes (Requests wait in their destructors) before any buffer is freed.
  for (auto& u : units_) {
    u->gather_req = Request();
    u->reduce_req = Request();
  }
  (void)cudaStreamSynchronize(stream_);
  for (auto& u : units_) {  // allocator blocks first, while the allocator is alive (also on error paths)
    u->gathered.reset();
    u->full.reset();
  }
}

DeviceFsdpEngine::Unit& DeviceFsdpEngine::unit(std::size_t u) {
  OS_CHECK(u < units_.size(), "fsdp: unit {} of {}", u, units_.size());
  return *units_[u];
}

const FsdpUnitSpec& DeviceFsdpEngine::unit_spec(std::size_t u) const { return units_.at(u)->spec; }

std::size_t DeviceFsdpEngine::unit_of(const std::string& param) const {
  auto it = index_.find(param);
  OS_CHECK(it != index_.end(), "fsdp: no parameter named '{}'", param);
  return it->second.first;
}

// which: 0 master (f32), 1 copy (param_dtype), 2 gradient (f32).
Tensor DeviceFsdpEngine::shard_view(const std::string& param, int which) const {
  auto it = index_.find(param);
  OS_CHECK(it != index_.end(), "fsdp: no parameter named '{}'", param);
  const auto [ui, p] = it->second;
  Unit& u = *units_[ui];
  const int me = shard_.rank();
  const std::int64_t off = u.block_offset[me][p], rows = u.rows[me][p].rows();
  const Shape shape = local_shape(u.spec.params[p].shape, rows);
  if (which == 1) {
    if (opt_.param_dtype == DType::F32) return Tensor();
    return Tensor::borrow(at(u.copy, off, opt_.param_dtype), shape, opt_.param_dtype, Device::CUDA);
  }
  float* base = which == 0 ? u.master.data() : u.grad.data();
  return Tensor::borrow(base + off, shape, DType::F32, Device::CUDA);
}

Tensor DeviceFsdpEngine::shard(const std::string& param) const { return shard_view(param, 0); }
Tensor DeviceFsdpEngine::shard_copy(const std::string& param) const { return shard_view(param, 1); }
Tensor DeviceFsdpEngine::grad_shard(const std::string& param) const { return shard_view(param, 2); }

RowRange DeviceFsdpEngine::rows(const std::string& param) const {
  auto [ui, p] = index_.at(param);
  return units_[ui]->rows[shard_.rank()][p];
}

void DeviceFsdpEngine::shard_from_host(const std::string& param, const Tensor& src) {
  Tensor dst = shard(param);
  OS_CHECK(src.device() == Device::CPU && src.dtype() == DType::F32 && src.is_contiguous() &&
               src.numel() == dst.numel(),
           "fsdp: parameter {} takes a host f32 shard of {} elements, got {}", param, dst.numel(), src.describe());
  if (dst.numel() == 0) return;
  OS_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), dst.nbytes(), cudaMemcpyHostToDevice, stream_));
  Tensor c = shard_copy(param);
  if (c.defined() && c.numel()) convert(dst.raw(), DType::F32, c.raw(), c.dtype(), c.numel(), stream_);
  OS_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void DeviceFsdpEngine::shard_to_host(const std::string& param, Tensor& dst) const {
  Tensor src = shard(param);
  OS_CHECK(dst.device() == Device::CPU && dst.dtype() == DType::F32 && dst.is_contiguous() &&
               dst.numel() == src.numel(),
           "fsdp: parameter {} fills a host f32 shard of {} elements, got {}", param, src.numel(), dst.describe());
  if (src.numel())
    OS_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToHost, stream_));
  OS_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void DeviceFsdpEngine::load_full(const std::string& param, const Tensor& full_host) {
  OS_CHECK(index_.count(param), "fsdp: no parameter named '{}'", param);
  auto [ui, p] = index_.at(param);
  const Unit& u = *units_[ui];
  OS_CHECK(full_host.shape() == u.spec.params[p].shape && full_host.dtype() == DType::F32 &&
               full_host.device() == Device::CPU && full_host.is_contiguous(),
           "fsdp: parameter {} is a host f32{}, got {}", param, shape_str(u.spec.params[p].shape), full_host.describe());
  const RowRange r = u.rows[shard_.rank()][p];
  const std::int64_t cols = u.cols[p];
  shard_from_host(param, Tensor::borrow(full_host.data<float>() + r.begin * cols, local_shape(full_host.shape(), r.rows())));
}

void DeviceFsdpEngine::refresh_copies() {
  if (opt_.param_dtype == DType::F32) return;
  for (auto& u : units_) convert(u->master.data(), DType::F32, u->copy.data(), opt_.param_dtype, u->shard_numel, stream_);
}

// ---------------- parameters ----------------

void DeviceFsdpEngine::prefetch(std::size_t ui) { start_gather(ui); }

void DeviceFsdpEngine::start_gather(std::size_t ui) {
  Unit& u = unit(ui);
  if (u.is_gathered || u.gathering) return;
  const int n = shard_.size();
  const std::size_t pe = dtype_size(opt_.param_dtype);
  const void* src = opt_.param_dtype == DType::F32 ? static_cast<const void*>(u.master.data()) : u.copy.data();
  u.gathered = Bytes(static_cast<std::size_t>(u.shard_numel * n) * pe, mem_->alloc, stream_);
  u.gather_req = shard_.all_gather_async(src, u.gathered.data(), static_cast<std::size_t>(u.shard_numel),
                                         opt_.param_dtype);
  u.gathering = true;
  gathered_bytes_ += u.gathered.bytes() + static_cast<std::uint64_t>(u.full_numel) * pe;
  gather_peak_ = std::max(gather_peak_, gathered_bytes_);
}

void DeviceFsdpEngine::gather(std::size_t ui) {
  Unit& u = unit(ui);
  if (u.is_gathered) return;
  start_gather(ui);
  const auto t0 = Clock::now();
  u.gather_req.wait();  // NCCL: the stream waits for the all-gather; the host does not
  comm_wait_ms_ += ms_since(t0);
  u.gathering = false;
  const std::size_t pe = dtype_size(opt_.param_dtype);
  u.full = Bytes(static_cast<std::size_t>(u.full_numel) * pe, mem_->alloc, stream_);
  spans(u.to_full, u.spans, u.max_span, u.gathered.data(), opt_.param_dtype, u.full.data(), opt_.param_dtype, stream_);
  gathered_bytes_ -= u.gathered.bytes();
  u.gathered.reset();  // back to the pool of the stream, behind the copy
  u.is_gathered = true;
}

void DeviceFsdpEngine::release(std::size_t ui) {
  Unit& u = unit(ui);
  if (u.gathering) gather(ui);
  if (!u.is_gathered) return;
  gathered_bytes_ -= u.full.bytes();
  u.full.reset();
  u.is_gathered = false;
}

bool DeviceFsdpEngine::gathered(std::size_t u) const { return units_.at(u)->is_gathered; }

Tensor DeviceFsdpEngine::full(const std::string& param) const {
  auto [ui, p] = index_.at(param);
  Unit& u = *units_[ui];
  OS_CHECK(u.is_gathered, "fsdp: parameter {} used while unit {} is not gathered", param, u.spec.name);
  return Tensor::borrow(at(u.full, u.full_offset[p], opt_.param_dtype), u.spec.params[p].shape, opt_.param_dtype,
                        Device::CUDA);
}

// ---------------- gradients ----------------

void DeviceFsdpEngine::zero_grads() {
  for (auto& u : units_) {
    OS_CHECK(!u->reducing, "fsdp: zero_grads while unit {} is still reducing", u->spec.name);
    u->full_grad.zero(stream_);
    u->summed = false;  // grad_sum is overwritten (not added to) by the next accumulate_grads
  }
}

void DeviceFsdpEngine::accumulate_grads(std::size_t ui) {
  Unit& u = unit(ui);
  if (opt_.param_dtype == DType::F32 || u.full_numel == 0) return;
  OS_CHECK(!u.reducing, "fsdp: accumulate_grads of unit {} after its reduction started", u.spec.name);
  if (u.grad_sum.empty()) u.grad_sum = cuda::DeviceBuffer<float>(static_cast<std::size_t>(u.full_numel));
  if (!u.summed) u.grad_sum.zero(stream_);
  cuda::accumulate_and_zero(u.grad_sum.data(), reinterpret_cast<cuda::bf16*>(u.full_grad.data()), u.full_numel,
                            stream_);
  u.summed = true;
}

Tensor DeviceFsdpEngine::full_grad(const std::string& param) const {
  auto [ui, p] = index_.at(param);
  Unit& u = *units_[ui];
  return Tensor::borrow(at(u.full_grad, u.full_offset[p], opt_.param_dtype), u.spec.params[p].shape,
                        opt_.param_dtype, Device::CUDA);
}

void DeviceFsdpEngine::reduce_grads(std::size_t ui) {
  Unit& u = unit(ui);
  OS_CHECK(!u.reducing, "fsdp: unit {} reduced twice in one step", u.spec.name);
  const int n = shard_.size();
  const DType rd = opt_.reduce_dtype;
  const std::size_t re = dtype_size(rd);
  if (u.rs_send.empty() && u.shard_numel > 0) {
    u.rs_send = Bytes(static_cast<std::size_t>(u.shard_numel * n) * re);
    u.rs_send.zero(stream_);  // the padding stays zero: only real rows are ever packed
    if (rd != DType::F32) u.rs_recv = Bytes(static_cast<std::size_t>(u.shard_numel) * re);
  }
  if (u.summed) {  // earlier micro-batches in fp32: add this one and pack the fp32 sum
    accumulate_grads(ui);
    spans(u.to_blocks, u.spans, u.max_span, u.grad_sum.data(), DType::F32, u.rs_send.data(), rd, stream_);
  } else {
    spans(u.to_blocks, u.spans, u.max_span, u.full_grad.data(), opt_.param_dtype, u.rs_send.data(), rd, stream_);
  }
  void* dst = rd == DType::F32 ? static_cast<void*>(u.grad.data()) : u.rs_recv.data();
  u.reduce_req = shard_.reduce_scatter_async(u.rs_send.data(), dst, static_cast<std::size_t>(u.shard_numel), rd,
                                             ReduceOp::Mean);
  u.reducing = true;
}

void DeviceFsdpEngine::finish_reductions() {
  const auto t0 = Clock::now();
  for (auto& u : units_) {
    if (!u->reducing) continue;
    u->reduce_req.wait();
    u->reducing = false;
    if (opt_.reduce_dtype != DType::F32)
      convert(u->rs_recv.data(), opt_.reduce_dtype, u->grad.data(), DType::F32, u->shard_numel, stream_);
    if (replica_ && replica_->size() > 1)
      replica_->all_reduce(u->grad.data(), u->grad.data(), static_cast<std::size_t>(u->shard_numel), DType::F32,
                           ReduceOp::Mean);
  }
  comm_wait_ms_ += ms_since(t0);
}

double DeviceFsdpEngine::clip_grad_norm(double max_norm) {
  double* out = mem_->norm.data();
  OS_CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(double), stream_));
  for (auto& u : units_) cuda::sum_squares<float>(out, u->grad.data(), u->shard_numel, out + 1, true, stream_);
  double ss = 0;
  OS_CUDA_CHECK(cudaMemcpyAsync(&ss, out, sizeof(double), cudaMemcpyDeviceToHost, stream_));
  OS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  const double norm = std::sqrt(shard_.all_reduce_scalar(ss, ReduceOp::Sum));
  if (max_norm > 0 && norm > max_norm && std::isfinite(norm)) {
    const double scale = static_cast<float>(max_norm / (norm + 1e-6));
    for (auto& u : units_) cuda::scale_inplace<float>(u->grad.data(), u->shard_numel, scale, stream_);
  }
  return norm;
}

FsdpMemory DeviceFsdpEngine::memory() const {
  FsdpMemory m;
  for (const auto& u : units_) {
    m.param_shards += u->master.bytes() + u->copy.bytes();
    m.grad_shards += u->grad.bytes();
    m.grad_accumulation += u->full_grad.bytes() + u->grad_sum.bytes();
    m.comm_buffers += u->rs_send.bytes() + u->rs_recv.bytes();
  }
  m.gather_peak = gather_peak_;
  return m;
}

}  // namespace orthoshard
