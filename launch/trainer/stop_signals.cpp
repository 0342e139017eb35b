#include "launch/trainer/stop_signals.hpp"

#include <csignal>
#include <iterator>
#include <cstring>
#include <unistd.h>

namespace orthoshard {
namespace {

constexpr int kSignals[] = {SIGTERM, SIGINT, SIGUSR1, SIGUSR2};
volatile std::sig_atomic_t g_pending = 0;
struct sigaction g_previous[sizeof kSignals / sizeof kSignals[0]];

void write_err(const char* s) { [[maybe_unused]] auto n = ::write(STDERR_FILENO, s, std::strlen(s)); }

// Async-signal-safe: records the first signal; a second one ends the process now.
void on_signal(int sig) {
  if (g_pending != 0) {
    write_err("orthoshard: second stop signal: exiting now, without a checkpoint\n");
    ::_exit(128 + sig);
  }
  g_pending = sig;
}

}  // namespace

StopSignals::StopSignals() {
  g_pending = 0;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // blocking calls (MPI, file I/O) go on; the loop looks at the next step boundary
  for (std::size_t i = 0; i < std::size(kSignals); ++i) sigaction(kSignals[i], &sa, &g_previous[i]);
}

StopSignals::~StopSignals() {
  for (std::size_t i = 0; i < std::size(kSignals); ++i) sigaction(kSignals[i], &g_previous[i], nullptr);
}

int StopSignals::pending() { return g_pending; }

const char* StopSignals::name(int sig) {
  switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    default: return "a signal";
  }
}

}  // namespace orthoshard
