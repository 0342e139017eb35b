// The layout and the gather/release/reduce state machine both FSDP engines share (see sharded_engine.hpp).
#include "runtime/fsdp/sharded_engine.hpp"

#include "runtime/core/error.hpp"

#include <algorithm>
#include <chrono>

namespace orthoshard {

UnitLayout::UnitLayout(FsdpUnitSpec s, int nranks) : spec(std::move(s)) {
  const std::size_t np = spec.params.size();
  block_offset.assign(static_cast<std::size_t>(nranks), std::vector<std::int64_t>(np, 0));
  rows.assign(static_cast<std::size_t>(nranks), std::vector<RowRange>(np));
  for (const FsdpParam& fp : spec.params) {
    OS_CHECK(!fp.shape.empty(), "fsdp: parameter {} is 0-d", fp.name);
    cols.push_back(fp.shape[0] ? shape_numel(fp.shape) / fp.shape[0] : 0);
    full_offset.push_back(full_numel);
    full_numel += shape_numel(fp.shape);
  }
  for (int r = 0; r < nranks; ++r) {
    std::int64_t off = 0;
    for (std::size_t p = 0; p < np; ++p) {
      rows[r][p] = shard_rows(spec.params[p].shape[0], nranks, r);
      block_offset[r][p] = off;
      off += rows[r][p].rows() * cols[p];
    }
    shard_numel = std::max(shard_numel, off);
  }
  for (int r = 0; r < nranks; ++r)
    for (std::size_t p = 0; p < np; ++p) {
      const std::int64_t count = rows[r][p].rows() * cols[p];
      if (count > 0)
        spans.push_back({r * shard_numel + block_offset[r][p], full_offset[p] + rows[r][p].begin * cols[p], count});
    }
}

ShardedEngine::ShardedEngine(std::vector<FsdpUnitSpec> units, int nranks, int rank, DType param_dtype,
                             DType reduce_dtype, std::size_t full_elem_bytes, bool prefetch)
    : nranks_(nranks),
      rank_(rank),
      param_dtype_(param_dtype),
      reduce_dtype_(reduce_dtype),
      full_elem_bytes_(full_elem_bytes),
      prefetch_(prefetch) {
  for (auto& spec : units) {
    for (std::size_t p = 0; p < spec.params.size(); ++p) {
      OS_CHECK(index_.count(spec.params[p].name) == 0, "fsdp: parameter {} appears twice", spec.params[p].name);
      index_[spec.params[p].name] = {layouts_.size(), p};
    }
    layouts_.emplace_back(std::move(spec), nranks);
  }
  state_.resize(layouts_.size());
}

ShardedEngine::~ShardedEngine() = default;

const FsdpUnitSpec& ShardedEngine::unit_spec(std::size_t u) const { return layouts_.at(u).spec; }

std::pair<std::size_t, std::size_t> ShardedEngine::locate(const std::string& param) const {
  auto it = index_.find(param);
  OS_CHECK(it != index_.end(), "fsdp: no parameter named '{}'", param);
  return it->second;
}

std::size_t ShardedEngine::unit_of(const std::string& param) const { return locate(param).first; }

RowRange ShardedEngine::rows(const std::string& param) const {
  const auto [u, p] = locate(param);
  return layouts_[u].rows[rank_][p];
}

ShardedEngine::Slot ShardedEngine::slot(const std::string& param) const {
  const auto [u, p] = locate(param);
  const UnitLayout& l = layouts_[u];
  Slot s{u, p, l.block_offset[rank_][p], l.spec.params[p].shape};
  s.local_shape[0] = l.rows[rank_][p].rows();
  return s;
}

Tensor ShardedEngine::shard_copy(const std::string& param) const {
  locate(param);
  return Tensor();
}

void ShardedEngine::load_full(const std::string& param, const Tensor& full_host) {
  const auto [u, p] = locate(param);
  const UnitLayout& l = layouts_[u];
  OS_CHECK(full_host.shape() == l.spec.params[p].shape && full_host.dtype() == DType::F32 &&
               full_host.device() == Device::CPU && full_host.is_contiguous(),
           "fsdp: parameter {} is a host f32{}, got {}", param, shape_str(l.spec.params[p].shape),
           full_host.describe());
  const RowRange r = l.rows[rank_][p];
  shard_from_host(param, full_host.rows(r.begin, r.end));
}

// ---------------- parameters ----------------

void ShardedEngine::prefetch(std::size_t u) {
  OS_CHECK(u < layouts_.size(), "fsdp: unit {} of {}", u, layouts_.size());
  if (prefetch_) begin_gather(u);
}

void ShardedEngine::begin_gather(std::size_t u) {
  if (state_[u].gathered || state_[u].gathering) return;
  start_gather(u);
  state_[u].gathering = true;
  account(layouts_[u].shard_numel * nranks_ * static_cast<std::int64_t>(dtype_size(param_dtype_)) +
              layouts_[u].full_numel * static_cast<std::int64_t>(full_elem_bytes_),
          0, 0);
}

void ShardedEngine::gather(std::size_t u) {
  OS_CHECK(u < layouts_.size(), "fsdp: unit {} of {}", u, layouts_.size());
  UnitState& st = state_[u];
  if (st.gathered) return;
  begin_gather(u);
  finish_gather(u);
  st.gathering = false;
  st.gathered = true;
  account(-layouts_[u].shard_numel * nranks_ * static_cast<std::int64_t>(dtype_size(param_dtype_)), 0, 0);
}

void ShardedEngine::release(std::size_t u) {
  OS_CHECK(u < layouts_.size(), "fsdp: unit {} of {}", u, layouts_.size());
  if (state_[u].gathering) gather(u);
  if (!state_[u].gathered) return;
  drop_full(u);
  state_[u].gathered = false;
  account(-layouts_[u].full_numel * static_cast<std::int64_t>(full_elem_bytes_), 0, 0);
}

void ShardedEngine::account(std::int64_t gathered, std::int64_t grads, std::int64_t comm) {
  gathered_bytes_ += gathered;
  grad_bytes_ += grads;
  comm_bytes_ += comm;
  gather_peak_ = std::max(gather_peak_, static_cast<std::uint64_t>(gathered_bytes_));
  grad_peak_ = std::max(grad_peak_, static_cast<std::uint64_t>(grad_bytes_));
  comm_peak_ = std::max(comm_peak_, static_cast<std::uint64_t>(comm_bytes_));
  transient_peak_ = std::max(transient_peak_, static_cast<std::uint64_t>(gathered_bytes_ + grad_bytes_ + comm_bytes_));
}

void ShardedEngine::add_grad_bytes(std::int64_t bytes) { account(0, bytes, 0); }

FsdpMemory ShardedEngine::peaks() const {
  FsdpMemory m;
  m.grad_accumulation = grad_peak_;
  m.gather_peak = gather_peak_;
  m.comm_buffers = comm_peak_;
  m.transient_peak = transient_peak_;
  return m;
}

// ---------------- gradients ----------------

void ShardedEngine::zero_grads() {
  for (std::size_t u = 0; u < layouts_.size(); ++u) {
    OS_CHECK(!state_[u].reducing, "fsdp: zero_grads while unit {} is still reducing", layouts_[u].spec.name);
    if (state_[u].grads_open) close_grads(u);
    state_[u].fresh = true;
  }
}

void ShardedEngine::open_grads(std::size_t u) {
  OS_CHECK(u < layouts_.size(), "fsdp: unit {} of {}", u, layouts_.size());
  if (state_[u].grads_open) return;
  alloc_grads(u);
  state_[u].grads_open = true;
  account(0, layouts_[u].full_numel * static_cast<std::int64_t>(full_elem_bytes_), 0);
}

void ShardedEngine::close_grads(std::size_t u) {
  free_grads(u);
  state_[u].grads_open = false;
  account(0, -layouts_[u].full_numel * static_cast<std::int64_t>(full_elem_bytes_), 0);
}

Tensor ShardedEngine::full_grad(const std::string& param) {
  open_grads(locate(param).first);
  return grad_view(param);
}

void ShardedEngine::accumulate_grads(std::size_t) {}

// The reduction's buffers: the send side (N blocks of S in reduce_dtype), and a receive block when it does not
// go straight into the fp32 shard.
std::int64_t ShardedEngine::reduce_bytes(std::size_t u, bool add) const {
  const auto re = static_cast<std::int64_t>(dtype_size(reduce_dtype_));
  const std::int64_t S = layouts_[u].shard_numel;
  return S * nranks_ * re + (add || reduce_dtype_ != DType::F32 ? S * re : 0);
}

void ShardedEngine::reduce_grads(std::size_t u, bool last) {
  OS_CHECK(u < layouts_.size(), "fsdp: unit {} of {}", u, layouts_.size());
  UnitState& st = state_[u];
  if (st.reducing) finish_reduction(u);  // the previous micro-batch's must land first (it adds into the shards)
  open_grads(u);  // a unit whose backward wrote nothing reduces zeros
  st.add = !st.fresh;
  st.last = last;
  account(0, 0, reduce_bytes(u, st.add));
  start_reduce(u, st.add);
  close_grads(u);  // packed: the full buffer goes (on a device, in stream order behind the packing)
  st.fresh = false;
  st.reducing = true;  // finish_reductions converts or adds, and adds the replica mean after the last
}

void ShardedEngine::finish_reduction(std::size_t u) {
  UnitState& st = state_[u];
  if (!st.reducing) return;
  const auto t0 = std::chrono::steady_clock::now();
  finish_reduce(u, st.add, st.last);
  comm_wait_ms_ += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  st.reducing = false;
  account(0, 0, -reduce_bytes(u, st.add));
}

void ShardedEngine::finish_reductions() {
  for (std::size_t u = 0; u < layouts_.size(); ++u) finish_reduction(u);
}

}  // namespace orthoshard
