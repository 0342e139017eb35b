// The training loop. Per step: for each of K micro-batches, forward unit by unit (all-gather a unit
// just before use, prefetch the next, release after use) and backward in reverse (re-gather, backward;
// on the last micro-batch reduce-scatter the unit's gradient while the next unit computes); then the
// global gradient norm (clipping), the NaN policy, and the sharded optimizer step.
#include "launch/train.hpp"
#if ORTHOSHARD_HAVE_CUDA
#include "launch/train_cuda.hpp"
#endif

#include "launch/checkpoint.hpp"
#include "launch/train_setup.hpp"
#include "launch/schedule.hpp"
#include "models/data/loader.hpp"
#include "models/data/synthetic.hpp"
#include "models/data/token_stream.hpp"
#include "models/gpt2/checkpoint.hpp"
#include "models/gpt2/model.hpp"
#include "optim/optimizer.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"
#include "runtime/fsdp/fsdp_engine.hpp"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <memory>

extern "C" void openblas_set_num_threads(int);

namespace orthoshard {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

TrainResult train(Communicator& world, const TrainConfig& cfg, const TrainOptions& opt) {
  const int W = world.size(), me = world.rank();
  const auto& tc = cfg.train;
  const bool overlap = opt.overlap.value_or(cfg.runtime.overlap_enabled());
  if (cfg.runtime.backend == Device::CUDA) {
#if ORTHOSHARD_HAVE_CUDA
    return train_cuda(world, cfg, opt);
#else
    throw UsageError("runtime.backend = cuda: this build has no CUDA backend (CMake found no nvcc); use "
                     "runtime.backend = cpu");
#endif
  }
  if (cfg.runtime.comm == CommBackend::Nccl)
    throw UsageError("runtime.comm = nccl needs runtime.backend = cuda; CPU training uses runtime.comm = mpi");
  if (cfg.runtime.threads > 0) {
    openblas_set_num_threads(cfg.runtime.threads);
    omp_set_num_threads(cfg.runtime.threads);
  }

  // Sharding groups: full = one group of W; hybrid:S = shard within groups of S consecutive ranks,
  // replicate across the W/S groups.
  const int S = cfg.runtime.hybrid_group_size > 0 ? cfg.runtime.hybrid_group_size : W;
  if (W % S != 0)
    throw UsageError(fmt::format("runtime.sharding = hybrid:{}: the job's {} ranks are not a multiple of {}", S, W, S));
  std::unique_ptr<Communicator> shard = world.split(me / S, me);
  std::unique_ptr<Communicator> replica = S < W ? world.split(me % S, me) : nullptr;

  // Model: from an llm.c file or a seeded random init (identical on every rank), then sharded.
  ModelSetup setup = setup_model(cfg);
  const Gpt2Config mc = setup.config;
  const auto& units = setup.units;
  const auto& unit_specs = setup.unit_specs;
  const auto& param_shapes = setup.param_shapes;
  FsdpEngine engine(unit_specs, *shard, replica.get(),
                    {cfg.runtime.param_dtype, cfg.runtime.reduce_dtype, overlap});
  for (const auto& [name, t] : setup.init.named()) engine.load_full(name, t);
  setup.init = Gpt2Params();  // the full copy is not kept

  Optimizer optim = Optimizer::with_routing(cfg.optim, param_shapes, DType::F32, shard.get());
  std::vector<Tensor> shards, grads;
  for (const auto& [name, shape] : param_shapes) {
    shards.push_back(engine.shard(name));
    grads.push_back(engine.grad_shard(name));
  }

  // Data: rank r of W reads its blocks of each step's window (independent of W).
  auto stream = TokenStream::open(cfg.data.path);
  const LoaderConfig lc = loader_config(cfg, W, me, mc.V);
  DataLoader loader(stream, lc);
  Tensor inputs = Tensor::empty({tc.batch_size, tc.seq_len}, DType::I32);
  Tensor targets = Tensor::empty({tc.batch_size, tc.seq_len}, DType::I32);

  Gpt2Model<float> model(mc);
  model.set_batch(tc.batch_size, tc.seq_len);

  const bool talk = !opt.quiet;
  const std::int64_t tokens_per_step = cfg.tokens_per_step(W);
  if (talk) {
    log::info("# orthoshard train: resolved configuration\n{}", cfg.resolved_toml());
    log::info("model: GPT-2 {} ({:.2f} M parameters){}", mc.describe(), mc.num_parameters() / 1e6,
              cfg.model.init_from.empty() ? fmt::format(", random init seed {}", cfg.model.seed)
                                          : ", from " + cfg.model.init_from);
    log::info("data: {}; {} steps per epoch", stream->describe(), loader.steps_per_epoch());
    if (cfg.data.path.rfind("builtin:synthetic", 0) == 0) log::info("data: {}", SyntheticLanguage().describe());
    log::info("job: {} ranks ({}, communication {}), {} tokens per step (W {} x K {} x B {} x T {}), optimizer {}, "
              "{} matrices orthogonalized across {} rank(s)",
              W, cfg.runtime.sharding(), overlap ? "overlapped with compute" : "blocking", tokens_per_step, W,
              tc.grad_accum, tc.batch_size, tc.seq_len, cfg.optim.name, optim.plan().tasks.size(), shard->size());
  }

  const auto fulls = [&](const std::string& n) { return engine.full(n); };
  const auto fgrads = [&](const std::string& n) { return engine.full_grad(n); };
  const bool reshard = cfg.runtime.reshard_after_forward;
  const std::size_t U = units.size(), emb = 0, head = U - 1;
  auto reduce = [&](std::size_t u) {
    engine.reduce_grads(u);
    if (!overlap) engine.finish_reductions();
  };
  auto gather = [&](std::size_t u, std::ptrdiff_t next) {
    engine.gather(u);
    if (next >= 0 && next < static_cast<std::ptrdiff_t>(U)) engine.prefetch(static_cast<std::size_t>(next));
  };

  // Checkpoints: resume as checkpoint.resume says (at any world size), save every checkpoint.every steps.
  Checkpointer checkpointer({world, *shard, me / S, engine, optim, loader, cfg, mc}, talk);
  const std::int64_t first_step = checkpointer.resume();

  StepLog steps(cfg, first_step, tokens_per_step, talk, me == 0);
  const auto run_start = Clock::now();
  for (std::int64_t step = first_step; step < tc.steps; ++step) {
    const auto t0 = Clock::now();
    engine.zero_grads();
    double loss_sum = 0;
    for (int j = 0; j < tc.grad_accum; ++j) {
      const bool last = j + 1 == tc.grad_accum;
      loader.load(j, inputs, targets);
      // Forward: embedding, blocks, head (the head reads the tied wte of the embedding unit).
      for (std::size_t u = 0; u < U; ++u) {
        gather(u, overlap ? static_cast<std::ptrdiff_t>(u) + 1 : -1);
        const Gpt2Unit& unit = units[u];
        if (unit.kind == UnitKind::Embedding) {
          model.embedding_forward(embedding_weights(fulls), inputs);
        } else if (unit.kind == UnitKind::Block) {
          model.block_forward(unit.layer, block_weights(fulls, unit.layer));
          if (reshard) engine.release(u);
        } else {
          loss_sum += model.head_forward(head_weights(fulls), targets);
        }
      }
      // Backward in reverse; the last micro-batch reduce-scatters each unit as soon as it is done.
      if (overlap && U > 2) engine.prefetch(head - 1);
      model.head_backward(head_weights(fulls), head_weights(fgrads), 1.0 / tc.grad_accum);
      if (last) reduce(head);
      if (reshard) {
        engine.release(head);
        engine.release(emb);
      }
      for (std::size_t u = head - 1; u >= 1; --u) {
        gather(u, overlap ? static_cast<std::ptrdiff_t>(u) - 1 : -1);
        model.block_backward(units[u].layer, block_weights(fulls, units[u].layer),
                             block_weights(fgrads, units[u].layer));
        if (last) reduce(u);
        if (reshard) engine.release(u);
      }
      model.embedding_backward(embedding_weights(fgrads));
      if (last) reduce(emb);
    }
    engine.finish_reductions();
    for (std::size_t u = 0; u < U; ++u) engine.release(u);  // the optimizer changes the parameters

    const double grad_norm = engine.clip_grad_norm(tc.grad_clip);
    const double loss = world.all_reduce_scalar(loss_sum / tc.grad_accum, ReduceOp::Sum) / W;
    const double lr_mult = lr_multiplier(cfg, step);
    if (steps.update_allowed(step, loss, grad_norm)) optim.step(shards, grads, lr_mult);
    loader.advance();
    const double dt = world.all_reduce_scalar(seconds_since(t0), ReduceOp::Max);
    if (talk && step == first_step) {
      const FsdpMemory m = engine.memory();
      std::uint64_t state = 0;
      for (std::size_t i = 0; i < param_shapes.size(); ++i)
        for (const auto& [n, t] : optim.state(i).entries()) state += t.nbytes();
      log::info_all("memory: params {} (shards), grads {} (shards) + {} (accumulation), optimizer state {}, "
                    "gathered peak {}, comm buffers {}",
                    mib(m.param_shards), mib(m.grad_shards), mib(m.grad_accumulation), mib(state),
                    mib(m.gather_peak), mib(m.comm_buffers));
    }
    steps.record(step, loss, grad_norm, cfg.optim.lr * lr_mult, dt, engine.comm_wait_ms());
    checkpointer.after_step(step + 1);
  }
  TrainResult result = steps.finish(engine.comm_wait_ms());
  if (talk)
    log::info("done: {} steps in {:.1f} s, final loss {:.6f}, {:.0f} tok/s after the first step, "
              "{:.1f}% of step time blocked in collectives (rank 0)",
              result.losses.size(), seconds_since(run_start), result.losses.empty() ? NAN : result.losses.back(),
              result.tokens_per_s, 100 * result.comm_wait_fraction);
  return result;
}

}  // namespace orthoshard
