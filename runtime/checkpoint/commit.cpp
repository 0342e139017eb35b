// Checkpoint file names, atomic rename and `latest`, listing and pruning.
#include "runtime/checkpoint/commit.hpp"

#include "runtime/core/error.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace orthoshard {

std::string checkpoint_file_name(std::int64_t step) { return fmt::format("step_{:08d}.h5", step); }

std::optional<std::int64_t> checkpoint_step_of(const std::string& name) {
  constexpr std::string_view prefix = "step_", suffix = ".h5";
  if (name.size() <= prefix.size() + suffix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return std::nullopt;
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.size() < 8 || digits.size() > 18 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::stoll(digits);
}

std::vector<CheckpointEntry> list_checkpoints(const std::string& dir) {
  std::vector<CheckpointEntry> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_regular_file(ec)) continue;
    if (auto step = checkpoint_step_of(e.path().filename().string())) out.push_back({*step, e.path().string()});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step > b.step; });
  return out;
}

std::string read_latest(const std::string& dir) {
  std::ifstream in(fs::path(dir) / "latest");
  std::string name;
  if (in) std::getline(in, name);
  return name;
}

std::string resolve_checkpoint_path(const std::string& path) {
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_directory(p, ec)) {
    const std::string name = read_latest(path);
    if (name.empty())
      throw UsageError("'" + path + "': a directory without a 'latest' file (no complete checkpoint written there)");
    return (p / name).string();
  }
  if (p.filename() == "latest" && fs::is_regular_file(p, ec)) {
    const std::string name = read_latest(p.parent_path().empty() ? "." : p.parent_path().string());
    if (name.empty()) throw UsageError("'" + path + "': empty (it should name a checkpoint file)");
    return (p.parent_path() / name).string();
  }
  return path;
}

void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) fail("'{}': cannot open to sync: {}", path, std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Some filesystems do not sync directories (EINVAL); the rename is still atomic there.
  if (rc != 0 && !(directory && (err == EINVAL || err == ENOTSUP)))
    fail("'{}': fsync failed: {}", path, std::strerror(err));
}

void commit_rename(const std::string& partial, const std::string& final_path) {
  std::error_code ec;
  fs::rename(partial, final_path, ec);
  if (ec) fail("'{}': cannot rename to '{}': {}", partial, final_path, ec.message());
  fsync_path(fs::path(final_path).parent_path().string().empty() ? "." : fs::path(final_path).parent_path().string(),
             true);
}

void write_latest(const std::string& dir, const std::string& file_name) {
  const fs::path tmp = fs::path(dir) / "latest.tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << file_name << '\n';
    out.flush();
    if (!out) fail("'{}': cannot write", tmp.string());
  }
  fsync_path(tmp.string());
  std::error_code ec;
  fs::rename(tmp, fs::path(dir) / "latest", ec);
  if (ec) fail("'{}': cannot rename to 'latest': {}", tmp.string(), ec.message());
  fsync_path(dir, true);
}

std::vector<std::string> prune_checkpoints(const std::string& dir, std::int64_t keep) {
  std::vector<std::string> removed;
  if (keep <= 0) return removed;
  const auto all = list_checkpoints(dir);
  for (std::size_t i = static_cast<std::size_t>(keep); i < all.size(); ++i) {
    std::error_code ec;
    if (fs::remove(all[i].path, ec)) removed.push_back(all[i].path);
    else if (ec) fail("'{}': cannot delete: {}", all[i].path, ec.message());
  }
  return removed;
}

std::vector<std::string> remove_stale_partials(const std::string& dir, std::int64_t up_to_step) {
  std::vector<std::string> removed;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return removed;
  constexpr std::string_view suffix = ".partial";
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const auto step = checkpoint_step_of(name.substr(0, name.size() - suffix.size()));
    std::error_code rm;
    if (step && *step <= up_to_step && fs::remove(e.path(), rm)) removed.push_back(e.path().string());
  }
  return removed;
}

}  // namespace orthoshard
