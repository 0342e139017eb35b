// bench ckpt: for each rank count, a sharded GPT-2 with one optimizer step's state is saved and loaded
// (best of N), and rank 0 writes and reads the same number of bytes sequentially (write + fsync, read
// after evicting the page cache) on the same filesystem.
#include "bench/ckpt_bench.hpp"

#include "launch/trainer/checkpoint.hpp"
#include "runtime/checkpoint/commit.hpp"
#include "launch/trainer/train_config.hpp"
#include "models/data/token_stream.hpp"
#include "models/gpt2/family.hpp"
#include "models/gpt2/init.hpp"
#include "models/gpt2/llmc_file.hpp"
#include "models/gpt2/params.hpp"
#include "optim/optimizer.hpp"
#include "runtime/fsdp/fsdp_engine.hpp"
#include "runtime/core/error.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace orthoshard {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void drop_from_cache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

constexpr std::size_t kChunk = 8u << 20;

// Sequential write of `bytes` (8 MiB writes, then fsync); seconds.
double plain_write(const std::string& path, std::uint64_t bytes) {
  std::vector<char> buf(kChunk);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<char>((i * 2654435761u) >> 13);
  const auto t0 = Clock::now();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) fail("'{}': cannot create: {}", path, std::strerror(errno));
  for (std::uint64_t done = 0; done < bytes;) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, bytes - done));
    const ssize_t w = ::write(fd, buf.data(), n);
    if (w <= 0) fail("'{}': write failed: {}", path, std::strerror(errno));
    done += static_cast<std::uint64_t>(w);
  }
  ::fsync(fd);
  ::close(fd);
  return since(t0);
}

double plain_read(const std::string& path) {
  std::vector<char> buf(kChunk);
  const auto t0 = Clock::now();
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail("'{}': cannot open: {}", path, std::strerror(errno));
  while (::read(fd, buf.data(), buf.size()) > 0) {
  }
  ::close(fd);
  return since(t0);
}

struct Row {
  int ranks = 0;
  std::uint64_t bytes = 0;
  double save_s = 1e30, load_s = 1e30, write_s = 1e30, read_s = 1e30;
};

}  // namespace

int run_ckpt_bench(Communicator& world, const CkptBenchOptions& o) {
  const int W = world.size(), me = world.rank();
  std::vector<int> sizes = o.ranks;
  if (sizes.empty()) {
    for (int s : {1, 2, 4})
      if (s <= W) sizes.push_back(s);
    if (std::find(sizes.begin(), sizes.end(), W) == sizes.end()) sizes.push_back(W);
  }
  for (int s : sizes)
    if (s < 1 || s > W) throw UsageError(fmt::format("bench ckpt: --ranks {} is outside [1, {}]", s, W));
  if (o.repeats < 1) throw UsageError("bench ckpt: --repeats must be positive");

  // The directory: rank 0 decides, everyone gets the name.
  std::string dir;
  if (me == 0) {
    const fs::path base = o.dir.empty() ? fs::temp_directory_path() : fs::path(o.dir);
    dir = (base / fmt::format("orthoshard-bench-ckpt-{}", ::getpid())).string();
    fs::create_directories(dir);
  }
  {
    std::int64_t n = static_cast<std::int64_t>(dir.size());
    world.broadcast(&n, 1, DType::I64, 0);
    dir.resize(static_cast<std::size_t>(n));
    world.broadcast(dir.data(), static_cast<std::size_t>(n), DType::U8, 0);
  }

  const TrainConfig cfg = load_train_config(
      "", {"--model.L=" + std::to_string(o.layers), "--model.C=" + std::to_string(o.channels),
           "--model.NH=" + std::to_string(std::max(1, o.channels / 64)), "--train.seq_len=64",
           "--train.batch_size=1", "--optim.name=" + o.optimizer, "--checkpoint.dir=" + dir});
  Gpt2Config mc = gpt2_config(cfg.model);
  mc.validate();
  H5ParallelOptions io;
  io.collective_buffering = o.collective_buffering;
  if (me == 0)
    fmt::print("bench ckpt: GPT-2 {} ({:.1f} M parameters), optimizer {} after one step, files in {}, MPI-IO {}, "
               "best of {}{}\n",
               mc.describe(), static_cast<double>(mc.num_parameters()) / 1e6, o.optimizer, dir,
               o.collective_buffering ? "collective buffering" : "collective calls, each rank its own bytes",
               o.repeats, o.drop_cache ? ", page cache evicted before every read" : "");

  std::vector<Row> rows;
  for (int s : sizes) {
    auto sub = world.split(me < s ? 0 : 1, me);
    Row row;
    row.ranks = s;
    bool keep_this = false;  // this round's checkpoint is the one --keep asks for
    if (me < s) {
      const Gpt2 model(mc, std::uint64_t{1});  // seeded init; each rank initializes just its rows below
      std::vector<FsdpUnitSpec> unit_specs;
      for (const ModelUnit& u : model.units()) {
        FsdpUnitSpec spec{u.name, {}};
        for (const ParamInfo& p : u.params) spec.params.push_back({p.name, p.shape});
        unit_specs.push_back(std::move(spec));
      }
      FsdpEngine engine(unit_specs, *sub, nullptr);
      std::vector<Tensor> params, grads;
      for (const ParamInfo& pi : model.parameters()) {
        const std::string& n = pi.name;
        const RowRange r = engine.rows(n);
        Tensor p = engine.shard(n), g = engine.grad_shard(n);
        model.initial_rows(n, r.begin, r.end, p.data<float>());
        float* gd = g.data<float>();
        for (std::int64_t i = 0; i < g.numel(); ++i) gd[i] = 1e-3f * std::sin(static_cast<float>(i + r.begin));
        params.push_back(p);
        grads.push_back(g);
      }
      Optimizer optim = Optimizer::with_roles(cfg.optim, model.parameters(), DType::F32, sub.get());
      optim.step(params, grads, 1.0);
      LoaderConfig lc;
      lc.B = 1;
      lc.T = 64;
      lc.world_size = s;
      lc.rank = sub->rank();
      DataLoader loader(TokenStream::open("builtin:synthetic"), lc);
      CheckpointTarget t{*sub, sub->rank(), 0, engine, optim, loader, cfg, model};
      const std::string plain = (fs::path(dir) / "plain.bin").string();
      const std::string ckpt = (fs::path(dir) / checkpoint_file_name(1)).string();
      auto checkpoint_round = [&] {
        sub->barrier();
        auto t0 = Clock::now();
        save_checkpoint(t, 1, 0, dir, 0, io);
        sub->barrier();
        row.save_s = std::min(row.save_s, since(t0));
        if (sub->rank() == 0) {
          row.bytes = fs::file_size(ckpt);
          if (o.drop_cache) drop_from_cache(ckpt);
        }
        sub->barrier();
        t0 = Clock::now();
        load_checkpoint(t, ckpt, io);
        sub->barrier();
        row.load_s = std::min(row.load_s, since(t0));
        if (sub->rank() == 0) {
          if (keep_this) fs::copy_file(ckpt, o.keep_path, fs::copy_options::overwrite_existing);
          fs::remove(ckpt);
        }
      };
      auto plain_round = [&] {
        if (sub->rank() == 0) {
          row.write_s = std::min(row.write_s, plain_write(plain, row.bytes));
          if (o.drop_cache) drop_from_cache(plain);
          row.read_s = std::min(row.read_s, plain_read(plain));
          fs::remove(plain);
        }
        sub->barrier();
      };
      for (int rep = 0; rep < o.repeats; ++rep) {  // alternating which goes first (rep 0 learns the size)
        keep_this = !o.keep_path.empty() && s == sizes.back() && rep == o.repeats - 1;
        if (rep % 2 == 0) {
          checkpoint_round();
          plain_round();
        } else {
          plain_round();
          checkpoint_round();
        }
      }
    }
    world.barrier();
    rows.push_back(row);
  }

  if (me == 0) {
    auto gbs = [](std::uint64_t b, double s) { return static_cast<double>(b) / s / 1e9; };
    fmt::print("{:>5} {:>10} | {:>8} {:>9} {:>11} {:>6} | {:>8} {:>9} {:>10} {:>6}\n", "ranks", "file MB", "save s",
               "save GB/s", "plain write", "ratio", "load s", "load GB/s", "plain read", "ratio");
    for (const Row& r : rows)
      fmt::print("{:>5} {:>10.1f} | {:>8.3f} {:>9.3f} {:>11.3f} {:>6.2f} | {:>8.3f} {:>9.3f} {:>10.3f} {:>6.2f}\n",
                 r.ranks, static_cast<double>(r.bytes) / 1e6, r.save_s, gbs(r.bytes, r.save_s),
                 gbs(r.bytes, r.write_s), r.write_s / r.save_s, r.load_s, gbs(r.bytes, r.load_s),
                 gbs(r.bytes, r.read_s), r.read_s / r.load_s);
    fmt::print("save includes the fsync, rename and `latest`; load includes checksum verification of every "
               "dataset; ratio = plain time / checkpoint time (1 = as fast as one sequential stream)\n");
    if (!o.json_path.empty()) {
      nlohmann::json j = nlohmann::json::array();
      for (const Row& r : rows)
        j.push_back({{"ranks", r.ranks}, {"bytes", r.bytes}, {"save_s", r.save_s}, {"load_s", r.load_s},
                     {"plain_write_s", r.write_s}, {"plain_read_s", r.read_s}});
      std::ofstream(o.json_path) << j.dump(2) << "\n";
    }
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  world.barrier();
  return 0;
}

}  // namespace orthoshard
