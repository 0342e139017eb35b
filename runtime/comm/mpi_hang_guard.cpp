#include "runtime/comm/mpi_hang_guard.hpp"

#include "runtime/checkpoint/dir_lock.hpp"
#include "runtime/comm/mpi_communicator.hpp"
#include "runtime/comm/watchdog.hpp"
#include "runtime/core/log.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace orthoshard {
namespace {

constexpr int kRollCallTag = 7;
std::atomic<std::int64_t> g_step{0};
std::atomic<CommWatchdog*> g_watchdog{nullptr};

std::string size_str(std::size_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  if (bytes < (std::size_t{1} << 20)) return fmt::format("{:.1f} KiB", static_cast<double>(bytes) / 1024);
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20));
}

}  // namespace

struct MpiHangGuard::State {
  MPI_Comm roll = MPI_COMM_NULL;  // the roll call's own communicator (a duplicate of the job's)
  bool threads = false;           // MPI_THREAD_MULTIPLE: the watchdog thread may call MPI
  int rank = 0, size = 1;
  double timeout_s = 0;
  std::vector<std::int64_t> out;  // what this rank sends in the roll call: {rank, step}
  std::vector<MPI_Request> sends;
  std::set<int> heard;
  bool called = false;  // this rank's roll call went out
  std::unique_ptr<CommWatchdog> watchdog;

  // Sends this rank's {rank, step} to every other rank, once.
  void call() {
    if (called || !threads) return;
    called = true;
    out = {rank, g_step.load()};
    sends.resize(static_cast<std::size_t>(size));
    for (int r = 0; r < size; ++r)
      sends[static_cast<std::size_t>(r)] = MPI_REQUEST_NULL;
    for (int r = 0; r < size; ++r)
      if (r != rank) MPI_Isend(out.data(), 2, MPI_INT64_T, r, kRollCallTag, roll, &sends[static_cast<std::size_t>(r)]);
  }
  // Receives what has arrived; true when anything had.
  bool listen() {
    if (!threads) return false;
    bool any = false;
    for (;;) {
      int flag = 0;
      MPI_Status st;
      MPI_Iprobe(MPI_ANY_SOURCE, kRollCallTag, roll, &flag, &st);
      if (!flag) return any;
      std::int64_t in[2] = {0, 0};
      MPI_Recv(in, 2, MPI_INT64_T, st.MPI_SOURCE, kRollCallTag, roll, MPI_STATUS_IGNORE);
      heard.insert(st.MPI_SOURCE);
      any = true;
    }
  }

  // From the watchdog thread: a call past the timeout here (`message`), or another rank's roll call.
  [[noreturn]] void end_job(std::string message) {
    if (const std::string_view tail = "; aborting the job"; message.ends_with(tail)) message.resize(message.size() - tail.size());
    call();
    // Listen for the others' roll calls: the ranks still waiting in a collective time out within about the
    // same time, or answer at once when they see ours.
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(std::clamp(timeout_s, 1.0, 5.0));
    while (std::chrono::steady_clock::now() < until && static_cast<int>(heard.size()) < size - 1) {
      listen();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::string missing;
    for (int r = 0; r < size; ++r)
      if (r != rank && !heard.count(r)) missing += fmt::format("{}{}", missing.empty() ? "" : ", ", r);
    const bool printer = heard.empty() || *heard.begin() > rank;  // the lowest rank still running
    if (printer) {
      std::string who = !threads ? "not known (MPI without MPI_THREAD_MULTIPLE)"
                        : missing.empty() ? "none (every rank is waiting: ranks disagree on the sequence of collectives)"
                                          : missing;
      log::error_all("{}; ranks not heard from: {}; ending the job", message, who);
    }
    std::fflush(stdout);
    std::fflush(stderr);
    release_dir_locks_at_exit();
    if (!printer) std::this_thread::sleep_for(std::chrono::seconds(2));  // the printing rank goes first
    std::_Exit(3);
  }
};

MpiHangGuard::MpiHangGuard(const Communicator& job, double timeout_s) {
  if (timeout_s <= 0) return;
  s_ = std::make_unique<State>();
  s_->timeout_s = timeout_s;
  s_->rank = job.rank();
  s_->size = job.size();
  if (const auto* mpi = dynamic_cast<const MpiCommunicator*>(&job)) {
    int provided = 0;
    MPI_Query_thread(&provided);
    s_->threads = provided == MPI_THREAD_MULTIPLE;
    MPI_Comm_dup(mpi->native(), &s_->roll);
  }
  State* st = s_.get();
  s_->watchdog = std::make_unique<CommWatchdog>(
      fmt::format("rank {}", s_->rank), timeout_s, [st](const std::string& m) { st->end_job(m); });
  // Another rank's roll call: it timed out waiting, so the job is ending; answer and end too.
  s_->watchdog->set_health_check([st]() -> std::string {
    if (!st->listen()) return "";
    const std::string here = st->watchdog->oldest();
    return fmt::format("rank {}: {}; rank {} reported a collective stuck past runtime.comm_timeout_s = {:g} s",
                       st->rank, here.empty() ? "in no MPI call" : here, *st->heard.begin(), st->timeout_s);
  });
  g_watchdog.store(s_->watchdog.get());
}

MpiHangGuard::~MpiHangGuard() {
  if (!s_) return;
  g_watchdog.store(nullptr);
  s_->watchdog.reset();  // joins the thread
  for (auto& r : s_->sends)
    if (r != MPI_REQUEST_NULL) {
      MPI_Cancel(&r);
      MPI_Request_free(&r);
    }
  if (s_->roll != MPI_COMM_NULL) MPI_Comm_free(&s_->roll);
}

void MpiHangGuard::set_step(std::int64_t step) { g_step.store(step); }

MpiHangGuard::Watch::Watch(const char* call, std::size_t bytes) {
  CommWatchdog* w = g_watchdog.load(std::memory_order_acquire);
  if (!w) return;
  const std::int64_t step = g_step.load();
  id_ = w->watch(step > 0 ? fmt::format("{} of {} at step {}", call, size_str(bytes), step)
                          : fmt::format("{} of {} (outside the training steps)", call, size_str(bytes)));
}

MpiHangGuard::Watch::~Watch() {
  if (id_ == 0) return;
  if (CommWatchdog* w = g_watchdog.load(std::memory_order_acquire)) w->forget(id_);
}

}  // namespace orthoshard
