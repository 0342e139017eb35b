// Checkpoint tools: inspect (tree, statistics, verification), diff, export (the model family's formats).
#include "launch/cli/ckpt_tools.hpp"

#include "launch/trainer/checkpoint.hpp"
#include "models/family.hpp"
#include "runtime/checkpoint/h5_parallel.hpp"
#include "runtime/core/error.hpp"

#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <optional>

namespace fs = std::filesystem;

namespace orthoshard {
namespace {

std::string human_bytes(std::uint64_t b) {
  if (b < 1024) return fmt::format("{} B", b);
  if (b < (1u << 20)) return fmt::format("{:.1f} KiB", static_cast<double>(b) / 1024);
  if (b < (1ull << 30)) return fmt::format("{:.1f} MiB", static_cast<double>(b) / (1 << 20));
  return fmt::format("{:.2f} GiB", static_cast<double>(b) / (1ull << 30));
}

// "h.2.x" before "h.10.x": digit runs compare as numbers.
bool natural_less(const std::string& a, const std::string& b) {
  std::size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      std::size_t i2 = i, j2 = j;
      while (i2 < a.size() && std::isdigit(static_cast<unsigned char>(a[i2]))) ++i2;
      while (j2 < b.size() && std::isdigit(static_cast<unsigned char>(b[j2]))) ++j2;
      const std::string na = a.substr(i, i2 - i), nb = b.substr(j, j2 - j);
      if (na.size() != nb.size()) return na.size() < nb.size();
      if (na != nb) return na < nb;
      i = i2;
      j = j2;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

// Every dataset below `group`, depth first; names in `order` (parameter names in model order) first, in
// that order, then the others in natural name order.
void list_datasets(H5ParallelFile& f, const std::string& group, std::vector<std::string>& out,
                   const std::map<std::string, std::size_t>& order = {}) {
  auto names = f.children(group);
  std::sort(names.begin(), names.end(), [&](const std::string& a, const std::string& b) {
    const auto ia = order.find(a), ib = order.find(b);
    if (ia != order.end() && ib != order.end()) return ia->second < ib->second;
    if ((ia != order.end()) != (ib != order.end())) return ia != order.end();
    return natural_less(a, b);
  });
  for (const auto& n : names) {
    const std::string p = (group == "/" ? "/" : group + "/") + n;
    if (f.is_group(p)) list_datasets(f, p, out, order);
    else out.push_back(p);
  }
}

struct Stats {
  double sumsq = 0, min = std::numeric_limits<double>::infinity(), max = -std::numeric_limits<double>::infinity();
  std::int64_t nonfinite = 0, n = 0;
};

Stats stats_of(const Tensor& t) {
  Stats s;
  auto add = [&](double v) {
    ++s.n;
    if (!std::isfinite(v)) {
      ++s.nonfinite;
      return;
    }
    s.sumsq += v * v;
    s.min = std::min(s.min, v);
    s.max = std::max(s.max, v);
  };
  const std::int64_t n = t.numel();
  switch (t.dtype()) {
    case DType::F32: for (std::int64_t i = 0; i < n; ++i) add(t.data<float>()[i]); break;
    case DType::F64: for (std::int64_t i = 0; i < n; ++i) add(t.data<double>()[i]); break;
    case DType::I32: for (std::int64_t i = 0; i < n; ++i) add(t.data<std::int32_t>()[i]); break;
    case DType::I64: for (std::int64_t i = 0; i < n; ++i) add(static_cast<double>(t.data<std::int64_t>()[i])); break;
    case DType::U8: for (std::int64_t i = 0; i < n; ++i) add(t.data<std::uint8_t>()[i]); break;
    case DType::BF16: break;
  }
  return s;
}

double value_at(const Tensor& t, std::int64_t i) {
  switch (t.dtype()) {
    case DType::F32: return t.data<float>()[i];
    case DType::F64: return t.data<double>()[i];
    case DType::I32: return t.data<std::int32_t>()[i];
    case DType::I64: return static_cast<double>(t.data<std::int64_t>()[i]);
    case DType::U8: return t.data<std::uint8_t>()[i];
    case DType::BF16: break;
  }
  return 0;
}

std::string attr_or(H5ParallelFile& f, const std::string& obj, const std::string& name) {
  try {
    if (!f.has_attr(obj, name)) return "?";
    return f.string_attr(obj, name);
  } catch (const Error&) {
    try {
      return fmt::format("{}", f.int_attr(obj, name));
    } catch (const Error&) {
      return "?";
    }
  }
}


// The model the checkpoint's /model group describes (its family from the `architecture` attribute).
std::unique_ptr<Model> model_of(H5ParallelFile& f) {
  const std::string arch = attr_or(f, "/model", "architecture");
  const std::vector<std::string> known = model_family_names();
  if (std::find(known.begin(), known.end(), arch) == known.end())
    fail("'{}': /model has architecture '{}', not a model family this build knows ({})", f.path(), arch,
         fmt::join(known, ", "));
  return model_family(arch).from_attributes(CheckpointModelAttributes(f));
}

void check_format(H5ParallelFile& f) {
  const std::string fmt_attr = attr_or(f, "/", "format");
  if (fmt_attr != kCheckpointFormat)
    fail("'{}': not an orthoshard checkpoint (format attribute '{}')", f.path(), fmt_attr);
}

// The model and its weights (name -> host f32 tensor), checksums verified.
}  // namespace

std::unique_ptr<Model> read_checkpoint_model(const std::string& path, std::map<std::string, Tensor>& weights) {
  H5ParallelFile f = H5ParallelFile::open_read(path, nullptr);
  check_format(f);
  std::unique_ptr<Model> model = model_of(f);
  for (const ParamInfo& p : model->parameters()) {
    const Tensor v = f.read_all("/model/" + p.name, true);
    if (v.shape() != p.shape || v.dtype() != DType::F32)
      fail("'{}': /model/{} is {}, expected f32{}", path, p.name, v.describe(), shape_str(p.shape));
    weights[p.name] = v;
  }
  const auto bad = f.verify_checksums();
  if (!bad.empty()) fail("'{}': {} fails verification ({}); not used", path, bad[0].dataset, bad[0].what);
  return model;
}

int run_ckpt_inspect(const CkptInspectOptions& opt) {
  std::optional<H5ParallelFile> file;
  try {
    file.emplace(H5ParallelFile::open_read(opt.file, nullptr));
  } catch (const UsageError&) {
    throw;
  } catch (const Error& e) {
    std::printf("FAILED: %s\n", e.what());
    return 1;
  }
  H5ParallelFile& f = *file;
  std::vector<std::string> problems;
  std::error_code ec;
  const auto file_bytes = fs::file_size(opt.file, ec);
  const std::string format = attr_or(f, "/", "format");
  std::printf("file       %s (%s)\n", opt.file.c_str(), human_bytes(ec ? 0 : file_bytes).c_str());
  std::printf("format     %s, version %s\n", format.c_str(), attr_or(f, "/", "version").c_str());
  if (format != kCheckpointFormat) problems.push_back("format attribute is '" + format + "', not " +
                                                      std::string(kCheckpointFormat));
  std::printf("step       %s, %s tokens seen, written by %s rank(s) (sharding %s), optimizer %s\n",
              attr_or(f, "/", "step").c_str(), attr_or(f, "/", "tokens_seen").c_str(),
              attr_or(f, "/", "world_size").c_str(), attr_or(f, "/", "sharding").c_str(),
              attr_or(f, "/", "optimizer").c_str());
  std::printf("created    %s by %s\n", attr_or(f, "/", "created").c_str(), attr_or(f, "/", "versions").c_str());
  std::map<std::string, std::size_t> order;  // top-level groups, then the parameters in model order
  for (const char* g : {"model", "optim", "train"}) order[g] = order.size();
  try {
    const std::unique_ptr<Model> model = model_of(f);
    std::printf("model      %s, %.2f M parameters\n", model->describe().c_str(),
                static_cast<double>(model->num_parameters()) / 1e6);
    for (const ParamInfo& p : model->parameters()) order[p.name] = order.size();
  } catch (const Error& e) {
    problems.push_back(e.what());
  }
  std::printf("checksums  %s per dataset (sum of row hashes), verified below\n\n",
              attr_or(f, "/", "checksum_algorithm").c_str());

  std::vector<std::string> datasets;
  try {
    list_datasets(f, "/", datasets, order);
  } catch (const Error& e) {
    problems.push_back(std::string("cannot list the file's objects: ") + e.what());
  }
  std::printf("%-48s %-5s %-16s %10s %12s %12s %12s  %s\n", "dataset", "dtype", "shape", "bytes", "norm", "min", "max",
              "check");
  std::uint64_t total = 0;
  std::string group;
  for (const auto& ds : datasets) {
    const std::string top = ds.substr(0, ds.find('/', 1));
    if (top != group) {
      group = top;
      std::string extra;
      if (group == "/optim") extra = " (optimizer " + attr_or(f, "/optim", "name") + ")";
      std::printf("%s/%s\n", group.c_str(), extra.c_str());
    }
    try {
      const H5DatasetInfo in = f.info(ds);
      const Tensor t = f.read_all(ds, true);
      const auto bad = f.verify_checksums();
      const Stats s = stats_of(t);
      total += t.nbytes();
      std::string check = bad.empty() ? "ok" : "FAILED";
      if (!bad.empty()) problems.push_back(ds + ": " + bad[0].what);
      std::string numbers;
      if (t.ndim() == 0 || t.numel() == 1) {
        numbers = fmt::format("{:>12} {:>12} {:>12}", fmt::format("= {}", value_at(t, 0)), "", "");
      } else {
        numbers = fmt::format("{:>12.5e} {:>12.5e} {:>12.5e}", std::sqrt(s.sumsq), s.nonfinite == s.n ? NAN : s.min,
                              s.nonfinite == s.n ? NAN : s.max);
      }
      if (s.nonfinite) check += fmt::format(" ({} non-finite)", s.nonfinite);
      std::printf("  %-46s %-5s %-16s %10s %s  %s\n", ds.c_str(), std::string(dtype_name(in.dtype)).c_str(),
                  shape_str(in.shape).c_str(), human_bytes(t.nbytes()).c_str(), numbers.c_str(), check.c_str());
    } catch (const Error& e) {
      problems.push_back(ds + ": " + e.what());
      std::printf("  %-46s unreadable: %s\n", ds.c_str(), e.what());
    }
  }
  if (opt.config) {
    std::printf("\nconfig (resolved TOML of the run):\n");
    std::string cfg = attr_or(f, "/", "config");
    std::size_t pos = 0;
    while (pos < cfg.size()) {
      const std::size_t nl = cfg.find('\n', pos);
      std::printf("  %s\n", cfg.substr(pos, nl - pos).c_str());
      if (nl == std::string::npos) break;
      pos = nl + 1;
    }
  }
  for (const char* must : {"/model", "/optim", "/train"})
    if (!f.exists(must)) problems.push_back(std::string(must) + " is missing");
  std::printf("\n%zu datasets, %s of tensor data\n", datasets.size(), human_bytes(total).c_str());
  if (problems.empty()) {
    std::printf("OK: every dataset reads and matches its checksum\n");
    return 0;
  }
  std::printf("FAILED: %zu problem(s)\n", problems.size());
  for (const auto& p : problems) std::printf("  %s\n", p.c_str());
  return 1;
}

int run_ckpt_diff(const CkptDiffOptions& opt) {
  H5ParallelFile a = H5ParallelFile::open_read(opt.a, nullptr);
  H5ParallelFile b = H5ParallelFile::open_read(opt.b, nullptr);
  std::vector<std::string> da, db;
  list_datasets(a, "/", da);
  list_datasets(b, "/", db);
  std::printf("A = %s (step %s)\nB = %s (step %s)\n", opt.a.c_str(), attr_or(a, "/", "step").c_str(), opt.b.c_str(),
              attr_or(b, "/", "step").c_str());
  std::printf("%-48s %-16s %14s %14s\n", "dataset", "shape", "max |A-B|", "|A-B|/|B|");
  bool over = false;
  double worst = 0;
  for (const auto& ds : da) {
    if (std::find(db.begin(), db.end(), ds) == db.end()) {
      std::printf("  %-46s only in A\n", ds.c_str());
      over = true;
      continue;
    }
    const Tensor x = a.read_all(ds, false), y = b.read_all(ds, false);
    if (x.shape() != y.shape()) {
      std::printf("  %-46s shape %s in A, %s in B\n", ds.c_str(), shape_str(x.shape()).c_str(),
                  shape_str(y.shape()).c_str());
      over = true;
      continue;
    }
    double max_abs = 0, d2 = 0, y2 = 0;
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      const double u = value_at(x, i), v = value_at(y, i);
      const double d = std::abs(u - v);
      max_abs = std::max(max_abs, std::isnan(d) ? std::numeric_limits<double>::infinity() : d);
      d2 += d * d;
      y2 += v * v;
    }
    const double rel = d2 == 0 ? 0 : y2 == 0 ? std::numeric_limits<double>::infinity() : std::sqrt(d2 / y2);
    worst = std::max(worst, rel);
    if (opt.tolerance >= 0 && rel > opt.tolerance) over = true;
    std::printf("  %-46s %-16s %14.6e %14.6e%s\n", ds.c_str(), shape_str(x.shape()).c_str(), max_abs, rel,
                opt.tolerance >= 0 && rel > opt.tolerance ? "  > tolerance" : "");
  }
  for (const auto& ds : db)
    if (std::find(da.begin(), da.end(), ds) == da.end()) {
      std::printf("  %-46s only in B\n", ds.c_str());
      over = true;
    }
  std::printf("largest relative difference %.6e\n", worst);
  return opt.tolerance >= 0 && over ? 1 : 0;
}

int run_ckpt_export(const CkptExportOptions& opt) {
  std::map<std::string, Tensor> weights;
  const std::unique_ptr<Model> model = read_checkpoint_model(opt.file, weights);
  const std::vector<std::string> formats = model->export_formats();
  if (std::find(formats.begin(), formats.end(), opt.format) == formats.end())
    throw UsageError(fmt::format("ckpt export: --format must be {}, got '{}'", fmt::join(formats, " or "), opt.format));
  model->export_weights(opt.format, [&](const std::string& name) { return weights.at(name); }, opt.out, opt.file);
  std::printf("wrote %s (%s, %s) from %s\n", opt.out.c_str(), opt.format.c_str(), model->describe().c_str(),
              opt.file.c_str());
  return 0;
}

}  // namespace orthoshard
