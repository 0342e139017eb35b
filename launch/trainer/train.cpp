// The training loop, one for both backends. Per step: for each of K micro-batches, forward unit by unit (gather a
// unit just before use with the next runtime.prefetch units' all-gathers in flight, release after use) and
// backward in reverse (re-gather, backward; on the last micro-batch reduce-scatter the unit's gradient while the
// next unit computes); then the global gradient norm (clipping), the NaN policy, the sharded optimizer step,
// checkpoints and logging. What is model-specific comes from the model family (models/family.hpp), what is
// backend-specific from the backend (backend.hpp).
#include "launch/trainer/train.hpp"

#include "launch/trainer/backend.hpp"
#include "launch/trainer/checkpoint.hpp"
#include "launch/trainer/init_checkpoint.hpp"
#include "launch/trainer/schedule.hpp"
#include "launch/trainer/step_log.hpp"
#include "launch/trainer/stop_signals.hpp"
#include "launch/trainer/validation.hpp"
#include "models/data/loader.hpp"
#include "models/data/synthetic.hpp"
#include "models/data/token_stream.hpp"
#include "models/sampling.hpp"
#include "runtime/comm/mpi_hang_guard.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"

#include <omp.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <optional>

extern "C" void openblas_set_num_threads(int);

namespace orthoshard {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Which units a unit reads the parameters of besides its own (tied weights), as unit indices.
std::vector<std::vector<std::size_t>> tied_units(const std::vector<ModelUnit>& units, const ShardedEngine& engine) {
  std::vector<std::vector<std::size_t>> out(units.size());
  for (std::size_t u = 0; u < units.size(); ++u)
    for (const auto& name : units[u].reads) out[u].push_back(engine.unit_of(name));
  return out;
}

// The largest resident set this process has had.
std::uint64_t max_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<std::uint64_t>(u.ru_maxrss) * 1024;  // kilobytes on Linux
}

// What this rank holds: the sharded part (1/N of the model's state), the most that was in flight at once (full-size
// gathered parameters, gradients and reduction buffers of the units in flight), the activations, and what the
// same model would take per rank at other rank counts (the sharded part scales with 1/N, the rest does not).
struct MemoryReport {
  std::uint64_t sharded = 0, transient = 0, activations = 0;
  std::string line;
};
MemoryReport memory_report(const ShardedEngine& engine, ShardedOptimizer& optim, const UnitRunner& runner,
                           Device device, int shard_ranks) {
  const FsdpMemory m = engine.memory();
  std::uint64_t state = 0;
  for (std::size_t i = 0; i < optim.params().size(); ++i)
    for (const auto& [n, t] : optim.state(i).entries()) state += t.nbytes();
  MemoryReport r{m.param_shards + m.grad_shards + state, m.transient_peak, runner.activation_bytes(), ""};
  std::string per_n;
  for (int n : {1, 2, 4, 8, 64})
    per_n += fmt::format("{}{} {}", per_n.empty() ? "" : ", ", n,
                         mib(r.sharded * static_cast<std::uint64_t>(shard_ranks) / static_cast<std::uint64_t>(n) +
                             r.transient + r.activations));
  r.line = fmt::format("memory ({}): sharded {} (params {}, grads {}, optimizer state {}), in flight at most {} "
                       "(gathered params {}, gradients {}, reduction buffers {}), activations {}; per rank at N "
                       "ranks: {}",
                       device_name(device), mib(r.sharded), mib(m.param_shards), mib(m.grad_shards), mib(state),
                       mib(r.transient), mib(m.gather_peak), mib(m.grad_accumulation), mib(m.comm_buffers),
                       mib(r.activations), per_n);
  return r;
}

}  // namespace

TrainResult train(Communicator& world, const TrainConfig& cfg, const TrainOptions& opt) {
  const int W = world.size(), me = world.rank();
  const auto& tc = cfg.train;
  const bool on_gpu = cfg.runtime.backend == Device::CUDA;
  const bool overlap = opt.overlap.value_or(cfg.runtime.overlap_enabled());
  if (!on_gpu && cfg.runtime.threads > 0) {
    openblas_set_num_threads(cfg.runtime.threads);
    omp_set_num_threads(cfg.runtime.threads);
  }

  // A collective stuck past runtime.comm_timeout_s ends the job with a line naming it (every backend's MPI side;
  // the NCCL communicator has its own watchdog).
  const MpiHangGuard hang_guard(world, cfg.runtime.comm_timeout_s);
  // The model (from its file, an orthoshard checkpoint or a seeded random init, identical on every rank) and the
  // backend, then sharded.
  std::unique_ptr<CheckpointInit> from_checkpoint;
  if (!cfg.model.init_from.empty() && CheckpointInit::is_checkpoint(cfg.model.init_from))
    from_checkpoint = std::make_unique<CheckpointInit>(world, cfg.model.init_from);
  std::unique_ptr<Model> model = from_checkpoint ? from_checkpoint->take_model() : make_model(cfg.model);
  model->check_sequence_length(tc.seq_len);
  std::unique_ptr<TrainBackend> backend =
      on_gpu ? make_device_backend(world, cfg, *model) : make_host_backend(world, cfg, *model, overlap);
  ShardedEngine& engine = backend->engine();
  ShardedOptimizer& optim = backend->optimizer();
  UnitRunner& runner = backend->runner();
  Communicator& shard = backend->shard_group();
  // Each rank initializes just its rows: no rank holds the whole model.
  for (const ParamInfo& p : model->parameters()) {
    const RowRange rows = engine.rows(p.name);
    Shape local = p.shape;
    local[0] = rows.rows();
    Tensor init = Tensor::empty(local, DType::F32);
    if (from_checkpoint)
      from_checkpoint->read_rows(p.name, rows.begin, rows.end, backend->replica_index() == 0, init.data<float>());
    else
      model->initial_rows(p.name, rows.begin, rows.end, init.data<float>());
    engine.shard_from_host(p.name, init);
  }
  if (from_checkpoint) from_checkpoint->finish();

  // Data: rank r of W reads its blocks of each step's window (independent of W).
  auto stream = TokenStream::open(cfg.data.path);
  stream->check_vocab(model->vocab_size(), me, W);  // every token < V, each rank a slice, before the first step
  DataLoader loader(stream, loader_config(cfg, W, me, model->vocab_size()));
  // Validation ([eval]): the same sequences every time, split over the ranks.
  std::unique_ptr<Validation> validation;
  if (const std::string vp = validation_path(cfg); !vp.empty())
    validation = std::make_unique<Validation>(vp, cfg, model->vocab_size(), me, W);
  // This rank's share of each micro-batch: its sequences' weight in the mean loss is rank_B / G, and the gradient
  // reductions average over W ranks, so its gradients (and loss) are scaled by rank_B · W / G (exactly 1 when G
  // splits evenly).
  const std::int64_t rank_B = loader.rank_batch();
  const double share = static_cast<double>(rank_B * W) / static_cast<double>(loader.global_batch());
  Tensor inputs = Tensor::empty({rank_B, tc.seq_len}, DType::I32);
  Tensor targets = Tensor::empty({rank_B, tc.seq_len}, DType::I32);
  runner.set_batch(rank_B, tc.seq_len, tc.grad_accum);

  const bool talk = !opt.quiet;
  const std::int64_t tokens_per_step = cfg.tokens_per_step(W);
  if (talk) {
    log::info("configuration (the keys that apply; every key in the checkpoint directory's config.toml):\n{}",
              cfg.summary());
    log::info("model: {} ({:.2f} M parameters){}", model->describe(), model->num_parameters() / 1e6,
              cfg.model.init_from.empty() ? fmt::format(", random init seed {}", cfg.model.seed)
                                          : ", from " + cfg.model.init_from);
    log::info("data: {}; {} steps per epoch", stream->describe(), loader.steps_per_epoch());
    if (cfg.data.path.rfind("builtin:synthetic", 0) == 0) log::info("data: {}", SyntheticLanguage().describe());
    log::info("job: {} ranks {}, {} tokens per step ({}{} x T {}), optimizer {}, {} matrices "
              "orthogonalized across {} rank(s)",
              W, backend->describe(), tokens_per_step,
              tc.global_batch_size > 0 ? fmt::format("G {} sequences over the ranks", loader.global_batch())
                                       : fmt::format("W {} x K {} x B {}", W, tc.grad_accum, tc.batch_size),
              tc.global_batch_size > 0 ? fmt::format(" x K {}", tc.grad_accum) : std::string(), tc.seq_len,
              cfg.optim.name, optim.plan().tasks.size(), shard.size());
    if (const std::string line = backend->rank_line(); !line.empty()) log::info_all("{}", line);
    if (validation)
      log::info("validation: {}; {}", validation->describe(),
                cfg.eval.every > 0 ? fmt::format("every {} steps and after the last", cfg.eval.every)
                                   : std::string("after the last step"));
  }

  const auto& units = model->units();
  const auto tied = tied_units(units, engine);
  const auto fulls = [&](const std::string& n) { return engine.full(n); };
  const auto fgrads = [&](const std::string& n) { return engine.full_grad(n); };
  const bool reshard = cfg.runtime.reshard_after_forward;
  const std::size_t depth = overlap ? static_cast<std::size_t>(std::max(cfg.runtime.prefetch, 0)) : 0;
  const std::size_t U = units.size();
  // Whether a unit stays gathered after its forward: a later unit reads its parameters (a tied embedding), or it
  // is the last unit, whose backward comes right away.
  std::vector<bool> keep(U, false);
  for (std::size_t u = 0; u < U; ++u)
    for (std::size_t owner : tied[u])
      if (owner < u) keep[owner] = true;
  if (U > 0) keep[U - 1] = true;
  // Gather u and start the all-gathers of the next `depth` units: upwards in the forward; downwards in the
  // backward, over the units whose backward reads their parameters.
  auto gather_forward = [&](std::size_t u) {
    engine.gather(u);
    for (std::size_t k = 1; k <= depth && u + k < U; ++k) engine.prefetch(u + k);
  };
  // Forward of every unit on the runner's tokens; a unit is released after it unless its backward or a later unit
  // (a tied embedding) still reads it.
  auto forward = [&] {
    for (std::size_t u = 0; u < U; ++u) {
      gather_forward(u);
      runner.forward(units[u], fulls);
      if (reshard && !keep[u]) engine.release(u);
    }
  };
  // The validation pass: forwards only, everything released after each.
  auto eval_forward = [&] {
    forward();
    for (std::size_t u = 0; u < U; ++u) engine.release(u);
  };
  // A sample ([eval] sample_every): every unit gathered in turn, rank 0 keeps a host f32 copy of the parameters
  // and generates from them with the family's KV-cache generator while the others go on to the next step.
  std::vector<std::pair<std::int64_t, std::vector<std::int32_t>>> samples;
  const std::vector<std::int32_t> sample_prompt = prompt_tokens(cfg.eval.sample_prompt, model->vocab_size());
  if (cfg.eval.sample_every > 0)
    model->check_sequence_length(static_cast<std::int64_t>(sample_prompt.size()) + cfg.eval.sample_tokens);
  auto sample = [&](std::int64_t step) {
    std::map<std::string, Tensor> host;
    for (std::size_t u = 0; u < U; ++u) {
      engine.gather(u);
      if (me == 0)
        for (const ParamInfo& p : units[u].params) host.emplace(p.name, backend->full_to_host(engine.full(p.name)));
      engine.release(u);
    }
    if (me != 0) return;
    const auto gen = model->cpu_generator([&](const std::string& n) { return host.at(n); });
    const std::vector<std::int32_t> out = sample_tokens(*gen, model->vocab_size(), sample_prompt,
                                                        cfg.eval.sample_tokens, SamplingOptions{1.0, 0, tc.seed});
    if (talk) {
      std::string text = sample_text(cfg.eval.sample_prompt, sample_prompt, out, model->vocab_size());
      for (std::size_t i = 0; (i = text.find('\n', i)) != std::string::npos; i += 2) text.replace(i, 1, "\\n");
      log::info("step {:>5}/{} | sample: {}", step, tc.steps, text);
    }
    samples.emplace_back(step, out);
  };
  auto prefetch_backward = [&](std::size_t u) {
    for (std::size_t k = 1; k <= depth && k <= u; ++k)
      if (units[u - k].backward_reads_params) engine.prefetch(u - k);
  };
  // After unit u's backward: its gradient is reduce-scattered into the shards (every micro-batch in sharded mode,
  // the step's last in unsharded mode); a kept one moves into the unit's fp32 sum (device bf16; a no-op where
  // backward accumulates in fp32).
  const bool every_micro_batch = cfg.runtime.grad_accum_mode == GradAccumMode::Sharded;
  auto unit_done = [&](std::size_t u, bool last) {
    if (!last && !every_micro_batch) return engine.accumulate_grads(u);
    engine.reduce_grads(u, last);
    if (!overlap) engine.finish_reductions();
  };

  // Checkpoints: resume as checkpoint.resume says (at any world size), save every checkpoint.every steps.
  Checkpointer checkpointer(
      {world, shard.rank(), backend->replica_index(), engine, optim, loader, cfg, *model, !opt.evaluate_only}, talk);
  const std::int64_t first_step = checkpointer.resume();
  if (opt.evaluate_only) {
    if (!validation) throw UsageError("eval: no validation data (eval.path)");
    TrainResult r;
    r.first_step = first_step;
    r.val_sequences = validation->sequences();
    r.val_losses.emplace_back(first_step, validation->run(world, runner, eval_forward));
    return r;
  }

  // MFU against the sum of the ranks' nominal peaks (none unless every rank's GPU is known).
  const double peak = backend->peak_flops();
  const double job_peak = world.all_reduce_scalar(peak > 0 ? 0.0 : 1.0, ReduceOp::Max) > 0
                              ? 0.0
                              : world.all_reduce_scalar(peak, ReduceOp::Sum);
  StepLog steps(cfg, first_step, tokens_per_step, talk, me == 0, model->flops_per_token(tc.seq_len), job_peak);
  const StopSignals stop_signals;  // SIGTERM, SIGINT, SIGUSR1/2: stop at the next step boundary with a checkpoint
  int stop_signal = 0;
  double eval_wait_ms = 0;  // time blocked in collectives during validation
  const auto run_start = Clock::now();
  for (std::int64_t step = first_step; step < tc.steps; ++step) {
    const auto t0 = Clock::now();
    MpiHangGuard::set_step(step + 1);
    engine.zero_grads();
    for (int j = 0; j < tc.grad_accum; ++j) {
      const bool last = j + 1 == tc.grad_accum;
      loader.load(j, inputs, targets);
      runner.set_tokens(inputs, targets);
      forward();
      // Backward in reverse; the last micro-batch reduce-scatters each unit as soon as it is done.
      for (std::size_t u = U; u-- > 0;) {
        if (units[u].backward_reads_params) engine.gather(u);
        prefetch_backward(u);
        engine.open_grads(u);
        for (std::size_t owner : tied[u]) engine.open_grads(owner);  // it adds into the tied weights' gradients
        runner.backward(units[u], fulls, fgrads, share / tc.grad_accum);
        unit_done(u, last);
        if (reshard) {
          engine.release(u);
          for (std::size_t owner : tied[u]) engine.release(owner);  // its last reader is done
        }
      }
    }
    engine.finish_reductions();
    for (std::size_t u = 0; u < U; ++u) engine.release(u);  // the optimizer changes the parameters

    const double grad_norm = engine.clip_grad_norm(tc.grad_clip);
    const double loss = world.all_reduce_scalar(runner.take_loss_sum() * share / tc.grad_accum, ReduceOp::Sum) / W;
    const double lr_mult = lr_multiplier(cfg, step);
    const bool updated = steps.update_allowed(step, loss, grad_norm);
    if (updated) backend->optimizer_step(lr_mult);
    loader.advance();
    engine.synchronize();
    const double dt = world.all_reduce_scalar(seconds_since(t0), ReduceOp::Max);
    if (talk && step == first_step)
      log::info("{} (rank 0)", memory_report(engine, optim, runner, backend->device(), shard.size()).line);
    std::optional<double> val_loss;
    if (validation && (step + 1 == tc.steps || (cfg.eval.every > 0 && (step + 1) % cfg.eval.every == 0))) {
      const double wait0 = engine.comm_wait_ms();
      val_loss = validation->run(world, runner, eval_forward);
      runner.set_batch(rank_B, tc.seq_len, tc.grad_accum);  // back to the training batch (validation runs 1 x T)
      eval_wait_ms += engine.comm_wait_ms() - wait0;  // not the steps' time in collectives
    }
    steps.record(step, loss, grad_norm, cfg.optim.lr * lr_mult, dt, engine.comm_wait_ms() - eval_wait_ms, val_loss);
    if (cfg.eval.sample_every > 0 && ((step + 1) % cfg.eval.sample_every == 0 || step + 1 == tc.steps)) {
      const double wait0 = engine.comm_wait_ms();
      sample(step + 1);
      eval_wait_ms += engine.comm_wait_ms() - wait0;
    }
    // A stop signal on any rank stops every rank here, after a checkpoint of this step.
    stop_signal = static_cast<int>(world.all_reduce_scalar(StopSignals::pending(), ReduceOp::Max));
    const std::string saved = checkpointer.after_step(step + 1, updated, stop_signal != 0);
    if (stop_signal != 0) {
      if (talk)
        log::info("stopped by {} at step {}; checkpoint {}; resume with checkpoint.resume=auto (exit status {})",
                  StopSignals::name(stop_signal), step + 1,
                  saved.empty() ? "none written (the step's update was skipped)" : saved, kExitStopped);
      break;
    }
  }
  MpiHangGuard::set_step(0);
  TrainResult result = steps.finish(engine.comm_wait_ms() - eval_wait_ms);
  result.samples = std::move(samples);
  result.stop_signal = stop_signal;
  const MemoryReport mem = memory_report(engine, optim, runner, backend->device(), shard.size());
  result.sharded_bytes = mem.sharded;
  result.transient_bytes = mem.transient;
  result.activation_bytes = mem.activations;
  result.device_bytes = backend->device_bytes_in_use();
  const double rss = static_cast<double>(max_rss_bytes());
  result.max_rss_bytes = static_cast<std::uint64_t>(world.all_reduce_scalar(rss, ReduceOp::Max));
  const double smallest = -world.all_reduce_scalar(-rss, ReduceOp::Max);
  const double device_max = world.all_reduce_scalar(static_cast<double>(result.device_bytes), ReduceOp::Max);
  if (talk)
    log::info("peak memory per rank: max RSS {} .. {}{}", mib(static_cast<std::uint64_t>(smallest)),
              mib(result.max_rss_bytes),
              device_max > 0 ? ", GPU memory in use at the end " + mib(static_cast<std::uint64_t>(device_max)) : "");
  if (talk)
    log::info("done: {} steps in {:.1f} s, final loss {:.6f}, {:.0f} tok/s after the first step ({:.3g} TFLOP/s per "
              "rank{}), {:.1f}% of step time blocked in collectives (rank 0)",
              result.losses.size(), seconds_since(run_start), result.losses.empty() ? NAN : result.losses.back(),
              result.tokens_per_s, result.tokens_per_s * model->flops_per_token(tc.seq_len) / W / 1e12,
              job_peak > 0 ? fmt::format(", {:.1f}% MFU", 100.0 * result.tokens_per_s *
                                                              model->flops_per_token(tc.seq_len) / job_peak)
                           : std::string(),
              100 * result.comm_wait_fraction);
  return result;
}

}  // namespace orthoshard
