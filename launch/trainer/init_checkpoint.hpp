// model.init_from naming an orthoshard checkpoint: fine-tuning from it. The model is the one the checkpoint's
// /model group describes (its family and shape; the [model] shape keys are not used), its initial values are the
// checkpoint's weights, each rank reading just its rows, checksums verified over the ranks; the optimizer state is
// fresh and training starts at step 0 (checkpoint.resume continues a run instead).
#pragma once

#include "models/family.hpp"
#include "runtime/checkpoint/h5_parallel.hpp"
#include "runtime/comm/communicator.hpp"

#include <cstdint>
#include <memory>
#include <string>

namespace orthoshard {

class CheckpointInit {
 public:
  // Whether `path` is an HDF5 file (else it is a file of the model family's own format).
  static bool is_checkpoint(const std::string& path);
  // Opens the checkpoint on every rank of `world` (collective). Errors name the file.
  CheckpointInit(Communicator& world, const std::string& path);

  const Model& model() const { return *model_; }
  std::unique_ptr<Model> take_model() { return std::move(model_); }
  // Rows [begin, end) of parameter `name`, f32, into `out`; `count` = this rank's copy is the one verified (one
  // replica of the shards). Collective: every rank calls it for every parameter in the same order.
  void read_rows(const std::string& name, std::int64_t begin, std::int64_t end, bool count, float* out);
  // Verifies the checksums of everything read and closes the file (collective); throws naming the tensors.
  void finish();

 private:
  std::string path_;
  std::unique_ptr<H5ParallelFile> file_;
  std::unique_ptr<Model> model_;
};

}  // namespace orthoshard
