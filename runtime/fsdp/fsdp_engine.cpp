// The FSDP engine in host memory: buffers, conversions and MPI collectives behind the layout and state machine
// of sharded_engine.hpp.
#include "runtime/fsdp/fsdp_engine.hpp"

#include "runtime/core/error.hpp"

#include <chrono>
#include <cmath>
#include <cstring>

namespace orthoshard {

struct FsdpEngine::Unit {
  Tensor master, grad;  // f32 (S)
  Tensor send;          // param_dtype copy of master (bf16 only)
  Tensor gathered_raw;  // param_dtype (N*S), between start_gather and finish_gather
  Tensor full;          // f32 (full_numel), while gathered
  Tensor full_grad;     // f32 (full_numel), while open
  Tensor rs_send, rs_recv;  // reduce_dtype (N*S); (S) when not reducing straight into the shard; while reducing
  Request gather_req, reduce_req;
};

namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

void convert(const void* src, DType sdt, void* dst, DType ddt, std::int64_t n) {
  if (n == 0) return;
  if (sdt == ddt) {
    std::memcpy(dst, src, static_cast<std::size_t>(n) * dtype_size(sdt));
  } else if (sdt == DType::F32 && ddt == DType::BF16) {
    auto* s = static_cast<const float*>(src);
    auto* d = static_cast<bf16*>(dst);
    for (std::int64_t i = 0; i < n; ++i) d[i] = float_to_bf16(s[i]);
  } else if (sdt == DType::BF16 && ddt == DType::F32) {
    auto* s = static_cast<const bf16*>(src);
    auto* d = static_cast<float*>(dst);
    for (std::int64_t i = 0; i < n; ++i) d[i] = bf16_to_float(s[i]);
  } else {
    fail("fsdp: no conversion from {} to {}", dtype_name(sdt), dtype_name(ddt));
  }
}

std::byte* at(const Tensor& t, std::int64_t elem) {
  return static_cast<std::byte*>(t.raw()) + elem * static_cast<std::int64_t>(dtype_size(t.dtype()));
}
}  // namespace

FsdpEngine::FsdpEngine(std::vector<FsdpUnitSpec> units, Communicator& shard, Communicator* replica, FsdpOptions opt)
    : ShardedEngine(std::move(units), shard.size(), shard.rank(), opt.param_dtype, opt.reduce_dtype, sizeof(float),
                    opt.overlap),
      shard_(shard),
      replica_(replica),
      opt_(opt) {
  for (DType d : {opt_.param_dtype, opt_.reduce_dtype})
    OS_CHECK(d == DType::F32 || d == DType::BF16, "fsdp: param/reduce dtype must be f32 or bf16, got {}",
             dtype_name(d));
  for (std::size_t i = 0; i < num_units(); ++i) {
    const UnitLayout& l = layout(i);
    auto u = std::make_unique<Unit>();
    u->master = Tensor::zeros({l.shard_numel}, DType::F32);
    u->grad = Tensor::zeros({l.shard_numel}, DType::F32);
    if (opt_.param_dtype != DType::F32) u->send = Tensor::zeros({l.shard_numel}, opt_.param_dtype);
    units_.push_back(std::move(u));
  }
}

FsdpEngine::~FsdpEngine() = default;

// A parameter inside a unit buffer: this rank's rows of a shard buffer, or the whole parameter of a full one.
Tensor FsdpEngine::view(const Tensor& buffer, const std::string& param, bool full_layout) const {
  const Slot s = slot(param);
  const UnitLayout& l = layout(s.unit);
  const Shape& global = l.spec.params[s.param].shape;
  if (full_layout)
    return buffer.rows(l.full_offset[s.param], l.full_offset[s.param] + shape_numel(global)).reshape(global);
  return buffer.rows(s.offset, s.offset + shape_numel(s.local_shape)).reshape(s.local_shape);
}

Tensor FsdpEngine::shard(const std::string& param) const { return view(units_[unit_of(param)]->master, param, false); }
Tensor FsdpEngine::grad_shard(const std::string& param) const {
  return view(units_[unit_of(param)]->grad, param, false);
}

void FsdpEngine::shard_to_host(const std::string& param, Tensor& dst) const {
  const Tensor src = shard(param);
  OS_CHECK(dst.device() == Device::CPU && dst.dtype() == DType::F32 && dst.is_contiguous() && dst.numel() == src.numel(),
           "fsdp: parameter {} fills a host f32 shard of {} elements, got {}", param, src.numel(), dst.describe());
  if (src.numel() && dst.raw() != src.raw()) std::memcpy(dst.raw(), src.raw(), src.nbytes());
}

void FsdpEngine::shard_from_host(const std::string& param, const Tensor& src) {
  Tensor dst = shard(param);
  OS_CHECK(src.device() == Device::CPU && src.dtype() == DType::F32 && src.is_contiguous() && src.numel() == dst.numel(),
           "fsdp: parameter {} takes a host f32 shard of {} elements, got {}", param, dst.numel(), src.describe());
  if (dst.numel() && dst.raw() != src.raw()) std::memcpy(dst.raw(), src.raw(), dst.nbytes());
}

// ---------------- parameters ----------------

void FsdpEngine::start_gather(std::size_t ui) {
  Unit& u = *units_[ui];
  const UnitLayout& l = layout(ui);
  const void* src = u.master.raw();
  if (opt_.param_dtype != DType::F32) {
    convert(u.master.raw(), DType::F32, u.send.raw(), opt_.param_dtype, l.shard_numel);
    src = u.send.raw();
  }
  u.gathered_raw = Tensor::empty({l.shard_numel * nranks()}, opt_.param_dtype);
  const auto count = static_cast<std::size_t>(l.shard_numel);
  if (opt_.overlap) {
    u.gather_req = shard_.all_gather_async(src, u.gathered_raw.raw(), count, opt_.param_dtype);
  } else {
    const auto t0 = Clock::now();
    shard_.all_gather(src, u.gathered_raw.raw(), count, opt_.param_dtype);
    comm_wait_ms_ += ms_since(t0);
  }
}

void FsdpEngine::finish_gather(std::size_t ui) {
  Unit& u = *units_[ui];
  const UnitLayout& l = layout(ui);
  const auto t0 = Clock::now();
  u.gather_req.wait();
  comm_wait_ms_ += ms_since(t0);
  u.full = Tensor::empty({l.full_numel}, DType::F32);
  for (const UnitLayout::Span& sp : l.spans)
    convert(at(u.gathered_raw, sp.gathered), opt_.param_dtype, at(u.full, sp.full), DType::F32, sp.count);
  u.gathered_raw = Tensor();
}

void FsdpEngine::drop_full(std::size_t u) { units_[u]->full = Tensor(); }

Tensor FsdpEngine::full(const std::string& param) const {
  const std::size_t u = unit_of(param);
  OS_CHECK(gathered(u), "fsdp: parameter {} used while unit {} is not gathered", param, unit_spec(u).name);
  return view(units_[u]->full, param, true);
}

// ---------------- gradients ----------------

void FsdpEngine::alloc_grads(std::size_t u) { units_[u]->full_grad = Tensor::zeros({layout(u).full_numel}, DType::F32); }
void FsdpEngine::free_grads(std::size_t u) { units_[u]->full_grad = Tensor(); }

Tensor FsdpEngine::grad_view(const std::string& param) const {
  return view(units_[unit_of(param)]->full_grad, param, true);
}

void FsdpEngine::start_reduce(std::size_t ui, bool add) {
  Unit& u = *units_[ui];
  const UnitLayout& l = layout(ui);
  const DType rd = opt_.reduce_dtype;
  u.rs_send = Tensor::zeros({l.shard_numel * nranks()}, rd);  // padding stays zero
  if (add || rd != DType::F32) u.rs_recv = Tensor::empty({l.shard_numel}, rd);
  for (const UnitLayout::Span& sp : l.spans)
    convert(at(u.full_grad, sp.full), DType::F32, at(u.rs_send, sp.gathered), rd, sp.count);
  void* dst = u.rs_recv.defined() ? u.rs_recv.raw() : u.grad.raw();
  const auto count = static_cast<std::size_t>(l.shard_numel);
  if (opt_.overlap) {
    u.reduce_req = shard_.reduce_scatter_async(u.rs_send.raw(), dst, count, rd, ReduceOp::Mean);
  } else {
    const auto t0 = Clock::now();
    shard_.reduce_scatter(u.rs_send.raw(), dst, count, rd, ReduceOp::Mean);
    comm_wait_ms_ += ms_since(t0);
  }
}

void FsdpEngine::finish_reduce(std::size_t ui, bool add, bool replica) {
  Unit& u = *units_[ui];
  const std::int64_t S = layout(ui).shard_numel;
  u.reduce_req.wait();
  if (add) {  // a later micro-batch: its mean joins the earlier ones' in fp32
    float* g = u.grad.data<float>();
    if (opt_.reduce_dtype == DType::F32) {
      const float* r = u.rs_recv.data<float>();
      for (std::int64_t i = 0; i < S; ++i) g[i] += r[i];
    } else {
      const bf16* r = u.rs_recv.data<bf16>();
      for (std::int64_t i = 0; i < S; ++i) g[i] += bf16_to_float(r[i]);
    }
  } else if (opt_.reduce_dtype != DType::F32) {
    convert(u.rs_recv.raw(), opt_.reduce_dtype, u.grad.raw(), DType::F32, S);
  }
  u.rs_send = Tensor();
  u.rs_recv = Tensor();
  if (replica && replica_ && replica_->size() > 1)
    replica_->all_reduce(u.grad.raw(), u.grad.raw(), static_cast<std::size_t>(S), DType::F32, ReduceOp::Mean);
}

double FsdpEngine::clip_grad_norm(double max_norm) {
  double ss = 0;
  for (auto& u : units_) {
    const float* g = u->grad.data<float>();
    for (std::int64_t i = 0; i < u->grad.numel(); ++i) ss += static_cast<double>(g[i]) * g[i];
  }
  const double norm = std::sqrt(shard_.all_reduce_scalar(ss, ReduceOp::Sum));
  if (max_norm > 0 && norm > max_norm && std::isfinite(norm)) {
    const float scale = static_cast<float>(max_norm / (norm + 1e-6));
    for (auto& u : units_) {
      float* g = u->grad.data<float>();
      for (std::int64_t i = 0; i < u->grad.numel(); ++i) g[i] *= scale;
    }
  }
  return norm;
}

FsdpMemory FsdpEngine::memory() const {
  FsdpMemory m = peaks();
  for (const auto& u : units_) {
    m.param_shards += u->master.nbytes() + (u->send.defined() ? u->send.nbytes() : 0);
    m.grad_shards += u->grad.nbytes();
  }
  return m;
}

}  // namespace orthoshard
