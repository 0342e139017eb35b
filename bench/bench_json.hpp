// Writes a benchmark's results as pretty-printed JSON (the --json option of the bench subcommands).
#pragma once

#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"

#include <nlohmann/json.hpp>

#include <fstream>
#include <string>

namespace orthoshard {

// No-op for an empty path; a path that cannot be written is an error naming it.
inline void write_bench_json(const std::string& path, const nlohmann::json& doc) {
  if (path.empty()) return;
  std::ofstream f(path);
  OS_CHECK(f.good(), "cannot write JSON to '{}'", path);
  f << doc.dump(2) << "\n";
  OS_CHECK(f.good(), "cannot write JSON to '{}'", path);
  log::info("# JSON written to {}", path);
}

}  // namespace orthoshard
