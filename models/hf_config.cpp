// config.json checks (see hf_config.hpp).
#include "models/hf_config.hpp"

#include "models/safetensors.hpp"
#include "runtime/core/error.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace orthoshard {

bool is_hf_model_dir(const std::string& path) {
  std::error_code ec;
  return !path.empty() && fs::is_directory(path, ec) && fs::exists(fs::path(path) / "config.json", ec);
}

HfConfig::HfConfig(const std::string& dir) : path_((fs::path(dir) / "config.json").string()) {
  std::ifstream in(path_);
  if (!in) throw UsageError(fmt::format("'{}': cannot open", path_));
  try {
    j_ = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw UsageError(fmt::format("'{}': not valid JSON ({})", path_, e.what()));
  }
  if (!j_.is_object()) throw UsageError(fmt::format("'{}': not a JSON object", path_));
}

std::string HfConfig::model_type() const {
  if (!has("model_type")) return "";
  if (!j_["model_type"].is_string()) throw UsageError(fmt::format("'{}': model_type is not a string", path_));
  return j_["model_type"].get<std::string>();
}

std::int64_t HfConfig::get_int(const char* key, std::int64_t lo, std::int64_t hi) const {
  if (!has(key)) throw UsageError(fmt::format("'{}': {} is missing", path_, key));
  const nlohmann::json& v = j_[key];
  if (!v.is_number_integer()) throw UsageError(fmt::format("'{}': {} = {} is not an integer", path_, key, v.dump()));
  if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(hi))
    throw UsageError(fmt::format("'{}': {} = {} is out of range [{}, {}]", path_, key, v.dump(), lo, hi));
  const std::int64_t x = v.get<std::int64_t>();
  if (x < lo || x > hi) throw UsageError(fmt::format("'{}': {} = {} is out of range [{}, {}]", path_, key, x, lo, hi));
  return x;
}

std::int64_t HfConfig::get_int(const char* key, std::int64_t lo, std::int64_t hi, std::int64_t fallback) const {
  return has(key) ? get_int(key, lo, hi) : fallback;
}

double HfConfig::get_positive(const char* key, double fallback) const {
  if (!has(key)) return fallback;
  const nlohmann::json& v = j_[key];
  if (!v.is_number() || !(v.get<double>() > 0.0) || !std::isfinite(v.get<double>()))
    throw UsageError(fmt::format("'{}': {} = {} is not a positive number", path_, key, v.dump()));
  return v.get<double>();
}

bool HfConfig::get_bool(const char* key, bool fallback) const {
  if (!has(key)) return fallback;
  if (!j_[key].is_boolean()) throw UsageError(fmt::format("'{}': {} = {} is not true or false", path_, key, j_[key].dump()));
  return j_[key].get<bool>();
}

void HfConfig::refuse_unless(const char* key, const nlohmann::json& allowed, const char* what) const {
  if (!has(key) || j_[key] == allowed) return;
  throw UsageError(fmt::format("'{}': {} = {} is not supported ({})", path_, key, j_[key].dump(), what));
}

void write_hf_dir(const std::string& dir, const nlohmann::ordered_json& config, const std::vector<NamedTensor>& tensors,
                  const std::string& source) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw UsageError(fmt::format("'{}': cannot create the directory: {}", dir, ec.message()));
  write_safetensors(tensors, (fs::path(dir) / "model.safetensors").string(), {{"format", "pt"}, {"source", source}});
  const std::string path = (fs::path(dir) / "config.json").string(), tmp = path + ".tmp";
  {
    std::ofstream o(tmp, std::ios::trunc);
    o << config.dump(2) << "\n";
    o.flush();
    if (!o) fail("'{}': write failed (disk full?)", tmp);
  }
  fs::rename(tmp, path, ec);
  if (ec) fail("'{}': cannot rename to '{}': {}", tmp, path, ec.message());
}

}  // namespace orthoshard
