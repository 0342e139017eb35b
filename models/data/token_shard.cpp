// Token shard reading (mmap) and writing.
#include "models/data/token_shard.hpp"

#include "runtime/core/error.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace orthoshard {

namespace {

constexpr std::size_t kHeaderBytes = 256 * sizeof(std::int32_t);

template <typename Tok>
void write_shard(const std::string& path, const std::vector<Tok>& tokens, std::int32_t magic, std::int32_t version) {
  if (tokens.size() > static_cast<std::size_t>(INT32_MAX))
    throw UsageError(fmt::format("'{}': {} tokens do not fit one llm.c shard (at most {}); split the input", path,
                                 tokens.size(), INT32_MAX));
  std::array<std::int32_t, 256> h{};
  h[0] = magic;
  h[1] = version;
  h[2] = static_cast<std::int32_t>(tokens.size());
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw UsageError(fmt::format("'{}': cannot create token shard: {}", tmp, std::strerror(errno)));
    out.write(reinterpret_cast<const char*>(h.data()), sizeof h);
    out.write(reinterpret_cast<const char*>(tokens.data()), static_cast<std::streamsize>(tokens.size() * sizeof(Tok)));
    out.flush();
    if (!out) fail("'{}': write failed (disk full?)", tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail("'{}': cannot rename to '{}': {}", tmp, path, ec.message());
}

}  // namespace

TokenShard TokenShard::open(const std::string& path) {
  TokenShard s;
  s.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw UsageError(fmt::format("'{}': cannot open token shard: {}", path, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw UsageError("'" + path + "': not a regular file");
  }
  const auto bytes = static_cast<std::size_t>(st.st_size);
  if (bytes < kHeaderBytes) {
    ::close(fd);
    throw UsageError(fmt::format("'{}': truncated token shard: {} bytes, shorter than the {}-byte llm.c header", path,
                                 bytes, kHeaderBytes));
  }
  void* m = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) throw UsageError(fmt::format("'{}': cannot map token shard: {}", path, std::strerror(errno)));
  s.map_ = m;
  s.map_bytes_ = bytes;
  std::int32_t h[3];
  std::memcpy(h, m, sizeof h);
  if (h[0] == kShardMagicU16 && h[1] == 1) s.bytes_per_token_ = 2;
  else if (h[0] == kShardMagicU32 && h[1] == 7) s.bytes_per_token_ = 4;
  else if (h[0] == kShardMagicU16 || h[0] == kShardMagicU32)
    throw UsageError(fmt::format("'{}': token shard version {} is not supported with magic {} (20240520 needs "
                                 "version 1, 20240801 version 7)", path, h[1], h[0]));
  else
    throw UsageError(fmt::format("'{}': not an llm.c token shard (magic {}, expected {} or {})", path, h[0],
                                 kShardMagicU16, kShardMagicU32));
  if (h[2] < 0) throw UsageError(fmt::format("'{}': negative token count {} in the header", path, h[2]));
  s.ntok_ = h[2];
  const std::size_t want = kHeaderBytes + static_cast<std::size_t>(s.ntok_) * static_cast<std::size_t>(s.bytes_per_token_);
  if (bytes < want)
    throw UsageError(fmt::format("'{}': truncated token shard: the header promises {} tokens ({} bytes), the file "
                                 "has {} bytes", path, s.ntok_, want, bytes));
  if (bytes > want)
    throw UsageError(fmt::format("'{}': {} unexpected bytes after the {} tokens the header announces", path,
                                 bytes - want, s.ntok_));
  s.tokens_ = static_cast<const unsigned char*>(m) + kHeaderBytes;
  return s;
}

TokenShard::TokenShard(TokenShard&& o) noexcept { *this = std::move(o); }

TokenShard& TokenShard::operator=(TokenShard&& o) noexcept {
  if (this != &o) {
    if (map_) ::munmap(map_, map_bytes_);
    path_ = std::move(o.path_);
    map_ = o.map_;
    map_bytes_ = o.map_bytes_;
    tokens_ = o.tokens_;
    ntok_ = o.ntok_;
    bytes_per_token_ = o.bytes_per_token_;
    o.map_ = nullptr;
    o.tokens_ = nullptr;
    o.ntok_ = 0;
  }
  return *this;
}

TokenShard::~TokenShard() {
  if (map_) ::munmap(map_, map_bytes_);
}

std::uint32_t TokenShard::token(std::int64_t i) const {
  if (bytes_per_token_ == 2) {
    std::uint16_t v;
    std::memcpy(&v, tokens_ + 2 * i, 2);
    return v;
  }
  std::uint32_t v;
  std::memcpy(&v, tokens_ + 4 * i, 4);
  return v;
}

void TokenShard::read(std::int64_t start, std::int64_t count, std::int32_t* out) const {
  if (bytes_per_token_ == 2) {
    for (std::int64_t i = 0; i < count; ++i) {
      std::uint16_t v;
      std::memcpy(&v, tokens_ + 2 * (start + i), 2);
      out[i] = v;
    }
  } else {
    for (std::int64_t i = 0; i < count; ++i) {
      std::uint32_t v;
      std::memcpy(&v, tokens_ + 4 * (start + i), 4);
      out[i] = v > static_cast<std::uint32_t>(INT32_MAX) ? -1 : static_cast<std::int32_t>(v);  // -1: caught as >= V
    }
  }
}

void write_token_shard_u16(const std::string& path, const std::vector<std::uint16_t>& tokens) {
  write_shard(path, tokens, kShardMagicU16, 1);
}

void write_token_shard_u32(const std::string& path, const std::vector<std::uint32_t>& tokens) {
  write_shard(path, tokens, kShardMagicU32, 7);
}

}  // namespace orthoshard
