// CommWatchdog: a thread that ends the job when a communication op does not complete within a timeout, or when
// a health check (NCCL's asynchronous error) reports a failure, so that a dead or stuck rank never leaves the
// others waiting forever. Needs no CUDA: what "done" means is a predicate the backend supplies.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace orthoshard {

class CommWatchdog {
 public:
  using Done = std::function<bool()>;            // polled from the watchdog thread; true once the op completed
  using Health = std::function<std::string()>;   // polled; a non-empty result is a fatal error message
  using OnFatal = std::function<void(const std::string&)>;  // called once, from the watchdog thread

  // timeout_s <= 0 disables the timeout (health checks still run). The default on_fatal prints the message on
  // this rank's stderr and ends the process with exit code 3 (mpirun then ends the other ranks).
  explicit CommWatchdog(std::string owner, double timeout_s, OnFatal on_fatal = {},
                        std::chrono::milliseconds poll = std::chrono::milliseconds(50));
  ~CommWatchdog();
  CommWatchdog(const CommWatchdog&) = delete;
  CommWatchdog& operator=(const CommWatchdog&) = delete;

  void set_health_check(Health health);
  // Starts watching an op ("all_gather of 12.0 MiB"); `done` may be empty for an op the caller ends with
  // forget() (a blocking call such as communicator initialisation).
  std::uint64_t watch(std::string what, Done done = {});
  void forget(std::uint64_t id);
  std::size_t in_flight() const;
  // The op waiting longest and for how long: "MPI_Allreduce of 8 B at step 7 (waiting 2.1 s)"; "" when none.
  std::string oldest() const;
  double timeout_s() const { return timeout_s_; }
  bool fired() const;

 private:
  struct Op {
    std::string what;
    Done done;
    std::chrono::steady_clock::time_point start;
  };
  void loop();
  void fire(const std::string& message);

  std::string owner_;
  double timeout_s_;
  OnFatal on_fatal_;
  std::chrono::milliseconds poll_;
  Health health_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::uint64_t, Op> ops_;
  std::uint64_t next_id_ = 1;
  bool stop_ = false, fired_ = false;
  std::thread thread_;
};

}  // namespace orthoshard
