// Trace replay (format: ../shared/testdata/optim/README.md). err = ‖W − expected‖_F / ‖expected − initial‖_F.
#include "launch/cli/replay.hpp"
#if ORTHOSHARD_HAVE_CUDA
#include "launch/cli/device_replay.hpp"
#endif

#include "optim/optimizer.hpp"
#include "runtime/core/error.hpp"
#include "runtime/fsdp/row_sharding.hpp"
#include "runtime/core/log.hpp"
#include "runtime/io/h5file.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <tuple>
#include <limits>

namespace orthoshard {
namespace {

struct TraceParam {
  std::string name, role;
  Tensor initial, grads, expected;  // f64: S, (steps, S), (steps, S)
};

// Squared distances of this rank's rows: (‖W − expected‖², ‖expected − initial‖²); NaN/Inf gives inf.
std::pair<double, double> squared_errors(const Tensor& w, const double* expected, const double* initial) {
  double num = 0, den = 0;
  const std::int64_t n = w.numel();
  for (std::int64_t i = 0; i < n; ++i) {
    const double wi = w.dtype() == DType::F32 ? w.data<float>()[i] : w.data<double>()[i];
    if (!std::isfinite(wi)) num = std::numeric_limits<double>::infinity();
    num += (wi - expected[i]) * (wi - expected[i]);
    den += (expected[i] - initial[i]) * (expected[i] - initial[i]);
  }
  return {num, den};
}

Tensor convert(const double* src, const Shape& shape, DType dt) {
  Tensor t = Tensor::empty(shape, dt);
  const std::int64_t n = t.numel();
  if (dt == DType::F64) std::copy(src, src + n, t.data<double>());
  else
    for (std::int64_t i = 0; i < n; ++i) t.data<float>()[i] = static_cast<float>(src[i]);
  return t;
}

// "owner" / "gram" / "owner+gram" with the imbalance of the plan.
std::string describe_plan(const OrthoPlan& plan) {
  bool owner = false, gram = false;
  for (const auto& t : plan.tasks) (t.gram ? gram : owner) = true;
  if (!owner && !gram) return "none";
  return fmt::format("{}{}{}", owner ? "owner" : "", owner && gram ? "+" : "", gram ? "gram" : "");
}

// The CPU optimizer on host shards (f32 or f64).
class CpuReplay final : public ReplayStepper {
 public:
  CpuReplay(const OptimConfig& cfg, std::vector<ParamSpec> specs, DType dt, Communicator& comm)
      : optim_(cfg, std::move(specs), dt, &comm) {}
  void step(std::vector<Tensor>& params, const std::vector<Tensor>& grads) override { optim_.step(params, grads); }
  const OrthoPlan& plan() const override { return optim_.plan(); }

 private:
  Optimizer optim_;
};

}  // namespace

int run_replay(Communicator& comm, const ReplayOptions& opt) {
  if (opt.backend != "cpu" && opt.backend != "cuda")
    throw UsageError("--backend: '" + opt.backend + "' is not cpu or cuda");
  const bool on_gpu = opt.backend == "cuda";
  if (opt.precision != "f32" && opt.precision != "f64" && opt.precision != "bf16")
    throw UsageError("--precision: '" + opt.precision + "' is not f32, f64 or bf16");
  if (on_gpu && opt.precision == "f64")
    throw UsageError("--precision f64 runs on the CPU only; with --backend cuda use f32 or bf16");
  if (!on_gpu && opt.precision == "bf16")
    throw UsageError("--precision bf16 (Newton-Schulz in bf16) needs --backend cuda");
  const bool bf16 = opt.precision == "bf16";
  const DType dt = opt.precision == "f64" ? DType::F64 : DType::F32;  // of the shards (bf16: f32 state)
  const double tol = opt.tolerance >= 0 ? opt.tolerance : bf16 ? 2e-2 : (dt == DType::F32 ? 1e-4 : 1e-10);

  H5File f = H5File::open_read(opt.trace);
  const std::string& path = f.path();
  if (!f.has_attr("/", "format"))
    throw UsageError("'" + path + "': not an optimizer trace (no 'format' attribute at /)");
  const std::string format = f.string_attr("/", "format");
  if (format != "orthoshard.optim-trace")
    throw UsageError("'" + path + "': not an optimizer trace (format is '" + format + "')");
  const std::string optimizer = f.string_attr("/", "optimizer");
  const std::int64_t steps = f.int_attr("/", "steps");
  nlohmann::json hp;
  try {
    hp = nlohmann::json::parse(f.string_attr("/", "hparams"));
  } catch (const nlohmann::json::exception& e) {
    throw UsageError("'" + path + "': attribute hparams is not JSON: " + e.what());
  }
  hp["name"] = optimizer;
  OptimConfig cfg;
  try {
    cfg = optim_config_from_json(hp, {"zero_grad_step"});
  } catch (...) {
    rethrow_with_context("'" + path + "' hparams");
  }
  cfg.ortho_scheme = parse_ortho_scheme(opt.ortho_scheme);
  const std::string reference = f.has_attr("/", "reference") ? f.string_attr("/", "reference") : "unknown";

  std::vector<TraceParam> tps;
  std::vector<ParamSpec> specs;
  for (const auto& name : f.children("/params")) {
    const std::string g = "/params/" + name;
    TraceParam p;
    p.name = name;
    p.role = f.string_attr(g, "role");
    p.initial = f.read(g + "/initial", DType::F64);
    p.grads = f.read(g + "/grads", DType::F64);
    p.expected = f.read(g + "/expected", DType::F64);
    Shape want = p.initial.shape();
    want.insert(want.begin(), steps);
    if (p.grads.shape() != want || p.expected.shape() != want)
      throw UsageError(fmt::format("'{}': {} has grads {} and expected {}, but {} steps of {} need {}", path, g,
                                   shape_str(p.grads.shape()), shape_str(p.expected.shape()), steps,
                                   shape_str(p.initial.shape()), shape_str(want)));
    RuleKind rule;
    if (p.role == "matrix") rule = cfg.matrix_rule();
    else if (p.role == "vector") rule = cfg.name == "conda" ? RuleKind::CondaPlain : RuleKind::AdamW;
    else throw UsageError("'" + path + "': " + g + " has role '" + p.role + "' (expected matrix or vector)");
    specs.push_back({name, p.initial.shape(), rule});
    tps.push_back(std::move(p));
  }
  OS_CHECK(!tps.empty(), "'{}': the trace has no parameters under /params", path);

  // Every rank holds its rows of each parameter, exactly as in training (sharded optimizer path).
  std::vector<Tensor> params, grads;
  std::vector<Shape> local_shape(tps.size());
  std::vector<std::int64_t> offset(tps.size());  // first element of this rank's rows
  for (std::size_t i = 0; i < tps.size(); ++i) {
    const RowRange rows = shard_rows(tps[i].initial.dim(0), comm.size(), comm.rank());
    const std::int64_t per_row = tps[i].initial.dim(0) ? tps[i].initial.numel() / tps[i].initial.dim(0) : 0;
    offset[i] = rows.begin * per_row;
    local_shape[i] = shard_shape(tps[i].initial.shape(), comm.size(), comm.rank());
    params.push_back(convert(tps[i].initial.data<double>() + offset[i], local_shape[i], dt));
  }
  std::unique_ptr<ReplayStepper> stepper;
  if (on_gpu) {
#if ORTHOSHARD_HAVE_CUDA
    stepper = make_cuda_replay(comm, cfg, specs, params, bf16, opt.comm);
#else
    throw UsageError("--backend cuda: this build has no CUDA backend (CMake found no nvcc)");
#endif
  } else {
    stepper = std::make_unique<CpuReplay>(cfg, specs, dt, comm);
  }
  std::vector<double> worst(tps.size(), 0.0);
  std::vector<std::int64_t> worst_step(tps.size(), 0);
  for (std::int64_t t = 0; t < steps; ++t) {
    grads.clear();
    for (std::size_t i = 0; i < tps.size(); ++i) {
      const std::int64_t n = tps[i].initial.numel();
      grads.push_back(convert(tps[i].grads.data<double>() + t * n + offset[i], local_shape[i], dt));
    }
    stepper->step(params, grads);
    std::vector<double> sq(2 * tps.size());
    for (std::size_t i = 0; i < tps.size(); ++i) {
      const std::int64_t n = tps[i].initial.numel();
      std::tie(sq[2 * i], sq[2 * i + 1]) = squared_errors(
          params[i], tps[i].expected.data<double>() + t * n + offset[i], tps[i].initial.data<double>() + offset[i]);
    }
    comm.all_reduce(sq.data(), sq.data(), sq.size(), DType::F64, ReduceOp::Sum);
    for (std::size_t i = 0; i < tps.size(); ++i) {
      const double e = sq[2 * i + 1] > 0 ? std::sqrt(sq[2 * i] / sq[2 * i + 1]) : std::sqrt(sq[2 * i]);
      if (!(e <= worst[i])) {
        worst[i] = e;
        worst_step[i] = t + 1;
      }
    }
  }

  log::info("replay {}: {} from {}", path, optimizer, reference);
  log::info("  {} steps, precision {}, tolerance {:.0e}, {} rank(s), orthogonalization {}, backend {}", steps,
            opt.precision, tol, comm.size(), describe_plan(stepper->plan()),
            on_gpu ? fmt::format("cuda ({}{})", opt.comm, bf16 ? ", Newton-Schulz in bf16" : "") : "cpu");
  log::info("  {:<12} {:<7} {:<19} {:<10} {:>11} {:>5}", "param", "role", "rule", "shape", "worst err", "step");
  int failed = 0;
  for (std::size_t i = 0; i < tps.size(); ++i) {
    const bool ok = worst[i] <= tol;
    failed += ok ? 0 : 1;
    log::info("  {:<12} {:<7} {:<19} {:<10} {:>11.3e} {:>5} {}", tps[i].name, tps[i].role, rule_name(specs[i].rule),
              shape_str(specs[i].shape), worst[i], worst_step[i], ok ? "ok" : "FAIL");
  }
  if (failed) {
    log::info("FAIL: {} of {} parameters exceed tolerance {:.0e}", failed, tps.size(), tol);
    return 1;
  }
  log::info("PASS: all {} parameters within {:.0e}", tps.size(), tol);
  return 0;
}

}  // namespace orthoshard
