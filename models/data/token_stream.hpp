// The training text as one token sequence: the shards of a path or glob(3) pattern concatenated in sorted
// order (reads may cross shard boundaries), or `builtin:synthetic[:val]` generated in memory.
#pragma once

#include "models/data/token_shard.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace orthoshard {

class TokenStream {
 public:
  // spec: "builtin:synthetic" (training text), "builtin:synthetic:val" (validation text), a shard path, or a
  // glob pattern such as "data/fineweb_train_*.bin". No match, or an empty stream, is an error naming spec.
  static std::shared_ptr<const TokenStream> open(const std::string& spec);
  // An in-memory stream (tests, generated text); name stands for the file in errors.
  static std::shared_ptr<const TokenStream> from_tokens(std::vector<std::uint16_t> tokens, std::string name);

  const std::string& spec() const { return spec_; }
  std::int64_t size() const { return total_; }
  std::size_t num_shards() const { return segments_.size(); }
  std::string describe() const;  // "'spec': 3 shards, 1234567 tokens"

  // out[i] = token[start + i] for i < count. When vocab > 0, a token outside [0, vocab) is an error naming
  // the shard file and the token's position in it.
  void read(std::int64_t start, std::int64_t count, std::int32_t* out, std::int64_t vocab = 0) const;
  // Checks part `part` of `parts` (equal slices of the stream) for tokens outside [0, vocab): the same error as
  // read's, found when the data is opened rather than when training reaches the token. One pass over the slice.
  void check_vocab(std::int64_t vocab, int part = 0, int parts = 1) const;

 private:
  struct Segment {
    std::string name;
    std::int64_t offset = 0, size = 0;  // in the stream
    const TokenShard* shard = nullptr;  // or
    const std::uint16_t* memory = nullptr;
  };
  std::string spec_;
  std::vector<Segment> segments_;
  std::vector<std::unique_ptr<TokenShard>> shards_;
  std::vector<std::uint16_t> memory_;
  std::int64_t total_ = 0;
};

}  // namespace orthoshard
