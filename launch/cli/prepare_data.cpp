// prepare-data: read the text files, byte-encode, split off the validation tail, write the shards.
#include "launch/cli/prepare_data.hpp"

#include "models/data/byte_tokenizer.hpp"
#include "models/data/token_shard.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace orthoshard {

std::string val_path_for(const std::string& out) {
  const std::string ext = ".bin";
  if (out.size() > ext.size() && out.compare(out.size() - ext.size(), ext.size(), ext) == 0)
    return out.substr(0, out.size() - ext.size()) + "_val.bin";
  return out + "_val.bin";
}

int run_prepare_data(const PrepareDataOptions& opt) {
  if (opt.inputs.empty()) throw UsageError("prepare-data: give at least one text file");
  if (opt.out.empty()) throw UsageError("prepare-data: --out FILE.bin is required");
  if (!(opt.val_fraction >= 0.0 && opt.val_fraction < 1.0))
    throw UsageError(fmt::format("--val-fraction: {} is not in [0, 1)", opt.val_fraction));
  std::string text;
  for (const auto& path : opt.inputs) {
    if (!std::filesystem::is_regular_file(path)) throw UsageError("'" + path + "': no such text file");
    std::ifstream in(path, std::ios::binary);
    if (!in) throw UsageError("'" + path + "': cannot open");
    std::ostringstream ss;
    ss << in.rdbuf();
    text += ss.str();
  }
  std::vector<std::uint16_t> tokens = byte_encode(text);
  if (tokens.empty()) throw UsageError("prepare-data: the input files are empty");
  const auto n = static_cast<std::int64_t>(tokens.size());
  const auto n_val = static_cast<std::int64_t>(std::llround(opt.val_fraction * static_cast<double>(n)));
  if (opt.val_fraction > 0 && (n_val == 0 || n_val == n))
    throw UsageError(fmt::format("--val-fraction {} of {} tokens leaves an empty {} split", opt.val_fraction, n,
                                 n_val == 0 ? "validation" : "training"));
  std::vector<std::uint16_t> val(tokens.end() - n_val, tokens.end());
  tokens.resize(static_cast<std::size_t>(n - n_val));
  if (const auto dir = std::filesystem::path(opt.out).parent_path(); !dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw UsageError(fmt::format("prepare-data --out '{}': cannot create '{}': {}", opt.out, dir.string(),
                                         ec.message()));
  }
  write_token_shard_u16(opt.out, tokens);
  log::info("prepare-data: {} file{}, {} bytes -> byte-level tokens (V = {})", opt.inputs.size(),
            opt.inputs.size() == 1 ? "" : "s", n, kByteVocab);
  log::info("wrote {} tokens to {}", tokens.size(), opt.out);
  if (n_val > 0) {
    write_token_shard_u16(val_path_for(opt.out), val);
    log::info("wrote {} tokens to {} (the last {:.4g} of the text)", val.size(), val_path_for(opt.out),
              opt.val_fraction);
  }
  return 0;
}

}  // namespace orthoshard
