// CommWatchdog: an op that completes in time is forgotten quietly; one that does not, or a failing health
// check, ends the job (here: calls the test's handler) with a message naming the op and the timeout.
#include "runtime/comm/watchdog.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

using namespace orthoshard;
using namespace std::chrono_literals;

namespace {
struct Fatal {
  std::mutex mu;
  std::string message;
  std::atomic<int> calls{0};
  CommWatchdog::OnFatal handler() {
    return [this](const std::string& m) {
      std::lock_guard<std::mutex> lock(mu);
      message = m;
      ++calls;
    };
  }
  bool wait_for_call(std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (calls == 0 && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(5ms);
    return calls > 0;
  }
};
}  // namespace

TEST(CommWatchdog, CompletedOpsAreForgottenWithoutFiring) {
  Fatal f;
  std::atomic<bool> done{false};  // before the watchdog: its thread may read it until the watchdog is gone
  CommWatchdog w("nccl (rank 0 of 2)", 0.3, f.handler(), 10ms);
  w.watch("all_gather of 1.00 MiB", [&] { return done.load(); });
  const std::uint64_t init = w.watch("initialisation");
  EXPECT_EQ(w.in_flight(), 2u);
  std::this_thread::sleep_for(50ms);
  done = true;
  w.forget(init);
  const auto end = std::chrono::steady_clock::now() + 2s;
  while (w.in_flight() > 0 && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(w.in_flight(), 0u);
  std::this_thread::sleep_for(400ms);  // past the timeout: nothing is left to fire
  EXPECT_EQ(f.calls, 0);
  EXPECT_FALSE(w.fired());
}

TEST(CommWatchdog, AnOpPastTheTimeoutEndsTheJobOnceNamingIt) {
  Fatal f;
  const auto start = std::chrono::steady_clock::now();
  CommWatchdog w("nccl (rank 1 of 4)", 0.2, f.handler(), 10ms);
  w.watch("reduce_scatter of 48.00 MiB", [] { return false; });
  w.watch("all_reduce of 0.00 MiB", [] { return false; });
  ASSERT_TRUE(f.wait_for_call(5s));
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(waited, 0.2);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(f.calls, 1) << "the handler must run once";
  EXPECT_TRUE(w.fired());
  std::lock_guard<std::mutex> lock(f.mu);
  EXPECT_NE(f.message.find("nccl (rank 1 of 4)"), std::string::npos) << f.message;
  EXPECT_NE(f.message.find("reduce_scatter of 48.00 MiB"), std::string::npos) << f.message;
  EXPECT_NE(f.message.find("0.2 s (runtime.comm_timeout_s)"), std::string::npos) << f.message;
}

TEST(CommWatchdog, AFailingHealthCheckEndsTheJobBeforeAnyTimeout) {
  Fatal f;
  std::atomic<bool> broken{false};
  CommWatchdog w("nccl (rank 0 of 2)", 0, f.handler(), 10ms);  // no timeout at all
  w.watch("all_gather of 2.00 MiB", [] { return false; });
  w.set_health_check([&]() -> std::string { return broken ? "nccl (rank 0): asynchronous error remote process exited" : ""; });
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(f.calls, 0) << "timeout 0 never fires on time";
  broken = true;
  ASSERT_TRUE(f.wait_for_call(5s));
  std::lock_guard<std::mutex> lock(f.mu);
  EXPECT_EQ(f.message, "nccl (rank 0): asynchronous error remote process exited");
}
