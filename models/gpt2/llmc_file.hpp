// GPT-2 model files in llm.c's format (256 × int32 header [20240326, version, maxT, V, L, NH, C, Vp, 0…],
// then the 16 tensors in file order: version 3 = float32, version 5 = bfloat16): the family's own file format.
#pragma once

#include "models/gpt2/params.hpp"

#include <cstdint>
#include <string>

namespace orthoshard {

inline constexpr std::int32_t kLlmcModelMagic = 20240326;

// The config from a model file's header (origin = path). Errors name the file.
Gpt2Config read_llmc_config(const std::string& path);
// Loads an fp32 (version 3) or bf16 (version 5) model file as f32 parameters.
Gpt2Params load_llmc_model(const std::string& path);
// A model file opened for reading single parameters by rows (each rank reads just its shard): the header and the
// file's size are checked as load_llmc_model checks them.
class LlmcReader {
 public:
  explicit LlmcReader(std::string path);
  const Gpt2Config& config() const { return cfg_; }
  // Rows [begin, end) of a named (per-layer) parameter as f32, row-major.
  void read_rows(const std::string& name, std::int64_t begin, std::int64_t end, float* out) const;

 private:
  std::string path_;
  Gpt2Config cfg_;
  bool bf16_ = false;
};
// Writes version 3 (fp32; f64 parameters are rounded), to PATH.tmp then renamed over PATH.
void save_llmc_model(const Gpt2Params& params, const std::string& path);

}  // namespace orthoshard
