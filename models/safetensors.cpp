// safetensors writing and checked reading (see safetensors.hpp).
#include "models/safetensors.hpp"

#include "runtime/core/error.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

namespace fs = std::filesystem;

namespace orthoshard {

void write_safetensors(const std::vector<NamedTensor>& tensors, const std::string& path,
                       const std::vector<std::pair<std::string, std::string>>& metadata) {
  nlohmann::ordered_json header;
  header["__metadata__"] = nlohmann::ordered_json::object();
  for (const auto& [k, v] : metadata) header["__metadata__"][k] = v;
  std::uint64_t off = 0;
  for (const auto& [name, t] : tensors) {
    OS_CHECK(t.dtype() == DType::F32 && t.device() == Device::CPU && t.is_contiguous(),
             "safetensors '{}': tensor {} must be contiguous host f32, got {}", path, name, t.describe());
    header[name] = {{"dtype", "F32"}, {"shape", t.shape()}, {"data_offsets", {off, off + t.nbytes()}}};
    off += t.nbytes();
  }
  std::string h = header.dump();
  while (h.size() % 8 != 0) h.push_back(' ');
  const std::string tmp = path + ".tmp";
  {
    std::ofstream o(tmp, std::ios::binary | std::ios::trunc);
    if (!o) throw UsageError("'" + path + "': cannot write");
    const std::uint64_t n = h.size();
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xFF);
    o.write(reinterpret_cast<const char*>(len), 8);
    o.write(h.data(), static_cast<std::streamsize>(h.size()));
    for (const auto& [name, t] : tensors)
      o.write(static_cast<const char*>(t.raw()), static_cast<std::streamsize>(t.nbytes()));
    o.flush();
    if (!o) fail("'{}': write failed (disk full?)", tmp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) fail("'{}': cannot rename to '{}': {}", tmp, path, ec.message());
}


namespace {

constexpr std::uint64_t kMaxHeader = 100ull << 20;

std::size_t dtype_size(const std::string& d) {
  if (d == "F32") return 4;
  if (d == "BF16" || d == "F16") return 2;
  if (d == "F64") return 8;
  return 0;
}

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = (h >> 15) & 1u, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  float v;
  if (exp == 0) v = std::ldexp(static_cast<float>(mant), -24);                 // zero, subnormal
  else if (exp == 31) v = mant ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  else v = std::ldexp(static_cast<float>(mant | 0x400u), static_cast<int>(exp) - 25);
  return sign ? -v : v;
}

}  // namespace

SafetensorsFile::SafetensorsFile(std::string path) : path_(std::move(path)) {
  std::error_code ec;
  const std::uint64_t size = fs::file_size(path_, ec);
  if (ec) throw UsageError(fmt::format("'{}': cannot read: {}", path_, ec.message()));
  std::ifstream in(path_, std::ios::binary);
  if (!in) throw UsageError(fmt::format("'{}': cannot open", path_));
  if (size < 8) throw UsageError(fmt::format("'{}': not a safetensors file ({} bytes, shorter than its header length)", path_, size));
  unsigned char len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  if (n > size - 8)
    throw UsageError(fmt::format("'{}': header length {} runs past the end of the file ({} bytes)", path_, n, size));
  if (n > kMaxHeader)
    throw UsageError(fmt::format("'{}': header length {} is over the {} MB limit", path_, n, kMaxHeader >> 20));
  std::string text(n, '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  if (!in) throw UsageError(fmt::format("'{}': cannot read its header", path_));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw UsageError(fmt::format("'{}': the header is not valid JSON ({})", path_, e.what()));
  }
  if (!header.is_object()) throw UsageError(fmt::format("'{}': the header is not a JSON object", path_));
  const std::uint64_t data = 8 + n, data_size = size - data;
  std::vector<std::pair<std::uint64_t, std::string>> order;  // (begin, name)
  for (const auto& [name, e] : header.items()) {
    if (name == "__metadata__") continue;
    auto bad = [&](const std::string& why) {
      return UsageError(fmt::format("'{}': tensor '{}': {}", path_, name, why));
    };
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
      throw bad("needs dtype, shape and data_offsets");
    SafetensorsEntry t;
    if (!e["dtype"].is_string()) throw bad("dtype is not a string");
    t.dtype = e["dtype"].get<std::string>();
    const std::size_t es = dtype_size(t.dtype);
    if (es == 0) throw bad(fmt::format("dtype '{}' is not supported (F32, BF16, F16 or F64)", t.dtype));
    if (!e["shape"].is_array() || e["shape"].size() > 8) throw bad("shape is not a list of at most 8 sizes");
    std::uint64_t count = 1;
    for (const auto& d : e["shape"]) {
      if (!d.is_number_unsigned()) throw bad("shape holds something other than a non-negative integer");
      const std::uint64_t x = d.get<std::uint64_t>();
      if (x > (std::uint64_t{1} << 40) || (x != 0 && count > (std::uint64_t{1} << 62) / x))
        throw bad(fmt::format("shape {} is absurdly large", e["shape"].dump()));
      count *= x;
      t.shape.push_back(static_cast<std::int64_t>(x));
    }
    const auto& off = e["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw bad("data_offsets is not a pair of non-negative integers");
    const std::uint64_t b = off[0].get<std::uint64_t>(), f = off[1].get<std::uint64_t>();
    if (f < b) throw bad(fmt::format("data_offsets [{}, {}] run backwards", b, f));
    if (f > data_size) throw bad(fmt::format("data_offsets [{}, {}] fall outside the {} bytes of data", b, f, data_size));
    if (count * es != f - b)
      throw bad(fmt::format("shape {} of {} needs {} bytes, data_offsets [{}, {}] hold {}", e["shape"].dump(), t.dtype,
                            count * es, b, f, f - b));
    t.begin = data + b;
    t.end = data + f;
    order.emplace_back(b, name);
    tensors_.emplace(name, std::move(t));
  }
  // In offset order, every non-empty tensor starts at or after the furthest end so far.
  std::sort(order.begin(), order.end());
  std::uint64_t furthest = 0;
  std::string furthest_name;
  for (const auto& [b, name] : order) {
    const SafetensorsEntry& t = tensors_.at(name);
    if (t.end > t.begin && t.begin < furthest)
      throw UsageError(fmt::format("'{}': tensors '{}' and '{}' overlap in the data", path_, furthest_name, name));
    if (t.end > furthest) furthest = t.end, furthest_name = name;
  }
}

const SafetensorsEntry& SafetensorsFile::at(const std::string& name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) throw UsageError(fmt::format("'{}': has no tensor '{}'", path_, name));
  return it->second;
}

void SafetensorsFile::read_rows(const std::string& name, std::int64_t begin, std::int64_t end, float* out) const {
  const SafetensorsEntry& t = at(name);
  const std::int64_t rows = t.shape.empty() ? 1 : t.shape[0];
  OS_CHECK(0 <= begin && begin <= end && end <= rows, "'{}': rows [{}, {}) outside {} {}", path_, begin, end, name,
           shape_str(t.shape));
  const std::int64_t row = rows == 0 ? 0 : t.numel() / rows;
  const std::size_t es = dtype_size(t.dtype);
  const std::uint64_t count = static_cast<std::uint64_t>((end - begin) * row);
  if (count == 0) return;
  std::vector<char> buf(count * es);
  std::ifstream in(path_, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(t.begin + static_cast<std::uint64_t>(begin * row) * es));
  in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
  if (!in) fail("'{}': cannot read tensor '{}' (file truncated while open?)", path_, name);
  for (std::uint64_t i = 0; i < count; ++i) {
    const char* p = buf.data() + i * es;
    if (t.dtype == "F32") {
      std::memcpy(&out[i], p, 4);
    } else if (t.dtype == "F64") {
      double d;
      std::memcpy(&d, p, 8);
      out[i] = static_cast<float>(d);
    } else {
      std::uint16_t h;
      std::memcpy(&h, p, 2);
      out[i] = t.dtype == "BF16" ? std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16) : half_to_float(h);
    }
  }
}

SafetensorsSet::SafetensorsSet(const std::string& dir) : dir_(dir) {
  const fs::path d(dir);
  const fs::path single = d / "model.safetensors", index = d / "model.safetensors.index.json";
  if (fs::exists(single)) {
    files_.emplace_back(single.string());
    for (const auto& [name, e] : files_[0].tensors()) where_[name] = 0;
    return;
  }
  if (!fs::exists(index))
    throw UsageError(fmt::format("'{}': holds neither model.safetensors nor model.safetensors.index.json", dir));
  nlohmann::json j;
  try {
    std::ifstream in(index);
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw UsageError(fmt::format("'{}': not valid JSON ({})", index.string(), e.what()));
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw UsageError(fmt::format("'{}': has no weight_map object", index.string()));
  std::map<std::string, std::size_t> shard_index;
  for (const auto& [name, file] : j["weight_map"].items()) {
    if (!file.is_string()) throw UsageError(fmt::format("'{}': weight_map['{}'] is not a file name", index.string(), name));
    const std::string f = file.get<std::string>();
    if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..")
      throw UsageError(fmt::format("'{}': weight_map['{}'] = '{}' is not a file in the directory", index.string(), name, f));
    auto it = shard_index.find(f);
    if (it == shard_index.end()) {
      it = shard_index.emplace(f, files_.size()).first;
      files_.emplace_back((d / f).string());
    }
    if (!files_[it->second].has(name))
      throw UsageError(fmt::format("'{}': lists tensor '{}' in '{}', which does not hold it", index.string(), name, f));
    where_[name] = it->second;
  }
  for (std::size_t i = 0; i < files_.size(); ++i)
    for (const auto& [name, e] : files_[i].tensors())
      if (const auto w = where_.find(name); w != where_.end() && w->second != i)
        throw UsageError(fmt::format("'{}': tensor '{}' is in two shards", dir, name));
}

std::vector<std::string> SafetensorsSet::names() const {
  std::vector<std::string> out;
  for (const auto& [n, i] : where_) out.push_back(n);
  return out;
}

const SafetensorsEntry& SafetensorsSet::at(const std::string& name) const {
  const auto it = where_.find(name);
  if (it == where_.end()) throw UsageError(fmt::format("'{}': has no tensor '{}'", describe(), name));
  return files_[it->second].at(name);
}

void SafetensorsSet::read_rows(const std::string& name, std::int64_t begin, std::int64_t end, float* out) const {
  const auto it = where_.find(name);
  if (it == where_.end()) throw UsageError(fmt::format("'{}': has no tensor '{}'", describe(), name));
  files_[it->second].read_rows(name, begin, end, out);
}

std::string SafetensorsSet::describe() const {
  if (files_.size() == 1) return files_[0].path();
  return fmt::format("{} ({} shards)", dir_, files_.size());
}

}  // namespace orthoshard
