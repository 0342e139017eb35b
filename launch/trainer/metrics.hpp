// Per-step training metrics as JSON Lines (train.metrics): one object per optimizer step, written by rank 0,
// numbers with round-trip precision so that runs can be compared exactly.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

namespace orthoshard {

// One line, without the newline:
//   {"step": 12, "loss": 3.2188758248682006, "lr": 0.0015, "grad_norm": 0.73, "tokens_per_s": 51234.5}
// step is an integer (counting from 1 in the trainer); every other value is printed with "%.17g" (a double
// reads back bit-exactly; a float converted to double does too); NaN and ±Inf are written as null.
// With a validation loss, the object ends with "val_loss": x.
std::string metrics_line(std::int64_t step, double loss, double lr, double grad_norm, double tokens_per_s,
                         std::optional<double> val_loss = std::nullopt);

// A JSONL metrics file: created (with its parent directories) on construction; every write() appends one line and
// flushes it, so a crashed run keeps every completed step.
class MetricsWriter {
 public:
  // resume_step = 0: a new file (an existing one is truncated). resume_step = S > 0 (a run resumed from the
  // checkpoint of step S): the file keeps its lines up to step S, drops the later ones (steps done after that
  // checkpoint, which the resumed run trains again) and appends after them, so every step is in it exactly once.
  // Lines that are not metrics objects are kept. Throws UsageError naming the path when the file or its
  // directory cannot be created.
  explicit MetricsWriter(const std::string& path, std::int64_t resume_step = 0);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  // Throws Error naming the path when the line cannot be written.
  void write(std::int64_t step, double loss, double lr, double grad_norm, double tokens_per_s,
             std::optional<double> val_loss = std::nullopt);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace orthoshard
