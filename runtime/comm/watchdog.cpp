// CommWatchdog: polls the ops in flight every `poll` milliseconds; the first op past the timeout, or the first
// health-check failure, ends the job through on_fatal.
#include "runtime/comm/watchdog.hpp"

#include "runtime/core/log.hpp"

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace orthoshard {

CommWatchdog::CommWatchdog(std::string owner, double timeout_s, OnFatal on_fatal, std::chrono::milliseconds poll)
    : owner_(std::move(owner)), timeout_s_(timeout_s), on_fatal_(std::move(on_fatal)), poll_(poll) {
  if (!on_fatal_) {
    on_fatal_ = [](const std::string& message) {
      log::error_all("{}", message);
      std::fflush(stdout);
      std::fflush(stderr);
      std::_Exit(3);
    };
  }
  thread_ = std::thread([this] { loop(); });
}

CommWatchdog::~CommWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void CommWatchdog::set_health_check(Health health) {
  std::lock_guard<std::mutex> lock(mu_);
  health_ = std::move(health);
}

std::uint64_t CommWatchdog::watch(std::string what, Done done) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::uint64_t id = next_id_++;
  ops_.emplace(id, Op{std::move(what), std::move(done), std::chrono::steady_clock::now()});
  return id;
}

void CommWatchdog::forget(std::uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  ops_.erase(id);
}

std::size_t CommWatchdog::in_flight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ops_.size();
}

std::string CommWatchdog::oldest() const {
  std::lock_guard<std::mutex> lock(mu_);
  const Op* first = nullptr;
  for (const auto& [id, op] : ops_)
    if (!first || op.start < first->start) first = &op;
  if (!first) return "";
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - first->start).count();
  return fmt::format("{} (waiting {:.1f} s)", first->what, waited);
}

bool CommWatchdog::fired() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fired_;
}

void CommWatchdog::fire(const std::string& message) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (fired_) return;
    fired_ = true;
  }
  on_fatal_(message);
}

void CommWatchdog::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, poll_, [this] { return stop_; });
    if (stop_ || fired_) continue;
    // Poll outside the lock: done() and health() may call into CUDA/NCCL and take a while.
    std::vector<std::pair<std::uint64_t, Op>> snapshot(ops_.begin(), ops_.end());
    Health health = health_;
    lock.unlock();
    std::string fatal;
    std::vector<std::uint64_t> finished;
    if (health) fatal = health();
    const auto now = std::chrono::steady_clock::now();
    for (auto& [id, op] : snapshot) {
      if (!fatal.empty()) break;
      if (op.done && op.done()) {
        finished.push_back(id);
        continue;
      }
      const double waited = std::chrono::duration<double>(now - op.start).count();
      if (timeout_s_ > 0 && waited > timeout_s_)
        fatal = fmt::format(
            "{}: {} did not complete within {:g} s (runtime.comm_timeout_s): another rank died, hangs or skipped "
            "this collective; aborting the job",
            owner_, op.what, timeout_s_);
    }
    lock.lock();
    for (std::uint64_t id : finished) ops_.erase(id);
    if (!fatal.empty() && !fired_) {
      lock.unlock();
      fire(fatal);
      lock.lock();
    }
  }
}

}  // namespace orthoshard
