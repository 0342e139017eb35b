// One schema of the trainer's keys (type, setter with validation, TOML writer) shared by the TOML reader,
// the command-line overrides and resolved_toml(). [optim] values are collected as JSON and handed to
// optim_config_from_json, so the optimizer's own checks apply; its messages get the key's source.
#include "launch/trainer/train_config.hpp"

#include "runtime/core/error.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <utility>
#include <variant>

namespace orthoshard {

std::string_view lr_schedule_name(LrSchedule s) {
  switch (s) {
    case LrSchedule::Constant: return "constant";
    case LrSchedule::Cosine: return "cosine";
    case LrSchedule::Linear: return "linear";
  }
  return "?";
}

std::string_view nan_policy_name(NanPolicy p) { return p == NanPolicy::Stop ? "stop" : "skip"; }
std::string_view comm_backend_name(CommBackend c) {
  return c == CommBackend::Auto ? "auto" : c == CommBackend::Mpi ? "mpi" : "nccl";
}
std::string_view grad_accum_mode_name(GradAccumMode m) {
  return m == GradAccumMode::Sharded ? "sharded" : "unsharded";
}
std::string_view overlap_name(Overlap o) { return o == Overlap::Auto ? "auto" : o == Overlap::On ? "on" : "off"; }

std::string RuntimeSection::sharding() const {
  return hybrid_group_size == 0 ? std::string("full") : fmt::format("hybrid:{}", hybrid_group_size);
}

namespace {

const std::vector<std::string_view> kSections = {"model", "data", "train", "eval", "optim", "checkpoint", "runtime"};
constexpr std::string_view kSectionList = "model, data, train, optim, checkpoint, runtime";

enum class Kind { Int, Float, Bool, String, FloatList, StringList, StringOrFloat };

// One parsed value, typed by its key's Kind (Float keys always hold double; StringOrFloat one of the two).
using Value = std::variant<std::int64_t, double, bool, std::string, std::vector<double>, std::vector<std::string>>;

// A value that does not fit its key; the caller prefixes where it came from.
struct BadValue {
  std::string message;
};

// ---- TOML literals ----

std::string toml_string(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (u < 0x20 || u == 0x7f) out += fmt::format("\\u{:04X}", u);
        else out += ch;
    }
  }
  return out + "\"";
}

// Shortest text that reads back as the same double, always with a '.' or an exponent (TOML float).
std::string toml_float(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  std::string s = fmt::format("{}", x);
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

std::string toml_floats(const std::vector<double>& xs) {
  std::string out = "[";
  for (std::size_t i = 0; i < xs.size(); ++i) out += (i ? ", " : "") + toml_float(xs[i]);
  return out + "]";
}

std::string toml_strings(const std::vector<std::string>& xs) {
  std::string out = "[";
  for (std::size_t i = 0; i < xs.size(); ++i) out += (i ? ", " : "") + toml_string(xs[i]);
  return out + "]";
}

std::string toml_int(std::int64_t x) { return std::to_string(x); }
std::string toml_bool(bool b) { return b ? "true" : "false"; }

// ---- value checks used by the setters ----

std::int64_t int_at_least(const Value& v, std::int64_t lo) {
  const std::int64_t x = std::get<std::int64_t>(v);
  if (x < lo) throw BadValue{fmt::format("must be >= {}, got {}", lo, x)};
  return x;
}

int small_int_at_least(const Value& v, int lo) {
  const std::int64_t x = int_at_least(v, lo);
  if (x > INT_MAX) throw BadValue{fmt::format("{} is too large (at most {})", x, INT_MAX)};
  return static_cast<int>(x);
}

std::uint64_t seed_value(const Value& v) { return static_cast<std::uint64_t>(int_at_least(v, 0)); }

double float_at_least(const Value& v, double lo) {
  const double x = std::get<double>(v);
  if (!(x >= lo)) throw BadValue{fmt::format("must be >= {}, got {}", lo, x)};
  return x;
}

double positive_float(const Value& v) {
  const double x = std::get<double>(v);
  if (!(x > 0.0)) throw BadValue{fmt::format("must be > 0, got {}", x)};
  return x;
}

std::string nonempty_string(const Value& v) {
  const std::string& s = std::get<std::string>(v);
  if (s.empty()) throw BadValue{"must not be empty"};
  return s;
}

// "'x' is not a, b or c"
template <typename E>
E choose(const Value& v, std::initializer_list<std::pair<std::string_view, E>> options) {
  const std::string& s = std::get<std::string>(v);
  for (const auto& [name, e] : options)
    if (s == name) return e;
  std::string list;
  std::size_t i = 0;
  for (const auto& o : options) {
    list += (i == 0 ? "" : (i + 1 == options.size() ? " or " : ", ")) + std::string(o.first);
    ++i;
  }
  throw BadValue{fmt::format("'{}' is not {}", s, list)};
}

// A registered model family ("'x' is not gpt2").
std::string model_arch(const Value& v) {
  const std::string& s = std::get<std::string>(v);
  const std::vector<std::string> known = model_family_names();
  if (std::find(known.begin(), known.end(), s) != known.end()) return s;
  std::string list;
  for (std::size_t i = 0; i < known.size(); ++i)
    list += (i == 0 ? "" : (i + 1 == known.size() ? " or " : ", ")) + known[i];
  throw BadValue{fmt::format("'{}' is not {}", s, list)};
}

DType float_dtype(const Value& v) { return choose<DType>(v, {{"f32", DType::F32}, {"bf16", DType::BF16}}); }

int parse_sharding(const Value& v) {
  const std::string& s = std::get<std::string>(v);
  if (s == "full") return 0;
  constexpr std::string_view prefix = "hybrid:";
  if (s.rfind(prefix, 0) == 0) {
    const std::string_view digits = std::string_view(s).substr(prefix.size());
    int group = 0;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), group);
    if (ec == std::errc() && end == digits.data() + digits.size() && !digits.empty() && group >= 1) return group;
  }
  throw BadValue{fmt::format("expected \"full\" or \"hybrid:S\" (S >= 1 ranks per shard group), got \"{}\"", s)};
}

std::string scale_name(MatrixScale s) {
  switch (s) {
    case MatrixScale::Keller: return "keller";
    case MatrixScale::Moonlight: return "moonlight";
    case MatrixScale::None: return "none";
    case MatrixScale::Paper: return "paper";
  }
  return "?";
}

std::string proj_type_name(CondaProjType p) {
  switch (p) {
    case CondaProjType::Std: return "std";
    case CondaProjType::ReverseStd: return "reverse_std";
    case CondaProjType::Left: return "left";
    case CondaProjType::Right: return "right";
  }
  return "?";
}

// ---- the schema ----

using Setter = void (*)(TrainConfig&, const Value&);
using Getter = std::string (*)(const TrainConfig&);

struct KeySpec {
  std::string_view section;
  std::string_view key;
  Kind kind;
  Setter set;  // validates and stores; null for [optim] keys (they go through optim_config_from_json)
  Getter get;  // the current value as a TOML literal
};

// clang-format off
const std::vector<KeySpec>& schema() {
  static const std::vector<KeySpec> keys = {
    // [model]
    {"model", "init_from", Kind::String,
     [](TrainConfig& c, const Value& v) { c.model.init_from = std::get<std::string>(v); },
     [](const TrainConfig& c) { return toml_string(c.model.init_from); }},
    {"model", "arch", Kind::String, [](TrainConfig& c, const Value& v) { c.model.arch = model_arch(v); },
     [](const TrainConfig& c) { return toml_string(c.model.arch); }},
    {"model", "L", Kind::Int, [](TrainConfig& c, const Value& v) { c.model.L = int_at_least(v, 1); },
     [](const TrainConfig& c) { return toml_int(c.model.L); }},
    {"model", "C", Kind::Int, [](TrainConfig& c, const Value& v) { c.model.C = int_at_least(v, 1); },
     [](const TrainConfig& c) { return toml_int(c.model.C); }},
    {"model", "NH", Kind::Int, [](TrainConfig& c, const Value& v) { c.model.NH = int_at_least(v, 1); },
     [](const TrainConfig& c) { return toml_int(c.model.NH); }},
    {"model", "V", Kind::Int, [](TrainConfig& c, const Value& v) { c.model.V = int_at_least(v, 1); },
     [](const TrainConfig& c) { return toml_int(c.model.V); }},
    {"model", "Vp", Kind::Int, [](TrainConfig& c, const Value& v) { c.model.Vp = int_at_least(v, 1); },
     [](const TrainConfig& c) { return toml_int(c.model.Vp); }},
    {"model", "maxT", Kind::Int, [](TrainConfig& c, const Value& v) { c.model.maxT = int_at_least(v, 1); },
     [](const TrainConfig& c) { return toml_int(c.model.maxT); }},
    {"model", "seed", Kind::Int, [](TrainConfig& c, const Value& v) { c.model.seed = seed_value(v); },
     [](const TrainConfig& c) { return toml_int(static_cast<std::int64_t>(c.model.seed)); }},
    {"model", "NKV", Kind::Int, [](TrainConfig& c, const Value& v) { c.model.NKV = int_at_least(v, 0); },
     [](const TrainConfig& c) { return toml_int(c.model.NKV); }},
    {"model", "FF", Kind::Int, [](TrainConfig& c, const Value& v) { c.model.FF = int_at_least(v, 0); },
     [](const TrainConfig& c) { return toml_int(c.model.FF); }},
    {"model", "norm_eps", Kind::Float,
     [](TrainConfig& c, const Value& v) { c.model.norm_eps = positive_float(v); },
     [](const TrainConfig& c) { return toml_float(c.model.norm_eps); }},
    {"model", "rope_theta", Kind::Float,
     [](TrainConfig& c, const Value& v) { c.model.rope_theta = positive_float(v); },
     [](const TrainConfig& c) { return toml_float(c.model.rope_theta); }},
    {"model", "tie_embeddings", Kind::Bool,
     [](TrainConfig& c, const Value& v) { c.model.tie_embeddings = std::get<bool>(v); },
     [](const TrainConfig& c) { return toml_bool(c.model.tie_embeddings); }},
    // [data]
    {"data", "path", Kind::String, [](TrainConfig& c, const Value& v) { c.data.path = nonempty_string(v); },
     [](const TrainConfig& c) { return toml_string(c.data.path); }},
    {"data", "order", Kind::String,
     [](TrainConfig& c, const Value& v) {
       c.data.order = choose<DataOrder>(v, {{"sequential", DataOrder::Sequential}, {"shuffled", DataOrder::Shuffled}});
     },
     [](const TrainConfig& c) { return toml_string(data_order_name(c.data.order)); }},
    {"data", "seed", Kind::Int, [](TrainConfig& c, const Value& v) { c.data.seed = seed_value(v); },
     [](const TrainConfig& c) { return toml_int(static_cast<std::int64_t>(c.data.seed)); }},
    // [train]
    {"train", "batch_size", Kind::Int, [](TrainConfig& c, const Value& v) { c.train.batch_size = int_at_least(v, 1); },
     [](const TrainConfig& c) { return toml_int(c.train.batch_size); }},
    {"train", "global_batch_size", Kind::Int,
     [](TrainConfig& c, const Value& v) { c.train.global_batch_size = int_at_least(v, 0); },
     [](const TrainConfig& c) { return toml_int(c.train.global_batch_size); }},
    {"train", "seq_len", Kind::Int, [](TrainConfig& c, const Value& v) { c.train.seq_len = int_at_least(v, 1); },
     [](const TrainConfig& c) { return toml_int(c.train.seq_len); }},
    {"train", "grad_accum", Kind::Int,
     [](TrainConfig& c, const Value& v) { c.train.grad_accum = small_int_at_least(v, 1); },
     [](const TrainConfig& c) { return toml_int(c.train.grad_accum); }},
    {"train", "steps", Kind::Int, [](TrainConfig& c, const Value& v) { c.train.steps = int_at_least(v, 1); },
     [](const TrainConfig& c) { return toml_int(c.train.steps); }},
    {"train", "schedule", Kind::String,
     [](TrainConfig& c, const Value& v) {
       c.train.schedule = choose<LrSchedule>(
           v, {{"constant", LrSchedule::Constant}, {"cosine", LrSchedule::Cosine}, {"linear", LrSchedule::Linear}});
     },
     [](const TrainConfig& c) { return toml_string(lr_schedule_name(c.train.schedule)); }},
    {"train", "warmup_steps", Kind::Int,
     [](TrainConfig& c, const Value& v) { c.train.warmup_steps = int_at_least(v, 0); },
     [](const TrainConfig& c) { return toml_int(c.train.warmup_steps); }},
    {"train", "min_lr_ratio", Kind::Float,
     [](TrainConfig& c, const Value& v) {
       const double x = std::get<double>(v);
       if (!(x >= 0.0 && x <= 1.0)) throw BadValue{fmt::format("must be in [0, 1], got {}", x)};
       c.train.min_lr_ratio = x;
     },
     [](const TrainConfig& c) { return toml_float(c.train.min_lr_ratio); }},
    {"train", "grad_clip", Kind::Float,
     [](TrainConfig& c, const Value& v) { c.train.grad_clip = float_at_least(v, 0.0); },
     [](const TrainConfig& c) { return toml_float(c.train.grad_clip); }},
    {"train", "seed", Kind::Int, [](TrainConfig& c, const Value& v) { c.train.seed = seed_value(v); },
     [](const TrainConfig& c) { return toml_int(static_cast<std::int64_t>(c.train.seed)); }},
    {"train", "metrics", Kind::String,
     [](TrainConfig& c, const Value& v) { c.train.metrics = std::get<std::string>(v); },
     [](const TrainConfig& c) { return toml_string(c.train.metrics); }},
    {"train", "log_every", Kind::Int, [](TrainConfig& c, const Value& v) { c.train.log_every = int_at_least(v, 1); },
     [](const TrainConfig& c) { return toml_int(c.train.log_every); }},
    {"train", "nan_policy", Kind::String,
     [](TrainConfig& c, const Value& v) {
       c.train.nan_policy = choose<NanPolicy>(v, {{"stop", NanPolicy::Stop}, {"skip", NanPolicy::Skip}});
     },
     [](const TrainConfig& c) { return toml_string(nan_policy_name(c.train.nan_policy)); }},
    {"train", "max_skipped_steps", Kind::Int,
     [](TrainConfig& c, const Value& v) { c.train.max_skipped_steps = int_at_least(v, 1); },
     [](const TrainConfig& c) { return toml_int(c.train.max_skipped_steps); }},
    {"train", "loss_limit", Kind::Float,
     [](TrainConfig& c, const Value& v) { c.train.loss_limit = float_at_least(v, 0.0); },
     [](const TrainConfig& c) { return toml_float(c.train.loss_limit); }},
    // [eval]
    {"eval", "path", Kind::String, [](TrainConfig& c, const Value& v) { c.eval.path = nonempty_string(v); },
     [](const TrainConfig& c) { return toml_string(c.eval.path); }},
    {"eval", "every", Kind::Int, [](TrainConfig& c, const Value& v) { c.eval.every = int_at_least(v, 0); },
     [](const TrainConfig& c) { return toml_int(c.eval.every); }},
    {"eval", "batches", Kind::Int, [](TrainConfig& c, const Value& v) { c.eval.batches = int_at_least(v, 1); },
     [](const TrainConfig& c) { return toml_int(c.eval.batches); }},
    {"eval", "sample_every", Kind::Int,
     [](TrainConfig& c, const Value& v) { c.eval.sample_every = int_at_least(v, 0); },
     [](const TrainConfig& c) { return toml_int(c.eval.sample_every); }},
    {"eval", "sample_prompt", Kind::String,
     [](TrainConfig& c, const Value& v) { c.eval.sample_prompt = std::get<std::string>(v); },
     [](const TrainConfig& c) { return toml_string(c.eval.sample_prompt); }},
    {"eval", "sample_tokens", Kind::Int,
     [](TrainConfig& c, const Value& v) { c.eval.sample_tokens = int_at_least(v, 1); },
     [](const TrainConfig& c) { return toml_int(c.eval.sample_tokens); }},
    // [optim]: stored through optim_config_from_json; written back from OptimConfig.
    {"optim", "name", Kind::String, nullptr, [](const TrainConfig& c) { return toml_string(c.optim.name); }},
    {"optim", "lr", Kind::Float, nullptr, [](const TrainConfig& c) { return toml_float(c.optim.lr); }},
    {"optim", "weight_decay", Kind::Float, nullptr,
     [](const TrainConfig& c) { return toml_float(c.optim.weight_decay); }},
    {"optim", "betas", Kind::FloatList, nullptr,
     [](const TrainConfig& c) { return toml_floats({c.optim.beta1, c.optim.beta2_adam}); }},
    {"optim", "eps", Kind::Float, nullptr, [](const TrainConfig& c) { return toml_float(c.optim.eps); }},
    {"optim", "momentum", Kind::Float, nullptr, [](const TrainConfig& c) { return toml_float(c.optim.momentum); }},
    {"optim", "beta2", Kind::Float, nullptr, [](const TrainConfig& c) { return toml_float(c.optim.beta2); }},
    {"optim", "nesterov", Kind::Bool, nullptr, [](const TrainConfig& c) { return toml_bool(c.optim.nesterov); }},
    {"optim", "ns_steps", Kind::Int, nullptr, [](const TrainConfig& c) { return toml_int(c.optim.ns_steps); }},
    // scale: Muon's and NorMuon's (a number is the old spelling of conda_scale); conda_scale: Conda's. Separate keys,
    // so that a configuration switches optim.name without editing either.
    {"optim", "scale", Kind::StringOrFloat, nullptr,
     [](const TrainConfig& c) { return toml_string(scale_name(c.optim.scale)); }},
    {"optim", "conda_scale", Kind::Float, nullptr, [](const TrainConfig& c) { return toml_float(c.optim.conda_scale); }},
    {"optim", "update_proj_gap", Kind::Int, nullptr,
     [](const TrainConfig& c) { return toml_int(c.optim.update_proj_gap); }},
    {"optim", "proj_type", Kind::String, nullptr,
     [](const TrainConfig& c) { return toml_string(proj_type_name(c.optim.proj_type)); }},
    {"optim", "correct_bias", Kind::Bool, nullptr,
     [](const TrainConfig& c) { return toml_bool(c.optim.correct_bias); }},
    {"optim", "ortho_scheme", Kind::String, nullptr,
     [](const TrainConfig& c) { return toml_string(ortho_scheme_name(c.optim.ortho_scheme)); }},
    {"optim", "adam_lr", Kind::Float, nullptr, [](const TrainConfig& c) { return toml_float(c.optim.adam.lr); }},
    {"optim", "adam_betas", Kind::FloatList, nullptr,
     [](const TrainConfig& c) { return toml_floats({c.optim.adam.beta1, c.optim.adam.beta2}); }},
    {"optim", "adam_eps", Kind::Float, nullptr, [](const TrainConfig& c) { return toml_float(c.optim.adam.eps); }},
    {"optim", "adam_weight_decay", Kind::Float, nullptr,
     [](const TrainConfig& c) { return toml_float(c.optim.adam.weight_decay); }},
    {"optim", "matrix_params", Kind::StringList, nullptr,
     [](const TrainConfig& c) { return toml_strings(c.optim.matrix_params); }},
    {"optim", "adam_params", Kind::StringList, nullptr,
     [](const TrainConfig& c) { return toml_strings(c.optim.adam_params); }},
    // [checkpoint]
    {"checkpoint", "dir", Kind::String, [](TrainConfig& c, const Value& v) { c.checkpoint.dir = std::get<std::string>(v); },
     [](const TrainConfig& c) { return toml_string(c.checkpoint.dir); }},
    {"checkpoint", "every", Kind::Int, [](TrainConfig& c, const Value& v) { c.checkpoint.every = int_at_least(v, 0); },
     [](const TrainConfig& c) { return toml_int(c.checkpoint.every); }},
    {"checkpoint", "keep", Kind::Int, [](TrainConfig& c, const Value& v) { c.checkpoint.keep = int_at_least(v, 0); },
     [](const TrainConfig& c) { return toml_int(c.checkpoint.keep); }},
    {"checkpoint", "resume", Kind::String,
     [](TrainConfig& c, const Value& v) { c.checkpoint.resume = nonempty_string(v); },
     [](const TrainConfig& c) { return toml_string(c.checkpoint.resume); }},
    {"checkpoint", "on_error", Kind::String,
     [](TrainConfig& c, const Value& v) { c.checkpoint.warn_on_error = choose<bool>(v, {{"stop", false}, {"warn", true}}); },
     [](const TrainConfig& c) { return toml_string(c.checkpoint.warn_on_error ? "warn" : "stop"); }},
    {"checkpoint", "overwrite", Kind::Bool,
     [](TrainConfig& c, const Value& v) { c.checkpoint.overwrite = std::get<bool>(v); },
     [](const TrainConfig& c) { return toml_bool(c.checkpoint.overwrite); }},
    // [runtime]
    {"runtime", "backend", Kind::String,
     [](TrainConfig& c, const Value& v) {
       c.runtime.backend = choose<Device>(v, {{"cpu", Device::CPU}, {"cuda", Device::CUDA}});
     },
     [](const TrainConfig& c) { return toml_string(device_name(c.runtime.backend)); }},
    {"runtime", "comm", Kind::String,
     [](TrainConfig& c, const Value& v) {
       c.runtime.comm =
           choose<CommBackend>(v, {{"auto", CommBackend::Auto}, {"mpi", CommBackend::Mpi}, {"nccl", CommBackend::Nccl}});
     },
     [](const TrainConfig& c) { return toml_string(comm_backend_name(c.runtime.comm)); }},
    {"runtime", "sharding", Kind::String,
     [](TrainConfig& c, const Value& v) { c.runtime.hybrid_group_size = parse_sharding(v); },
     [](const TrainConfig& c) { return toml_string(c.runtime.sharding()); }},
    {"runtime", "param_dtype", Kind::String,
     [](TrainConfig& c, const Value& v) { c.runtime.param_dtype = float_dtype(v); },
     [](const TrainConfig& c) { return toml_string(dtype_name(c.runtime.param_dtype)); }},
    {"runtime", "reduce_dtype", Kind::String,
     [](TrainConfig& c, const Value& v) { c.runtime.reduce_dtype = float_dtype(v); },
     [](const TrainConfig& c) { return toml_string(dtype_name(c.runtime.reduce_dtype)); }},
    {"runtime", "reshard_after_forward", Kind::Bool,
     [](TrainConfig& c, const Value& v) { c.runtime.reshard_after_forward = std::get<bool>(v); },
     [](const TrainConfig& c) { return toml_bool(c.runtime.reshard_after_forward); }},
    {"runtime", "threads", Kind::Int,
     [](TrainConfig& c, const Value& v) { c.runtime.threads = small_int_at_least(v, 0); },
     [](const TrainConfig& c) { return toml_int(c.runtime.threads); }},
    {"runtime", "comm_timeout_s", Kind::Float,
     [](TrainConfig& c, const Value& v) { c.runtime.comm_timeout_s = float_at_least(v, 0.0); },
     [](const TrainConfig& c) { return toml_float(c.runtime.comm_timeout_s); }},
    {"runtime", "prefetch", Kind::Int,
     [](TrainConfig& c, const Value& v) { c.runtime.prefetch = small_int_at_least(v, 0); },
     [](const TrainConfig& c) { return toml_int(c.runtime.prefetch); }},
    {"runtime", "overlap", Kind::String,
     [](TrainConfig& c, const Value& v) {
       c.runtime.overlap = choose<Overlap>(v, {{"auto", Overlap::Auto}, {"on", Overlap::On}, {"off", Overlap::Off}});
     },
     [](const TrainConfig& c) { return toml_string(overlap_name(c.runtime.overlap)); }},
    {"runtime", "attention", Kind::String,
     [](TrainConfig& c, const Value& v) {
       c.runtime.attention = choose<AttentionKernels>(
           v, {{"auto", AttentionKernels::Auto}, {"flash", AttentionKernels::Flash}, {"gemm", AttentionKernels::Gemm}});
     },
     [](const TrainConfig& c) { return toml_string(attention_kernels_name(c.runtime.attention)); }},
    {"runtime", "grad_accum_mode", Kind::String,
     [](TrainConfig& c, const Value& v) {
       c.runtime.grad_accum_mode =
           choose<GradAccumMode>(v, {{"sharded", GradAccumMode::Sharded}, {"unsharded", GradAccumMode::Unsharded}});
     },
     [](const TrainConfig& c) { return toml_string(grad_accum_mode_name(c.runtime.grad_accum_mode)); }},
    {"runtime", "activation_checkpointing", Kind::String,
     [](TrainConfig& c, const Value& v) { c.runtime.checkpoint_blocks = choose<bool>(v, {{"none", false}, {"blocks", true}}); },
     [](const TrainConfig& c) { return toml_string(c.runtime.checkpoint_blocks ? "blocks" : "none"); }},
  };
  return keys;
}
// clang-format on

const KeySpec* find_key(std::string_view section, std::string_view key) {
  for (const auto& k : schema())
    if (k.section == section && k.key == key) return &k;
  return nullptr;
}

bool known_section(std::string_view s) { return std::find(kSections.begin(), kSections.end(), s) != kSections.end(); }

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      const bool same = std::tolower(static_cast<unsigned char>(a[i - 1])) ==
                        std::tolower(static_cast<unsigned char>(b[j - 1]));
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (same ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// The closest known key to section.key (same key in another section first), or null when none is close.
const KeySpec* suggest(std::string_view section, std::string_view key) {
  for (const auto& k : schema())
    if (k.key == key && k.section != section) return &k;
  const KeySpec* best = nullptr;
  std::size_t best_d = SIZE_MAX;
  for (const auto& k : schema()) {
    const std::size_t d = edit_distance(key, k.key) + (k.section == section ? 0 : 2);
    if (d < best_d) best_d = d, best = &k;
  }
  const std::size_t limit = std::max<std::size_t>(2, key.size() / 3);
  return best_d <= limit ? best : nullptr;
}

// Where a value came from, so that `prefix + key` names it: "cfg.toml: [train] ", "--train.", "[train] ".
struct Origin {
  std::string prefix_file;  // "" for overrides
  std::string_view section;
  bool override_arg = false;

  std::string prefix() const {
    if (override_arg) return fmt::format("--{}.", section);
    if (!prefix_file.empty()) return fmt::format("{}: [{}] ", prefix_file, section);
    return fmt::format("[{}] ", section);
  }
  std::string name(std::string_view key) const { return prefix() + std::string(key); }
  std::string suggestion(const KeySpec& k) const {
    return override_arg ? fmt::format("--{}.{}", k.section, k.key) : fmt::format("[{}] {}", k.section, k.key);
  }
};

// ---- values from TOML nodes ----

std::string render(const toml::node& n) {
  if (auto s = n.as_string()) return toml_string(s->get());
  if (auto i = n.as_integer()) return std::to_string(i->get());
  if (auto f = n.as_floating_point()) return toml_float(f->get());
  if (auto b = n.as_boolean()) return toml_bool(b->get());
  if (auto a = n.as_array()) {
    std::string out = "[";
    for (std::size_t i = 0; i < a->size(); ++i) out += (i ? ", " : "") + render(*a->get(i));
    return out + "]";
  }
  if (n.is_table()) return "a table";
  return "a date/time";
}

double finite(double x, const std::string& shown) {
  if (!std::isfinite(x)) throw BadValue{"expected a finite number, got " + shown};
  return x;
}

Value from_toml(const toml::node& n, Kind kind) {
  switch (kind) {
    case Kind::Int:
      if (auto i = n.as_integer()) return i->get();
      throw BadValue{"expected an integer, got " + render(n)};
    case Kind::Float:
      if (auto i = n.as_integer()) return static_cast<double>(i->get());
      if (auto f = n.as_floating_point()) return finite(f->get(), render(n));
      throw BadValue{"expected a number, got " + render(n)};
    case Kind::Bool:
      if (auto b = n.as_boolean()) return b->get();
      throw BadValue{"expected true or false, got " + render(n)};
    case Kind::String:
      if (auto s = n.as_string()) return s->get();
      throw BadValue{"expected a string, got " + render(n)};
    case Kind::FloatList: {
      std::vector<double> out;
      if (auto a = n.as_array()) {
        bool ok = true;
        for (const auto& e : *a) {
          if (auto i = e.as_integer()) out.push_back(static_cast<double>(i->get()));
          else if (auto f = e.as_floating_point()) out.push_back(finite(f->get(), render(n)));
          else ok = false;
        }
        if (ok) return out;
      }
      throw BadValue{"expected a list of numbers, got " + render(n)};
    }
    case Kind::StringList: {
      std::vector<std::string> out;
      if (auto s = n.as_string()) return std::vector<std::string>{s->get()};
      if (auto a = n.as_array()) {
        bool ok = true;
        for (const auto& e : *a) {
          if (auto s = e.as_string()) out.push_back(s->get());
          else ok = false;
        }
        if (ok) return out;
      }
      throw BadValue{"expected a list of strings, got " + render(n)};
    }
    case Kind::StringOrFloat:
      if (auto s = n.as_string()) return s->get();
      if (auto i = n.as_integer()) return static_cast<double>(i->get());
      if (auto f = n.as_floating_point()) return finite(f->get(), render(n));
      throw BadValue{"expected a string or a number, got " + render(n)};
  }
  throw BadValue{"unsupported key type"};
}

// ---- values from command-line text ----

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

template <typename T>
bool parse_number(std::string_view s, T& out) {
  s = trim(s);
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

std::vector<std::string_view> split_commas(std::string_view s) {
  std::vector<std::string_view> out;
  while (true) {
    const std::size_t comma = s.find(',');
    const std::string_view item = trim(s.substr(0, comma));
    if (!item.empty()) out.push_back(item);
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  return out;
}

Value from_text(const std::string& text, Kind kind) {
  const std::string shown = "\"" + text + "\"";
  switch (kind) {
    case Kind::Int: {
      std::int64_t x = 0;
      if (parse_number(text, x)) return x;
      throw BadValue{"expected an integer, got " + shown};
    }
    case Kind::Float: {
      double x = 0;
      if (parse_number(text, x)) return finite(x, shown);
      throw BadValue{"expected a number, got " + shown};
    }
    case Kind::Bool: {
      const std::string_view t = trim(text);
      if (t == "true" || t == "1") return true;
      if (t == "false" || t == "0") return false;
      throw BadValue{"expected true or false, got " + shown};
    }
    case Kind::String: return text;
    case Kind::FloatList: {
      std::string_view body = trim(text);
      if (body.size() >= 2 && body.front() == '[' && body.back() == ']') body = body.substr(1, body.size() - 2);
      std::vector<double> out;
      for (std::string_view item : split_commas(body)) {
        double x = 0;
        if (!parse_number(item, x)) throw BadValue{"expected a comma-separated list of numbers, got " + shown};
        out.push_back(finite(x, shown));
      }
      return out;
    }
    case Kind::StringList: {
      std::vector<std::string> out;
      for (std::string_view item : split_commas(text)) out.emplace_back(item);
      return out;
    }
    case Kind::StringOrFloat: {
      double x = 0;
      if (parse_number(text, x)) return finite(x, shown);
      return text;
    }
  }
  throw BadValue{"unsupported key type"};
}

nlohmann::json to_json(const Value& v) {
  return std::visit([](const auto& x) { return nlohmann::json(x); }, v);
}

// Builds a TrainConfig from values applied in order; [optim] values wait in `optim_json` until finish().
class Builder {
 public:
  explicit Builder(std::string source) {
    cfg_.source = std::move(source);
    cfg_.model.origin = cfg_.source;
  }

  void apply(const KeySpec& spec, const Origin& origin, const std::function<Value()>& parse) {
    const std::string full = fmt::format("{}.{}", spec.section, spec.key);
    try {
      const Value v = parse();
      if (spec.set) {
        spec.set(cfg_, v);
      } else {
        if (spec.kind == Kind::Int) {
          const std::int64_t x = std::get<std::int64_t>(v);
          if (x < INT_MIN || x > INT_MAX) throw BadValue{fmt::format("{} is out of range", x)};
        }
        if (spec.kind == Kind::StringOrFloat) scale_is_number_ = std::holds_alternative<double>(v);
        optim_json_[std::string(spec.key)] = to_json(v);
      }
    } catch (const BadValue& e) {
      throw UsageError(origin.name(spec.key) + ": " + e.message);
    }
    origins_[full] = origin;
  }

  TrainConfig finish() {
    try {
      cfg_.optim = optim_config_from_json(optim_json_);
    } catch (const UsageError& e) {
      throw UsageError(attribute(e.what()));
    }
    check_optim();
    check_cross_keys();
    return std::move(cfg_);
  }

 private:
  Origin origin_of(std::string_view section, std::string_view key) const {
    const auto it = origins_.find(fmt::format("{}.{}", section, key));
    if (it != origins_.end()) return it->second;
    return Origin{"", section, false};
  }
  std::string name(std::string_view section, std::string_view key) const {
    return origin_of(section, key).name(key);
  }

  // "optim.KEY...: msg" from the optimizer -> the same text behind the key's source.
  std::string attribute(const std::string& msg) const {
    constexpr std::string_view head = "optim.";
    if (msg.rfind(head, 0) == 0) {
      const std::string rest = msg.substr(head.size());
      const std::string key = rest.substr(0, rest.find_first_of(":[ "));
      return origin_of("optim", key).prefix() + rest;
    }
    return cfg_.source.empty() ? msg : cfg_.source + ": " + msg;
  }

  void check_optim() const {
    const OptimConfig& o = cfg_.optim;
    // A string scale is Muon's and NorMuon's and Conda ignores it; a number is the old spelling of Conda's scale.
    if (optim_json_.contains("scale") && scale_is_number_) {
      if (optim_json_.contains("conda_scale"))
        throw UsageError(name("optim", "scale") + ": a number here is the old spelling of optim.conda_scale, which is "
                         "set too; remove one");
      if (o.name != "conda")
        throw UsageError(fmt::format("{}: a number is Conda's scale: write it as optim.conda_scale (then optim.name "
                                     "can change freely); optim.scale is Muon's and NorMuon's: keller, moonlight, "
                                     "none{}", name("optim", "scale"), o.name == "normuon" ? " or paper" : ""));
    }
    const std::pair<const char*, double> non_negative[] = {
        {"lr", o.lr}, {"weight_decay", o.weight_decay}, {"eps", o.eps}, {"adam_lr", o.adam.lr},
        {"adam_weight_decay", o.adam.weight_decay}, {"adam_eps", o.adam.eps}};
    for (const auto& [key, x] : non_negative)
      if (!(x >= 0.0)) throw UsageError(fmt::format("{}: must be >= 0, got {}", name("optim", key), x));
  }

  void check_cross_keys() const {
    const auto& m = cfg_.model;
    if (m.C % m.NH != 0)
      throw UsageError(fmt::format("{}: {} is not divisible by [model] NH = {}", name("model", "C"), m.C, m.NH));
    if (m.arch == "llama" && m.init_from.empty()) {
      const std::int64_t nkv = m.NKV == 0 ? m.NH : m.NKV;
      if (m.NH % nkv != 0)
        throw UsageError(fmt::format("{}: [model] NH = {} is not divisible by {} (key/value heads)", name("model", "NKV"),
                                     m.NH, nkv));
      if ((m.C / m.NH) % 2 != 0)
        throw UsageError(fmt::format("{}: the head size C/NH = {} is odd; LLaMA's rotary embedding needs it even",
                                     name("model", "C"), m.C / m.NH));
    }
    if (m.Vp < m.V)
      throw UsageError(fmt::format("{}: padded vocabulary {} is smaller than [model] V = {}", name("model", "Vp"),
                                   m.Vp, m.V));
    if (cfg_.runtime.comm == CommBackend::Nccl && cfg_.runtime.backend != Device::CUDA)
      throw UsageError(fmt::format("{}: 'nccl' needs [runtime] backend = \"cuda\" (backend is \"{}\")",
                                   name("runtime", "comm"), device_name(cfg_.runtime.backend)));
    if (cfg_.checkpoint.dir.empty() && (cfg_.checkpoint.every > 0 || cfg_.checkpoint.resume == "auto"))
      throw UsageError(fmt::format("{}: must not be empty when checkpoints are written (every = {}) or resumed "
                                   "(resume = \"{}\")", name("checkpoint", "dir"), cfg_.checkpoint.every,
                                   cfg_.checkpoint.resume));
  }

  TrainConfig cfg_;
  nlohmann::json optim_json_ = nlohmann::json::object();
  bool scale_is_number_ = false;
  std::map<std::string, Origin> origins_;
};

std::string unknown_key_message(const Origin& origin, std::string_view section, std::string_view key) {
  std::string msg = origin.name(key) + ": unknown key";
  if (const KeySpec* s = suggest(section, key)) msg += " (did you mean " + origin.suggestion(*s) + "?)";
  return msg;
}

void read_text(Builder& b, const std::string& text, const std::string& path);

void read_file(Builder& b, const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw UsageError("config file '" + path + "' not found");
  if (std::filesystem::is_directory(path, ec)) throw UsageError("config file '" + path + "' is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError("config file '" + path + "' cannot be read");
  std::ostringstream text;
  text << in.rdbuf();
  read_text(b, text.str(), path);
}

void read_text(Builder& b, const std::string& text, const std::string& path) {
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    std::string what(e.description());
    std::replace(what.begin(), what.end(), '\n', ' ');
    throw UsageError(fmt::format("{}:{}:{}: TOML syntax error: {}", path, where.line, where.column, what));
  }
  for (auto&& [section_key, node] : root) {
    const std::string section(section_key.str());
    const toml::table* table = node.as_table();
    if (table == nullptr) {  // `steps = 4` before any [section]
      const KeySpec* s = suggest("", section);
      throw UsageError(fmt::format("{}: {}: a key outside any section{}", path, section,
                                   s ? fmt::format(" (did you mean [{}] {}?)", s->section, s->key) : ""));
    }
    if (!known_section(section))
      throw UsageError(fmt::format("{}: unknown section [{}] (known: {})", path, section, kSectionList));
    const Origin origin{path, *std::find(kSections.begin(), kSections.end(), section), false};
    for (auto&& [key_name, value] : *table) {
      const std::string key(key_name.str());
      const KeySpec* spec = find_key(section, key);
      if (spec == nullptr) throw UsageError(unknown_key_message(origin, section, key));
      b.apply(*spec, origin, [&, kind = spec->kind, &value = value] { return from_toml(value, kind); });
    }
  }
}

void read_overrides(Builder& b, const std::vector<std::string>& args) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.rfind("--", 0) != 0 || arg.size() == 2)
      throw UsageError(fmt::format("unexpected argument '{}' (overrides are --section.key=value)", arg));
    const std::string body = arg.substr(2);
    const std::size_t eq = body.find('=');
    const std::string name = body.substr(0, eq);
    const std::size_t dot = name.find('.');
    if (dot == std::string::npos)
      throw UsageError(fmt::format("--{}: expected --section.key=value (sections: {})", name, kSectionList));
    const std::string section = name.substr(0, dot), key = name.substr(dot + 1);
    if (!known_section(section))
      throw UsageError(fmt::format("--{}: unknown section [{}] (known: {})", name, section, kSectionList));
    const Origin origin{"", *std::find(kSections.begin(), kSections.end(), section), true};
    const KeySpec* spec = find_key(section, key);
    if (spec == nullptr) throw UsageError(unknown_key_message(origin, section, key));
    std::string value;
    if (eq != std::string::npos) {
      value = body.substr(eq + 1);
    } else if (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) {
      value = args[++i];
    } else {
      throw UsageError(fmt::format("--{}: missing value (--{}=VALUE)", name, name));
    }
    b.apply(*spec, origin, [&, kind = spec->kind] { return from_text(value, kind); });
  }
}

}  // namespace

TrainConfig load_train_config(const std::string& toml_path, const std::vector<std::string>& overrides) {
  Builder b(toml_path);
  if (!toml_path.empty()) read_file(b, toml_path);
  read_overrides(b, overrides);
  return b.finish();
}

TrainConfig load_train_config_text(const std::string& toml_text, const std::string& source,
                                   const std::vector<std::string>& overrides) {
  Builder b(source);
  read_text(b, toml_text, source);
  read_overrides(b, overrides);
  return b.finish();
}

bool is_config_override(std::string_view arg) {
  if (arg.size() < 3 || arg.substr(0, 2) != "--") return false;
  const std::string_view name = arg.substr(2, arg.find('=') == std::string_view::npos ? arg.npos : arg.find('=') - 2);
  const std::size_t dot = name.find('.');
  return dot != std::string_view::npos && dot > 0 && dot + 1 < name.size();
}

std::vector<ConfigKeyInfo> config_key_infos() {
  const TrainConfig defaults;
  std::vector<ConfigKeyInfo> out;
  for (const auto& k : schema()) {
    const char* type = "";
    switch (k.kind) {
      case Kind::Int: type = "integer"; break;
      case Kind::Float: type = "number"; break;
      case Kind::Bool: type = "bool"; break;
      case Kind::String: type = "string"; break;
      case Kind::FloatList: type = "list of numbers"; break;
      case Kind::StringList: type = "list of strings"; break;
      case Kind::StringOrFloat: type = "string or number"; break;
    }
    out.push_back({fmt::format("{}.{}", k.section, k.key), type, k.get(defaults)});
  }
  return out;
}

std::vector<std::string> train_config_keys() {
  std::vector<std::string> out;
  for (const auto& k : schema()) out.push_back(fmt::format("{}.{}", k.section, k.key));
  return out;
}

namespace {

// Whether a key has any effect under this configuration (the optimizer chosen, the backend, the schedule, ...).
bool applies(const TrainConfig& c, std::string_view section, std::string_view key) {
  const std::string& o = c.optim.name;
  const bool matrix = o != "adamw";
  if (section == "optim") {
    if (key == "betas") return o == "adamw" || o == "conda";
    if (key == "eps") return o != "muon";
    if (key == "momentum" || key == "nesterov" || key == "ns_steps" || key == "scale") return o == "muon" || o == "normuon";
    if (key == "beta2") return o == "normuon";
    if (key == "conda_scale" || key == "update_proj_gap" || key == "proj_type" || key == "correct_bias")
      return o == "conda";
    if (key.starts_with("adam_") || key == "matrix_params" || key == "ortho_scheme") return matrix;
    return true;
  }
  if (section == "runtime") {
    if (key == "attention") return c.runtime.backend == Device::CUDA;
    if (key == "threads") return c.runtime.backend == Device::CPU;
    if (key == "prefetch") return c.runtime.overlap_enabled();
    return true;
  }
  if (section == "train") {
    if (key == "batch_size") return c.train.global_batch_size == 0 || c.eval.path != "none";  // validation's batch
    if (key == "max_skipped_steps") return c.train.nan_policy == NanPolicy::Skip;
    if (key == "min_lr_ratio") return c.train.schedule != LrSchedule::Constant;
    return true;
  }
  if (section == "eval" && key.starts_with("sample")) return key == "sample_every" || c.eval.sample_every > 0;
  if (section == "eval" && key != "path") return c.eval.path != "none";
  if (section == "checkpoint" && key != "every" && key != "resume" && key != "dir") return c.checkpoint.every > 0;
  if (section == "model" && key != "arch" && key != "init_from") {
    if (!c.model.init_from.empty()) return false;
    if (key == "NKV" || key == "FF" || key == "norm_eps" || key == "rope_theta" || key == "tie_embeddings")
      return c.model.arch == "llama";
  }
  return true;
}

}  // namespace

std::string TrainConfig::summary() const {
  std::string out;
  std::string_view section;
  for (const auto& k : schema()) {
    if (!applies(*this, k.section, k.key)) continue;
    if (k.section != section) {
      section = k.section;
      out += fmt::format("{}[{}]", out.empty() ? "" : "\n", section);
    }
    out += fmt::format(" {}={}", k.key, k.get(*this));
  }
  return out;
}

std::string TrainConfig::resolved_toml() const {
  std::string out = "# orthoshard train: resolved configuration (every key, defaults included)";
  if (!source.empty()) {
    std::string from = source;
    std::replace(from.begin(), from.end(), '\n', ' ');
    out += "\n# from " + from;
  }
  std::string_view section;
  for (const auto& k : schema()) {
    if (k.section != section) {
      section = k.section;
      out += fmt::format("\n\n[{}]", section);
    }
    out += fmt::format("\n{} = {}", k.key, k.get(*this));
  }
  return out + "\n";
}

}  // namespace orthoshard
