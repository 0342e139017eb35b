// Hugging Face's safetensors file format: an 8-byte little-endian header length, a JSON header of name ->
// {dtype, shape, data_offsets} (offsets relative to the data that follows the header), then the raw tensors.
// Writing f32 tensors (model exports), and reading files that are treated as untrusted: every header field is
// checked against the file before anything is allocated or read, so a malformed file is one clear error.
#pragma once

#include "models/family.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace orthoshard {

// Writes `tensors` (host f32, contiguous) in this order with `metadata` (in this order) as the header's
// __metadata__, to PATH.tmp then renamed over PATH. Errors name the file.
void write_safetensors(const std::vector<NamedTensor>& tensors, const std::string& path,
                       const std::vector<std::pair<std::string, std::string>>& metadata);

// One tensor of a safetensors file.
struct SafetensorsEntry {
  std::string dtype;        // "F32", "BF16", "F16" or "F64"
  Shape shape;              // row-major
  std::uint64_t begin = 0;  // byte offsets in the file (header already added)
  std::uint64_t end = 0;
  std::int64_t numel() const { return shape_numel(shape); }
};

// An opened safetensors file. The constructor validates the whole header: its length against the file (and a
// 100 MB cap), the JSON, every dtype (F32, BF16, F16, F64), every shape (non-negative sizes whose bytes match
// the offsets), and the offsets (inside the data, not backwards, not overlapping). Errors name the file and the
// tensor.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(std::string path);
  const std::string& path() const { return path_; }
  const std::map<std::string, SafetensorsEntry>& tensors() const { return tensors_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const SafetensorsEntry& at(const std::string& name) const;  // UsageError naming the file when absent
  // Rows [begin, end) of a tensor (dim 0; a 0-d or 1-d tensor has one element per row), converted to f32.
  void read_rows(const std::string& name, std::int64_t begin, std::int64_t end, float* out) const;

 private:
  std::string path_;
  std::map<std::string, SafetensorsEntry> tensors_;
};

// A Hugging Face model directory's weights: `model.safetensors`, or the shards `model.safetensors.index.json`
// lists (its weight_map: tensor name -> file in the directory). A tensor listed twice, a shard outside the
// directory, or an index entry its shard lacks is an error.
class SafetensorsSet {
 public:
  explicit SafetensorsSet(const std::string& dir);
  std::vector<std::string> names() const;  // sorted
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  const SafetensorsEntry& at(const std::string& name) const;
  void read_rows(const std::string& name, std::int64_t begin, std::int64_t end, float* out) const;
  std::string describe() const;  // "DIR/model.safetensors" or "DIR (3 shards)"

 private:
  std::string dir_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, std::size_t> where_;  // name -> index in files_
};

}  // namespace orthoshard
