// FSDP engine. Layouts (per unit, N ranks of the shard group):
//   full      f32, the unit's parameters concatenated in order, each (rows, cols) row-major;
//   shard     this rank's rows of every parameter, concatenated, padded to S = max over ranks;
//   gathered  N blocks of S (block r = rank r's shard), what all_gather produces and reduce_scatter takes.
// Padding is zero and never enters the math: only real rows are packed and unpacked.
#include "runtime/fsdp/fsdp_engine.hpp"

#include "runtime/core/error.hpp"

#include <chrono>
#include <cmath>
#include <cstring>

namespace orthoshard {

struct FsdpEngine::Unit {
  FsdpUnitSpec spec;
  std::vector<std::int64_t> cols, full_offset;
  std::vector<std::vector<std::int64_t>> block_offset;  // [rank][param]
  std::vector<std::vector<RowRange>> rows;              // [rank][param]
  std::int64_t full_numel = 0, shard_numel = 0;         // shard_numel = S (padded)
  Tensor master, grad;                                  // f32 (S)
  Tensor send;                                          // param_dtype copy of master (bf16 only)
  Tensor gathered_raw;                                  // param_dtype (N*S)
  Tensor full;                                          // f32 (full_numel), while gathered
  Tensor full_grad;                                     // f32 (full_numel)
  Tensor rs_send, rs_recv;                              // reduce_dtype (N*S), (S) for bf16
  Request gather_req, reduce_req;
  bool gathered = false, gathering = false, reducing = false;
};

namespace {
using Clock = std::chrono::steady_clock;

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

FsdpEngine::FsdpEngine(std::vector<FsdpUnitSpec> units, Communicator& shard, Communicator* replica,
                       FsdpOptions opt)
    : shard_(shard), replica_(replica), opt_(opt) {
  for (DType d : {opt_.param_dtype, opt_.reduce_dtype})
    OS_CHECK(d == DType::F32 || d == DType::BF16, "fsdp: param/reduce dtype must be f32 or bf16, got {}",
             dtype_name(d));
  const int n = shard_.size(), me = shard_.rank();
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
    for (int r = 0; r < n; ++r) {
      std::int64_t off = 0;
      for (std::size_t p = 0; p < np; ++p) {
        u->rows[r][p] = shard_rows(u->spec.params[p].shape[0], n, r);
        u->block_offset[r][p] = off;
        off += u->rows[r][p].rows() * u->cols[p];
      }
      u->shard_numel = std::max(u->shard_numel, off);
    }
    u->master = Tensor::zeros({u->shard_numel}, DType::F32);
    if (opt_.grad_buffers) {
      u->grad = Tensor::zeros({u->shard_numel}, DType::F32);
      u->full_grad = Tensor::zeros({u->full_numel}, DType::F32);
    }
    if (opt_.param_dtype != DType::F32) u->send = Tensor::zeros({u->shard_numel}, opt_.param_dtype);
    (void)me;
    units_.push_back(std::move(u));
  }
}

FsdpEngine::~FsdpEngine() = default;

FsdpEngine::Unit& FsdpEngine::unit(std::size_t u) {
  OS_CHECK(u < units_.size(), "fsdp: unit {} of {}", u, units_.size());
  return *units_[u];
}

const FsdpUnitSpec& FsdpEngine::unit_spec(std::size_t u) const { return units_.at(u)->spec; }

std::size_t FsdpEngine::unit_of(const std::string& param) const {
  auto it = index_.find(param);
  OS_CHECK(it != index_.end(), "fsdp: no parameter named '{}'", param);
  return it->second.first;
}

static Shape local_shape(const Shape& global, std::int64_t rows) {
  Shape s = global;
  s[0] = rows;
  return s;
}

// This rank's rows of `param` inside a unit's flat shard buffer (master or gradient).
Tensor FsdpEngine::shard_view(const std::string& param, bool grad) const {
  auto it = index_.find(param);
  OS_CHECK(it != index_.end(), "fsdp: no parameter named '{}'", param);
  const auto [ui, p] = it->second;
  const Unit& u = *units_[ui];
  const int me = shard_.rank();
  const std::int64_t off = u.block_offset[me][p], rows = u.rows[me][p].rows();
  OS_CHECK(!grad || opt_.grad_buffers, "fsdp: gradient of {} asked of an engine without gradient buffers", param);
  return (grad ? u.grad : u.master).rows(off, off + rows * u.cols[p]).reshape(local_shape(u.spec.params[p].shape, rows));
}

Tensor FsdpEngine::shard(const std::string& param) const { return shard_view(param, false); }
Tensor FsdpEngine::grad_shard(const std::string& param) const { return shard_view(param, true); }

RowRange FsdpEngine::rows(const std::string& param) const {
  auto [ui, p] = index_.at(param);
  return units_[ui]->rows[shard_.rank()][p];
}

void FsdpEngine::load_full(const std::string& param, const Tensor& full_value) {
  OS_CHECK(index_.count(param), "fsdp: no parameter named '{}'", param);
  auto [ui, p] = index_.at(param);
  const Unit& u = *units_[ui];
  OS_CHECK(full_value.shape() == u.spec.params[p].shape && full_value.dtype() == DType::F32,
           "fsdp: parameter {} is f32{}, got {}", param, shape_str(u.spec.params[p].shape), full_value.describe());
  const RowRange r = u.rows[shard_.rank()][p];
  Tensor dst = shard(param);
  if (dst.numel()) std::memcpy(dst.raw(), at(full_value, r.begin * u.cols[p]), dst.nbytes());
}

Tensor FsdpEngine::gather_full(const std::string& param) {
  const std::size_t ui = unit_of(param);
  const bool was = gathered(ui);
  gather(ui);
  Tensor out = full(param).clone();
  if (!was) release(ui);
  return out;
}

// ---------------- parameters ----------------

void FsdpEngine::prefetch(std::size_t ui) {
  if (opt_.overlap) start_gather(ui);
}

void FsdpEngine::start_gather(std::size_t ui) {
  Unit& u = unit(ui);
  if (u.gathered || u.gathering) return;
  const int n = shard_.size();
  const void* src = u.master.raw();
  if (opt_.param_dtype != DType::F32) {
    convert(u.master.raw(), DType::F32, u.send.raw(), opt_.param_dtype, u.shard_numel);
    src = u.send.raw();
  }
  u.gathered_raw = Tensor::empty({u.shard_numel * n}, opt_.param_dtype);
  if (opt_.overlap) {
    u.gather_req = shard_.all_gather_async(src, u.gathered_raw.raw(), static_cast<std::size_t>(u.shard_numel),
                                           opt_.param_dtype);
  } else {
    const auto t0 = Clock::now();
    shard_.all_gather(src, u.gathered_raw.raw(), static_cast<std::size_t>(u.shard_numel), opt_.param_dtype);
    comm_wait_ms_ += std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  }
  u.gathering = true;
  gathered_bytes_ += u.gathered_raw.nbytes() + static_cast<std::uint64_t>(u.full_numel) * 4;
  gather_peak_ = std::max(gather_peak_, gathered_bytes_);
}

void FsdpEngine::gather(std::size_t ui) {
  Unit& u = unit(ui);
  if (u.gathered) return;
  start_gather(ui);
  const auto t0 = Clock::now();
  u.gather_req.wait();
  comm_wait_ms_ += std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  u.gathering = false;
  unpack_gathered(u);
  u.gathered_raw = Tensor();
  gathered_bytes_ -= static_cast<std::uint64_t>(u.shard_numel) * shard_.size() * dtype_size(opt_.param_dtype);
  u.gathered = true;
}

void FsdpEngine::unpack_gathered(Unit& u) {
  const int n = shard_.size();
  u.full = Tensor::empty({u.full_numel}, DType::F32);
  for (int r = 0; r < n; ++r)
    for (std::size_t p = 0; p < u.spec.params.size(); ++p) {
      const RowRange rr = u.rows[r][p];
      convert(at(u.gathered_raw, r * u.shard_numel + u.block_offset[r][p]), opt_.param_dtype,
              at(u.full, u.full_offset[p] + rr.begin * u.cols[p]), DType::F32, rr.rows() * u.cols[p]);
    }
}

void FsdpEngine::release(std::size_t ui) {
  Unit& u = unit(ui);
  if (u.gathering) gather(ui);
  if (!u.gathered) return;
  u.full = Tensor();
  u.gathered = false;
  gathered_bytes_ -= static_cast<std::uint64_t>(u.full_numel) * 4;
}

bool FsdpEngine::gathered(std::size_t u) const { return units_.at(u)->gathered; }

Tensor FsdpEngine::full(const std::string& param) const {
  auto [ui, p] = index_.at(param);
  const Unit& u = *units_[ui];
  OS_CHECK(u.gathered, "fsdp: parameter {} used while unit {} is not gathered", param, u.spec.name);
  return u.full.rows(u.full_offset[p], u.full_offset[p] + shape_numel(u.spec.params[p].shape))
      .reshape(u.spec.params[p].shape);
}

// ---------------- gradients ----------------

void FsdpEngine::zero_grads() {
  OS_CHECK(opt_.grad_buffers, "fsdp: zero_grads on an engine without gradient buffers");
  for (auto& u : units_) {
    OS_CHECK(!u->reducing, "fsdp: zero_grads while unit {} is still reducing", u->spec.name);
    u->full_grad.fill_zero();
  }
}

Tensor FsdpEngine::full_grad(const std::string& param) const {
  auto [ui, p] = index_.at(param);
  const Unit& u = *units_[ui];
  return u.full_grad.rows(u.full_offset[p], u.full_offset[p] + shape_numel(u.spec.params[p].shape))
      .reshape(u.spec.params[p].shape);
}

void FsdpEngine::reduce_grads(std::size_t ui) {
  OS_CHECK(opt_.grad_buffers, "fsdp: reduce_grads on an engine without gradient buffers");
  Unit& u = unit(ui);
  OS_CHECK(!u.reducing, "fsdp: unit {} reduced twice in one step", u.spec.name);
  const int n = shard_.size();
  const DType rd = opt_.reduce_dtype;
  if (!u.rs_send.defined() || u.rs_send.numel() != u.shard_numel * n) {
    u.rs_send = Tensor::zeros({u.shard_numel * n}, rd);  // padding stays zero
    if (rd != DType::F32) u.rs_recv = Tensor::zeros({u.shard_numel}, rd);
    comm_peak_ = std::max<std::uint64_t>(comm_peak_, u.rs_send.nbytes() + u.rs_recv.nbytes());
  }
  for (int r = 0; r < n; ++r)
    for (std::size_t p = 0; p < u.spec.params.size(); ++p) {
      const RowRange rr = u.rows[r][p];
      convert(at(u.full_grad, u.full_offset[p] + rr.begin * u.cols[p]), DType::F32,
              at(u.rs_send, r * u.shard_numel + u.block_offset[r][p]), rd, rr.rows() * u.cols[p]);
    }
  void* dst = rd == DType::F32 ? u.grad.raw() : u.rs_recv.raw();
  if (opt_.overlap) {
    u.reduce_req = shard_.reduce_scatter_async(u.rs_send.raw(), dst, static_cast<std::size_t>(u.shard_numel), rd,
                                               ReduceOp::Mean);
  } else {
    const auto t0 = Clock::now();
    shard_.reduce_scatter(u.rs_send.raw(), dst, static_cast<std::size_t>(u.shard_numel), rd, ReduceOp::Mean);
    comm_wait_ms_ += std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  }
  u.reducing = true;  // finish_reductions converts and adds the replica mean
}

void FsdpEngine::finish_reductions() {
  const auto t0 = Clock::now();
  for (auto& u : units_) {
    if (!u->reducing) continue;
    u->reduce_req.wait();
    u->reducing = false;
    if (opt_.reduce_dtype != DType::F32)
      convert(u->rs_recv.raw(), opt_.reduce_dtype, u->grad.raw(), DType::F32, u->shard_numel);
    if (replica_ && replica_->size() > 1)
      replica_->all_reduce(u->grad.raw(), u->grad.raw(), static_cast<std::size_t>(u->shard_numel), DType::F32,
                           ReduceOp::Mean);
  }
  comm_wait_ms_ += std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double FsdpEngine::clip_grad_norm(double max_norm) {
  OS_CHECK(opt_.grad_buffers, "fsdp: clip_grad_norm on an engine without gradient buffers");
  double ss = 0;
  for (auto& u : units_) {
    const float* g = u->grad.data<float>();
    for (std::int64_t i = 0; i < u->shard_numel; ++i) ss += static_cast<double>(g[i]) * g[i];
  }
  const double norm = std::sqrt(shard_.all_reduce_scalar(ss, ReduceOp::Sum));
  if (max_norm > 0 && norm > max_norm && std::isfinite(norm)) {
    const float scale = static_cast<float>(max_norm / (norm + 1e-6));
    for (auto& u : units_) {
      float* g = u->grad.data<float>();
      for (std::int64_t i = 0; i < u->shard_numel; ++i) g[i] *= scale;
    }
  }
  return norm;
}

FsdpMemory FsdpEngine::memory() const {
  FsdpMemory m;
  for (const auto& u : units_) {
    m.param_shards += u->master.nbytes() + (u->send.defined() ? u->send.nbytes() : 0);
    if (opt_.grad_buffers) {
      m.grad_shards += u->grad.nbytes();
      m.grad_accumulation += u->full_grad.nbytes();
    }
  }
  m.gather_peak = gather_peak_;
  m.comm_buffers = comm_peak_;
  return m;
}

}  // namespace orthoshard
