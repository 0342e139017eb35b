// Per-step training metrics as JSON Lines (train.metrics): one object per optimizer step, written by rank 0,
// numbers with round-trip precision so that runs can be compared exactly.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace orthoshard {

// One line, without the newline:
//   {"step": 12, "loss": 3.2188758248682006, "lr": 0.0015, "grad_norm": 0.73, "tokens_per_s": 51234.5}
// step is an integer (counting from 1 in the trainer); every other value is printed with "%.17g" (a double
// reads back bit-exactly; a float converted to double does too); NaN and ±Inf are written as null.
std::string metrics_line(std::int64_t step, double loss, double lr, double grad_norm, double tokens_per_s);

// A JSONL metrics file: created (with its parent directories) and truncated on construction; every
// write() appends one line and flushes it, so a crashed run keeps every completed step.
class MetricsWriter {
 public:
  // Throws UsageError naming the path when the file or its directory cannot be created.
  explicit MetricsWriter(const std::string& path);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  // Throws Error naming the path when the line cannot be written.
  void write(std::int64_t step, double loss, double lr, double grad_norm, double tokens_per_s);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace orthoshard
