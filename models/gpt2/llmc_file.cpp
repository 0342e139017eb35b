// llm.c model files: reading (v3 fp32, v5 bf16) and writing (v3).
#include "models/gpt2/llmc_file.hpp"

#include "runtime/core/dtype.hpp"
#include "runtime/core/error.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

namespace orthoshard {

namespace {

using Header = std::array<std::int32_t, 256>;

Header read_header(const std::string& path, std::ifstream& in, std::uintmax_t& file_bytes) {
  if (!std::filesystem::is_regular_file(path)) throw UsageError("'" + path + "': no such model file");
  file_bytes = std::filesystem::file_size(path);
  in.open(path, std::ios::binary);
  if (!in) throw UsageError("'" + path + "': cannot open model file");
  Header h{};
  if (file_bytes < sizeof h)
    throw UsageError(fmt::format("'{}': truncated model file: {} bytes, shorter than the {}-byte llm.c header", path,
                                 file_bytes, sizeof h));
  in.read(reinterpret_cast<char*>(h.data()), sizeof h);
  if (h[0] != kLlmcModelMagic)
    throw UsageError(fmt::format("'{}': not an llm.c GPT-2 model file (magic {}, expected {})", path, h[0],
                                 kLlmcModelMagic));
  if (h[1] != 3 && h[1] != 5)
    throw UsageError(fmt::format("'{}': llm.c model version {} is not supported (3 = fp32, 5 = bf16)", path, h[1]));
  return h;
}

Gpt2Config config_of(const Header& h, const std::string& path) {
  Gpt2Config c;
  c.maxT = h[2];
  c.V = h[3];
  c.L = h[4];
  c.NH = h[5];
  c.C = h[6];
  c.Vp = h[7];
  c.origin = path;
  c.validate();
  return c;
}

}  // namespace

Gpt2Config read_llmc_config(const std::string& path) {
  std::ifstream in;
  std::uintmax_t bytes = 0;
  return config_of(read_header(path, in, bytes), path);
}

namespace {
// The header's config, after checking that the file holds exactly its parameters; `bf16`: version 5.
Gpt2Config checked_config(const std::string& path, std::ifstream& in, bool& bf16_file) {
  std::uintmax_t bytes = 0;
  const Header h = read_header(path, in, bytes);
  const Gpt2Config cfg = config_of(h, path);
  bf16_file = h[1] == 5;
  const std::uintmax_t n = static_cast<std::uintmax_t>(cfg.num_parameters());
  const std::uintmax_t want = sizeof(Header) + n * (bf16_file ? 2 : 4);
  if (bytes < want)
    throw UsageError(fmt::format("'{}': truncated model file: the header ({}, {}) needs {} bytes, the file has {}",
                                 path, cfg.describe(), bf16_file ? "bf16" : "fp32", want, bytes));
  if (bytes > want)
    throw UsageError(fmt::format("'{}': {} unexpected bytes after the parameters ({}, {}): not an llm.c model file?",
                                 path, bytes - want, cfg.describe(), bf16_file ? "bf16" : "fp32"));
  return cfg;
}

// n values at the stream's position as f32.
void read_values(std::ifstream& in, bool bf16_file, float* dst, std::uintmax_t n, const std::string& path) {
  if (!bf16_file) {
    in.read(reinterpret_cast<char*>(dst), static_cast<std::streamsize>(n * 4));
  } else {
    std::vector<bf16> raw(n);
    in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(n * 2));
    for (std::uintmax_t i = 0; i < n; ++i) dst[i] = bf16_to_float(raw[i]);
  }
  if (!in) throw UsageError("'" + path + "': read error in the parameters");
}
}  // namespace

Gpt2Params load_llmc_model(const std::string& path) {
  std::ifstream in;
  bool bf = false;
  const Gpt2Config cfg = checked_config(path, in, bf);
  Gpt2Params p = Gpt2Params::zeros(cfg, DType::F32);
  read_values(in, bf, p.flat().data<float>(), static_cast<std::uintmax_t>(cfg.num_parameters()), path);
  return p;
}

LlmcReader::LlmcReader(std::string path) : path_(std::move(path)) {
  std::ifstream in;
  cfg_ = checked_config(path_, in, bf16_);
}

void LlmcReader::read_rows(const std::string& name, std::int64_t begin, std::int64_t end, float* out) const {
  const auto [offset, row] = gpt2_param_layout(cfg_, name);
  OS_CHECK(0 <= begin && begin <= end, "'{}': rows [{}, {}) of {}", path_, begin, end, name);
  if (begin == end) return;
  std::ifstream in(path_, std::ios::binary);
  if (!in) throw UsageError("'" + path_ + "': cannot open model file");
  const std::uintmax_t first = static_cast<std::uintmax_t>(offset + begin * row);
  in.seekg(static_cast<std::streamoff>(sizeof(Header) + first * (bf16_ ? 2 : 4)));
  read_values(in, bf16_, out, static_cast<std::uintmax_t>((end - begin) * row), path_);
}

void save_llmc_model(const Gpt2Params& params, const std::string& path) {
  const Gpt2Config& c = params.config();
  Header h{};
  h[0] = kLlmcModelMagic;
  h[1] = 3;
  const std::int64_t fields[6] = {c.maxT, c.V, c.L, c.NH, c.C, c.Vp};
  for (int i = 0; i < 6; ++i) {
    OS_CHECK(fields[i] <= INT32_MAX, "GPT-2 size {} does not fit llm.c's int32 header", fields[i]);
    h[static_cast<std::size_t>(2 + i)] = static_cast<std::int32_t>(fields[i]);
  }
  const Gpt2Params p32 = params.dtype() == DType::F32 ? params : params.to(DType::F32);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw UsageError(fmt::format("'{}': cannot create model file: {}", tmp, std::strerror(errno)));
    out.write(reinterpret_cast<const char*>(h.data()), sizeof h);
    out.write(reinterpret_cast<const char*>(p32.flat().data<float>()),
              static_cast<std::streamsize>(p32.flat().nbytes()));
    out.flush();
    if (!out) fail("'{}': write failed (disk full?)", tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail("'{}': cannot rename to '{}': {}", tmp, path, ec.message());
}

}  // namespace orthoshard
