// The FSDP engine interface the trainer and the checkpoint code drive, on either backend: every parameter
// row-sharded over the shard group, a unit's shards packed in one flat buffer per rank so one all_gather brings
// the whole unit and one reduce_scatter returns its gradient. The caller drives it unit by unit: prefetch/gather
// before use, release after, reduce the gradients of a unit once its backward is done. fp32 master shards
// always; param_dtype / reduce_dtype choose what travels (f32 or bf16). Hybrid sharding adds an all-reduce over
// the replica group.
//
// Memory: the shards (master parameters, fp32 gradients) are 1/N of the model; everything full-size is transient
// and exists only for the units in flight: gathered parameters (gather .. release), full gradients (open_grads ..
// reduce_grads; the tied units a backward writes into stay open until their own backward), and the reduction's
// buffers (reduce_grads .. finish_reductions). A unit may be reduced after every micro-batch (its gradient is
// added into the shards, fp32) or once per step; the step's first reduction of a unit overwrites its shards.
//
// This class holds what both engines share: the packed layout of every unit, the parameter index, and the
// gather/release/reduce state machine with its memory and wait accounting. FsdpEngine (host memory,
// fsdp_engine.hpp) and DeviceFsdpEngine (GPU memory, cuda/device_fsdp_engine.hpp) supply the buffers and the
// copies. Layouts per unit (N ranks in the shard group):
//   full      the unit's parameters concatenated in order, each (rows, cols) row-major;
//   shard     this rank's rows of every parameter, concatenated, padded to S = max over ranks;
//   gathered  N blocks of S (block r = rank r's shard), what all_gather produces and reduce_scatter takes.
// Padding is zero and never enters the math: only real rows are packed and unpacked.
#pragma once

#include "runtime/core/tensor.hpp"
#include "runtime/fsdp/row_sharding.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <utility>
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

// Bytes per rank, for the memory report. The shards shrink with N; the peaks are what is in flight.
struct FsdpMemory {
  std::uint64_t param_shards = 0;       // fp32 master shards (+ the param_dtype copy sent by all_gather)
  std::uint64_t grad_shards = 0;        // fp32 gradient shards
  std::uint64_t grad_accumulation = 0;  // most bytes of full-size gradient buffers alive at once (open units)
  std::uint64_t gather_peak = 0;        // most bytes of gathered (full) parameters alive at once
  std::uint64_t comm_buffers = 0;       // most bytes of reduction buffers (packing, receiving) alive at once
  std::uint64_t transient_peak = 0;     // most bytes of all three alive at once
};

// The packed layout of one unit over N ranks.
struct UnitLayout {
  FsdpUnitSpec spec;
  std::vector<std::int64_t> cols;                       // per parameter: elements per row
  std::vector<std::int64_t> full_offset;                // per parameter: first element in the full layout
  std::vector<std::vector<std::int64_t>> block_offset;  // [rank][param]: first element in rank's shard block
  std::vector<std::vector<RowRange>> rows;              // [rank][param]
  std::int64_t full_numel = 0, shard_numel = 0;         // shard_numel = S (padded)
  // One run of elements per (rank, parameter) with rows, rank-major: offset in the gathered layout, offset in the
  // full layout, count. Unpacking a gather and packing a reduction copy exactly these.
  struct Span {
    std::int64_t gathered = 0, full = 0, count = 0;
  };
  std::vector<Span> spans;

  UnitLayout(FsdpUnitSpec spec, int nranks);
};

class ShardedEngine {
 public:
  virtual ~ShardedEngine();
  ShardedEngine(const ShardedEngine&) = delete;
  ShardedEngine& operator=(const ShardedEngine&) = delete;

  std::size_t num_units() const { return layouts_.size(); }
  const FsdpUnitSpec& unit_spec(std::size_t u) const;
  std::size_t unit_of(const std::string& param) const;
  RowRange rows(const std::string& param) const;  // this rank's rows of the parameter

  // ---- shards (this rank's rows) ----
  // The fp32 master shard, its param_dtype copy (device bf16 only; an undefined tensor otherwise), the fp32
  // gradient shard: views into the unit's flat buffers, in host or device memory.
  virtual Tensor shard(const std::string& param) const = 0;
  virtual Tensor shard_copy(const std::string& param) const;
  virtual Tensor grad_shard(const std::string& param) const = 0;
  // Copies this rank's master rows to / from host f32 tensors of the shard's shape (checkpoints); from_host also
  // refreshes the param_dtype copy.
  virtual void shard_to_host(const std::string& param, Tensor& dst) const = 0;
  virtual void shard_from_host(const std::string& param, const Tensor& src) = 0;
  // Sets a parameter's master shard from its full value: a host f32 tensor every rank passes alike.
  void load_full(const std::string& param, const Tensor& full_host);

  // ---- parameters: unit by unit ----
  void prefetch(std::size_t u);  // start the all_gather of unit u (no-op if gathered, in flight, or prefetch is off)
  void gather(std::size_t u);    // unit u's full parameters are usable (by work queued after this) once it returns
  void release(std::size_t u);   // drop unit u's full parameters (re-gathered when needed again)
  bool gathered(std::size_t u) const { return state_.at(u).gathered; }
  // The full parameter (unit gathered): host f32, or a device view in param_dtype.
  virtual Tensor full(const std::string& param) const = 0;

  // ---- gradients ----
  // Before a step's first micro-batch: drops any open gradient buffer; the step's first reduction of each unit
  // will overwrite its shards.
  void zero_grads();
  // A zeroed full-size gradient buffer for unit u, which backward adds into (no-op while it is open).
  void open_grads(std::size_t u);
  bool grads_open(std::size_t u) const { return state_.at(u).grads_open; }
  // The full gradient buffer of the parameter's unit (opened if it is not).
  Tensor full_grad(const std::string& param);
  // After a micro-batch's backward of unit u when its gradient is kept for the next micro-batch (reductions once
  // per step; device bf16: moves the gradient into an fp32 sum; a no-op where backward accumulates in fp32).
  virtual void accumulate_grads(std::size_t u);
  // Starts the reduce_scatter (mean) of unit u's gradient (and the sum of earlier micro-batches kept by
  // accumulate_grads) into its shards, adding to what earlier reductions of this step left there; the full
  // buffer is released. `last`: the step's last reduction of u (the replica mean follows it, hybrid sharding).
  void reduce_grads(std::size_t u, bool last = true);
  void finish_reductions();  // complete every started reduction (and, after a unit's last, the replica mean)
  // Global L2 norm of the gradient (from the shards); scales the shards so the norm is at most max_norm when
  // max_norm > 0. Returns the norm before clipping (NaN/Inf when a gradient is not finite).
  virtual double clip_grad_norm(double max_norm) = 0;

  // The host waits for the work queued so far (device engines; nothing to wait for on the host).
  virtual void synchronize() {}
  virtual FsdpMemory memory() const = 0;
  // Time spent waiting for collectives to complete since construction (to measure overlap).
  double comm_wait_ms() const { return comm_wait_ms_; }

 protected:
  // param_dtype: what all-gathers move; reduce_dtype: what reductions move; full_elem_bytes: bytes per element
  // of a gathered full unit and of its full gradient.
  ShardedEngine(std::vector<FsdpUnitSpec> units, int nranks, int rank, DType param_dtype, DType reduce_dtype,
                std::size_t full_elem_bytes, bool prefetch);

  // What each engine does at the state machine's steps.
  virtual void start_gather(std::size_t u) = 0;   // start (or, blocking, do) the all_gather into a gather buffer
  virtual void finish_gather(std::size_t u) = 0;  // wait for it (adding the wait to comm_wait_ms_), unpack
  virtual void drop_full(std::size_t u) = 0;      // free the full parameters
  virtual void alloc_grads(std::size_t u) = 0;    // a zeroed full gradient buffer
  virtual void free_grads(std::size_t u) = 0;     // free it (and an accumulation sum)
  virtual Tensor grad_view(const std::string& param) const = 0;  // the parameter in its unit's open buffer
  // Pack the gradient and start (or, blocking, do) the reduce_scatter; add: into a receive buffer whose values
  // finish_reduce adds to the shard (else straight into the shard, when reducing f32).
  virtual void start_reduce(std::size_t u, bool add) = 0;
  // Wait, convert or add into the fp32 shard, free the buffers; replica: then the mean over the replicas.
  virtual void finish_reduce(std::size_t u, bool add, bool replica) = 0;

  const UnitLayout& layout(std::size_t u) const { return layouts_[u]; }
  bool reducing(std::size_t u) const { return state_[u].reducing; }
  int rank() const { return rank_; }
  int nranks() const { return nranks_; }
  // Where a parameter's rows live: its unit, its position in the unit, this rank's first element in the unit's
  // shard buffer, and the shard's (local) shape.
  struct Slot {
    std::size_t unit = 0, param = 0;
    std::int64_t offset = 0;
    Shape local_shape;
  };
  Slot slot(const std::string& param) const;
  std::pair<std::size_t, std::size_t> locate(const std::string& param) const;  // (unit, position)
  // The peaks for FsdpMemory; derived engines add the shards. Extra bytes (an accumulation sum) count as open
  // gradients.
  FsdpMemory peaks() const;
  void add_grad_bytes(std::int64_t bytes);
  double comm_wait_ms_ = 0;

 private:
  void begin_gather(std::size_t u);  // start_gather with the state and memory bookkeeping
  struct UnitState {
    bool gathered = false, gathering = false, reducing = false;
    bool grads_open = false;
    bool fresh = true;         // no reduction of this unit in this step yet: the next one overwrites the shards
    bool add = false;          // the reduction in flight adds into the shards
    bool last = false;         // the reduction in flight is the unit's last of the step
  };
  void account(std::int64_t gathered, std::int64_t grads, std::int64_t comm);  // running bytes and their peaks
  void close_grads(std::size_t u);
  void finish_reduction(std::size_t u);
  std::int64_t reduce_bytes(std::size_t u, bool add) const;
  std::vector<UnitLayout> layouts_;
  std::vector<UnitState> state_;
  std::map<std::string, std::pair<std::size_t, std::size_t>> index_;  // param -> (unit, position)
  int nranks_, rank_;
  DType param_dtype_, reduce_dtype_;
  std::size_t full_elem_bytes_;
  bool prefetch_;
  std::int64_t gathered_bytes_ = 0, grad_bytes_ = 0, comm_bytes_ = 0;
  std::uint64_t gather_peak_ = 0, grad_peak_ = 0, comm_peak_ = 0, transient_peak_ = 0;
};

}  // namespace orthoshard
