// One llm.c token shard: 256 × int32 header [magic, version, ntok, 0…] then ntok tokens, either
// magic 20240520 version 1 (uint16 tokens, GPT-2 era) or 20240801 version 7 (uint32 tokens). Read-only mmap.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace orthoshard {

inline constexpr std::int32_t kShardMagicU16 = 20240520;
inline constexpr std::int32_t kShardMagicU32 = 20240801;

class TokenShard {
 public:
  // Maps the file and checks magic, version and size; errors name the file.
  static TokenShard open(const std::string& path);
  TokenShard(TokenShard&& o) noexcept;
  TokenShard& operator=(TokenShard&& o) noexcept;
  TokenShard(const TokenShard&) = delete;
  ~TokenShard();

  const std::string& path() const { return path_; }
  std::int64_t size() const { return ntok_; }              // tokens
  int bytes_per_token() const { return bytes_per_token_; }  // 2 or 4
  std::uint32_t token(std::int64_t i) const;
  // out[i] = token(start + i) for i < count (the caller keeps the range inside the shard).
  void read(std::int64_t start, std::int64_t count, std::int32_t* out) const;

 private:
  TokenShard() = default;
  std::string path_;
  void* map_ = nullptr;
  std::size_t map_bytes_ = 0;
  const unsigned char* tokens_ = nullptr;
  std::int64_t ntok_ = 0;
  int bytes_per_token_ = 2;
};

// Writes a version 1 (uint16) shard; throws when a token does not fit 16 bits or there are >= 2^31 tokens.
void write_token_shard_u16(const std::string& path, const std::vector<std::uint16_t>& tokens);
// Writes a version 7 (uint32) shard.
void write_token_shard_u32(const std::string& path, const std::vector<std::uint32_t>& tokens);

}  // namespace orthoshard
