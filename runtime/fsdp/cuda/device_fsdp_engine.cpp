// FSDP engine on the GPU: device buffers, conversion kernels and device collectives behind the layout and state
// machine of runtime/fsdp/sharded_engine.hpp. One copy_spans launch moves a unit between the gathered and the full
// layout (one span per rank and parameter, the span tables uploaded once). Only real rows are ever copied, so the
// padding of the reduce-scatter's send buffer stays zero.
#include "runtime/fsdp/cuda/device_fsdp_engine.hpp"

#include "runtime/core/error.hpp"
#include "runtime/cuda/allocator.hpp"
#include "runtime/cuda/copy_kernels.hpp"
#include "runtime/cuda/device_buffer.hpp"
#include "runtime/cuda/vector_kernels.hpp"

#include <chrono>
#include <cmath>

namespace orthoshard {

using Bytes = cuda::DeviceBuffer<std::uint8_t>;

struct DeviceFsdpEngine::Unit {
  cuda::DeviceBuffer<float> master, grad;               // f32 (S)
  Bytes copy;                                           // param_dtype copy of master (bf16 only), S
  Bytes gathered;                                       // param_dtype N·S, between start_gather and finish_gather
  Bytes full;                                           // param_dtype full_numel, while gathered
  Bytes full_grad;                                      // param_dtype full_numel, while open
  cuda::DeviceBuffer<float> grad_sum;                   // fp32 full_numel: earlier micro-batches kept (bf16 only)
  bool summed = false;                                  // grad_sum holds this step's earlier micro-batches
  Bytes rs_send, rs_recv;                               // reduce_dtype N·S; S (unless straight into the shard)
  cuda::DeviceBuffer<cuda::CopySpan> to_full, to_blocks;  // gathered -> full; full -> gathered layout
  int spans = 0;
  std::int64_t max_span = 0;
  Request gather_req, reduce_req;  // after the buffers: destroyed (waited) first
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

std::uint8_t* at(const Bytes& b, std::int64_t elem, DType dt) {
  return const_cast<std::uint8_t*>(b.data()) + elem * static_cast<std::int64_t>(dtype_size(dt));
}
}  // namespace

DeviceFsdpEngine::DeviceFsdpEngine(std::vector<FsdpUnitSpec> units, DeviceCommunicator& shard,
                                   DeviceCommunicator* replica, DeviceFsdpOptions opt, cudaStream_t stream)
    : ShardedEngine(std::move(units), shard.size(), shard.rank(), opt.param_dtype, opt.reduce_dtype,
                    dtype_size(opt.param_dtype), true),
      shard_(shard),
      replica_(replica),
      opt_(opt),
      stream_(stream),
      mem_(std::make_unique<Memory>()) {
  for (DType d : {opt_.param_dtype, opt_.reduce_dtype})
    OS_CHECK(d == DType::F32 || d == DType::BF16, "fsdp: param/reduce dtype must be f32 or bf16, got {}",
             dtype_name(d));
  OS_CHECK(shard_.compute_stream() == stream_ && (!replica_ || replica_->compute_stream() == stream_),
           "fsdp: the communicators' compute stream must be the engine's stream");
  const std::size_t pe = dtype_size(opt_.param_dtype);
  for (std::size_t i = 0; i < num_units(); ++i) {
    const UnitLayout& l = layout(i);
    auto u = std::make_unique<Unit>();
    std::vector<cuda::CopySpan> to_full, to_blocks;
    for (const UnitLayout::Span& sp : l.spans) {
      to_full.push_back({sp.gathered, sp.full, sp.count});
      to_blocks.push_back({sp.full, sp.gathered, sp.count});
      u->max_span = std::max(u->max_span, sp.count);
    }
    u->spans = static_cast<int>(to_full.size());
    u->to_full = cuda::DeviceBuffer<cuda::CopySpan>(to_full.size());
    u->to_blocks = cuda::DeviceBuffer<cuda::CopySpan>(to_blocks.size());
    u->to_full.copy_from_host(to_full, stream_);
    u->to_blocks.copy_from_host(to_blocks, stream_);
    const auto S = static_cast<std::size_t>(l.shard_numel);
    u->master = cuda::DeviceBuffer<float>(S);
    u->grad = cuda::DeviceBuffer<float>(S);
    u->master.zero(stream_);
    u->grad.zero(stream_);
    if (opt_.param_dtype != DType::F32) {
      u->copy = Bytes(S * pe);
      u->copy.zero(stream_);
    }
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
    u->full_grad.reset();
    u->grad_sum.reset();
    u->rs_send.reset();
    u->rs_recv.reset();
  }
}

// which: 0 master (f32), 1 copy (param_dtype), 2 gradient (f32).
Tensor DeviceFsdpEngine::shard_view(const std::string& param, int which) const {
  const Slot s = slot(param);
  const Unit& u = *units_[s.unit];
  if (which == 1) {
    if (opt_.param_dtype == DType::F32) return Tensor();
    return Tensor::borrow(at(u.copy, s.offset, opt_.param_dtype), s.local_shape, opt_.param_dtype, Device::CUDA);
  }
  const float* base = which == 0 ? u.master.data() : u.grad.data();
  return Tensor::borrow(const_cast<float*>(base) + s.offset, s.local_shape, DType::F32, Device::CUDA);
}

Tensor DeviceFsdpEngine::shard(const std::string& param) const { return shard_view(param, 0); }
Tensor DeviceFsdpEngine::shard_copy(const std::string& param) const { return shard_view(param, 1); }
Tensor DeviceFsdpEngine::grad_shard(const std::string& param) const { return shard_view(param, 2); }

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

void DeviceFsdpEngine::synchronize() { OS_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

// ---------------- parameters ----------------

void DeviceFsdpEngine::start_gather(std::size_t ui) {
  Unit& u = *units_[ui];
  const UnitLayout& l = layout(ui);
  const std::size_t pe = dtype_size(opt_.param_dtype);
  const void* src = opt_.param_dtype == DType::F32 ? static_cast<const void*>(u.master.data()) : u.copy.data();
  u.gathered = Bytes(static_cast<std::size_t>(l.shard_numel * nranks()) * pe, mem_->alloc, stream_);
  u.gather_req = shard_.all_gather_async(src, u.gathered.data(), static_cast<std::size_t>(l.shard_numel),
                                         opt_.param_dtype);
}

void DeviceFsdpEngine::finish_gather(std::size_t ui) {
  Unit& u = *units_[ui];
  const auto t0 = Clock::now();
  u.gather_req.wait();  // NCCL: the stream waits for the all-gather; the host does not
  comm_wait_ms_ += ms_since(t0);
  const std::size_t pe = dtype_size(opt_.param_dtype);
  u.full = Bytes(static_cast<std::size_t>(layout(ui).full_numel) * pe, mem_->alloc, stream_);
  spans(u.to_full, u.spans, u.max_span, u.gathered.data(), opt_.param_dtype, u.full.data(), opt_.param_dtype, stream_);
  u.gathered.reset();  // back to the pool of the stream, behind the copy
}

void DeviceFsdpEngine::drop_full(std::size_t u) { units_[u]->full.reset(); }

Tensor DeviceFsdpEngine::full_view(const std::string& param, bool grad) const {
  const auto [ui, p] = locate(param);
  const UnitLayout& l = layout(ui);
  const Unit& u = *units_[ui];
  return Tensor::borrow(at(grad ? u.full_grad : u.full, l.full_offset[p], opt_.param_dtype), l.spec.params[p].shape,
                        opt_.param_dtype, Device::CUDA);
}

Tensor DeviceFsdpEngine::full(const std::string& param) const {
  const std::size_t u = unit_of(param);
  OS_CHECK(gathered(u), "fsdp: parameter {} used while unit {} is not gathered", param, unit_spec(u).name);
  return full_view(param, false);
}

// ---------------- gradients ----------------

// Full gradients come from the caching allocator on the compute stream and return to it in stream order, behind
// the packing kernel that last reads them.
void DeviceFsdpEngine::alloc_grads(std::size_t ui) {
  Unit& u = *units_[ui];
  u.full_grad = Bytes(static_cast<std::size_t>(layout(ui).full_numel) * dtype_size(opt_.param_dtype), mem_->alloc,
                      stream_);
  u.full_grad.zero(stream_);
}

void DeviceFsdpEngine::free_grads(std::size_t ui) {
  Unit& u = *units_[ui];
  u.full_grad.reset();
  if (!u.grad_sum.empty()) add_grad_bytes(-static_cast<std::int64_t>(u.grad_sum.bytes()));
  u.grad_sum.reset();
  u.summed = false;
}

void DeviceFsdpEngine::accumulate_grads(std::size_t ui) {
  OS_CHECK(ui < num_units(), "fsdp: unit {} of {}", ui, num_units());
  Unit& u = *units_[ui];
  const std::int64_t n = layout(ui).full_numel;
  if (opt_.param_dtype == DType::F32 || n == 0) return;
  OS_CHECK(!reducing(ui), "fsdp: accumulate_grads of unit {} after its reduction started", unit_spec(ui).name);
  OS_CHECK(grads_open(ui), "fsdp: accumulate_grads of unit {} without a gradient", unit_spec(ui).name);
  if (!u.summed) {  // the step's first kept micro-batch: an fp32 sum (zeroed) until the unit's reduction
    u.grad_sum = cuda::DeviceBuffer<float>(static_cast<std::size_t>(n), mem_->alloc, stream_);
    u.grad_sum.zero(stream_);
    add_grad_bytes(static_cast<std::int64_t>(u.grad_sum.bytes()));
  }
  cuda::accumulate_and_zero(u.grad_sum.data(), reinterpret_cast<cuda::bf16*>(u.full_grad.data()), n, stream_);
  u.summed = true;
}

Tensor DeviceFsdpEngine::grad_view(const std::string& param) const { return full_view(param, true); }

void DeviceFsdpEngine::start_reduce(std::size_t ui, bool add) {
  Unit& u = *units_[ui];
  const UnitLayout& l = layout(ui);
  const DType rd = opt_.reduce_dtype;
  const std::size_t re = dtype_size(rd);
  u.rs_send = Bytes(static_cast<std::size_t>(l.shard_numel * nranks()) * re, mem_->alloc, stream_);
  u.rs_send.zero(stream_);  // the padding stays zero: only real rows are packed
  if (add || rd != DType::F32) u.rs_recv = Bytes(static_cast<std::size_t>(l.shard_numel) * re, mem_->alloc, stream_);
  if (u.summed) {  // earlier micro-batches in fp32: add this one and pack the fp32 sum
    accumulate_grads(ui);
    spans(u.to_blocks, u.spans, u.max_span, u.grad_sum.data(), DType::F32, u.rs_send.data(), rd, stream_);
  } else {
    spans(u.to_blocks, u.spans, u.max_span, u.full_grad.data(), opt_.param_dtype, u.rs_send.data(), rd, stream_);
  }
  void* dst = u.rs_recv.empty() ? static_cast<void*>(u.grad.data()) : u.rs_recv.data();
  u.reduce_req = shard_.reduce_scatter_async(u.rs_send.data(), dst, static_cast<std::size_t>(l.shard_numel), rd,
                                             ReduceOp::Mean);
}

void DeviceFsdpEngine::finish_reduce(std::size_t ui, bool add, bool replica) {
  Unit& u = *units_[ui];
  const std::int64_t S = layout(ui).shard_numel;
  u.reduce_req.wait();  // the stream waits for the reduce-scatter
  if (add) {  // a later micro-batch: its mean joins the earlier ones' in fp32
    if (opt_.reduce_dtype == DType::F32)
      cuda::add_inplace(u.grad.data(), reinterpret_cast<const float*>(u.rs_recv.data()), S, stream_);
    else
      cuda::add_inplace(u.grad.data(), reinterpret_cast<const cuda::bf16*>(u.rs_recv.data()), S, stream_);
  } else if (opt_.reduce_dtype != DType::F32) {
    convert(u.rs_recv.data(), opt_.reduce_dtype, u.grad.data(), DType::F32, S, stream_);
  }
  u.rs_send.reset();  // back to the pool, in stream order
  u.rs_recv.reset();
  if (replica && replica_ && replica_->size() > 1)
    replica_->all_reduce(u.grad.data(), u.grad.data(), static_cast<std::size_t>(S), DType::F32, ReduceOp::Mean);
}

double DeviceFsdpEngine::clip_grad_norm(double max_norm) {
  double* out = mem_->norm.data();
  OS_CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(double), stream_));
  for (auto& u : units_)
    cuda::sum_squares<float>(out, u->grad.data(), static_cast<std::int64_t>(u->grad.size()), out + 1, true, stream_);
  double ss = 0;
  OS_CUDA_CHECK(cudaMemcpyAsync(&ss, out, sizeof(double), cudaMemcpyDeviceToHost, stream_));
  OS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  const double norm = std::sqrt(shard_.all_reduce_scalar(ss, ReduceOp::Sum));
  if (max_norm > 0 && norm > max_norm && std::isfinite(norm)) {
    const double scale = static_cast<float>(max_norm / (norm + 1e-6));
    for (auto& u : units_)
      cuda::scale_inplace<float>(u->grad.data(), static_cast<std::int64_t>(u->grad.size()), scale, stream_);
  }
  return norm;
}

FsdpMemory DeviceFsdpEngine::memory() const {
  FsdpMemory m = peaks();
  for (const auto& u : units_) {
    m.param_shards += u->master.bytes() + u->copy.bytes();
    m.grad_shards += u->grad.bytes();
  }
  return m;
}

}  // namespace orthoshard
