// safetensors writing (see safetensors.hpp).
#include "models/safetensors.hpp"

#include "runtime/core/error.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

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

}  // namespace orthoshard
