// `orthoshard ckpt inspect|diff|export`: reading checkpoints (launch/trainer/checkpoint.hpp) in one process,
// without MPI: the tree with shapes, dtypes, bytes and per-tensor statistics, checksum verification,
// per-tensor differences of two checkpoints, and the weights in the formats of the model's family (GPT-2: an
// llm.c model file or safetensors).
#pragma once

#include "models/family.hpp"

#include <map>
#include <memory>
#include <string>

namespace orthoshard {

// The model a checkpoint holds and every one of its weights (host f32, global shapes), checksums verified.
std::unique_ptr<Model> read_checkpoint_model(const std::string& path, std::map<std::string, Tensor>& weights);

struct CkptInspectOptions {
  std::string file;
  bool config = true;  // print the resolved TOML configuration
};
// Prints the checkpoint; returns 0 when it is an orthoshard checkpoint whose every dataset reads and
// matches its checksum, 1 otherwise (what failed is printed). A missing file is a UsageError.
int run_ckpt_inspect(const CkptInspectOptions& opt);

struct CkptDiffOptions {
  std::string a, b;
  double tolerance = -1;  // >= 0: exit 1 when a tensor's relative difference exceeds it (or shapes differ)
};
// Per dataset present in both: max |a − b| and ‖a − b‖₂ / ‖b‖₂; datasets in only one file are listed.
int run_ckpt_diff(const CkptDiffOptions& opt);

struct CkptExportOptions {
  std::string file;
  std::string format = "llmc";  // one of the model family's export formats (GPT-2: llmc | safetensors)
  std::string out;
};
// Writes the checkpoint's /model weights (checksums verified first) in one of the formats of the model's family
// (GPT-2: an llm.c fp32 model file, version 3, or safetensors: F32, the runtime's parameter names, in order).
int run_ckpt_export(const CkptExportOptions& opt);

}  // namespace orthoshard
