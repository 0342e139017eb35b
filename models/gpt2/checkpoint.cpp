// llm.c model file reading/writing and GPT-2 random initialization.
#include "models/gpt2/checkpoint.hpp"

#include "models/random.hpp"
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

Gpt2Params load_llmc_model(const std::string& path) {
  std::ifstream in;
  std::uintmax_t bytes = 0;
  const Header h = read_header(path, in, bytes);
  const Gpt2Config cfg = config_of(h, path);
  const bool bf = h[1] == 5;
  const std::uintmax_t n = static_cast<std::uintmax_t>(cfg.num_parameters());
  const std::uintmax_t want = sizeof(Header) + n * (bf ? 2 : 4);
  if (bytes < want)
    throw UsageError(fmt::format("'{}': truncated model file: the header ({}, {}) needs {} bytes, the file has {}",
                                 path, cfg.describe(), bf ? "bf16" : "fp32", want, bytes));
  if (bytes > want)
    throw UsageError(fmt::format("'{}': {} unexpected bytes after the parameters ({}, {}): not an llm.c model file?",
                                 path, bytes - want, cfg.describe(), bf ? "bf16" : "fp32"));
  Gpt2Params p = Gpt2Params::zeros(cfg, DType::F32);
  float* dst = p.flat().data<float>();
  if (!bf) {
    in.read(reinterpret_cast<char*>(dst), static_cast<std::streamsize>(n * 4));
  } else {
    std::vector<bf16> raw(n);
    in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(n * 2));
    for (std::uintmax_t i = 0; i < n; ++i) dst[i] = bf16_to_float(raw[i]);
  }
  if (!in) throw UsageError("'" + path + "': read error in the parameters");
  return p;
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

template <typename T>
void gpt2_init_rows(const Gpt2Config& cfg, std::uint64_t seed, const std::string& name, std::int64_t row_begin,
                    std::int64_t row_end, T* out) {
  Shape shape;
  for (const auto& [n, s] : gpt2_parameter_specs(cfg))
    if (n == name) shape = s;
  if (shape.empty()) fail("GPT-2 has no parameter named '{}'", name);
  OS_CHECK(0 <= row_begin && row_begin <= row_end && row_end <= shape[0], "rows [{}, {}) outside {} {}", row_begin,
           row_end, name, shape_str(shape));
  const std::int64_t row = shape_numel(shape) / shape[0];
  const std::int64_t n = (row_end - row_begin) * row;
  auto ends_with = [&](const char* suffix) {
    const std::string t(suffix);
    return name.size() >= t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0;
  };
  if (ends_with(".bias")) {
    std::fill(out, out + n, T(0));
    return;
  }
  if (name == "lnf.weight" || ends_with("ln1.weight") || ends_with("ln2.weight")) {
    std::fill(out, out + n, T(1));
    return;
  }
  const bool resid = ends_with("attn.proj.weight") || ends_with("mlp.proj.weight");
  const double s = resid ? 0.02 / std::sqrt(2.0 * static_cast<double>(cfg.L)) : 0.02;
  const std::int64_t live_rows = name == "wte" ? cfg.V : shape[0];  // padded vocabulary rows stay 0
  const std::uint64_t k = rng::key(seed, rng::hash_name(name));
  const std::int64_t first = row_begin * row;
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t g = first + i;
    out[i] = g / row < live_rows ? static_cast<T>(s * rng::normal_at(k, static_cast<std::uint64_t>(g))) : T(0);
  }
}

Gpt2Params gpt2_random_init(const Gpt2Config& cfg, std::uint64_t seed, DType dtype) {
  Gpt2Params p = Gpt2Params::zeros(cfg, dtype);
  for (const auto& [name, t] : p.named()) {
    if (dtype == DType::F64) gpt2_init_rows(cfg, seed, name, 0, t.dim(0), t.data<double>());
    else gpt2_init_rows(cfg, seed, name, 0, t.dim(0), t.data<float>());
  }
  return p;
}

template void gpt2_init_rows<float>(const Gpt2Config&, std::uint64_t, const std::string&, std::int64_t, std::int64_t,
                                    float*);
template void gpt2_init_rows<double>(const Gpt2Config&, std::uint64_t, const std::string&, std::int64_t,
                                     std::int64_t, double*);

}  // namespace orthoshard
