#include "runtime/checkpoint/dir_lock.hpp"

#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>

namespace fs = std::filesystem;

namespace orthoshard {
namespace {

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

std::string new_run_id() {
  std::random_device rd;
  return fmt::format("{:08x}{:08x}", rd(), rd());
}

std::map<std::string, std::string> read_fields(const std::string& path) {
  std::map<std::string, std::string> kv;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (const auto sp = line.find(' '); sp != std::string::npos) kv[line.substr(0, sp)] = line.substr(sp + 1);
  return kv;
}

// Locks this process holds, released by abort_job too (no destructors run there).
std::mutex g_mu;
std::map<std::string, std::string> g_held;  // path -> run id

void release(const std::string& path, const std::string& run_id) {
  if (read_fields(path)["run"] == run_id) ::unlink(path.c_str());
}

}  // namespace

void release_dir_locks_at_exit() {
  std::lock_guard<std::mutex> lk(g_mu);
  for (const auto& [path, id] : g_held) release(path, id);
  g_held.clear();
}

DirLock::DirLock(const std::string& dir) : path_((fs::path(dir) / ".lock").string()), run_id_(new_run_id()) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw UsageError(fmt::format("checkpoint.dir '{}': cannot create: {}", dir, ec.message()));
  const std::string host = host_name();
  for (int attempt = 0; attempt < 2; ++attempt) {
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd >= 0) {
      const std::time_t now = std::time(nullptr);
      char when[32];
      std::tm tm{};
      gmtime_r(&now, &tm);
      std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
      const std::string text = fmt::format("host {}\npid {}\nrun {}\nstarted {}\n", host, ::getpid(), run_id_, when);
      const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
      const int err = errno;
      ::close(fd);
      if (!ok) {
        ::unlink(path_.c_str());
        throw Error(fmt::format("checkpoint.dir lock '{}': cannot write: {}", path_, std::strerror(err)));
      }
      std::lock_guard<std::mutex> lk(g_mu);
      g_held[path_] = run_id_;
      return;
    }
    if (errno != EEXIST)
      throw UsageError(fmt::format("checkpoint.dir lock '{}': cannot create: {}", path_, std::strerror(errno)));
    auto holder = read_fields(path_);
    const bool same_host = holder["host"] == host;
    const long pid = std::strtol(holder["pid"].c_str(), nullptr, 10);
    const bool gone = same_host && pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
    if (gone && attempt == 0) {
      log::warn("checkpoint.dir '{}': removing the stale lock of run {} (pid {} on {} is no longer running)", dir,
                holder["run"], pid, host);
      ::unlink(path_.c_str());
      continue;
    }
    throw UsageError(fmt::format(
        "checkpoint.dir '{}' is in use by another run (host {}, pid {}, run {}, started {}); use another "
        "checkpoint.dir, or delete '{}' if that run is gone",
        dir, holder["host"], holder["pid"], holder["run"], holder["started"], path_));
  }
  throw UsageError(fmt::format("checkpoint.dir lock '{}': taken by another run while replacing a stale one", path_));
}

DirLock::~DirLock() {
  std::lock_guard<std::mutex> lk(g_mu);
  release(path_, run_id_);
  g_held.erase(path_);
}

}  // namespace orthoshard
