// The training loop on GPUs (runtime.backend = cuda): the loop of train.cpp over device memory. One GPU per
// rank; FSDP units gathered on the communication stream (NCCL, or MPI through host staging) `runtime.prefetch`
// units ahead of use; the model computes in runtime.param_dtype (bf16: fp32 statistics and losses); gradients
// reduce-scattered in runtime.reduce_dtype into fp32 shards; the optimizer on the GPU with fp32 master shards
// (Newton-Schulz in param_dtype) writes the bf16 copies the next all-gathers send.
#include "launch/train_cuda.hpp"

#include "launch/checkpoint.hpp"
#include "launch/train_setup.hpp"
#include "launch/schedule.hpp"
#include "models/data/loader.hpp"
#include "models/data/synthetic.hpp"
#include "models/data/token_stream.hpp"
#include "models/gpt2/checkpoint.hpp"
#include "models/gpt2/cuda/model_cuda.hpp"
#include "optim/cuda/device_optimizer.hpp"
#include "runtime/comm/device_comm.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"
#include "runtime/fsdp/cuda/device_fsdp_engine.hpp"
#include "runtime/kernels/cuda/check.hpp"
#include "runtime/kernels/cuda/device.hpp"

#include <chrono>
#include <cmath>
#include <memory>

namespace orthoshard {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

MpiCommunicator& as_mpi(Communicator& c) {
  auto* m = dynamic_cast<MpiCommunicator*>(&c);
  OS_CHECK(m != nullptr, "runtime.backend = cuda: needs MPI communicators, got {}", c.backend());
  return *m;
}

template <typename T>
TrainResult run(Communicator& world, const TrainConfig& cfg, const TrainOptions& opt) {
  const int W = world.size(), me = world.rank();
  const auto& tc = cfg.train;
  const int S = cfg.runtime.hybrid_group_size > 0 ? cfg.runtime.hybrid_group_size : W;
  if (W % S != 0)
    throw UsageError(fmt::format("runtime.sharding = hybrid:{}: the job's {} ranks are not a multiple of {}", S, W, S));

  // Devices and communicators: the GPU is chosen once from the world's local rank; the shard (and replica)
  // groups get device communicators on it.
  const cuda::DeviceQuery q = cuda::query_devices();
  DeviceCommOptions dopt;
  dopt.timeout_s = cfg.runtime.comm_timeout_s;
  dopt.device = q.count > 0 ? pick_device(world.local_rank(), q.count) : -1;
  const DeviceCommKind kind = cfg.runtime.comm == CommBackend::Nccl  ? DeviceCommKind::Nccl
                              : cfg.runtime.comm == CommBackend::Mpi ? DeviceCommKind::MpiStaged
                                                                     : DeviceCommKind::Auto;
  std::unique_ptr<cuda::Stream> stream_holder;  // declared first: it outlives everything that queues on it
  std::unique_ptr<Communicator> shard_mpi = world.split(me / S, me);
  std::unique_ptr<DeviceCommunicator> shard = make_device_communicator(as_mpi(*shard_mpi), kind, dopt);
  std::unique_ptr<Communicator> replica_mpi = S < W ? world.split(me % S, me) : nullptr;
  std::unique_ptr<DeviceCommunicator> replica =
      replica_mpi ? make_device_communicator(as_mpi(*replica_mpi), kind, dopt) : nullptr;
  stream_holder = std::make_unique<cuda::Stream>(true);  // after make_device_communicator selected the GPU
  cuda::Stream& stream = *stream_holder;
  shard->set_compute_stream(stream);
  if (replica) replica->set_compute_stream(stream);

  // Model: from an llm.c file or a seeded random init (identical on every rank), then sharded onto the GPU.
  ModelSetup setup = setup_model(cfg);
  const Gpt2Config mc = setup.config;
  const auto& units = setup.units;
  const auto& unit_specs = setup.unit_specs;
  const auto& param_shapes = setup.param_shapes;
  DeviceFsdpEngine engine(unit_specs, *shard, replica.get(), {cfg.runtime.param_dtype, cfg.runtime.reduce_dtype},
                          stream);
  for (const auto& [name, t] : setup.init.named()) engine.load_full(name, t);
  setup.init = Gpt2Params();  // the full copy is not kept

  const NsPrecision ns = cfg.runtime.param_dtype == DType::BF16 ? NsPrecision::BF16 : NsPrecision::F32;
  DeviceOptimizer optim = DeviceOptimizer::with_routing(cfg.optim, param_shapes, shard.get(), stream, ns);
  std::vector<Tensor> shards, grads, copies;
  for (const auto& [name, shape] : param_shapes) {
    shards.push_back(engine.shard(name));
    grads.push_back(engine.grad_shard(name));
    copies.push_back(engine.shard_copy(name));
  }
  if (cfg.runtime.param_dtype == DType::F32) copies.clear();

  auto data = TokenStream::open(cfg.data.path);
  const LoaderConfig lc = loader_config(cfg, W, me, mc.V);
  DataLoader loader(data, lc);
  Tensor inputs = Tensor::empty({tc.batch_size, tc.seq_len}, DType::I32);
  Tensor targets = Tensor::empty({tc.batch_size, tc.seq_len}, DType::I32);

  cuda::Blas blas;
  Gpt2CudaModel<T> model(mc, blas, stream, cfg.runtime.attention);
  model.set_batch(tc.batch_size, tc.seq_len);

  // Checkpoints go through host mirrors: an engine holding only master shards and an optimizer holding only
  // state, both laid out as the CPU run's, so the files are the same as a CPU run's (and load at any world size,
  // on either backend). The GPU state is copied into them before a save and out of them after a resume.
  FsdpOptions mirror_opt;
  mirror_opt.grad_buffers = false;
  FsdpEngine host_engine(unit_specs, *shard_mpi, nullptr, mirror_opt);
  OptimConfig mirror_cfg = cfg.optim;
  mirror_cfg.ortho_scheme = OrthoScheme::Owner;  // the GPU plan's owners, for the owner-held states
  Optimizer host_optim = Optimizer::with_routing(mirror_cfg, param_shapes, DType::F32, shard_mpi.get());
  const auto state_to_host = [&] {
    for (const auto& [name, shape] : param_shapes) {
      Tensor h = host_engine.shard(name);
      engine.shard_to_host(name, h);
    }
    for (std::size_t i = 0; i < param_shapes.size(); ++i)
      for (const auto& [n, t] : optim.state(i).entries()) {
        if (t.device() == Device::CPU) {
          host_optim.state(i).set(n, t.clone());
          continue;
        }
        Tensor h = Tensor::empty(t.shape(), t.dtype());
        if (h.numel()) OS_CUDA_CHECK(cudaMemcpyAsync(h.raw(), t.raw(), h.nbytes(), cudaMemcpyDeviceToHost, stream));
        stream.synchronize();
        host_optim.state(i).set(n, std::move(h));
      }
  };
  const auto state_from_host = [&] {
    for (const auto& [name, shape] : param_shapes) engine.shard_from_host(name, host_engine.shard(name));
    for (std::size_t i = 0; i < param_shapes.size(); ++i)
      for (const auto& [n, t] : host_optim.state(i).entries()) optim.load_state(i, n, t);
  };
  Checkpointer checkpointer({world, *shard_mpi, me / S, host_engine, host_optim, loader, cfg, mc}, !opt.quiet);
  const std::int64_t first_step = checkpointer.resume();
  if (first_step > 0) state_from_host();

  const bool talk = !opt.quiet;
  const std::int64_t tokens_per_step = cfg.tokens_per_step(W);
  if (talk) {
    log::info("# orthoshard train: resolved configuration\n{}", cfg.resolved_toml());
    log::info("model: GPT-2 {} ({:.2f} M parameters){}", mc.describe(), mc.num_parameters() / 1e6,
              cfg.model.init_from.empty() ? fmt::format(", random init seed {}", cfg.model.seed)
                                          : ", from " + cfg.model.init_from);
    log::info("data: {}; {} steps per epoch", data->describe(), loader.steps_per_epoch());
    if (cfg.data.path.rfind("builtin:synthetic", 0) == 0) log::info("data: {}", SyntheticLanguage().describe());
    log::info("job: {} ranks on GPUs ({}, comm {}, compute {}, reduce {}, prefetch {}), {} tokens per step "
              "(W {} x K {} x B {} x T {}), optimizer {}, {} matrices orthogonalized across {} rank(s), Newton-Schulz "
              "in {}, attention {}",
              W, cfg.runtime.sharding(),
              replica ? fmt::format("{} in shard groups, {} across replicas", shard->backend(), replica->backend())
                      : shard->backend(),
              dtype_name(cfg.runtime.param_dtype),
              dtype_name(cfg.runtime.reduce_dtype), cfg.runtime.prefetch, tokens_per_step, W, tc.grad_accum,
              tc.batch_size, tc.seq_len, cfg.optim.name, optim.plan().tasks.size(), shard->size(),
              ns == NsPrecision::BF16 ? "bf16" : "f32", model.flash_attention() ? "flash (fused)" : "cuBLAS GEMMs");
    log::info_all("device: GPU {} ({})", shard->device(), cuda::device_description(shard->device()));
  }

  const auto fulls = [&](const std::string& n) { return engine.full(n); };
  const auto fgrads = [&](const std::string& n) { return engine.full_grad(n); };
  const bool reshard = cfg.runtime.reshard_after_forward;
  const bool overlap = opt.overlap.value_or(cfg.runtime.overlap_enabled());
  const int depth = overlap ? cfg.runtime.prefetch : 0;
  const std::size_t U = units.size(), emb = 0, head = U - 1;
  // Gather u and start the all-gathers of the next `depth` units: upwards in the forward, downwards to block 1
  // in the backward (the embedding's weights are not needed there).
  auto gather_fwd = [&](std::size_t u) {
    engine.gather(u);
    for (std::size_t k = 1; k <= static_cast<std::size_t>(depth) && u + k < U; ++k) engine.prefetch(u + k);
  };
  auto gather_bwd = [&](std::size_t u) {
    engine.gather(u);
    for (std::size_t k = 1; k <= static_cast<std::size_t>(depth) && u > k; ++k) engine.prefetch(u - k);
  };
  // After unit u's backward: the step's last micro-batch starts its reduction; an earlier one moves its bf16
  // gradient into the unit's fp32 sum (a no-op with f32 parameters, which accumulate in place).
  auto unit_done = [&](std::size_t u, bool last) {
    if (!last) return engine.accumulate_grads(u);
    engine.reduce_grads(u);
    if (!overlap) engine.finish_reductions();
  };

  // Each micro-batch's per-token losses land here by async copies; they are read after the step's first
  // synchronization (the gradient norm), so the host never waits for a micro-batch to finish.
  const std::int64_t tokens_per_micro = static_cast<std::int64_t>(tc.batch_size) * tc.seq_len;
  cuda::PinnedBuffer losses_host(static_cast<std::size_t>(tokens_per_micro * tc.grad_accum) * sizeof(float));
  float* const losses = static_cast<float*>(losses_host.data());
  StepLog steps(cfg, first_step, tokens_per_step, talk, me == 0);
  const auto run_start = Clock::now();
  for (std::int64_t step = first_step; step < tc.steps; ++step) {
    const auto t0 = Clock::now();
    engine.zero_grads();
    double loss_sum = 0;
    for (int j = 0; j < tc.grad_accum; ++j) {
      const bool last = j + 1 == tc.grad_accum;
      loader.load(j, inputs, targets);
      for (std::size_t u = 0; u < U; ++u) {
        gather_fwd(u);
        const Gpt2Unit& unit = units[u];
        if (unit.kind == UnitKind::Embedding) {
          model.embedding_forward(embedding_weights(fulls), inputs);
        } else if (unit.kind == UnitKind::Block) {
          model.block_forward(unit.layer, block_weights(fulls, unit.layer));
          if (reshard) engine.release(u);
        } else {
          model.head_forward_async(head_weights(fulls), targets);
          model.copy_losses_async(losses + j * tokens_per_micro);
        }
      }
      // Backward in reverse; the last micro-batch reduce-scatters each unit as soon as it is done.
      for (std::size_t k = 1; k <= static_cast<std::size_t>(depth) && head > k; ++k) engine.prefetch(head - k);
      model.head_backward(head_weights(fulls), head_weights(fgrads), 1.0 / tc.grad_accum);
      unit_done(head, last);
      if (reshard) {
        engine.release(head);
        engine.release(emb);  // the tied wte was the head's last use of the embedding unit
      }
      for (std::size_t u = head - 1; u >= 1; --u) {
        gather_bwd(u);
        model.block_backward(units[u].layer, block_weights(fulls, units[u].layer),
                             block_weights(fgrads, units[u].layer));
        unit_done(u, last);
        if (reshard) engine.release(u);
      }
      model.embedding_backward(embedding_weights(fgrads));
      unit_done(emb, last);
    }
    engine.finish_reductions();
    for (std::size_t u = 0; u < U; ++u) engine.release(u);  // the optimizer changes the parameters

    const double grad_norm = engine.clip_grad_norm(tc.grad_clip);  // synchronizes the stream
    stream.synchronize();  // (explicitly: the loss copies above must have landed)
    for (int j = 0; j < tc.grad_accum; ++j) loss_sum += model.mean_of(losses + j * tokens_per_micro, tokens_per_micro);
    const double loss = world.all_reduce_scalar(loss_sum / tc.grad_accum, ReduceOp::Sum) / W;
    const double lr_mult = lr_multiplier(cfg, step);
    if (steps.update_allowed(step, loss, grad_norm)) optim.step(shards, grads, lr_mult, copies);
    loader.advance();
    stream.synchronize();
    const double dt = world.all_reduce_scalar(seconds_since(t0), ReduceOp::Max);
    if (talk && step == first_step) {
      const FsdpMemory m = engine.memory();
      std::uint64_t state = 0;
      for (std::size_t i = 0; i < param_shapes.size(); ++i)
        for (const auto& [n, t] : optim.state(i).entries()) state += t.nbytes();
      log::info_all("GPU memory: params {} (shards + {} copies), grads {} (shards) + {} (accumulation), optimizer "
                    "state {}, gathered peak {}, reduce buffers {}, activations {}",
                    mib(m.param_shards), dtype_name(cfg.runtime.param_dtype), mib(m.grad_shards),
                    mib(m.grad_accumulation), mib(state), mib(m.gather_peak), mib(m.comm_buffers),
                    mib(model.activation_bytes()));
    }
    steps.record(step, loss, grad_norm, cfg.optim.lr * lr_mult, dt, engine.comm_wait_ms());
    if (checkpointer.due(step + 1)) state_to_host();
    checkpointer.after_step(step + 1);
  }
  TrainResult result = steps.finish(engine.comm_wait_ms());
  if (talk) {
    const double flops_per_token = 6.0 * static_cast<double>(mc.num_parameters()) + 6.0 * mc.L * mc.C * tc.seq_len;
    log::info("done: {} steps in {:.1f} s, final loss {:.6f}, {:.0f} tok/s after the first step ({:.1f} TFLOP/s per "
              "GPU at 6N + 6·L·C·T flops per token)",
              result.losses.size(), seconds_since(run_start), result.losses.empty() ? NAN : result.losses.back(),
              result.tokens_per_s, result.tokens_per_s * flops_per_token / W / 1e12);
  }
  return result;
}

}  // namespace

TrainResult train_cuda(Communicator& world, const TrainConfig& cfg, const TrainOptions& opt) {
  if (cfg.runtime.param_dtype == DType::BF16) return run<__nv_bfloat16>(world, cfg, opt);
  return run<float>(world, cfg, opt);
}

}  // namespace orthoshard
