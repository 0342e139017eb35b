// Byte-level tokenizer: token = byte value, vocabulary 256 (no merges, no special tokens).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace orthoshard {

inline constexpr std::int64_t kByteVocab = 256;

std::vector<std::uint16_t> byte_encode(std::string_view text);
// Tokens outside [0, 256) are an error naming the position.
std::string byte_decode(const std::vector<std::int32_t>& tokens);

}  // namespace orthoshard
