// Data: loader windows against the formula for W = 1..4 ranks and K = 1..3 micro-steps, the shuffled order
// (deterministic, a permutation per epoch, restorable), shard files (uint16/uint32, globs crossing shard
// boundaries, bad files), the byte tokenizer, prepare-data, and the synthetic language's entropy rate.
#include "launch/cli/prepare_data.hpp"
#include "tests/test_util.hpp"
#include "models/data/byte_tokenizer.hpp"
#include "models/data/loader.hpp"
#include "models/data/synthetic.hpp"
#include "models/data/token_shard.hpp"
#include "models/data/token_stream.hpp"
#include "runtime/core/error.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

using namespace orthoshard;
using orthoshard::testing::error_of;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const std::string& tag) {
  const fs::path d = fs::temp_directory_path() / ("orthoshard_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// token[i] = i (mod 2^16): a token names its position.
std::vector<std::uint16_t> positions(std::int64_t n) {
  std::vector<std::uint16_t> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = static_cast<std::uint16_t>(i);
  return v;
}

}  // namespace

TEST(DataLoader, SequentialWindowsFollowTheFormula) {
  const std::int64_t N = 4001, B = 2, T = 8;
  auto stream = TokenStream::from_tokens(positions(N), "positions");
  for (int W = 1; W <= 4; ++W)
    for (int K = 1; K <= 3; ++K) {
      std::vector<DataLoader> ranks;
      for (int r = 0; r < W; ++r) ranks.emplace_back(stream, LoaderConfig{B, T, W, r, K});
      const std::int64_t window = W * K * B * T;
      ASSERT_EQ(ranks[0].steps_per_epoch(), (N - 1) / window) << "W=" << W << " K=" << K;
      // Every step of the epoch and the first of the next.
      for (std::int64_t s = 0; s <= ranks[0].steps_per_epoch(); ++s) {
        const std::int64_t step_in_epoch = s % ranks[0].steps_per_epoch();
        std::vector<int> seen(static_cast<std::size_t>(window + 1), 0);
        for (int r = 0; r < W; ++r) {
          EXPECT_EQ(ranks[r].position().epoch, s / ranks[0].steps_per_epoch());
          for (int j = 0; j < K; ++j) {
            Tensor in, tg;
            ranks[r].load(j, in, tg);
            const std::int64_t start = step_in_epoch * window + (j * W + r) * B * T;
            for (std::int64_t i = 0; i < B * T; ++i) {
              ASSERT_EQ(in.data<std::int32_t>()[i], start + i) << "W=" << W << " K=" << K << " s=" << s;
              ASSERT_EQ(tg.data<std::int32_t>()[i], start + i + 1);
              ++seen[static_cast<std::size_t>(start + i - step_in_epoch * window)];
            }
          }
          ranks[r].advance();
        }
        // The ranks' micro-batches tile the window exactly once.
        for (std::int64_t i = 0; i < window; ++i) ASSERT_EQ(seen[static_cast<std::size_t>(i)], 1);
      }
    }
}

TEST(DataLoader, ShuffledIsASeededPermutationPerEpochAndRestores) {
  const std::int64_t T = 4, B = 3;
  auto stream = TokenStream::from_tokens(positions(T * 60 + 1), "positions");
  LoaderConfig c{B, T, 2, 0, 2, DataOrder::Shuffled, 11};
  DataLoader a(stream, c), b(stream, c);
  c.seed = 12;
  DataLoader other(stream, c);
  ASSERT_EQ(a.sequences_per_epoch(), 60);
  ASSERT_EQ(a.steps_per_epoch(), 5);  // 60 / (W·K·B = 12)
  std::vector<std::set<std::int64_t>> epochs(2);
  std::vector<std::vector<std::int64_t>> order(2);
  bool differs = false;
  for (int s = 0; s < 10; ++s) {
    for (int r = 0; r < 2; ++r) {
      LoaderConfig rc{B, T, 2, r, 2, DataOrder::Shuffled, 11};
      DataLoader lr(stream, rc);
      lr.restore(a.position());
      for (int j = 0; j < 2; ++j)
        for (std::int64_t k = 0; k < B; ++k) {
          const std::int64_t st = lr.sequence_start(j, k);
          ASSERT_EQ(st % T, 0);
          epochs[static_cast<std::size_t>(s / 5)].insert(st);
          order[static_cast<std::size_t>(s / 5)].push_back(st);
          // Same seed, same batches; the tokens are the sequence's window.
          Tensor in, tg;
          lr.load(j, in, tg);
          ASSERT_EQ(in.data<std::int32_t>()[k * T], st);
          ASSERT_EQ(tg.data<std::int32_t>()[k * T + T - 1], st + T);
        }
    }
    for (int j = 0; j < 2; ++j)
      for (std::int64_t k = 0; k < B; ++k) {
        EXPECT_EQ(a.sequence_start(j, k), b.sequence_start(j, k));
        differs |= a.sequence_start(j, k) != other.sequence_start(j, k);
      }
    a.advance();
    b.advance();
    other.advance();
  }
  EXPECT_TRUE(differs);
  EXPECT_EQ(epochs[0].size(), 60u);  // every sequence exactly once per epoch
  EXPECT_EQ(epochs[1].size(), 60u);
  EXPECT_NE(order[0], order[1]);     // reshuffled each epoch

  // Restoring a saved position resumes with exactly the same batches, also across an epoch.
  DataLoader run(stream, LoaderConfig{B, T, 2, 1, 2, DataOrder::Shuffled, 11});
  for (int s = 0; s < 3; ++s) run.advance();
  const DataPosition saved = run.position();
  std::vector<std::int64_t> expect;
  for (int s = 0; s < 4; ++s, run.advance())
    for (int j = 0; j < 2; ++j) expect.push_back(run.sequence_start(j, 1));
  DataLoader resumed(stream, LoaderConfig{B, T, 2, 1, 2, DataOrder::Shuffled, 11});
  resumed.restore(saved);
  std::vector<std::int64_t> got;
  for (int s = 0; s < 4; ++s, resumed.advance())
    for (int j = 0; j < 2; ++j) got.push_back(resumed.sequence_start(j, 1));
  EXPECT_EQ(got, expect);
  EXPECT_NE(error_of([&] { resumed.restore({0, 5}); }).find("outside this data"), std::string::npos);
  EXPECT_NE(error_of([] { parse_data_order("random"); }).find("sequential or shuffled"), std::string::npos);
}

TEST(DataShards, GlobOfMixedShardsReadsAcrossBoundaries) {
  const fs::path dir = temp_dir("shards");
  std::vector<std::uint32_t> all;
  for (std::uint32_t i = 0; i < 300; ++i) all.push_back(i * 7 % 1000);
  // Written out of name order; the stream concatenates in sorted name order.
  write_token_shard_u32((dir / "part_002.bin").string(), std::vector<std::uint32_t>(all.begin() + 250, all.end()));
  std::vector<std::uint16_t> first(all.begin(), all.begin() + 100), second(all.begin() + 100, all.begin() + 250);
  write_token_shard_u16((dir / "part_000.bin").string(), first);
  write_token_shard_u16((dir / "part_001.bin").string(), second);
  write_token_shard_u16((dir / "part_001b.bin").string(), {});  // empty shards are skipped
  fs::rename(dir / "part_001b.bin", dir / "part_001_empty.bin");
  auto s = TokenStream::open((dir / "part_*.bin").string());
  EXPECT_EQ(s->size(), 300);
  EXPECT_EQ(s->num_shards(), 3u);
  std::vector<std::int32_t> got(300);
  s->read(0, 300, got.data(), 1000);
  for (std::size_t i = 0; i < 300; ++i) ASSERT_EQ(got[i], static_cast<std::int32_t>(all[i])) << i;
  std::vector<std::int32_t> mid(200);
  s->read(90, 200, mid.data());  // spans all three
  for (std::size_t i = 0; i < 200; ++i) ASSERT_EQ(mid[i], static_cast<std::int32_t>(all[90 + i]));
  // Vocabulary check names the shard and the position inside it.
  const std::string msg = error_of([&] { s->read(0, 300, got.data(), 500); });
  EXPECT_NE(msg.find("part_000.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("outside the vocabulary [0, 500)"), std::string::npos) << msg;
  fs::remove_all(dir);
}

TEST(DataShards, BadFilesGiveClearErrors) {
  const fs::path dir = temp_dir("badshards");
  write_token_shard_u16((dir / "good.bin").string(), {1, 2, 3, 300, 5, 6, 7, 8, 9, 10});
  std::vector<char> good;
  {
    std::ifstream in(dir / "good.bin", std::ios::binary);
    good.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& name, std::vector<char> bytes) {
    std::ofstream(dir / name, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return (dir / name).string();
  };
  auto with_header = [&](int i, std::int32_t v) {
    auto b = good;
    std::memcpy(b.data() + 4 * i, &v, 4);
    return b;
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {write("magic.bin", with_header(0, 20240326)), "not an llm.c token shard"},
      {write("version.bin", with_header(1, 7)), "version 7 is not supported"},
      {write("truncated.bin", std::vector<char>(good.begin(), good.end() - 3)), "truncated"},
      {write("header.bin", std::vector<char>(good.begin(), good.begin() + 100)), "truncated"},
      {write("count.bin", with_header(2, 1000)), "truncated"},
      {(dir / "nothing_*.bin").string(), "no such token file"},
      {(dir / "missing.bin").string(), "no such token file"},
  };
  for (const auto& [path, want] : cases) {
    const std::string msg = error_of([&] { TokenStream::open(path); });
    EXPECT_NE(msg.find(want), std::string::npos) << path << ": " << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
  }
  // Token >= V in a batch: the loader names the file and the position.
  DataLoader loader(TokenStream::open((dir / "good.bin").string()), LoaderConfig{1, 4, 1, 0, 1, DataOrder::Sequential,
                                                                                 0, 256});
  Tensor in, tg;
  const std::string msg = error_of([&] { loader.load(0, in, tg); });
  EXPECT_NE(msg.find("good.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("token 300 at position 3"), std::string::npos) << msg;
  // Too few tokens for one step.
  const std::string few =
      error_of([&] { DataLoader(TokenStream::open((dir / "good.bin").string()), LoaderConfig{2, 8, 1, 0, 1}); });
  EXPECT_NE(few.find("too few tokens"), std::string::npos) << few;
  EXPECT_NE(few.find("good.bin"), std::string::npos) << few;
  fs::remove_all(dir);
}

TEST(DataText, ByteTokenizerAndPrepareData) {
  const std::string text = "Hello, w\xc3\xb6rld!\n\x01\xff";
  const auto toks = byte_encode(text);
  ASSERT_EQ(toks.size(), text.size());
  EXPECT_EQ(toks[0], 'H');
  EXPECT_EQ(toks.back(), 255);
  EXPECT_EQ(byte_decode(std::vector<std::int32_t>(toks.begin(), toks.end())), text);
  EXPECT_NE(error_of([] { byte_decode({65, 256}); }).find("position 1"), std::string::npos);

  const fs::path dir = temp_dir("prepare");
  std::string a(900, 'a'), b(100, 'b');
  std::ofstream(dir / "a.txt") << a;
  std::ofstream(dir / "b.txt") << b;
  const std::string out = (dir / "text.bin").string();
  EXPECT_EQ(val_path_for(out), (dir / "text_val.bin").string());
  EXPECT_EQ(run_prepare_data({{(dir / "a.txt").string(), (dir / "b.txt").string()}, out, 0.1}), 0);
  auto train = TokenStream::open(out), val = TokenStream::open(val_path_for(out));
  EXPECT_EQ(train->size(), 900);
  EXPECT_EQ(val->size(), 100);
  std::vector<std::int32_t> v(100);
  val->read(0, 100, v.data(), kByteVocab);
  EXPECT_EQ(byte_decode(v), b);
  EXPECT_NE(error_of([&] { run_prepare_data({{(dir / "nope.txt").string()}, out, 0}); }).find("nope.txt"),
            std::string::npos);
  EXPECT_NE(error_of([&] { run_prepare_data({{(dir / "a.txt").string()}, out, 1.5}); }).find("--val-fraction"),
            std::string::npos);
  fs::remove_all(dir);
}

TEST(DataSynthetic, EntropyRateMatchesTheSampleAndIsDeterministic) {
  const SyntheticLanguage lang;
  const double H = lang.entropy_rate();
  EXPECT_GT(H, 0.3);
  EXPECT_LT(H, std::log(4.0));
  // π is a stationary distribution.
  const auto& pi = lang.stationary();
  double total = 0;
  for (double p : pi) total += p;
  EXPECT_NEAR(total, 1.0, 1e-12);
  constexpr int A = SyntheticLanguage::kAlphabet;
  for (int b = 0; b < A; ++b)
    for (int c = 0; c < A; ++c) {
      double in = 0;
      for (int a = 0; a < A; ++a) in += pi[a * A + b] * lang.probability(a, b, c);
      ASSERT_NEAR(in, pi[b * A + c], 1e-12);
    }
  // The sample's mean negative log-likelihood under the true model approaches H.
  const std::int64_t n = 400000;
  const auto s = lang.sample(n, 0);
  EXPECT_EQ(s, lang.sample(n, 0));
  EXPECT_NE(s, lang.sample(n, 1));
  const std::string symbols = " abcdefghijklmnopqrstuvw";
  auto idx = [&](std::uint16_t t) { return static_cast<int>(symbols.find(static_cast<char>(t))); };
  double nll = 0;
  for (std::int64_t i = 2; i < n; ++i) {
    const double p = lang.probability(idx(s[i - 2]), idx(s[i - 1]), idx(s[i]));
    ASSERT_GT(p, 0.0) << i;
    nll -= std::log(p);
  }
  nll /= static_cast<double>(n - 2);
  EXPECT_NEAR(nll, H, 0.01) << "H = " << H;
  auto train = TokenStream::open("builtin:synthetic");
  EXPECT_GT(train->size(), 1000000);
  EXPECT_NE(error_of([] { TokenStream::open("builtin:nothing"); }).find("unknown built-in"), std::string::npos);
}
