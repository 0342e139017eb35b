// Training checkpoints: the trainer's state (fp32 master shards of the FSDP engine, every optimizer state,
// data position, step) written by all ranks into one HDF5 file, collectively, committed atomically, and
// loaded back at any world size. Layout (version 1):
//   /                        attrs format = "orthoshard.checkpoint", version, step, tokens_seen, world_size,
//                            config (resolved TOML), optimizer, versions, created, checksum_algorithm, ...
//   /model/<param>           global fp32 tensor; /model attrs architecture (the model family: "gpt2") and the
//                            family's own (GPT-2: L, C, NH, V, Vp, maxT)
//   /optim/<param>/<state>   every state at its global shape (attr rule on /optim/<param>)
//   /train/<name>            step, tokens_seen, data_epoch, data_step, tokens_per_step (0-d i64)
// Every dataset carries a `checksum` attribute (runtime/checkpoint/row_checksum.hpp), verified on load.
#pragma once

#include "launch/trainer/train_config.hpp"
#include "models/data/loader.hpp"
#include "models/family.hpp"
#include "optim/sharded_optimizer.hpp"
#include "runtime/checkpoint/dir_lock.hpp"
#include "runtime/checkpoint/h5_parallel.hpp"
#include "runtime/comm/communicator.hpp"
#include "runtime/fsdp/sharded_engine.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace orthoshard {

inline constexpr std::string_view kCheckpointFormat = "orthoshard.checkpoint";
inline constexpr std::int64_t kCheckpointVersion = 1;

// References into the live training state that a checkpoint captures, on either backend (device shards and
// states are copied through host memory tensor by tensor).
struct CheckpointTarget {
  Communicator& world;  // every rank of the job (the file is opened by all of them)
  int shard_rank = 0;   // this rank's place in the group the parameters are row-sharded over
  int replica = 0;      // which copy of the shards this rank holds (hybrid sharding); copy 0 writes
  ShardedEngine& engine;
  ShardedOptimizer& optim;
  DataLoader& loader;
  const TrainConfig& cfg;
  const Model& model;
  bool restore_data_position = true;  // false: loading leaves the loader alone (evaluation of a checkpoint)
};

// A checkpoint's /model attributes, for a model family to read its configuration from (from_attributes).
class CheckpointModelAttributes final : public AttributeSource {
 public:
  explicit CheckpointModelAttributes(const H5ParallelFile& f) : f_(f) {}
  std::string where() const override { return f_.path(); }
  bool has(const std::string& name) const override { return f_.has_attr("/model", name); }
  std::int64_t get_int(const std::string& name) const override { return f_.int_attr("/model", name); }
  double get_double(const std::string& name) const override { return f_.double_attr("/model", name); }
  std::string get_string(const std::string& name) const override { return f_.string_attr("/model", name); }

 private:
  const H5ParallelFile& f_;
};

struct CheckpointInfo {
  std::string path;
  std::int64_t step = 0;         // optimizer steps done
  std::int64_t tokens_seen = 0;  // tokens trained on
  int world_size = 0;            // of the job that wrote it
  std::string config;            // the resolved TOML of the run that wrote it
};

// "section.key: old -> new" for every key whose value differs between two resolved TOML texts, skipping
// [checkpoint] and train.steps (resuming with another value of these is the normal case).
std::vector<std::string> config_changes(const std::string& saved_toml, const std::string& current_toml);

struct SavedCheckpoint {
  std::string path;                 // <dir>/step_<N>.h5
  std::vector<std::string> pruned;  // older checkpoints deleted (checkpoint.keep), on rank 0
};

// Writes `dir`/step_<N>.h5: every rank writes its rows into step_<N>.h5.partial, the file is flushed and
// closed, rank 0 renames it and rewrites `dir`/latest atomically, then deletes all but the newest `keep`
// (keep > 0). Collective over t.world; an error is thrown on every rank.
// Test hook: ORTHOSHARD_CHECKPOINT_FAIL=before_rename|before_latest stops the save there (an injected
// crash), leaving what a crash at that moment would leave.
SavedCheckpoint save_checkpoint(CheckpointTarget& t, std::int64_t step, std::int64_t tokens_seen,
                                const std::string& dir, std::int64_t keep, const H5ParallelOptions& io = {});

// Reads `path` into t: this rank's rows of every parameter and state at the current layout. The file's
// tensors are checked against this configuration first (a changed shape is refused naming the tensor: then
// nothing is changed) and every checksum is verified. Parameters are read in place, so after a failed
// verification they are unspecified (load another checkpoint or stop); optimizer state and the data position
// change only once everything verified. Collective; errors thrown on every rank.
CheckpointInfo load_checkpoint(CheckpointTarget& t, const std::string& path, const H5ParallelOptions& io = {});

// Drives checkpoints from the training loop (launch/trainer/train.cpp): resume at the start, save after steps.
class Checkpointer {
 public:
  Checkpointer(CheckpointTarget target, bool talk) : t_(target), talk_(talk) {}

  // Applies checkpoint.resume: "none" starts fresh; a path loads that file; "auto" loads the newest complete
  // checkpoint in checkpoint.dir that passes verification (warning about each newer one that does not;
  // none at all: starts fresh with a message). Returns the first step to run.
  std::int64_t resume();
  // After `steps_done` steps: saves when checkpoint.every > 0 and steps_done is a multiple of it or the
  // last step of the run, or when `force` (a stop signal). A step whose update was skipped (`updated` false:
  // a non-finite loss under train.nan_policy = skip) is never saved, so the newest checkpoints stay ones a
  // finite step wrote and checkpoint.keep never rotates the last good one out. Returns the path written, or "".
  std::string after_step(std::int64_t steps_done, bool updated = true, bool force = false);
  // Whether after_step(steps_done) saves.
  bool due(std::int64_t steps_done) const;

 private:
  // Takes checkpoint.dir's lock on rank 0 when this run writes there or resumes from it (a second run in the
  // same directory is refused), and refuses resume = none into a directory that holds checkpoints unless
  // checkpoint.overwrite. Collective.
  void claim_directory();

  CheckpointTarget t_;
  bool talk_;
  std::unique_ptr<DirLock> lock_;  // rank 0, while this run uses checkpoint.dir
  std::int64_t resumed_step_ = 0, resumed_tokens_ = 0;
};

}  // namespace orthoshard
