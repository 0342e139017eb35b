// Checkpoint save/load of the trainer's state over parallel HDF5, and the resume policy.
#include "launch/trainer/checkpoint.hpp"

#include "launch/trainer/schedule.hpp"
#include "runtime/checkpoint/commit.hpp"
#include "runtime/comm/mpi_communicator.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"

#include <mpi.h>

#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <variant>

namespace fs = std::filesystem;

namespace orthoshard {
namespace {

// ---------------------------------------------------------------- agreement between ranks

std::string broadcast_string(Communicator& c, const std::string& s, int root) {
  std::int64_t n = static_cast<std::int64_t>(s.size());
  c.broadcast(&n, 1, DType::I64, root);
  std::string out = c.rank() == root ? s : std::string(static_cast<std::size_t>(n), '\0');
  if (n > 0) c.broadcast(out.data(), static_cast<std::size_t>(n), DType::U8, root);
  return out;
}

// Runs `fn` on every rank; when it throws on any rank, every rank throws the error of the lowest failing
// rank (its type kept: UsageError or Error), so no rank goes on alone into a collective.
void agree(Communicator& c, const std::function<void()>& fn) {
  std::string msg;
  int kind = 0;  // 0 ok, 1 Error, 2 UsageError
  try {
    fn();
  } catch (const UsageError& e) {
    msg = e.what();
    kind = 2;
  } catch (const std::exception& e) {
    msg = e.what();
    kind = 1;
  }
  const int code = kind ? c.size() - c.rank() : 0;
  const int worst = static_cast<int>(c.all_reduce_scalar(code, ReduceOp::Max));
  if (worst == 0) return;
  const int root = c.size() - worst;
  std::int64_t k = kind;
  c.broadcast(&k, 1, DType::I64, root);
  msg = broadcast_string(c, msg, root);
  if (k == 2) throw UsageError(msg);
  throw Error(msg);
}

// ---------------------------------------------------------------- small helpers

std::string now_utc() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string mpi_version() {
  char lib[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(lib, &len);
  std::string s(lib, static_cast<std::size_t>(len));
  const std::size_t cut = s.find_first_of(",\n");
  return cut == std::string::npos ? s : s.substr(0, cut);
}

double seconds_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::string model_path(const std::string& p) { return "/model/" + p; }
std::string optim_path(const std::string& p) { return "/optim/" + p; }
std::string state_path(const std::string& p, const std::string& s) { return "/optim/" + p + "/" + s; }

std::int64_t rows_of(const Shape& s) { return s.empty() ? 1 : s[0]; }

const char* home_name(StateHome h) {
  return h == StateHome::Rows ? "rows" : h == StateHome::Replicated ? "replicated" : "owner";
}

// One optimizer state tensor of the whole job: where it lives and its global shape.
struct StateEntry {
  std::size_t param = 0;
  std::string name;
  DType dtype = DType::F32;
  Shape global;
  StateHome home = StateHome::Rows;
  int owner = 0;  // rank in the shard group (Owner states)
};

StateHome home_of(ShardedOptimizer& optim, std::size_t i, const std::string& name, const Shape& stored, int* owner) {
  StateHome h = optim.state_home(i, name, owner);
  if (stored.empty()) h = StateHome::Replicated;  // counters
  return h;
}

// The global shape the optimizer needs for the states whose shape it fixes (nullopt: not checked here).
std::optional<Shape> expected_state_shape(const ParamSpec& p, const std::string& state, StateHome home) {
  const std::int64_t m = p.shape.empty() ? 1 : p.shape[0], n = m ? shape_numel(p.shape) / m : 0;
  const std::int64_t k = std::min(m, n);
  if (state == "step" || state == "conda_basis_step" || state == "conda_basis_side") return Shape{};
  if (state == "exp_avg" || state == "momentum") return p.shape;
  if (state == "row_second_moment") return Shape{m, 1};
  if (state == "conda_basis") return home == StateHome::Replicated ? Shape{k, n} : Shape{m, k};
  if (state == "exp_avg_sq") {
    if (p.rule != RuleKind::Conda) return p.shape;
    return home == StateHome::Rows ? Shape{m, k} : Shape{k, n};
  }
  return std::nullopt;
}

// This rank's master rows of a parameter in host memory: the engine's shard itself, or a copy of a device one.
Tensor host_shard(ShardedEngine& engine, const std::string& name) {
  Tensor shard = engine.shard(name);
  if (shard.device() == Device::CPU) return shard;
  Tensor h = Tensor::empty(shard.shape(), DType::F32);
  engine.shard_to_host(name, h);
  return h;
}

// Every state of every parameter on any rank (ranks hold different sets: owner states live on one rank),
// gathered over the world so that every rank writes the same datasets in the same order.
std::vector<StateEntry> state_manifest(CheckpointTarget& t) {
  ShardedOptimizer& optim = t.optim;
  std::ostringstream mine;
  for (std::size_t i = 0; i < optim.params().size(); ++i)
    for (const auto& [name, tensor] : optim.state(i).entries()) {
      mine << i << ' ' << name << ' ' << static_cast<int>(tensor.dtype()) << ' ' << tensor.ndim();
      for (int d = 0; d < tensor.ndim(); ++d) mine << ' ' << tensor.dim(d);
      mine << '\n';
    }
  const std::string text = mine.str();
  Communicator& w = t.world;
  const auto W = static_cast<std::size_t>(w.size());
  std::vector<std::int64_t> lens(W);
  const std::int64_t my_len = static_cast<std::int64_t>(text.size());
  w.all_gather(&my_len, lens.data(), 1, DType::I64);
  std::vector<std::size_t> counts(W);
  std::size_t total = 0;
  for (std::size_t r = 0; r < W; ++r) total += counts[r] = static_cast<std::size_t>(lens[r]);
  std::string all(total, '\0');
  w.all_gather_v(text.data(), text.size(), all.data(), counts, DType::U8);

  std::map<std::pair<std::size_t, std::string>, StateEntry> merged;
  std::istringstream in(all);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    StateEntry e;
    int dt = 0, nd = 0;
    ls >> e.param >> e.name >> dt >> nd;
    e.dtype = static_cast<DType>(dt);
    Shape local(static_cast<std::size_t>(nd));
    for (auto& d : local) ls >> d;
    e.home = home_of(optim, e.param, e.name, local, &e.owner);
    e.global = local;
    if (e.home == StateHome::Rows) e.global[0] = optim.params()[e.param].shape[0];
    auto [it, fresh] = merged.emplace(std::make_pair(e.param, e.name), e);
    if (!fresh && (it->second.global != e.global || it->second.dtype != e.dtype))
      fail("optimizer state {} of {} differs between ranks: {} {} and {} {}", e.name, optim.params()[e.param].name,
           dtype_name(it->second.dtype), shape_str(it->second.global), dtype_name(e.dtype), shape_str(e.global));
  }
  std::vector<StateEntry> out;
  for (auto& [key, e] : merged) out.push_back(std::move(e));
  return out;
}

// Rows [first, first + rows) this rank writes of a state, and the host tensor holding them.
struct Slice {
  std::int64_t first = 0, rows = 0;
  Tensor host;
  const void* data() const { return rows > 0 ? host.raw() : nullptr; }
};

Slice state_slice(CheckpointTarget& t, const StateEntry& e) {
  const bool primary = t.replica == 0;
  ParamState& st = t.optim.state(e.param);
  const std::string& pname = t.optim.params()[e.param].name;
  Slice s;
  switch (e.home) {
    case StateHome::Rows: {
      const RowRange r = t.optim.local_rows(e.param);
      s.first = r.begin;
      s.rows = primary ? r.rows() : 0;
      break;
    }
    case StateHome::Replicated: s.rows = primary && t.shard_rank == 0 ? rows_of(e.global) : 0; break;
    case StateHome::Owner: s.rows = primary && t.shard_rank == e.owner ? rows_of(e.global) : 0; break;
  }
  if (s.rows > 0) {
    if (!st.has(e.name))
      fail("optimizer state {} of {} ({}) is missing on rank {}", e.name, pname, home_name(e.home), t.world.rank());
    const Tensor& local = st.get(e.name);
    Shape want = e.global;
    if (e.home == StateHome::Rows) want[0] = s.rows;
    if (local.shape() != want || local.dtype() != e.dtype || !local.is_contiguous())
      fail("optimizer state {} of {} is {} on rank {}, expected {}{}", e.name, pname, local.describe(),
           t.world.rank(), dtype_name(e.dtype), shape_str(want));
    s.host = t.optim.state_to_host(e.param, e.name);
  }
  return s;
}

// The number of non-finite values in a host tensor of floating dtype (0 for integer tensors).
std::int64_t count_non_finite(const Tensor& t) {
  const std::int64_t n = t.numel();
  std::int64_t bad = 0;
  switch (t.dtype()) {
    case DType::F32: {
      const float* p = t.data<float>();
      for (std::int64_t i = 0; i < n; ++i) bad += !std::isfinite(p[i]);
      break;
    }
    case DType::F64: {
      const double* p = t.data<double>();
      for (std::int64_t i = 0; i < n; ++i) bad += !std::isfinite(p[i]);
      break;
    }
    case DType::BF16: {
      const bf16* p = t.data<bf16>();
      for (std::int64_t i = 0; i < n; ++i) bad += !std::isfinite(bf16_to_float(p[i]));
      break;
    }
    default: break;
  }
  return bad;
}

void inject_failure(Communicator& w, const char* phase, const std::string& path) {
  const char* v = std::getenv("ORTHOSHARD_CHECKPOINT_FAIL");
  if (v && std::strcmp(v, phase) == 0) {
    w.barrier();
    fail("checkpoint '{}': injected failure {} (ORTHOSHARD_CHECKPOINT_FAIL)", path, phase);
  }
}

}  // namespace

// ---------------------------------------------------------------- save

SavedCheckpoint save_checkpoint(CheckpointTarget& t, std::int64_t step, std::int64_t tokens_seen,
                                const std::string& dir, std::int64_t keep, const H5ParallelOptions& io) {
  Communicator& w = t.world;
  const bool primary = t.replica == 0;
  const std::string name = checkpoint_file_name(step);
  const std::string final_path = (fs::path(dir) / name).string();
  const std::string partial = final_path + ".partial";

  const auto t_begin = std::chrono::steady_clock::now();
  const std::vector<StateEntry> states = state_manifest(t);
  std::vector<Slice> slices;
  agree(w, [&] {
    // A checkpoint with non-finite values would resume into the same divergence: never written.
    for (const auto& p : t.optim.params())
      if (const std::int64_t bad = count_non_finite(host_shard(t.engine, p.name)); bad > 0)
        fail("checkpoint of step {} not written: parameter {} holds {} non-finite value(s) on rank {}; the run "
             "diverged (the previous checkpoint is kept)", step, p.name, bad, w.rank());
    for (const auto& e : states) {
      slices.push_back(state_slice(t, e));
      if (slices.back().rows == 0) continue;
      if (const std::int64_t bad = count_non_finite(slices.back().host); bad > 0)
        fail("checkpoint of step {} not written: optimizer state {} of {} holds {} non-finite value(s) on rank {}; "
             "the run diverged (the previous checkpoint is kept)", step, e.name, t.optim.params()[e.param].name, bad,
             w.rank());
    }
    if (w.rank() == 0) {
      std::error_code ec;
      fs::create_directories(dir, ec);
      if (ec) throw UsageError(fmt::format("checkpoint.dir '{}': cannot create: {}", dir, ec.message()));
    }
  });
  agree(w, [&] {
    if (!fs::is_directory(dir))
      throw UsageError(fmt::format("checkpoint.dir '{}' is not visible on rank {}: it must be on a filesystem every "
                                   "rank shares", dir, w.rank()));
  });
  const std::string created = broadcast_string(w, w.rank() == 0 ? now_utc() : "", 0);
  const std::string versions = broadcast_string(
      w, w.rank() == 0 ? fmt::format("orthoshard {}; hdf5 {}; {}", ORTHOSHARD_VERSION, h5_version_string(), mpi_version())
                       : "",
      0);

  // Room for it: the data plus a margin for metadata, checked on rank 0 before anything is written (a full disk
  // is the common case; an error in the middle of the write is handled below).
  // (Test hook: ORTHOSHARD_CHECKPOINT_FAIL=skip_space_check leaves a full disk to the write itself.)
  const char* hook = std::getenv("ORTHOSHARD_CHECKPOINT_FAIL");
  agree(w, [&] {
    if (w.rank() != 0 || (hook && std::strcmp(hook, "skip_space_check") == 0)) return;
    std::uint64_t need = 256u << 10;
    for (const auto& p : t.optim.params()) need += static_cast<std::uint64_t>(shape_numel(p.shape)) * 4;
    for (const auto& e : states) need += static_cast<std::uint64_t>(shape_numel(e.global)) * dtype_size(e.dtype) + 1024;
    std::error_code ec;
    const fs::space_info sp = fs::space(dir, ec);
    if (!ec && sp.available < need)
      fail("checkpoint '{}' not written: {}: {:.1f} MiB free in '{}', the checkpoint needs about {:.1f} MiB "
           "(the previous checkpoint is kept)", partial, std::strerror(ENOSPC),
           static_cast<double>(sp.available) / (1 << 20), dir, static_cast<double>(need) / (1 << 20));
  });

  const auto t_write = std::chrono::steady_clock::now();
  auto t_close = t_write;
  std::optional<H5ParallelFile> file;
  agree(w, [&] { file.emplace(H5ParallelFile::create(partial, &w, io)); });
  try {
    // Every write below agrees on failure across the ranks (H5ParallelFile), so an I/O error (a full disk, EIO,
    // a quota) reaches every rank at the same call, and all of them discard the file together.
    H5ParallelFile& f = *file;
    const TrainConfig& cfg = t.cfg;
    f.set_attr("/", "format", std::string(kCheckpointFormat));
    f.set_attr("/", "version", kCheckpointVersion);
    f.set_attr("/", "step", step);
    f.set_attr("/", "tokens_seen", tokens_seen);
    f.set_attr("/", "world_size", static_cast<std::int64_t>(w.size()));
    f.set_attr("/", "sharding", cfg.runtime.sharding());
    f.set_attr("/", "config", cfg.resolved_toml());
    f.set_attr("/", "optimizer", cfg.optim.name);
    f.set_attr("/", "versions", versions);
    f.set_attr("/", "orthoshard_version", std::string(ORTHOSHARD_VERSION));
    f.set_attr("/", "created", created);
    f.set_attr("/", "checksum_algorithm", std::string(kRowChecksumAlgorithm));

    f.create_group("/model");
    f.set_attr("/model", "architecture", std::string(t.model.family().arch()));
    for (const ModelAttribute& a : t.model.attributes())
      std::visit([&](const auto& v) { f.set_attr("/model", a.name, v); }, a.value);
    const auto& params = t.optim.params();
    for (const auto& p : params) {
      const RowRange r = t.engine.rows(p.name);
      const Tensor shard = host_shard(t.engine, p.name);
      f.write_rows(model_path(p.name), p.shape, DType::F32, r.begin, primary ? r.rows() : 0, shard.raw());
    }

    f.create_group("/optim");
    f.set_attr("/optim", "name", cfg.optim.name);
    for (std::size_t i = 0; i < params.size(); ++i) {
      f.create_group(optim_path(params[i].name));
      f.set_attr(optim_path(params[i].name), "rule", std::string(rule_name(params[i].rule)));
    }
    for (std::size_t k = 0; k < states.size(); ++k) {
      const StateEntry& e = states[k];
      const std::string ds = state_path(params[e.param].name, e.name);
      f.write_rows(ds, e.global, e.dtype, slices[k].first, slices[k].rows, slices[k].data());
      f.set_attr(ds, "home", std::string(home_name(e.home)));
    }

    f.create_group("/train");
    const DataPosition pos = t.loader.position();
    const std::int64_t tokens_per_step = cfg.tokens_per_step(w.size());
    for (const auto& [key, v] : std::vector<std::pair<std::string, std::int64_t>>{
             {"step", step},
             {"tokens_seen", tokens_seen},
             {"tokens_per_step", tokens_per_step},
             {"data_epoch", pos.epoch},
             {"data_step", pos.step}})
      f.write_rows("/train/" + key, {}, DType::I64, 0, w.rank() == 0 ? 1 : 0, &v);
    f.set_attr("/train", "data_path", cfg.data.path);
    f.set_attr("/train", "data_order", std::string(data_order_name(cfg.data.order)));
    f.set_attr("/train", "data_seed", static_cast<std::int64_t>(cfg.data.seed));
    f.set_attr("/train", "train_seed", static_cast<std::int64_t>(cfg.train.seed));
    f.set_attr("/train", "rng",
               std::string("none: no random numbers are drawn after initialization; the data order is a function "
                           "of (data_seed, data_epoch), the learning-rate schedule of step"));
    f.write_checksums();
    t_close = std::chrono::steady_clock::now();
    f.flush();
    f.close();
  } catch (const std::exception& e) {
    // Every rank is here with the same error: free the space, close and delete the .partial, and report.
    file->discard();
    throw Error(fmt::format("checkpoint of step {} not written: {} (the previous checkpoint and 'latest' are kept)",
                            step, e.what()));
  }
  const auto t_commit = std::chrono::steady_clock::now();

  inject_failure(w, "before_rename", partial);
  w.barrier();  // every rank's data is in the closed file
  agree(w, [&] {
    if (w.rank() != 0) return;
    fsync_path(partial);
    commit_rename(partial, final_path);
  });
  inject_failure(w, "before_latest", final_path);
  SavedCheckpoint saved{final_path, {}};
  agree(w, [&] {
    if (w.rank() != 0) return;
    write_latest(dir, name);
    saved.pruned = prune_checkpoints(dir, keep);
    remove_stale_partials(dir, step);  // left by crashed saves: never loadable
  });
  log::debug("checkpoint save {}: prepare {:.3f} s, write {:.3f} s, flush+close {:.3f} s, fsync+rename+latest "
             "{:.3f} s", final_path, seconds_between(t_begin, t_write), seconds_between(t_write, t_close),
             seconds_between(t_close, t_commit), seconds_between(t_commit, std::chrono::steady_clock::now()));
  return saved;
}

// ---------------------------------------------------------------- load

CheckpointInfo load_checkpoint(CheckpointTarget& t, const std::string& path, const H5ParallelOptions& io) {
  Communicator& w = t.world;
  ShardedOptimizer& optim = t.optim;
  const auto& params = optim.params();
  const bool primary = t.replica == 0;
  const auto t_open = std::chrono::steady_clock::now();
  std::optional<H5ParallelFile> file;
  agree(w, [&] { H5ParallelFile::check_readable(path); });  // every rank sees it before the collective open
  agree(w, [&] { file.emplace(H5ParallelFile::open_read(path, &w, io)); });
  H5ParallelFile& f = *file;

  // 1. What the file holds, checked against this configuration (same metadata on every rank).
  CheckpointInfo info;
  info.path = path;
  struct StateRead {
    std::size_t param;
    std::string name;
    StateHome home;
    int owner;
  };
  std::vector<StateRead> reads;
  agree(w, [&] {
    const std::string fmt_attr = f.has_attr("/", "format") ? f.string_attr("/", "format") : "";
    if (fmt_attr != kCheckpointFormat)  // an Error, not a UsageError: resume = auto skips it like a corrupt file
      fail("'{}': not an orthoshard checkpoint (format attribute '{}')", path, fmt_attr);
    const std::int64_t version = f.int_attr("/", "version");
    if (version > kCheckpointVersion)
      throw UsageError(fmt::format("'{}': checkpoint version {} is newer than this build reads ({})", path, version,
                                   kCheckpointVersion));
    info.world_size = static_cast<int>(f.int_attr("/", "world_size"));
    info.config = f.has_attr("/", "config") ? f.string_attr("/", "config") : "";
    std::map<std::string, Shape> want;
    for (const auto& p : params) want[p.name] = p.shape;
    for (const auto& name : f.children("/model"))
      if (!want.count(name))
        throw UsageError(fmt::format("checkpoint '{}': tensor '{}' is not a parameter of this model ({}); the "
                                     "model configuration differs from the checkpoint's",
                                     path, name, t.model.describe()));
    for (const auto& p : params) {
      if (!f.exists(model_path(p.name)))
        throw UsageError(fmt::format("checkpoint '{}': tensor '{}' {} of this model is not in the checkpoint; the "
                                     "model configuration differs from the checkpoint's",
                                     path, p.name, shape_str(p.shape)));
      const H5DatasetInfo di = f.info(model_path(p.name));
      if (di.shape != p.shape)
        throw UsageError(fmt::format("checkpoint '{}': tensor '{}' is {} in the checkpoint but {} in this "
                                     "configuration ({}); refusing to resume a different model",
                                     path, p.name, shape_str(di.shape), shape_str(p.shape), t.model.describe()));
      if (di.dtype != DType::F32)
        fail("checkpoint '{}': tensor '{}' is {}, expected f32", path, p.name, dtype_name(di.dtype));
    }
    for (std::size_t i = 0; i < params.size(); ++i) {
      const ParamSpec& p = params[i];
      const std::string g = optim_path(p.name);
      if (!f.is_group(g)) fail("checkpoint '{}': no optimizer state for '{}' ({})", path, p.name, g);
      const std::string rule = f.has_attr(g, "rule") ? f.string_attr(g, "rule") : "";
      if (rule != rule_name(p.rule))
        throw UsageError(fmt::format(
            "checkpoint '{}': parameter '{}' was trained with {} but this configuration uses {} (optim.name or "
            "routing changed); to switch optimizers start from the weights: orthoshard ckpt export --format llmc, "
            "then model.init_from",
            path, p.name, rule, rule_name(p.rule)));
      for (const auto& s : f.children(g)) {
        const H5DatasetInfo di = f.info(g + "/" + s);
        StateRead r{i, s, StateHome::Rows, 0};
        r.home = home_of(optim, i, s, di.shape, &r.owner);
        if (r.home == StateHome::Rows && di.shape[0] != p.shape[0])
          throw UsageError(fmt::format("checkpoint '{}': optimizer state '{}' {} does not have the {} rows of '{}'",
                                       path, g + "/" + s, shape_str(di.shape), p.shape[0], p.name));
        if (const auto want = expected_state_shape(p, s, r.home); want && *want != di.shape)
          throw UsageError(fmt::format("checkpoint '{}': optimizer state '{}' is {} but this configuration needs {} "
                                       "(optimizer settings such as optim.proj_type changed?)",
                                       path, g + "/" + s, shape_str(di.shape), shape_str(*want)));
        const DType want_dt = di.shape.empty() ? DType::I64 : optim.dtype();
        if (di.dtype != want_dt)
          fail("checkpoint '{}': optimizer state '{}' is {}, expected {}", path, g + "/" + s, dtype_name(di.dtype),
               dtype_name(want_dt));
        reads.push_back(r);
      }
    }
  });

  // 2. This rank's rows of everything; every row counted for verification by exactly one rank. Parameters
  // are read straight into the engine's master shards (a failed load leaves them unspecified: resume then
  // loads another checkpoint, which overwrites all of them, or stops), states into the optimizer's tensor
  // when it already has that shape, else staged and installed only after verification.
  const auto t_read = std::chrono::steady_clock::now();
  std::vector<Tensor> state(reads.size());  // staged states (undefined: read in place, or not this rank's)
  std::map<std::string, std::int64_t> train;
  agree(w, [&] {
    for (std::size_t i = 0; i < params.size(); ++i) {
      const RowRange r = t.engine.rows(params[i].name);
      Tensor shard = t.engine.shard(params[i].name);
      OS_CHECK(shard.is_contiguous() && shard.numel() == r.rows() * (shape_numel(params[i].shape) / params[i].shape[0]),
               "checkpoint: the shard of {} is {}", params[i].name, shard.describe());
      // Host shards are read in place; device ones through a host tensor.
      Tensor dst = shard.device() == Device::CPU ? shard : Tensor::empty(shard.shape(), DType::F32);
      f.read_rows_into(model_path(params[i].name), r.begin, r.rows(), primary, DType::F32, dst.raw());
      if (dst.raw() != shard.raw()) t.engine.shard_from_host(params[i].name, dst);
    }
    for (std::size_t k = 0; k < reads.size(); ++k) {
      const StateRead& r = reads[k];
      const std::string ds = state_path(params[r.param].name, r.name);
      const H5DatasetInfo di = f.info(ds);
      std::int64_t first = 0, rows = rows_of(di.shape);
      bool count = false;
      switch (r.home) {
        case StateHome::Rows: {
          const RowRange rr = optim.local_rows(r.param);
          first = rr.begin;
          rows = rr.rows();
          count = primary;
          break;
        }
        case StateHome::Replicated: count = w.rank() == 0; break;
        case StateHome::Owner:
          if (t.shard_rank != r.owner) rows = 0;
          count = primary && rows > 0;
          break;
      }
      if (r.home == StateHome::Owner && rows == 0) {
        f.read_rows_into(ds, 0, 0, false, di.dtype, nullptr);  // joins the collective read
        continue;
      }
      Shape local = di.shape;
      if (!local.empty()) local[0] = rows;
      ParamState& st = optim.state(r.param);
      if (st.has(r.name) && st.get(r.name).shape() == local && st.get(r.name).dtype() == di.dtype &&
          st.get(r.name).device() == Device::CPU && st.get(r.name).is_contiguous()) {
        f.read_rows_into(ds, first, rows, count, di.dtype, st.get(r.name).raw());
      } else {
        state[k] = Tensor::empty(local, di.dtype);
        f.read_rows_into(ds, first, rows, count, di.dtype, state[k].raw());
      }
    }
    for (const auto& key : f.children("/train")) {
      const Tensor v = f.read_all("/train/" + key, w.rank() == 0);
      if (v.dtype() == DType::I64 && v.numel() == 1) train[key] = v.data<std::int64_t>()[0];
    }
  });
  const auto t_verify = std::chrono::steady_clock::now();
  const auto bad = f.verify_checksums();
  agree(w, [&] {
    f.close();
    if (!bad.empty()) {
      std::string list;
      for (std::size_t i = 0; i < bad.size() && i < 3; ++i)
        list += fmt::format("{}{} ({})", i ? "; " : "", bad[i].dataset, bad[i].what);
      if (bad.size() > 3) list += fmt::format("; and {} more", bad.size() - 3);
      fail("checkpoint '{}' is corrupt: {} dataset(s) fail verification: {}", path, bad.size(), list);
    }
    for (const char* key : {"step", "tokens_seen", "data_epoch", "data_step"})
      if (!train.count(key)) fail("checkpoint '{}': /train/{} is missing", path, key);
  });

  // 3. Verified: apply (every rank, same decisions).
  const auto t_apply = std::chrono::steady_clock::now();
  agree(w, [&] {
    if (t.restore_data_position) t.loader.restore({train["data_epoch"], train["data_step"]});
    for (std::size_t k = 0; k < reads.size(); ++k)
      if (state[k].raw() != nullptr)  // staged (owning tensors always have memory)
        optim.load_state(reads[k].param, reads[k].name, state[k]);
  });
  info.step = train["step"];
  info.tokens_seen = train["tokens_seen"];
  log::debug("checkpoint load {}: open+metadata {:.3f} s, read {:.3f} s ({} bytes on rank 0), verify {:.3f} s, "
             "apply {:.3f} s", path, seconds_between(t_open, t_read), seconds_between(t_read, t_verify),
             f.bytes_read(), seconds_between(t_verify, t_apply), seconds_between(t_apply, std::chrono::steady_clock::now()));
  if (t.restore_data_position && train.count("tokens_per_step") && train["tokens_per_step"] != t.cfg.tokens_per_step(w.size()))
    log::warn("checkpoint '{}': {} tokens per step when saved, {} now; the data position is kept as (epoch {}, step "
              "{}), so the continuation reads other tokens than an uninterrupted run would",
              path, train["tokens_per_step"], t.cfg.tokens_per_step(w.size()), train["data_epoch"], train["data_step"]);
  return info;
}

// ---------------------------------------------------------------- resume policy and periodic saves

namespace {

// "section.key" -> value text, from a resolved TOML (one `key = value` per line).
std::map<std::string, std::string> resolved_keys(const std::string& text) {
  std::map<std::string, std::string> kv;
  std::istringstream in(text);
  std::string section, line;
  while (std::getline(in, line)) {
    if (line.size() > 2 && line.front() == '[' && line.back() == ']') section = line.substr(1, line.size() - 2);
    const std::size_t eq = line.find(" = ");
    if (eq != std::string::npos && line.front() != '#') kv[section + "." + line.substr(0, eq)] = line.substr(eq + 3);
  }
  return kv;
}

// When the learning rate at the resume step differs from what the checkpoint's run would have used there (a
// changed train.steps moves a cosine or linear schedule, ...): one line with both values and the keys that
// changed it. Nothing when the saved configuration cannot be read back.
void warn_if_lr_changed(const TrainConfig& now, const std::string& saved_toml, std::int64_t step) {
  const auto saved = resolved_keys(saved_toml);
  const auto current = resolved_keys(now.resolved_toml());
  static const char* const keys[] = {"optim.lr", "train.schedule", "train.warmup_steps", "train.min_lr_ratio",
                                     "train.steps"};
  std::vector<std::string> overrides, changed;
  for (const char* k : keys) {
    const auto it = saved.find(k);
    if (it == saved.end()) return;
    std::string v = it->second;
    if (v.size() >= 2 && v.front() == '"') v = v.substr(1, v.size() - 2);
    overrides.push_back(fmt::format("--{}={}", k, v));
    if (current.count(k) && current.at(k) != it->second) changed.push_back(fmt::format("{} {} -> {}", k, it->second, current.at(k)));
  }
  if (changed.empty()) return;
  TrainConfig before;
  try {
    before = load_train_config("", overrides);
  } catch (const std::exception&) {
    return;
  }
  const double lr_before = before.optim.lr * lr_multiplier(before, step);
  const double lr_now = now.optim.lr * lr_multiplier(now, step);
  if (std::abs(lr_now - lr_before) <= 1e-12 * std::max(std::abs(lr_before), std::abs(lr_now))) return;
  std::string list;
  for (const auto& c : changed) list += (list.empty() ? "" : ", ") + c;
  log::warn("the learning rate at the resume step {} is {:.4g}, where the checkpoint's run would have used {:.4g}: "
            "changed {}", step + 1, lr_now, lr_before, list);
}

}  // namespace

std::vector<std::string> config_changes(const std::string& saved_toml, const std::string& current_toml) {
  auto a = resolved_keys(saved_toml);
  const auto b = resolved_keys(current_toml);
  // Checkpoints from before model families were all GPT-2: their configuration has no [model] arch.
  if (!saved_toml.empty() && !a.count("model.arch")) a["model.arch"] = "\"gpt2\"";
  std::vector<std::string> out;
  auto skip = [](const std::string& k) { return k.rfind("checkpoint.", 0) == 0 || k == "train.steps"; };
  for (const auto& [k, v] : b) {
    if (skip(k)) continue;
    auto it = a.find(k);
    if (it == a.end()) out.push_back(fmt::format("{}: (absent) -> {}", k, v));
    else if (it->second != v) out.push_back(fmt::format("{}: {} -> {}", k, it->second, v));
  }
  for (const auto& [k, v] : a)
    if (!skip(k) && !b.count(k)) out.push_back(fmt::format("{}: {} -> (absent)", k, v));
  return out;
}

void Checkpointer::claim_directory() {
  const CheckpointSection& c = t_.cfg.checkpoint;
  Communicator& w = t_.world;
  if (c.every == 0 && c.resume != "auto") return;  // this run neither writes nor reads checkpoint.dir
  agree(w, [&] {
    if (w.rank() != 0) return;
    lock_ = std::make_unique<DirLock>(c.dir);
    // The run's whole configuration beside its checkpoints (each checkpoint holds it too).
    const fs::path cfg_path = fs::path(c.dir) / "config.toml", tmp = fs::path(c.dir) / "config.toml.tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << t_.cfg.resolved_toml();
      if (!out.flush()) throw Error(fmt::format("checkpoint.dir '{}': cannot write {}", c.dir, tmp.string()));
    }
    fs::rename(tmp, cfg_path);
    if (c.resume == "none" && c.every > 0) {
      const auto existing = list_checkpoints(c.dir);
      if (!existing.empty() && !c.overwrite)
        throw UsageError(fmt::format(
            "checkpoint.dir '{}' already holds {} checkpoint(s) (newest {}) and checkpoint.resume = none would "
            "overwrite them: resume with checkpoint.resume=auto, choose another checkpoint.dir, or set "
            "checkpoint.overwrite=true",
            c.dir, existing.size(), existing.front().path));
      // Overwrite: the previous run's checkpoints go now, so that none of them outlives this run's (a higher step
      // of the old run would otherwise be what resume = auto and checkpoint.keep see as newest).
      for (const auto& e : existing) fs::remove(e.path);
      if (!existing.empty()) {
        fs::remove(fs::path(c.dir) / "latest");
        log::warn("checkpoint.overwrite = true: deleted the {} checkpoint(s) of the previous run in '{}'",
                  existing.size(), c.dir);
      }
    }
  });
}

std::int64_t Checkpointer::resume() {
  const CheckpointSection& c = t_.cfg.checkpoint;
  Communicator& w = t_.world;
  claim_directory();
  if (c.resume == "none") return 0;
  CheckpointInfo info;
  if (c.resume == "auto") {
    // Rank 0's view of the directory decides (every rank must try the same files).
    std::string listing;
    if (w.rank() == 0)
      for (const auto& e : list_checkpoints(c.dir)) listing += e.path + "\n";
    listing = broadcast_string(w, listing, 0);
    std::vector<std::string> candidates;
    std::istringstream in(listing);
    for (std::string line; std::getline(in, line);) candidates.push_back(line);
    if (candidates.empty()) {
      if (talk_) log::info("checkpoint.resume = auto: no checkpoint in '{}'; starting from step 0", c.dir);
      return 0;
    }
    bool loaded = false;
    std::string errors;
    for (const auto& path : candidates) {
      try {
        info = load_checkpoint(t_, path);
        loaded = true;
        break;
      } catch (const UsageError&) {
        throw;  // the configuration does not fit: an older checkpoint would not either
      } catch (const Error& e) {
        log::warn("checkpoint.resume = auto: skipping {}: {}", path, e.what());
        errors += fmt::format("\n  {}", e.what());
      }
    }
    if (!loaded)
      fail("checkpoint.resume = auto: none of the {} checkpoint(s) in '{}' can be loaded:{}", candidates.size(),
           c.dir, errors);
    const std::string latest = w.rank() == 0 ? read_latest(c.dir) : "";
    if (talk_ && !latest.empty() && latest != fs::path(info.path).filename().string())
      log::warn("checkpoint.resume = auto: loaded {}, but '{}' names {} (a save that ended before updating it, or "
                "a newer one that failed verification)", info.path, (fs::path(c.dir) / "latest").string(), latest);
  } else {
    const std::string path = resolve_checkpoint_path(c.resume);
    if (path.ends_with(".partial"))
      throw UsageError(fmt::format("checkpoint.resume '{}': a .partial file is a save that never completed and is "
                                   "never loaded; use a complete step_<N>.h5 or checkpoint.resume=auto", path));
    info = load_checkpoint(t_, path);
  }
  resumed_step_ = info.step;
  resumed_tokens_ = info.tokens_seen;
  if (talk_)
    log::info("resumed from {}: step {}, {} tokens seen, written by {} rank(s), now {}", info.path, info.step,
              info.tokens_seen, info.world_size, w.size());
  if (talk_) {
    const auto changes = config_changes(info.config, t_.cfg.resolved_toml());
    std::string list;
    for (const auto& c : changes) list += "\n  " + c;
    if (!changes.empty()) log::info("configuration changed since the checkpoint:{}", list);
  }
  if (talk_ && !info.config.empty()) warn_if_lr_changed(t_.cfg, info.config, info.step);
  if (talk_ && info.step >= t_.cfg.train.steps)
    log::info("the checkpoint is at step {} and train.steps = {}: nothing left to train", info.step,
              t_.cfg.train.steps);
  return info.step;
}

bool Checkpointer::due(std::int64_t steps_done) const {
  const CheckpointSection& c = t_.cfg.checkpoint;
  return c.every > 0 && (steps_done % c.every == 0 || steps_done == t_.cfg.train.steps);
}

std::string Checkpointer::after_step(std::int64_t steps_done, bool updated, bool force) {
  const CheckpointSection& c = t_.cfg.checkpoint;
  if (!force && !due(steps_done)) return "";
  if (!updated) {
    if (talk_)
      log::warn("checkpoint of step {} not written: its update was skipped (non-finite loss or gradient); the "
                "newest checkpoint stays the last good one", steps_done);
    return "";
  }
  const auto t0 = std::chrono::steady_clock::now();
  const std::int64_t tokens = resumed_tokens_ + (steps_done - resumed_step_) * t_.cfg.tokens_per_step(t_.world.size());
  SavedCheckpoint saved;
  try {
    saved = save_checkpoint(t_, steps_done, tokens, c.dir, c.keep);
  } catch (const UsageError&) {
    throw;
  } catch (const Error& e) {
    // Agreed on every rank (save_checkpoint throws everywhere or nowhere); a stop signal's save always stops.
    if (!c.warn_on_error || force) throw;
    if (talk_) log::warn("{}; training goes on (checkpoint.on_error = warn)", e.what());
    return "";
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (talk_) {
    std::error_code ec;
    const auto bytes = fs::file_size(saved.path, ec);
    log::info("checkpoint: step {} -> {} ({:.1f} MiB in {:.2f} s)", steps_done, saved.path,
              ec ? 0.0 : static_cast<double>(bytes) / (1 << 20), s);
    for (const auto& p : saved.pruned) log::info("checkpoint: deleted {} (checkpoint.keep = {})", p, c.keep);
  }
  return saved.path;
}

}  // namespace orthoshard
