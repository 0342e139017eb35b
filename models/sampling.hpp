// Text from a model: prompts as tokens, sampling from a TokenGenerator's logits (temperature, top-k, a seeded
// stream, so the same seed gives the same tokens), and byte-level tokens as printable UTF-8. Used by
// `orthoshard sample` and by the trainer's samples during training ([eval] sample_every).
#pragma once

#include "models/family.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace orthoshard {

struct SamplingOptions {
  double temperature = 1.0;  // 0 = greedy
  std::int64_t top_k = 0;    // 0 = the whole vocabulary
  std::uint64_t seed = 1337;
};

// The prompt as tokens of a model with vocabulary V: UTF-8 bytes when V = 256, else space-separated token ids
// (UsageError naming a bad one); "" = a newline (V = 256), <|endoftext|> (V = 50257), else token 0.
std::vector<std::int32_t> prompt_tokens(const std::string& prompt, std::int64_t V);
// `n` tokens after `prompt` (non-empty), fed to `gen` from its current position.
std::vector<std::int32_t> sample_tokens(TokenGenerator& gen, std::int64_t V, const std::vector<std::int32_t>& prompt,
                                        std::int64_t n, const SamplingOptions& opt);
// Bytes as printable UTF-8: valid sequences kept, each invalid byte replaced by U+FFFD.
std::string bytes_to_utf8(const std::vector<std::int32_t>& bytes);
// What a person reads: the prompt and its continuation as text (V = 256), or "prompt ids | new ids".
std::string sample_text(const std::string& prompt, const std::vector<std::int32_t>& prompt_ids,
                        const std::vector<std::int32_t>& out, std::int64_t V);

}  // namespace orthoshard
