// Checkpoint files on disk: names (`step_<N>.h5`, N zero-padded to 8 digits), the atomic commit
// (`.partial` written, flushed and renamed; `latest` replaced through a temporary file), listing the
// complete checkpoints of a directory, and pruning. Plain filesystem operations: the caller decides
// which rank performs them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace orthoshard {

std::string checkpoint_file_name(std::int64_t step);  // "step_00000100.h5"
// The step of a complete checkpoint's file name ("step_00000100.h5" -> 100); nullopt for anything else
// (".partial" files, `latest`, other names).
std::optional<std::int64_t> checkpoint_step_of(const std::string& file_name);

struct CheckpointEntry {
  std::int64_t step = 0;
  std::string path;
};
// Complete checkpoints in `dir`, newest (highest step) first; an absent directory has none.
std::vector<CheckpointEntry> list_checkpoints(const std::string& dir);
// What `dir/latest` names ("" when absent).
std::string read_latest(const std::string& dir);
// Where a user's checkpoint argument points: a checkpoint directory means the checkpoint its `latest` names,
// a path to a `latest` file the checkpoint it names, anything else itself. A directory without `latest` is a
// UsageError naming it.
std::string resolve_checkpoint_path(const std::string& path);

// Forces a file's (or directory's) data to stable storage; errors name the path.
void fsync_path(const std::string& path, bool directory = false);
// Renames `partial` to `final` (both in the same directory) and syncs the directory.
void commit_rename(const std::string& partial, const std::string& final_path);
// Writes `dir/latest` = file_name (+ newline) atomically: temporary file, fsync, rename, directory fsync.
void write_latest(const std::string& dir, const std::string& file_name);
// Deletes complete checkpoints beyond the newest `keep` (keep > 0); returns the deleted paths.
std::vector<std::string> prune_checkpoints(const std::string& dir, std::int64_t keep);
// Deletes `step_<N>.h5.partial` files with N <= up_to_step (left by crashed saves); returns their paths.
std::vector<std::string> remove_stale_partials(const std::string& dir, std::int64_t up_to_step);

}  // namespace orthoshard
