// Rank-aware logger implementation: whole lines written with one call so ranks do not interleave mid-line.
#include "runtime/core/log.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace orthoshard::log {
namespace {
struct State {
  int rank = 0;
  int size = 1;
  Level level = Level::Info;
  std::mutex mu;
};
State& state() {
  static State s;
  static bool configured = [] {
    if (const char* env = std::getenv("ORTHOSHARD_LOG")) {
      if (!std::strcmp(env, "debug")) s.level = Level::Debug;
      else if (!std::strcmp(env, "warn")) s.level = Level::Warn;
      else if (!std::strcmp(env, "error")) s.level = Level::Error;
      else if (!std::strcmp(env, "quiet")) s.level = Level::Quiet;
    }
    return true;
  }();
  (void)configured;
  return s;
}
}  // namespace

void set_rank(int r, int n) {
  state().rank = r;
  state().size = n;
}
int rank() { return state().rank; }
int size() { return state().size; }
void set_level(Level l) { state().level = l; }
Level level() { return state().level; }

void write(Level lvl, bool all_ranks, const std::string& msg) {
  State& s = state();
  if (!all_ranks && s.rank != 0) return;
  std::string line;
  if (all_ranks && s.size > 1) line = fmt::format("[rank {}/{}] ", s.rank, s.size);
  if (lvl == Level::Warn) line += "warning: ";
  if (lvl == Level::Error) line += "error: ";
  line += msg;
  line += '\n';
  std::lock_guard<std::mutex> lock(s.mu);
  FILE* out = lvl >= Level::Warn ? stderr : stdout;
  std::fwrite(line.data(), 1, line.size(), out);
  std::fflush(out);
}

}  // namespace orthoshard::log
