// TokenStream: opening (glob, builtin) and range reads across segments.
#include "models/data/token_stream.hpp"

#include "models/data/synthetic.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"

#include <glob.h>

#include <algorithm>
#include <cstring>

namespace orthoshard {

namespace {

constexpr std::int64_t kSyntheticTrainTokens = std::int64_t{1} << 21;
constexpr std::int64_t kSyntheticValTokens = std::int64_t{1} << 17;

std::vector<std::string> glob_paths(const std::string& pattern) {
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), GLOB_ERR, nullptr, &g);
  std::vector<std::string> out;
  if (rc == 0)
    for (std::size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
  ::globfree(&g);
  if (rc == GLOB_NOMATCH || (rc == 0 && out.empty())) throw UsageError("'" + pattern + "': no such token file");
  if (rc != 0) throw UsageError("'" + pattern + "': cannot list the files of this pattern");
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::shared_ptr<const TokenStream> TokenStream::open(const std::string& spec) {
  if (spec == "builtin:synthetic" || spec == "builtin:synthetic:val") {
    const SyntheticLanguage lang;
    const bool val = spec.ends_with(":val");
    auto s = from_tokens(lang.sample(val ? kSyntheticValTokens : kSyntheticTrainTokens, val ? 1 : 0), spec);
    return s;
  }
  if (spec.starts_with("builtin:"))
    throw UsageError("'" + spec + "': unknown built-in data set (known: builtin:synthetic, builtin:synthetic:val)");
  auto s = std::make_shared<TokenStream>();
  s->spec_ = spec;
  for (const auto& path : glob_paths(spec)) {
    s->shards_.push_back(std::make_unique<TokenShard>(TokenShard::open(path)));
    const TokenShard* sh = s->shards_.back().get();
    if (sh->size() == 0) continue;
    s->segments_.push_back({path, s->total_, sh->size(), sh, nullptr});
    s->total_ += sh->size();
  }
  if (s->total_ == 0) throw UsageError("'" + spec + "': the token files hold no tokens");
  return s;
}

std::shared_ptr<const TokenStream> TokenStream::from_tokens(std::vector<std::uint16_t> tokens, std::string name) {
  if (tokens.empty()) throw UsageError("'" + name + "': no tokens");
  auto s = std::make_shared<TokenStream>();
  s->spec_ = name;
  s->memory_ = std::move(tokens);
  s->total_ = static_cast<std::int64_t>(s->memory_.size());
  s->segments_.push_back({name, 0, s->total_, nullptr, s->memory_.data()});
  return s;
}

std::string TokenStream::describe() const {
  return fmt::format("'{}': {} shard{}, {} tokens", spec_, segments_.size(), segments_.size() == 1 ? "" : "s", total_);
}

void TokenStream::read(std::int64_t start, std::int64_t count, std::int32_t* out, std::int64_t vocab) const {
  OS_CHECK(start >= 0 && count >= 0 && start + count <= total_, "'{}': token range [{}, {}) outside the {} tokens",
           spec_, start, start + count, total_);
  auto it = std::upper_bound(segments_.begin(), segments_.end(), start,
                             [](std::int64_t v, const Segment& s) { return v < s.offset; });
  std::size_t si = static_cast<std::size_t>(it - segments_.begin()) - 1;
  std::int64_t done = 0;
  while (done < count) {
    const Segment& seg = segments_[si];
    const std::int64_t local = start + done - seg.offset;
    const std::int64_t n = std::min(count - done, seg.size - local);
    std::int32_t* dst = out + done;
    if (seg.shard) {
      seg.shard->read(local, n, dst);
    } else {
      for (std::int64_t i = 0; i < n; ++i) dst[i] = seg.memory[local + i];
    }
    for (std::int64_t i = 0; i < n; ++i)
      if (dst[i] < 0 || (vocab > 0 && dst[i] >= vocab))
        throw UsageError(fmt::format("'{}': token {} at position {} is outside the vocabulary [0, {})", seg.name,
                                     seg.shard ? seg.shard->token(local + i) : static_cast<std::uint32_t>(dst[i]),
                                     local + i, vocab > 0 ? vocab : std::int64_t{INT32_MAX}));
    done += n;
    ++si;
  }
}

void TokenStream::check_vocab(std::int64_t vocab, int part, int parts) const {
  const std::int64_t begin = total_ * part / parts, end = total_ * (part + 1) / parts;
  constexpr std::int64_t kChunk = std::int64_t{1} << 20;
  std::vector<std::int32_t> buf(static_cast<std::size_t>(std::min(kChunk, std::max<std::int64_t>(end - begin, 1))));
  for (std::int64_t at = begin; at < end; at += kChunk) read(at, std::min(kChunk, end - at), buf.data(), vocab);
}

}  // namespace orthoshard
