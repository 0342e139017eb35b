// FSDP engine: every parameter row-sharded over the shard group, a unit's shards packed in one flat
// buffer per rank so one all_gather brings the whole unit and one reduce_scatter returns its gradient.
// The caller (trainer) drives it unit by unit: prefetch/gather before use, release after, reduce the
// gradients of a unit once its backward is done. fp32 master shards always; param_dtype / reduce_dtype
// choose what travels (f32 or bf16). Hybrid sharding adds an all-reduce over the replica group.
#pragma once

#include "runtime/comm/communicator.hpp"
#include "runtime/core/tensor.hpp"
#include "runtime/fsdp/row_sharding.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace orthoshard {

struct FsdpParam {
  std::string name;
  Shape shape;  // global shape; rows (dim 0) are sharded
};

struct FsdpUnitSpec {
  std::string name;
  std::vector<FsdpParam> params;
};

struct FsdpOptions {
  DType param_dtype = DType::F32;   // dtype of all-gathers (f32 or bf16; compute is f32)
  DType reduce_dtype = DType::F32;  // dtype of gradient reductions (f32 or bf16)
  // true: prefetch and reduce_grads start non-blocking collectives that complete later; false: every
  // collective runs blocking where it is issued (prefetch does nothing). With MPI on the CPU nothing
  // progresses in the background, and the blocking calls use the faster tuned algorithms.
  bool overlap = true;
  // false: no gradient buffers at all (an engine that only holds master shards, e.g. the host mirror a GPU
  // run saves checkpoints through); gradient calls then fail.
  bool grad_buffers = true;
};

// Bytes per rank, for the memory report.
struct FsdpMemory {
  std::uint64_t param_shards = 0;     // fp32 master shards (+ the param_dtype copy sent by all_gather)
  std::uint64_t grad_shards = 0;      // fp32 gradient shards
  std::uint64_t grad_accumulation = 0;  // full-size gradient buffers of the units (accumulate micro-batches)
  std::uint64_t gather_peak = 0;      // most bytes of gathered (full) parameters alive at once
  std::uint64_t comm_buffers = 0;     // packing and receive buffers of the collectives (peak)
};

class FsdpEngine {
 public:
  // shard: the group parameters are sharded over. replica: ranks holding the same shards (hybrid
  // sharding), or null.
  FsdpEngine(std::vector<FsdpUnitSpec> units, Communicator& shard, Communicator* replica, FsdpOptions opt = {});
  ~FsdpEngine();
  FsdpEngine(const FsdpEngine&) = delete;

  std::size_t num_units() const { return units_.size(); }
  const FsdpUnitSpec& unit_spec(std::size_t u) const;
  std::size_t unit_of(const std::string& param) const;

  // Master shards and gradient shards (views into the unit's flat buffers), by parameter name.
  Tensor shard(const std::string& param) const;
  Tensor grad_shard(const std::string& param) const;
  RowRange rows(const std::string& param) const;
  // Sets a parameter's master shard from its full value (every rank passes the same full tensor).
  void load_full(const std::string& param, const Tensor& full);
  // Gathers one parameter's full value (collective over the shard group; for tests and exports).
  Tensor gather_full(const std::string& param);

  // ---- parameters: unit by unit ----
  void prefetch(std::size_t u);  // start the all_gather of unit u (no-op if gathered or in flight)
  void gather(std::size_t u);    // unit u's full parameters are available once this returns
  void release(std::size_t u);   // drop unit u's full parameters (re-gathered when needed again)
  bool gathered(std::size_t u) const;
  Tensor full(const std::string& param) const;  // full parameter (unit gathered), f32

  // ---- gradients ----
  void zero_grads();                               // full gradient buffers, before a step's first micro-batch
  Tensor full_grad(const std::string& param) const;  // full gradient buffer, accumulated by backward
  void reduce_grads(std::size_t u);  // start reduce_scatter (mean) of unit u's full gradient into its shards
  void finish_reductions();          // complete every started reduction (and the replica all-reduce)
  // Global L2 norm of the gradient (from the shards); scales the shards so the norm is at most
  // max_norm when max_norm > 0. Returns the norm before clipping.
  double clip_grad_norm(double max_norm);

  FsdpMemory memory() const;
  // Time spent waiting for collectives to complete since construction (to measure overlap).
  double comm_wait_ms() const { return comm_wait_ms_; }

 private:
  struct Unit;
  Unit& unit(std::size_t u);
  void unpack_gathered(Unit& u);
  void start_gather(std::size_t u);
  Tensor shard_view(const std::string& param, bool grad) const;
  std::vector<std::unique_ptr<Unit>> units_;
  std::map<std::string, std::pair<std::size_t, std::size_t>> index_;  // param -> (unit, position)
  Communicator& shard_;
  Communicator* replica_;
  FsdpOptions opt_;
  std::uint64_t gathered_bytes_ = 0, gather_peak_ = 0, comm_peak_ = 0;
  double comm_wait_ms_ = 0;
};

}  // namespace orthoshard
