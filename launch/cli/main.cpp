// The `orthoshard` CLI: one binary, subcommands. Parsing happens before MPI starts, so a bad flag
// exits with the usage message and code 2 on every rank without touching MPI.
#include "bench/comm_bench.hpp"
#include "bench/optim_bench.hpp"
#include "bench/ckpt_bench.hpp"
#include "launch/cli/ckpt_tools.hpp"
#include "launch/cli/env_info.hpp"
#include "launch/cli/eval_cmd.hpp"
#include "launch/cli/sample_cmd.hpp"
#include "bench/gpu_bench.hpp"
#include "bench/model_bench.hpp"
#include "launch/cli/prepare_data.hpp"
#include "launch/cli/replay.hpp"
#include "launch/trainer/config_reference.hpp"
#include "launch/trainer/stop_signals.hpp"
#include "launch/trainer/train.hpp"
#include "bench/train_bench.hpp"
#include "launch/cli/selfcheck.hpp"
#include "runtime/checkpoint/commit.hpp"
#include "runtime/comm/mpi_communicator.hpp"
#include "runtime/core/error.hpp"

#include <CLI/CLI.hpp>

#include <malloc.h>

#include <cstdio>
#include <iostream>

using namespace orthoshard;

int main(int argc, char** argv) {
  // Training allocates and frees the same large buffers every step (gathered units, activations,
  // packing buffers). Served by mmap, each reuse would page-fault anew (measured: most of a CPU step on
  // a VM); from the heap, without trimming, freed blocks are reused warm.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);

  CLI::App app{"orthoshard: sharded training runtime for Muon-class optimizers", "orthoshard"};
  app.set_version_flag("--version", version_string());
  app.require_subcommand(1);
  app.fallthrough(false);

  auto* env = app.add_subcommand("env", "Show compiled backends, library versions and visible devices");

  PrepareDataOptions prep_opt;
  auto* prepare = app.add_subcommand("prepare-data", "Byte-level token shards (llm.c format) from text files");
  prepare->add_option("text", prep_opt.inputs, "Text files, concatenated in this order")->required();
  prepare->add_option("--out", prep_opt.out, "Output shard FILE.bin")->required();
  prepare->add_option("--val-fraction", prep_opt.val_fraction, "Last fraction of the tokens to FILE_val.bin")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();

  int inject_failure = -1;
  auto* selfcheck = app.add_subcommand("selfcheck", "Check every collective on the ranks of this job (mpirun -np N)");
  selfcheck->add_option("--inject-failure", inject_failure, "Make this rank fail, to check that the job ends")
      ->check(CLI::NonNegativeNumber);

  SampleOptions sample_opt;
  auto* sample_cmd = app.add_subcommand("sample", "Text from a checkpoint's model (one process, CPU, KV cache)");
  sample_cmd->add_option("checkpoint", sample_opt.checkpoint, "Checkpoint (step_<N>.h5, or a checkpoint directory)")
      ->required();
  sample_cmd->add_option("--prompt", sample_opt.prompt,
                         "Text (byte-level models, V = 256) or space-separated token ids; default a newline / "
                         "<|endoftext|> / token 0");
  sample_cmd->add_option("--tokens", sample_opt.tokens, "Tokens to generate")->capture_default_str();
  sample_cmd->add_option("--temperature", sample_opt.temperature, "Softmax temperature; 0 = greedy")
      ->capture_default_str();
  sample_cmd->add_option("--top-k", sample_opt.top_k, "Sample among the K most likely tokens; 0 = all")
      ->capture_default_str();
  sample_cmd->add_option("--seed", sample_opt.seed, "The same seed gives the same text")->capture_default_str();
  EvalOptions eval_opt;
  auto* eval_cmd = app.add_subcommand(
      "eval", "Mean loss of a checkpoint on a token file (mpirun -np N: the same at any N)");
  eval_cmd->add_option("checkpoint", eval_opt.checkpoint, "Checkpoint (step_<N>.h5, or a checkpoint directory)")
      ->required();
  eval_cmd->add_option("--data", eval_opt.data, "Token file (llm.c .bin, a glob, or builtin:synthetic:val)")
      ->required();
  eval_cmd->add_option("--batches", eval_opt.batches, "Batches of --batch-size sequences")
      ->check(CLI::PositiveNumber)->capture_default_str();
  eval_cmd->add_option("--batch-size", eval_opt.batch_size, "Sequences per batch (default: the checkpoint's)")
      ->check(CLI::PositiveNumber);
  eval_cmd->add_option("--seq-len", eval_opt.seq_len, "Tokens per sequence (default: the checkpoint's)")
      ->check(CLI::PositiveNumber);

  std::string train_config_path;
  auto* train_cmd = app.add_subcommand(
      "train", "Train a model on the ranks of the job: --config FILE, any key overridden as --section.key=value");
  train_cmd->add_option("--config", train_config_path, "TOML configuration (default: built-in defaults)");
  bool config_reference = false;
  train_cmd->add_flag("--config-reference", config_reference,
                      "Print every configuration key as markdown (docs/config.md) and exit");
  train_cmd->footer("\n" + config_reference_text());
  train_cmd->allow_extras();

  ReplayOptions replay_opt;
  auto* replay = app.add_subcommand("replay", "Run an optimizer trace and compare with the reference after every step");
  replay->add_option("trace", replay_opt.trace, "Trace file (HDF5, orthoshard.optim-trace)")->required();
  replay->add_option("--precision", replay_opt.precision, "f32, f64 (cpu) or bf16 (cuda: Newton-Schulz in bf16)")
      ->check(CLI::IsMember({"f32", "f64", "bf16"}))->capture_default_str();
  replay->add_option("--tolerance", replay_opt.tolerance,
                     "Largest accepted error (default 1e-4 f32, 1e-10 f64, 2e-2 bf16)")
      ->check(CLI::NonNegativeNumber);
  replay->add_option("--backend", replay_opt.backend, "cpu, or cuda (the GPU optimizer, one GPU per rank)")
      ->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  replay->add_option("--comm", replay_opt.comm, "With --backend cuda: nccl, or mpi (host staging; ranks may share a GPU)")
      ->check(CLI::IsMember({"nccl", "mpi"}))->capture_default_str();
  replay->add_option("--ortho-scheme", replay_opt.ortho_scheme, "Distributed orthogonalization: auto, owner, gram")
      ->check(CLI::IsMember({"auto", "owner", "gram"}))->capture_default_str();

  auto* ckpt = app.add_subcommand("ckpt", "Checkpoint tools: inspect, diff, export (one process, no mpirun)");
  ckpt->require_subcommand(1);
  CkptInspectOptions inspect_opt;
  auto* ckpt_inspect = ckpt->add_subcommand("inspect", "Tree, shapes, statistics and checksum verification; exit 1 on failure");
  ckpt_inspect->add_option("file", inspect_opt.file, "Checkpoint (step_<N>.h5, or a checkpoint directory: its latest)")
      ->required();
  ckpt_inspect->add_flag("!--no-config", inspect_opt.config, "Do not print the run's configuration");
  CkptDiffOptions diff_opt;
  auto* ckpt_diff = ckpt->add_subcommand("diff", "Per-tensor max abs and relative difference of two checkpoints");
  ckpt_diff->add_option("a", diff_opt.a, "Checkpoint A")->required();
  ckpt_diff->add_option("b", diff_opt.b, "Checkpoint B (the reference of the relative difference)")->required();
  ckpt_diff->add_option("--tolerance", diff_opt.tolerance, "Exit 1 when a relative difference exceeds this")
      ->check(CLI::NonNegativeNumber);
  CkptExportOptions export_opt;
  auto* ckpt_export = ckpt->add_subcommand("export", "The weights in a format of the model's family (GPT-2: llm.c, hf, safetensors; LLaMA: hf)");
  ckpt_export->add_option("file", export_opt.file, "Checkpoint (step_<N>.h5)")->required();
  ckpt_export->add_option("--format", export_opt.format, "An export format of the model's family: hf (a Hugging Face directory: config.json + model.safetensors), llmc or safetensors (GPT-2)")
      ->capture_default_str();
  ckpt_export->add_option("--out", export_opt.out, "Output file (hf: a directory)")->required();

  auto* bench = app.add_subcommand("bench", "Benchmarks (print numbers; see docs/benchmarks.md)");
  bench->require_subcommand(1);
  CommBenchOptions comm_opt;
  auto* bench_comm = bench->add_subcommand("comm", "Collective bandwidth of our layer vs raw MPI, with memcpy");
  bench_comm->add_option("--min-bytes", comm_opt.min_bytes, "Smallest message (bytes)")->capture_default_str();
  bench_comm->add_option("--max-bytes", comm_opt.max_bytes, "Largest message (bytes)")->capture_default_str();
  bench_comm->add_option("--iters", comm_opt.iters, "Most timed iterations per size")->capture_default_str()
      ->check(CLI::PositiveNumber);
  bench_comm->add_option("--repeats", comm_opt.repeats, "Alternating ours/raw repeats (median)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  bench_comm->add_option("--ops", comm_opt.ops, "Collectives to run")->delimiter(',')->capture_default_str();
  bench_comm->add_option("--json", comm_opt.json_path, "Also write results as JSON to this path");
  bench_comm->add_flag("--overlap", comm_opt.overlap,
                       "Instead of the sweep: how much of each collective hides behind compute (non-blocking, and "
                       "on a helper thread)");
  bench_comm->add_option("--overlap-bytes", comm_opt.overlap_bytes, "Collective size for --overlap (bytes)")
      ->capture_default_str();

  // CLI11 reports a misspelt subcommand as "a subcommand is required"; name it instead.
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    for (const auto* sub : app.get_subcommands({})) known |= sub->check_name(argv[1]);
    if (!known) {
      std::cerr << "orthoshard: unknown subcommand '" << argv[1] << "'\n\n" << app.help();
      return 2;
    }
  }
  NsBenchOptions ns_opt;
  auto* bench_ns = bench->add_subcommand("ns", "Newton-Schulz GFLOP/s against the machine's sgemm rate");
  bench_ns->add_option("--sizes", ns_opt.sizes, "Square sizes")->delimiter(',')->capture_default_str();
  bench_ns->add_option("--shape", ns_opt.shape, "One MxN case instead of the square sizes");
  bench_ns->add_option("--repeats", ns_opt.repeats, "Timed runs (median)")->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_ns->add_option("--json", ns_opt.json_path, "Also write results as JSON to this path");
  bench_ns->add_option("--dump", ns_opt.dump_dir, "Write each case's input and output (raw f32) to this folder")
      ->check(CLI::ExistingDirectory);
  OptimBenchOptions optim_opt;
  auto* bench_optim = bench->add_subcommand("optim", "One optimizer step over a GPT-2 124M-shaped parameter set");
  bench_optim->add_option("--optimizers", optim_opt.optimizers, "Which optimizers")->delimiter(',')
      ->capture_default_str();
  bench_optim->add_option("--layers", optim_opt.layers, "Transformer layers")->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_optim->add_option("--channels", optim_opt.channels, "Model width C")->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_optim->add_option("--steps", optim_opt.steps, "Timed steps (median)")->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_optim->add_option("--scheme", optim_opt.scheme, "Distributed orthogonalization: auto, owner, gram")
      ->check(CLI::IsMember({"auto", "owner", "gram"}))->capture_default_str();
  bench_optim->add_option("--json", optim_opt.json_path, "Also write results as JSON to this path");
  ModelBenchOptions model_opt;
  auto* bench_model = bench->add_subcommand("model", "Forward+backward tokens/s on the CPU: GPT-2's GEMM share, or LLaMA next to GPT-2 (--arch llama)");
  bench_model->add_option("--L,--layers", model_opt.layers, "Transformer layers")->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_model->add_option("--C,--channels", model_opt.channels, "Model width")->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_model->add_option("--NH,--heads", model_opt.heads, "Attention heads (default C/64)");
  bench_model->add_option("--T,--seq-len", model_opt.seq_len, "Sequence length")->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_model->add_option("--B,--batch", model_opt.batch, "Batch size")->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_model->add_option("--V,--vocab", model_opt.vocab, "Vocabulary")->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_model->add_option("--Vp,--vocab-padded", model_opt.vocab_padded, "Padded vocabulary")
      ->check(CLI::PositiveNumber)->capture_default_str();
  bench_model->add_option("--steps", model_opt.steps, "Timed steps (median)")->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_model->add_option("--json", model_opt.json_path, "Also write results as JSON to this path");
  bench_model->add_option("--arch", model_opt.arch, "gpt2 (the profile of one GPT-2), or llama (LLaMA's shapes next to "
                          "GPT-2s of the same size, as shares of the sgemm rate)")
      ->check(CLI::IsMember({"gpt2", "llama"}))->capture_default_str();
  bench_model->add_option("--shapes", model_opt.shapes, "--arch llama: 60m, 130m, tiny")->delimiter(',')
      ->capture_default_str();

  GpuBenchOptions gpu_opt;
  auto* bench_gpu = bench->add_subcommand(
      "gpu", "One GPU: GEMM rates, Newton-Schulz against them, GPT-2 bf16 training tokens/s and MFU");
  bench_gpu->add_option("--what", gpu_opt.what, "Which parts: gemm, ns, attention, model")->delimiter(',')
      ->check(CLI::IsMember({"gemm", "ns", "attention", "model"}))->capture_default_str();
  bench_gpu->add_option("--ns-sizes", gpu_opt.ns_sizes, "Square Newton-Schulz sizes")->delimiter(',')
      ->capture_default_str();
  bench_gpu->add_option("--gemm-size", gpu_opt.gemm_size, "Square bf16 GEMM size of the reference rate")
      ->check(CLI::PositiveNumber)->capture_default_str();
  bench_gpu->add_option("--L,--layers", gpu_opt.layers, "Transformer layers")->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_gpu->add_option("--C,--channels", gpu_opt.channels, "Model width")->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_gpu->add_option("--T,--seq-len", gpu_opt.seq_len, "Sequence length")->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_gpu->add_option("--B,--batch", gpu_opt.batch, "Batch size")->check(CLI::PositiveNumber)->capture_default_str();
  bench_gpu->add_option("--repeats", gpu_opt.repeats, "Timed runs (median)")->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_gpu->add_option("--json", gpu_opt.json_path, "Also write results as JSON to this path");

  std::string bench_train_config;
  auto* bench_train = bench->add_subcommand("train", "Training tokens/s with communication overlapped and not");
  bench_train->add_option("--config", bench_train_config, "TOML configuration (any key overridable as --section.key=v)");
  std::string bench_train_json;
  bench_train->add_option("--json", bench_train_json, "Also write results as JSON to this path");
  bench_train->allow_extras();
  CkptBenchOptions ckpt_bench_opt;
  auto* bench_ckpt = bench->add_subcommand("ckpt", "Checkpoint save/load GB/s beside a plain sequential write/read");
  bench_ckpt->add_option("--ranks", ckpt_bench_opt.ranks, "Rank counts (default 1,2,4 and the job's)")->delimiter(',');
  bench_ckpt->add_option("--layers", ckpt_bench_opt.layers, "Transformer layers")->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_ckpt->add_option("--channels", ckpt_bench_opt.channels, "Model width C")->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_ckpt->add_option("--optimizer", ckpt_bench_opt.optimizer, "Optimizer whose state is saved")
      ->check(CLI::IsMember({"adamw", "muon", "normuon", "conda"}))->capture_default_str();
  bench_ckpt->add_option("--dir", ckpt_bench_opt.dir, "Filesystem to measure (default TMPDIR)");
  bench_ckpt->add_option("--repeats", ckpt_bench_opt.repeats, "Best of")->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_ckpt->add_flag("--collective-buffering", ckpt_bench_opt.collective_buffering,
                       "MPI-IO two-phase aggregation instead of each rank writing its own bytes");
  bench_ckpt->add_flag("!--keep-cache", ckpt_bench_opt.drop_cache, "Read back from the page cache");
  bench_ckpt->add_option("--json", ckpt_bench_opt.json_path, "Also write results as JSON to this path");
  bench_ckpt->add_option("--keep", ckpt_bench_opt.keep_path,
                         "Copy the last checkpoint written at the largest rank count to this file");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "orthoshard: " << e.what() << "\n\n" << app.help();
    return 2;
  }

  if (env->parsed()) return run_guarded([] { return run_env(); });
  if (bench_ns->parsed()) return run_guarded([&] { return run_ns_bench(ns_opt); });
  if (bench_model->parsed()) return run_guarded([&] { return run_model_bench(model_opt); });
  if (bench_gpu->parsed()) return run_guarded([&] { return run_gpu_bench(gpu_opt); });
  if (prepare->parsed()) return run_guarded([&] { return run_prepare_data(prep_opt); });
  if (train_cmd->parsed() && config_reference) {
    std::fputs(config_reference_markdown().c_str(), stdout);
    return 0;
  }
  if (ckpt_inspect->parsed()) return run_guarded([&] {
    inspect_opt.file = resolve_checkpoint_path(inspect_opt.file);
    return run_ckpt_inspect(inspect_opt);
  });
  if (ckpt_diff->parsed()) return run_guarded([&] {
    diff_opt.a = resolve_checkpoint_path(diff_opt.a);
    diff_opt.b = resolve_checkpoint_path(diff_opt.b);
    return run_ckpt_diff(diff_opt);
  });
  if (sample_cmd->parsed()) return run_guarded([&] {
    sample_opt.checkpoint = resolve_checkpoint_path(sample_opt.checkpoint);
    return run_sample(sample_opt);
  });
  if (ckpt_export->parsed()) return run_guarded([&] {
    export_opt.file = resolve_checkpoint_path(export_opt.file);
    return run_ckpt_export(export_opt);
  });

  // MPI from a second thread: the overlap benchmark's helper thread, and the trainer's hang watchdog (its roll
  // call of the ranks still running, runtime/comm/mpi_hang_guard.hpp).
  MpiRuntime mpi(&argc, &argv, (bench_comm->parsed() && comm_opt.overlap) || train_cmd->parsed());
  return run_guarded([&] {
    auto world = mpi.world();
    if (selfcheck->parsed()) return run_selfcheck(*world, inject_failure);
    if (bench_comm->parsed())
      return comm_opt.overlap ? run_overlap_bench(*world, comm_opt) : run_comm_bench(*world, comm_opt);
    if (bench_optim->parsed()) return run_optim_bench(*world, optim_opt);
    if (replay->parsed()) return run_replay(*world, replay_opt);
    if (eval_cmd->parsed()) return run_eval(*world, eval_opt);
    if (bench_train->parsed()) return run_train_bench(*world, bench_train_config, bench_train->remaining(), bench_train_json);
    if (bench_ckpt->parsed()) return run_ckpt_bench(*world, ckpt_bench_opt);
    if (train_cmd->parsed()) {
      std::vector<std::string> overrides = train_cmd->remaining();
      for (const auto& a : overrides)
        if (a.rfind("--", 0) == 0 && !is_config_override(a)) throw UsageError("train: unknown option '" + a + "'");
      // A run stopped by a signal wrote its checkpoint and exits with kExitStopped (resume: checkpoint.resume=auto).
      return train(*world, load_train_config(train_config_path, overrides)).stop_signal ? kExitStopped : 0;
    }
    throw UsageError("no subcommand given");
  });
}
