// Hang detection on the MPI path (the CPU backend, and the MPI side of every backend). While a guard is installed,
// every blocking MPI call of an MpiCommunicator, and every wait on a non-blocking one, is watched by a
// CommWatchdog. One stuck longer than the timeout (runtime.comm_timeout_s) ends the job: the ranks still running
// hold a roll call over a private communicator (each sends its rank to every other and listens for a few
// seconds), and the lowest of them prints one line naming the call, the training step and the ranks not heard
// from (stopped, dead, or busy outside any collective); then each ends its process (exit 3) and mpirun ends the rest.
// The roll call needs MPI_THREAD_MULTIPLE (the watchdog thread calls MPI); without it the line names the call
// and step only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace orthoshard {

class CommWatchdog;
class Communicator;

class MpiHangGuard {
 public:
  // Collective over `job` (the ranks of the run; an MpiCommunicator, else there is no roll call).
  // timeout_s <= 0: no guard.
  MpiHangGuard(const Communicator& job, double timeout_s);
  ~MpiHangGuard();
  MpiHangGuard(const MpiHangGuard&) = delete;
  MpiHangGuard& operator=(const MpiHangGuard&) = delete;

  // The training step the job is in (1-based), for the message; 0 = outside the training loop.
  static void set_step(std::int64_t step);

  // Watches one MPI call for its lifetime (nothing when no guard is installed).
  class Watch {
   public:
    Watch(const char* call, std::size_t bytes);
    ~Watch();
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;

   private:
    std::uint64_t id_ = 0;
  };

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace orthoshard
