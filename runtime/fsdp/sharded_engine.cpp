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
                             std::size_t full_elem_bytes, bool prefetch)
    : nranks_(nranks), rank_(rank), param_dtype_(param_dtype), full_elem_bytes_(full_elem_bytes), prefetch_(prefetch) {
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
  gathered_bytes_ += static_cast<std::uint64_t>(layouts_[u].shard_numel) * static_cast<std::uint64_t>(nranks_) *
                         dtype_size(param_dtype_) +
                     static_cast<std::uint64_t>(layouts_[u].full_numel) * full_elem_bytes_;
  gather_peak_ = std::max(gather_peak_, gathered_bytes_);
}

void ShardedEngine::gather(std::size_t u) {
  OS_CHECK(u < layouts_.size(), "fsdp: unit {} of {}", u, layouts_.size());
  UnitState& st = state_[u];
  if (st.gathered) return;
  begin_gather(u);
  finish_gather(u);
  st.gathering = false;
  st.gathered = true;
  gathered_bytes_ -= static_cast<std::uint64_t>(layouts_[u].shard_numel) * static_cast<std::uint64_t>(nranks_) *
                     dtype_size(param_dtype_);
}

void ShardedEngine::release(std::size_t u) {
  OS_CHECK(u < layouts_.size(), "fsdp: unit {} of {}", u, layouts_.size());
  if (state_[u].gathering) gather(u);
  if (!state_[u].gathered) return;
  drop_full(u);
  state_[u].gathered = false;
  gathered_bytes_ -= static_cast<std::uint64_t>(layouts_[u].full_numel) * full_elem_bytes_;
}

// ---------------- gradients ----------------

void ShardedEngine::zero_grads() {
  for (std::size_t u = 0; u < layouts_.size(); ++u) {
    OS_CHECK(!state_[u].reducing, "fsdp: zero_grads while unit {} is still reducing", layouts_[u].spec.name);
    zero_unit_grads(u);
  }
}

void ShardedEngine::accumulate_grads(std::size_t) {}

void ShardedEngine::reduce_grads(std::size_t u) {
  OS_CHECK(u < layouts_.size(), "fsdp: unit {} of {}", u, layouts_.size());
  OS_CHECK(!state_[u].reducing, "fsdp: unit {} reduced twice in one step", layouts_[u].spec.name);
  start_reduce(u);
  state_[u].reducing = true;  // finish_reductions converts and adds the replica mean
}

void ShardedEngine::finish_reductions() {
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t u = 0; u < layouts_.size(); ++u) {
    if (!state_[u].reducing) continue;
    finish_reduce(u);
    state_[u].reducing = false;
  }
  comm_wait_ms_ += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace orthoshard
