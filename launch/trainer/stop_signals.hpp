// Preemption: SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 ask a training run to stop. The loop polls at every step
// boundary, the ranks agree (any rank's signal stops all of them at the same step), a checkpoint is written and
// the process exits with kExitStopped. A second signal ends the process at once (exit 128 + signal).
//
// Who sends what: Slurm sends SIGTERM to every rank (srun) or the signal chosen with sbatch --signal; Open MPI's
// mpirun forwards SIGUSR1 and SIGUSR2 to the ranks (SIGTERM and SIGINT to mpirun kill the ranks shortly after:
// send SIGUSR1 to mpirun, or the signal to the ranks themselves).
#pragma once

namespace orthoshard {

// The exit status of a run stopped by a signal after writing its checkpoint (EX_TEMPFAIL: try again; resume
// with checkpoint.resume = auto). launch/slurm/train.sbatch requeues the job on it.
inline constexpr int kExitStopped = 75;

// Installs the handlers for its lifetime (the previous ones come back after).
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // The first signal received since construction (its number), or 0.
  static int pending();
  // "SIGTERM", "SIGUSR1", ...
  static const char* name(int sig);
};

}  // namespace orthoshard
