// A Hugging Face model directory's config.json, read as untrusted input: each field a family needs is checked for
// its type and range, and fields this runtime does not implement are refused by name, never ignored.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

namespace orthoshard {

// Whether `path` is a directory holding config.json (a Hugging Face model directory).
bool is_hf_model_dir(const std::string& path);

class HfConfig {
 public:
  explicit HfConfig(const std::string& dir);  // reads DIR/config.json; errors name it
  const std::string& path() const { return path_; }
  const nlohmann::json& json() const { return j_; }
  std::string model_type() const;  // "" when absent
  bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }
  // An integer field in [lo, hi]; required unless a default is given.
  std::int64_t get_int(const char* key, std::int64_t lo, std::int64_t hi) const;
  std::int64_t get_int(const char* key, std::int64_t lo, std::int64_t hi, std::int64_t fallback) const;
  double get_positive(const char* key, double fallback) const;  // a finite number > 0
  bool get_bool(const char* key, bool fallback) const;
  // Throws naming the field unless it is absent, null, or equal to `allowed` (a feature not implemented).
  void refuse_unless(const char* key, const nlohmann::json& allowed, const char* what) const;

 private:
  std::string path_;
  nlohmann::json j_;
};

}  // namespace orthoshard

#include "models/family.hpp"

#include <utility>
#include <vector>

namespace orthoshard {

// Writes a Hugging Face model directory: DIR/config.json and DIR/model.safetensors (f32 tensors in this order),
// creating DIR. Each file is written beside its name and renamed over it.
void write_hf_dir(const std::string& dir, const nlohmann::ordered_json& config, const std::vector<NamedTensor>& tensors,
                  const std::string& source);

}  // namespace orthoshard
