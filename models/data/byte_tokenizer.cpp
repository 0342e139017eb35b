// Byte tokenizer.
#include "models/data/byte_tokenizer.hpp"

#include "runtime/core/error.hpp"

namespace orthoshard {

std::vector<std::uint16_t> byte_encode(std::string_view text) {
  std::vector<std::uint16_t> out(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) out[i] = static_cast<unsigned char>(text[i]);
  return out;
}

std::string byte_decode(const std::vector<std::int32_t>& tokens) {
  std::string out(tokens.size(), '\0');
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= kByteVocab)
      fail("byte tokenizer: token {} at position {} is not a byte", tokens[i], i);
    out[i] = static_cast<char>(static_cast<unsigned char>(tokens[i]));
  }
  return out;
}

}  // namespace orthoshard
