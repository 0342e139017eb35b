// Rank-aware logging: info/warn print on rank 0 only; *_all print on every rank with a "[rank r/N]" prefix.
#pragma once

#include <fmt/format.h>

#include <string>

namespace orthoshard::log {

enum class Level { Debug = 0, Info = 1, Warn = 2, Error = 3, Quiet = 4 };

// Called once MPI is up; before that every process counts as rank 0 of 1.
void set_rank(int rank, int size);
int rank();
int size();
// Threshold from ORTHOSHARD_LOG (debug|info|warn|error|quiet), default info.
void set_level(Level level);
Level level();

void write(Level level, bool all_ranks, const std::string& msg);

template <typename... A> void debug(fmt::format_string<A...> f, A&&... a) {
  if (level() <= Level::Debug) write(Level::Debug, false, fmt::format(f, std::forward<A>(a)...));
}
template <typename... A> void info(fmt::format_string<A...> f, A&&... a) {
  if (level() <= Level::Info) write(Level::Info, false, fmt::format(f, std::forward<A>(a)...));
}
template <typename... A> void warn(fmt::format_string<A...> f, A&&... a) {
  if (level() <= Level::Warn) write(Level::Warn, false, fmt::format(f, std::forward<A>(a)...));
}
template <typename... A> void info_all(fmt::format_string<A...> f, A&&... a) {
  if (level() <= Level::Info) write(Level::Info, true, fmt::format(f, std::forward<A>(a)...));
}
template <typename... A> void error_all(fmt::format_string<A...> f, A&&... a) {
  write(Level::Error, true, fmt::format(f, std::forward<A>(a)...));
}

}  // namespace orthoshard::log
