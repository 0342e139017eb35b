// JSONL metrics writer (format in metrics.hpp).
#include "launch/trainer/metrics.hpp"

#include "runtime/core/error.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <system_error>

namespace orthoshard {

namespace {

std::string json_number(double x) { return std::isfinite(x) ? fmt::format("{:.17g}", x) : std::string("null"); }

}  // namespace

std::string metrics_line(std::int64_t step, double loss, double lr, double grad_norm, double tokens_per_s,
                         std::optional<double> val_loss) {
  return fmt::format(R"({{"step": {}, "loss": {}, "lr": {}, "grad_norm": {}, "tokens_per_s": {}{}}})", step,
                     json_number(loss), json_number(lr), json_number(grad_norm), json_number(tokens_per_s),
                     val_loss ? fmt::format(R"(, "val_loss": {})", json_number(*val_loss)) : std::string());
}

MetricsWriter::MetricsWriter(const std::string& path, std::int64_t resume_step) : path_(path) {
  if (path.empty()) throw UsageError("train.metrics: empty path");
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec)
      throw UsageError(fmt::format("train.metrics: cannot create directory '{}' for '{}': {}", parent.string(), path,
                                   ec.message()));
  }
  if (resume_step > 0 && std::filesystem::exists(path)) {
    // Keep the lines up to the resume step: rewritten through a temporary file and a rename, so that a crash here
    // loses nothing.
    std::ifstream in(path);
    std::string kept, line;
    static const std::regex step_field(R"re("step":\s*(-?[0-9]+))re");
    while (std::getline(in, line)) {
      std::smatch m;
      if (std::regex_search(line, m, step_field) && std::stoll(m[1].str()) > resume_step) continue;
      kept += line + "\n";
    }
    const std::string tmp = path + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << kept;
      if (!out.flush())
        throw UsageError(fmt::format("train.metrics: cannot write '{}': {}", tmp, std::strerror(errno)));
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) throw UsageError(fmt::format("train.metrics: cannot replace '{}': {}", path, ec.message()));
  }
  file_ = std::fopen(path.c_str(), resume_step > 0 ? "a" : "w");
  if (file_ == nullptr)
    throw UsageError(fmt::format("train.metrics: cannot write '{}': {}", path, std::strerror(errno)));
}

MetricsWriter::~MetricsWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

void MetricsWriter::write(std::int64_t step, double loss, double lr, double grad_norm, double tokens_per_s,
                          std::optional<double> val_loss) {
  const std::string line = metrics_line(step, loss, lr, grad_norm, tokens_per_s, val_loss) + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0)
    fail("train.metrics: writing '{}' failed: {}", path_, std::strerror(errno));
}

}  // namespace orthoshard
