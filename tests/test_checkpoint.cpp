// Checkpoints at 1-4 ranks: a resumed run continues bit for bit at the same world size (every optimizer),
// within 1e-4 at another world size (2 -> 1, 3, 4; 3 -> 4; hybrid -> full); corrupt and truncated files
// are rejected and `auto` falls back to the previous checkpoint with a warning; `.partial` files and
// injected crashes before the rename or before `latest` leave a loadable checkpoint; shape changes are
// refused naming the tensor; inspect / diff / export behave. Every rank sees the same outcome.
#include "tests/mpi_test.hpp"
#include "tests/test_util.hpp"

#include "launch/trainer/checkpoint.hpp"
#include "launch/cli/ckpt_tools.hpp"
#include "launch/trainer/train.hpp"
#include "models/gpt2/llmc_file.hpp"
#include "runtime/checkpoint/commit.hpp"
#include "runtime/checkpoint/h5_parallel.hpp"
#include "models/family.hpp"
#include "models/sampling.hpp"
#include "runtime/core/error.hpp"
#include "runtime/fsdp/row_sharding.hpp"

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using namespace orthoshard;
using orthoshard::testing::max_rel;
using orthoshard::testing::MpiTest;

namespace {

// A directory unique to this test run (rank 0 creates it, every rank gets its name), removed at the end.
class TempDir {
 public:
  explicit TempDir(Communicator& c) : c_(c) {
    std::string name;
    if (c.rank() == 0) {
      std::string tmpl = (fs::temp_directory_path() / "orthoshard-ckpt-XXXXXX").string();
      name = mkdtemp(tmpl.data()) ? tmpl : "";
    }
    std::int64_t n = static_cast<std::int64_t>(name.size());
    c.broadcast(&n, 1, DType::I64, 0);
    name.resize(static_cast<std::size_t>(n));
    if (n) c.broadcast(name.data(), static_cast<std::size_t>(n), DType::U8, 0);
    path_ = name;
  }
  ~TempDir() {
    c_.barrier();
    std::error_code ec;
    if (c_.rank() == 0 && !path_.empty()) fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& f) const { return (fs::path(path_) / f).string(); }

 private:
  Communicator& c_;
  std::string path_;
};

TrainConfig tiny(const std::string& optimizer, std::vector<std::string> extra = {}) {
  std::vector<std::string> o = {"--model.L=2", "--model.C=32", "--model.NH=4", "--model.V=256", "--model.Vp=256",
                                "--model.maxT=32", "--train.seq_len=16", "--train.batch_size=2", "--train.steps=6",
                                "--train.log_every=100", "--optim.name=" + optimizer, "--optim.lr=0.01",
                                "--optim.update_proj_gap=3", "--train.schedule=cosine", "--train.warmup_steps=2"};
  if (optimizer == "conda") o.push_back("--optim.scale=0.25");
  o.insert(o.end(), extra.begin(), extra.end());
  return load_train_config("", o);
}

std::vector<double> tail(const std::vector<double>& v, std::size_t from) {
  return std::vector<double>(v.begin() + static_cast<std::ptrdiff_t>(std::min(from, v.size())), v.end());
}

const TrainOptions kQuiet{true, true};

// Every dataset path below `group`.
void datasets_of(H5ParallelFile& f, const std::string& group, std::vector<std::string>& out) {
  for (const auto& n : f.children(group)) {
    const std::string p = (group == "/" ? "" : group) + "/" + n;
    if (f.is_group(p)) datasets_of(f, p, out);
    else out.push_back(p);
  }
}

// Datasets that differ in shape or any byte (or exist in one file only).
std::vector<std::string> differing(const std::string& a, const std::string& b) {
  H5ParallelFile fa = H5ParallelFile::open_read(a, nullptr), fb = H5ParallelFile::open_read(b, nullptr);
  std::vector<std::string> da, db, out;
  datasets_of(fa, "/", da);
  datasets_of(fb, "/", db);
  if (da != db) out.push_back("(dataset lists differ)");
  for (const auto& d : da) {
    if (std::find(db.begin(), db.end(), d) == db.end()) continue;
    const Tensor x = fa.read_all(d, false), y = fb.read_all(d, false);
    if (x.shape() != y.shape() || x.dtype() != y.dtype() || std::memcmp(x.raw(), y.raw(), x.nbytes()) != 0)
      out.push_back(d);
  }
  return out;
}

// Byte offset of a dataset's data in the file.
std::uint64_t data_offset(const std::string& file, const std::string& dataset) {
  hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t d = H5Dopen2(f, dataset.c_str(), H5P_DEFAULT);
  const haddr_t off = H5Dget_offset(d);
  H5Dclose(d);
  H5Fclose(f);
  return off;
}

void flip_bytes(const std::string& file, std::uint64_t offset, int n) {
  std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
  for (int i = 0; i < n; ++i) {
    io.seekg(static_cast<std::streamoff>(offset + static_cast<std::uint64_t>(i)));
    char c = 0;
    io.read(&c, 1);
    c = static_cast<char>(c ^ 0x5A);
    io.seekp(static_cast<std::streamoff>(offset + static_cast<std::uint64_t>(i)));
    io.write(&c, 1);
  }
}

// Runs `fn` expecting an exception of type E whose message contains `needle`; returns the message.
template <typename E, typename F> std::string expect_throw(F&& fn, const std::string& needle) {
  try {
    fn();
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "unexpected exception type: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no exception (expected one naming '" << needle << "')";
  return "";
}

int inspect_quietly(const std::string& file) {
  ::testing::internal::CaptureStdout();
  int rc = -1;
  try {
    rc = run_ckpt_inspect({file, false});
  } catch (const std::exception& e) {
    rc = 2;
  }
  ::testing::internal::GetCapturedStdout();
  return rc;
}

}  // namespace

TEST_F(MpiTest, RowHyperslabsRoundTripAtAnyRankCountWithRankIndependentChecksums) {
  // Datasets with fewer rows than ranks (trailing ranks write nothing), written by one partition of the rows
  // and read back by another; the stored checksum equals the one computed serially from the whole tensor.
  TempDir dir(comm());
  const int W = comm().size(), me = comm().rank();
  const std::string file = dir / "rows.h5";
  auto value = [](std::int64_t m, std::int64_t i) { return static_cast<float>(m * 1000 + i) * 0.5f; };
  const std::vector<Shape> shapes = {{1, 3}, {2, 5}, {5}, {7, 2, 3}, {}};
  {
    H5ParallelFile f = H5ParallelFile::create(file, &comm());
    f.create_group("/t/u");
    f.set_attr("/t", "note", std::string("row test"));
    for (std::size_t k = 0; k < shapes.size(); ++k) {
      const Shape& s = shapes[k];
      const std::int64_t m = s.empty() ? 1 : s[0], row = shape_numel(s) / m;
      const RowRange r = s.empty() ? RowRange{0, me == 0 ? 1 : 0} : shard_rows(m, W, me);
      std::vector<float> mine(static_cast<std::size_t>(r.rows() * row));
      for (std::size_t i = 0; i < mine.size(); ++i)
        mine[i] = value(static_cast<std::int64_t>(k), r.begin * row + static_cast<std::int64_t>(i));
      f.write_rows("/t/u/d" + std::to_string(k), s, DType::F32, r.begin, r.rows(), mine.data());
    }
    f.write_checksums();
    f.close();
  }
  H5ParallelFile f = H5ParallelFile::open_read(file, &comm());
  EXPECT_EQ(f.string_attr("/t", "note"), "row test");
  for (std::size_t k = 0; k < shapes.size(); ++k) {
    const Shape& s = shapes[k];
    const std::int64_t m = s.empty() ? 1 : s[0], row = shape_numel(s) / m;
    EXPECT_EQ(f.info("/t/u/d" + std::to_string(k)).shape, s);
    const RowRange r = s.empty() ? RowRange{0, 1} : shard_rows(m, W, W - 1 - me);  // another partition
    const Tensor t = f.read_rows("/t/u/d" + std::to_string(k), r.begin, r.rows(), s.empty() ? me == 0 : true);
    for (std::int64_t i = 0; i < r.rows() * row; ++i)
      ASSERT_EQ(t.data<float>()[i], value(static_cast<std::int64_t>(k), r.begin * row + i)) << k;
    // The checksum of the whole tensor computed in one process.
    std::vector<float> all(static_cast<std::size_t>(m * row));
    for (std::size_t i = 0; i < all.size(); ++i) all[i] = value(static_cast<std::int64_t>(k), static_cast<std::int64_t>(i));
    RowChecksum c;
    c.add_rows(all.data(), 0, m, static_cast<std::size_t>(row) * 4);
    EXPECT_EQ(f.info("/t/u/d" + std::to_string(k)).checksum, c.value()) << k;
  }
  EXPECT_TRUE(f.verify_checksums().empty());
  f.close();
  // Row hashes depend on the row index and on every byte.
  const float x[4] = {1, 2, 3, 4};
  float y[4] = {1, 2, 3, 4};
  EXPECT_NE(row_hash(x, 16, 0), row_hash(x, 16, 1));
  reinterpret_cast<unsigned char*>(y)[13] ^= 1;
  EXPECT_NE(row_hash(x, 16, 0), row_hash(y, 16, 0));
  EXPECT_NE(row_hash(x, 15, 0), row_hash(x, 16, 0));
}

TEST_F(MpiTest, SameWorldSizeResumeIsBitExactForEveryOptimizer) {
  for (const char* name : {"adamw", "muon", "normuon", "conda"}) {
    TempDir a(comm()), b(comm());
    const TrainResult full =
        train(comm(), tiny(name, {"--checkpoint.dir=" + a.path(), "--checkpoint.every=3"}), kQuiet);
    ASSERT_EQ(full.losses.size(), 6u);
    const TrainResult resumed = train(comm(),
                                      tiny(name, {"--checkpoint.resume=" + (a / "step_00000003.h5"),
                                                  "--checkpoint.dir=" + b.path(), "--checkpoint.every=3"}),
                                      kQuiet);
    EXPECT_EQ(resumed.first_step, 3) << name;
    EXPECT_EQ(resumed.losses, tail(full.losses, 3)) << name << ": losses after resuming differ";
    EXPECT_EQ(resumed.grad_norms, tail(full.grad_norms, 3)) << name;
    // The final states agree in every byte: weights, every optimizer state, data position.
    if (comm().rank() == 0) {
      const auto diff = differing(a / "step_00000006.h5", b / "step_00000006.h5");
      EXPECT_TRUE(diff.empty()) << name << ": " << diff.size() << " datasets differ, first " << diff[0];
    }
  }
}

TEST_F(MpiTest, ResumeAtAnotherWorldSizeContinuesWithin1e4) {
  // Global batch of 12 sequences at every world size (B = 12 / W).
  const int W = comm().size(), me = comm().rank();
  auto cfg = [](const std::string& opt, int ranks, std::vector<std::string> extra) {
    extra.push_back("--train.batch_size=" + std::to_string(12 / ranks));
    return tiny(opt, extra);
  };
  std::vector<int> save_sizes = {std::min(W, 2)};
  if (W == 4) save_sizes.push_back(3);
  for (const char* opt : {"normuon", "conda"}) {
    for (int s : save_sizes) {
      TempDir dir(comm());
      // Ranks [0, s) save; the rest wait.
      auto saver = comm().split(me < s ? 0 : 1, me);
      std::vector<double> ref;
      if (me < s) {
        ref = train(*saver, cfg(opt, s, {"--checkpoint.dir=" + dir.path(), "--checkpoint.every=3"}), kQuiet).losses;
        EXPECT_EQ(ref.size(), 6u);
      }
      ref.resize(6);
      comm().broadcast(ref.data(), ref.size(), DType::F64, 0);
      // Resume at the whole world and at one rank.
      const TrainResult all = train(comm(), cfg(opt, W, {"--checkpoint.resume=" + (dir / "step_00000003.h5")}), kQuiet);
      EXPECT_EQ(all.first_step, 3);
      EXPECT_LT(max_rel(all.losses, tail(ref, 3)), 1e-4) << opt << ": saved at " << s << ", resumed at " << W;
      auto one = comm().split(me == 0 ? 0 : 1, me);
      if (me == 0) {
        const TrainResult r1 = train(*one, cfg(opt, 1, {"--checkpoint.resume=" + (dir / "step_00000003.h5")}), kQuiet);
        EXPECT_LT(max_rel(r1.losses, tail(ref, 3)), 1e-4) << opt << ": saved at " << s << ", resumed at 1";
      }
    }
  }
}

TEST_F(MpiTest, LlamaResumeIsBitExactAndReshardsWithin1e4) {
  // LLaMA (grouped-query attention, untied head) with NorMuon: the same world size continues bit for bit; one
  // rank resuming a W-rank checkpoint continues within 1e-4. Global batch 12 sequences at every world size.
  const int W = comm().size(), me = comm().rank();
  auto cfg = [](int ranks, std::vector<std::string> extra) {
    extra.insert(extra.end(), {"--model.arch=llama", "--model.NKV=2", "--model.FF=48",
                               "--train.batch_size=" + std::to_string(12 / ranks)});
    return tiny("normuon", extra);
  };
  if (12 % W != 0) return;
  TempDir a(comm()), b(comm());
  const TrainResult full = train(comm(), cfg(W, {"--checkpoint.dir=" + a.path(), "--checkpoint.every=3"}), kQuiet);
  const TrainResult resumed =
      train(comm(), cfg(W, {"--checkpoint.resume=" + (a / "step_00000003.h5"), "--checkpoint.dir=" + b.path(),
                            "--checkpoint.every=3"}), kQuiet);
  EXPECT_EQ(resumed.losses, tail(full.losses, 3));
  if (me == 0) {
    const auto diff = differing(a / "step_00000006.h5", b / "step_00000006.h5");
    EXPECT_TRUE(diff.empty()) << diff.size() << " datasets differ, first " << diff[0];
  }
  auto one = comm().split(me == 0 ? 0 : 1, me);
  if (me == 0) {
    const TrainResult r1 = train(*one, cfg(1, {"--checkpoint.resume=" + (a / "step_00000003.h5")}), kQuiet);
    EXPECT_LT(max_rel(r1.losses, tail(full.losses, 3)), 1e-4);
  }
}

TEST_F(MpiTest, LlamaCheckpointExportsToHuggingFaceAndTrainsFromIt) {
  // ckpt export --format hf of a LLaMA checkpoint (padded vocabulary Vp = 320 > V = 300, tied head), then
  // model.init_from = that directory: the same weights bit for bit, and training continues from them.
  TempDir dir(comm());
  const std::vector<std::string> shape = {"--model.arch=llama", "--model.NKV=1", "--model.FF=40", "--model.V=300",
                                          "--model.Vp=320", "--model.tie_embeddings=true"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.end(), shape.begin(), shape.end());
    return tiny("muon", extra);
  };
  train(comm(), with({"--checkpoint.dir=" + dir.path(), "--checkpoint.every=2", "--train.steps=2"}), kQuiet);
  const std::string ck = dir / "step_00000002.h5", hf = dir / "hf";
  if (comm().rank() == 0) {
    ::testing::internal::CaptureStdout();
    EXPECT_EQ(run_ckpt_export({ck, "hf", hf}), 0);
    ::testing::internal::GetCapturedStdout();
    ModelSpec spec;
    spec.init_from = hf;
    const std::unique_ptr<Model> m = make_model(spec);
    EXPECT_EQ(m->describe(), "LLaMA L=2 C=32 NH=4 NKV=1 FF=40 V=300 Vp=320 maxT=32 tied");
    H5ParallelFile f = H5ParallelFile::open_read(ck, nullptr);
    for (const ParamInfo& p : m->parameters()) {
      const Tensor want = f.read_all("/model/" + p.name, false);
      Tensor got = Tensor::empty(p.shape, DType::F32);
      m->initial_rows(p.name, 0, p.shape[0], got.data<float>());
      ASSERT_EQ(want.shape(), got.shape()) << p.name;
      EXPECT_EQ(std::memcmp(want.raw(), got.raw(), got.nbytes()), 0) << p.name;
    }
  }
  comm().barrier();
  const TrainResult tuned = train(comm(), tiny("muon", {"--model.init_from=" + hf, "--train.steps=2"}), kQuiet);
  EXPECT_EQ(tuned.first_step, 0);
  EXPECT_EQ(tuned.losses.size(), 2u);
}

TEST_F(MpiTest, SamplesDuringTrainingEqualSamplingTheCheckpoint) {
  // [eval] sample_every: rank 0's sample after step 6 equals what the family's generator samples from step 6's
  // checkpoint with the same prompt and seed (GPT-2 and LLaMA).
  for (const char* arch : {"gpt2", "llama"}) {
    TempDir dir(comm());
    const TrainConfig cfg = tiny("adamw", {std::string("--model.arch=") + arch, "--eval.sample_every=3",
                                           "--eval.sample_prompt=ab", "--eval.sample_tokens=8",
                                           "--checkpoint.dir=" + dir.path(), "--checkpoint.every=6"});
    const TrainResult r = train(comm(), cfg, kQuiet);
    if (comm().rank() != 0) {
      EXPECT_TRUE(r.samples.empty());
      continue;
    }
    ASSERT_EQ(r.samples.size(), 2u) << arch;
    EXPECT_EQ(r.samples[0].first, 3);
    EXPECT_EQ(r.samples[1].first, 6);
    EXPECT_EQ(r.samples[1].second.size(), 8u);
    std::map<std::string, Tensor> weights;
    const std::unique_ptr<Model> m = read_checkpoint_model(dir / "step_00000006.h5", weights);
    const auto gen = m->cpu_generator([&](const std::string& n) { return weights.at(n); });
    const auto want = sample_tokens(*gen, m->vocab_size(), prompt_tokens("ab", m->vocab_size()), 8,
                                    SamplingOptions{1.0, 0, cfg.train.seed});
    EXPECT_EQ(r.samples[1].second, want) << arch;
  }
}

TEST_F(MpiTest, HybridShardedCheckpointResumesFullySharded) {
  const int W = comm().size();
  if (W % 2 != 0) return;
  TempDir dir(comm());
  const std::string hybrid = "--runtime.sharding=hybrid:" + std::to_string(W / 2);
  const TrainResult ref =
      train(comm(), tiny("muon", {hybrid, "--checkpoint.dir=" + dir.path(), "--checkpoint.every=3"}), kQuiet);
  const TrainResult full = train(comm(), tiny("muon", {"--checkpoint.resume=" + (dir / "step_00000003.h5")}), kQuiet);
  EXPECT_LT(max_rel(full.losses, tail(ref.losses, 3)), 1e-4);
}

TEST_F(MpiTest, CorruptCheckpointIsRejectedAndAutoFallsBackWithAWarning) {
  TempDir dir(comm());
  const TrainResult full =
      train(comm(), tiny("normuon", {"--checkpoint.dir=" + dir.path(), "--checkpoint.every=3"}), kQuiet);
  const std::string newest = dir / "step_00000006.h5";
  if (comm().rank() == 0) {
    EXPECT_EQ(inspect_quietly(newest), 0);
    // Flip bytes inside the data of one tensor: HDF5 still opens the file; only the checksum can tell.
    flip_bytes(newest, data_offset(newest, "/optim/h.1.mlp.fc.weight/momentum") + 100, 3);
    EXPECT_EQ(inspect_quietly(newest), 1);
  }
  comm().barrier();
  // Named explicitly: refused, on every rank, naming the tensor.
  expect_throw<Error>([&] { train(comm(), tiny("normuon", {"--checkpoint.resume=" + newest}), kQuiet); },
                      "/optim/h.1.mlp.fc.weight/momentum");
  // auto: falls back to step 3 with a warning, and continues exactly as the uninterrupted run.
  if (comm().rank() == 0) ::testing::internal::CaptureStderr();
  const TrainResult r = train(
      comm(), tiny("normuon", {"--checkpoint.dir=" + dir.path(), "--checkpoint.resume=auto"}), kQuiet);
  if (comm().rank() == 0) {
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("skipping " + newest), std::string::npos) << err;
    EXPECT_NE(err.find("corrupt"), std::string::npos) << err;
  }
  EXPECT_EQ(r.first_step, 3);
  EXPECT_EQ(r.losses, tail(full.losses, 3));
}

TEST_F(MpiTest, TruncatedAndGarbageFilesAreRejectedCleanly) {
  TempDir dir(comm());
  train(comm(), tiny("adamw", {"--checkpoint.dir=" + dir.path(), "--checkpoint.every=3", "--train.steps=3"}), kQuiet);
  const std::string good = dir / "step_00000003.h5", cut = dir / "step_00000004.h5", junk = dir / "step_00000005.h5";
  if (comm().rank() == 0) {
    fs::copy_file(good, cut);
    fs::resize_file(cut, fs::file_size(good) / 2);
    std::ofstream(junk) << "not a checkpoint";
    EXPECT_EQ(inspect_quietly(cut), 1);
    EXPECT_EQ(inspect_quietly(junk), 1);
  }
  comm().barrier();
  expect_throw<Error>([&] { train(comm(), tiny("adamw", {"--checkpoint.resume=" + cut}), kQuiet); }, cut);
  expect_throw<Error>([&] { train(comm(), tiny("adamw", {"--checkpoint.resume=" + junk}), kQuiet); }, "not an HDF5");
  // auto skips both (newest first) and loads step 3.
  const TrainResult r = train(
      comm(), tiny("adamw", {"--checkpoint.dir=" + dir.path(), "--checkpoint.resume=auto", "--train.steps=4"}), kQuiet);
  EXPECT_EQ(r.first_step, 3);
  EXPECT_EQ(r.losses.size(), 1u);
}

TEST_F(MpiTest, PartialFilesAndInjectedCrashesLeaveALoadableCheckpoint) {
  TempDir dir(comm());
  const std::vector<std::string> base = {"--checkpoint.dir=" + dir.path(), "--checkpoint.every=3",
                                         "--checkpoint.resume=auto"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), base.begin(), base.end());
    return tiny("muon", extra);
  };
  const TrainResult first = train(comm(), with({"--train.steps=3"}), kQuiet);
  EXPECT_EQ(first.first_step, 0);  // nothing to resume from yet
  // A crash before the rename leaves step_6.h5.partial; `latest` still names step 3.
  setenv("ORTHOSHARD_CHECKPOINT_FAIL", "before_rename", 1);
  expect_throw<Error>([&] { train(comm(), with({}), kQuiet); }, "injected failure before_rename");
  unsetenv("ORTHOSHARD_CHECKPOINT_FAIL");
  EXPECT_TRUE(fs::exists(dir / "step_00000006.h5.partial"));
  EXPECT_FALSE(fs::exists(dir / "step_00000006.h5"));
  EXPECT_EQ(read_latest(dir.path()), "step_00000003.h5");
  if (comm().rank() == 0) std::ofstream(dir / "step_00000009.h5.partial") << "half a file";
  comm().barrier();
  const TrainResult again = train(comm(), with({"--checkpoint.every=0"}), kQuiet);
  EXPECT_EQ(again.first_step, 3);  // the .partial files are ignored
  // A crash after the rename but before `latest`: the new file is complete; the old one still loads.
  setenv("ORTHOSHARD_CHECKPOINT_FAIL", "before_latest", 1);
  expect_throw<Error>([&] { train(comm(), with({}), kQuiet); }, "injected failure before_latest");
  unsetenv("ORTHOSHARD_CHECKPOINT_FAIL");
  EXPECT_TRUE(fs::exists(dir / "step_00000006.h5"));
  EXPECT_EQ(read_latest(dir.path()), "step_00000003.h5");
  const TrainResult old = train(comm(), tiny("muon", {"--checkpoint.resume=" + (dir / "step_00000003.h5")}), kQuiet);
  EXPECT_EQ(old.first_step, 3);
  EXPECT_EQ(old.losses, again.losses);
  const TrainResult newest = train(comm(), with({"--train.steps=7"}), kQuiet);
  EXPECT_EQ(newest.first_step, 6);
  // keep = 1 deletes older checkpoints only once the new one is committed.
  train(comm(), with({"--train.steps=9", "--checkpoint.keep=1"}), kQuiet);
  EXPECT_EQ(read_latest(dir.path()), "step_00000009.h5");
  EXPECT_FALSE(fs::exists(dir / "step_00000006.h5.partial"));  // a committed save clears crashed ones
  const auto left = list_checkpoints(dir.path());
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].step, 9);
}

TEST_F(MpiTest, ShapeChangesAreRefusedNamingTheTensor) {
  TempDir dir(comm());
  train(comm(), tiny("normuon", {"--checkpoint.dir=" + dir.path(), "--checkpoint.every=2", "--train.steps=2"}),
        kQuiet);
  const std::string ck = "--checkpoint.resume=" + (dir / "step_00000002.h5");
  expect_throw<UsageError>([&] { train(comm(), tiny("normuon", {ck, "--model.C=64"}), kQuiet); },
                           "tensor 'wte' is (256, 32) in the checkpoint but (256, 64)");
  expect_throw<UsageError>([&] { train(comm(), tiny("normuon", {ck, "--model.L=3"}), kQuiet); }, "'h.2.");
  expect_throw<UsageError>([&] { train(comm(), tiny("normuon", {ck, "--model.L=1"}), kQuiet); },
                           "tensor 'h.1.");
  expect_throw<UsageError>([&] { train(comm(), tiny("adamw", {ck}), kQuiet); }, "trained with normuon");
  // Conda's projection side decides its state's shapes: a changed proj_type is refused naming the state.
  TempDir conda(comm());
  train(comm(), tiny("conda", {"--checkpoint.dir=" + conda.path(), "--checkpoint.every=2", "--train.steps=2"}),
        kQuiet);
  expect_throw<UsageError>(
      [&] {
        train(comm(),
              tiny("conda", {"--checkpoint.resume=" + (conda / "step_00000002.h5"), "--optim.proj_type=reverse_std"}),
              kQuiet);
      },
      "optim.proj_type");
}

TEST_F(MpiTest, InspectDiffAndExportRoundTrip) {
  TempDir dir(comm());
  train(comm(), tiny("conda", {"--checkpoint.dir=" + dir.path(), "--checkpoint.every=2", "--train.steps=4"}), kQuiet);
  if (comm().rank() != 0) return;
  const std::string a = dir / "step_00000002.h5", b = dir / "step_00000004.h5";
  EXPECT_EQ(inspect_quietly(b), 0);
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(run_ckpt_diff({b, b, 0.0}), 0);
  EXPECT_EQ(run_ckpt_diff({a, b, 0.0}), 1);  // two steps apart
  const std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find("/model/wte"), std::string::npos);

  // llm.c export loads back to the same weights, bit for bit.
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(run_ckpt_export({b, "llmc", dir / "model.bin"}), 0);
  EXPECT_EQ(run_ckpt_export({b, "safetensors", dir / "model.safetensors"}), 0);
  ::testing::internal::GetCapturedStdout();
  const Gpt2Params p = load_llmc_model(dir / "model.bin");
  H5ParallelFile f = H5ParallelFile::open_read(b, nullptr);
  for (const auto& [name, t] : p.named()) {
    const Tensor v = f.read_all("/model/" + name, false);
    ASSERT_EQ(v.shape(), t.shape()) << name;
    EXPECT_EQ(std::memcmp(v.raw(), t.raw(), t.nbytes()), 0) << name;
  }
  // safetensors: 8-byte header length, JSON header, F32 data at the stated offsets.
  std::ifstream in(dir / "model.safetensors", std::ios::binary);
  std::uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  std::string header(n, '\0');
  in.read(header.data(), static_cast<std::streamsize>(n));
  const auto h = nlohmann::json::parse(header);
  ASSERT_TRUE(h.contains("wte"));
  EXPECT_EQ(h["wte"]["dtype"], "F32");
  EXPECT_EQ(h["wte"]["shape"], nlohmann::json({256, 32}));
  const std::uint64_t begin = h["wte"]["data_offsets"][0], end = h["wte"]["data_offsets"][1];
  std::vector<float> wte((end - begin) / 4);
  in.seekg(static_cast<std::streamoff>(8 + n + begin));
  in.read(reinterpret_cast<char*>(wte.data()), static_cast<std::streamsize>(end - begin));
  EXPECT_EQ(std::memcmp(wte.data(), p.get("wte").raw(), end - begin), 0);
  // A corrupt checkpoint is not exported.
  fs::copy_file(b, dir / "bad.h5");
  flip_bytes(dir / "bad.h5", data_offset(dir / "bad.h5", "/model/wte") + 4, 1);
  EXPECT_THROW(run_ckpt_export({dir / "bad.h5", "llmc", dir / "bad.bin"}), Error);
  EXPECT_FALSE(fs::exists(dir / "bad.bin"));
}
