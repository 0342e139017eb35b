// A checkpoint directory belongs to one run: `<dir>/.lock`, created atomically (O_CREAT | O_EXCL) by the run that
// writes there, holding its host, pid, run id and start time, and removed when the run ends (also when it ends
// through abort_job). A second run finds the lock and is refused with one line naming the holder. A lock whose
// holder is on this host and no longer running is stale: it is replaced, with a warning. A lock from another host
// cannot be checked from here: the message says to delete it if that run is gone.
#pragma once

#include <string>

namespace orthoshard {

class DirLock {
 public:
  // Takes the lock of `dir` (created if absent) or throws UsageError naming the holder.
  explicit DirLock(const std::string& dir);
  ~DirLock();  // releases it (when the file is still this run's)
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

  const std::string& path() const { return path_; }
  const std::string& run_id() const { return run_id_; }

 private:
  std::string path_, run_id_;
};

// Removes every lock this process holds (abort_job and the hang watchdog call it before ending the process).
void release_dir_locks_at_exit();

}  // namespace orthoshard
