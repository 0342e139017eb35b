// The trainer's configuration: a TOML file ([model] [data] [train] [eval] [optim] [checkpoint] [runtime]) plus
// command-line overrides `--section.key=value`, typed by one schema, validated with errors naming the key.
#pragma once

#include "models/data/loader.hpp"
#include "models/family.hpp"
#include "optim/config.hpp"
#include "runtime/core/dtype.hpp"
#include "runtime/core/tensor.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace orthoshard {

enum class LrSchedule { Constant, Cosine, Linear };
enum class NanPolicy { Stop, Skip };  // stop: end the run with a message; skip: drop the step's update
enum class CommBackend { Auto, Mpi, Nccl };  // auto: mpi on cpu; on cuda nccl unless ranks share a GPU

std::string_view lr_schedule_name(LrSchedule s);  // "constant" | "cosine" | "linear"
std::string_view nan_policy_name(NanPolicy p);    // "stop" | "skip"
std::string_view comm_backend_name(CommBackend c);  // "auto" | "mpi" | "nccl"

// [model]: the model family ([model] arch) and its shape (see ModelSpec in models/family.hpp).
using ModelSection = ModelSpec;

// [data]
struct DataSection {
  std::string path = "builtin:synthetic";  // token shard file, glob, or builtin:synthetic
  DataOrder order = DataOrder::Sequential;
  std::uint64_t seed = 1337;  // shuffled order
  bool operator==(const DataSection&) const = default;
};

// [train]
struct TrainSection {
  std::int64_t batch_size = 4;   // sequences per micro-batch, per rank (B)
  std::int64_t global_batch_size = 0;  // > 0: sequences per micro-batch over all ranks (G), any G >= W
  std::int64_t seq_len = 1024;   // tokens per sequence (T); must be <= model maxT (checked by the trainer)
  int grad_accum = 1;            // micro-batches per optimizer step (K)
  std::int64_t steps = 100;      // optimizer steps in the run
  LrSchedule schedule = LrSchedule::Constant;
  std::int64_t warmup_steps = 0;  // linear warm-up steps (see launch/trainer/schedule.hpp)
  double min_lr_ratio = 0.0;      // end of cosine/linear decay, as a fraction of the peak lr, in [0, 1]
  double grad_clip = 0.0;         // global gradient-norm clip; 0 = off
  std::uint64_t seed = 1337;      // trainer randomness (anything not model init or data order)
  std::string metrics;            // JSONL metrics path; "" = none
  std::int64_t log_every = 10;    // rank 0 prints a line every log_every steps (>= 1)
  NanPolicy nan_policy = NanPolicy::Stop;
  std::int64_t max_skipped_steps = 10;  // nan_policy = skip: this many skipped steps in a row stop the run
  double loss_limit = 0;                // a finite loss above it stops the run (diverged); 0 = no limit
  bool operator==(const TrainSection&) const = default;
};

// [eval]: the validation loss (launch/trainer/validation.hpp).
struct EvalSection {
  // "auto": `<data>_val.bin` beside a data file when it exists (builtin:synthetic: builtin:synthetic:val), else
  // none; "none": no validation; or a token file, glob or builtin spec.
  std::string path = "auto";
  std::int64_t every = 0;    // validate every N steps (0: only after the last step)
  std::int64_t batches = 8;  // batches of train.batch_size sequences of train.seq_len tokens, split over the ranks
  std::int64_t sample_every = 0;  // rank 0 prints a sample every N steps and after the last (0: never)
  std::string sample_prompt;      // its prompt (model/sampling.hpp's prompt_tokens); "" = a newline (V = 256)
  std::int64_t sample_tokens = 64;  // tokens it generates (temperature 1, the whole vocabulary, seed train.seed)
  bool operator==(const EvalSection&) const = default;
};

// [checkpoint]: stored here; the checkpoint code gives them their effect.
struct CheckpointSection {
  std::string dir = "checkpoints";  // where step_<N>.h5 and `latest` go
  std::int64_t every = 0;           // write every N steps; 0 = never
  std::int64_t keep = 0;            // keep the newest N checkpoints; 0 = keep all
  std::string resume = "none";      // "auto" (latest in dir, if any), "none", or a checkpoint path
  bool overwrite = false;           // resume = none into a directory holding checkpoints: refused unless true
                                    // (true deletes them when the run starts)
  bool warn_on_error = false;       // on_error: "stop" (false) ends the run when a save fails; "warn" trains on
  bool operator==(const CheckpointSection&) const = default;
};

// [runtime]
enum class Overlap { Auto, On, Off };
std::string_view overlap_name(Overlap o);
// How micro-batches' gradients add up: sharded = each micro-batch's gradient is reduce-scattered into the fp32
// shards (full-size gradients exist only for the units in flight); unsharded = full-size gradients are kept
// across the step's micro-batches and reduced once (less communication, a full gradient per rank; FSDP2's
// no-sync). The same with grad_accum = 1.
enum class GradAccumMode { Sharded, Unsharded };
std::string_view grad_accum_mode_name(GradAccumMode m);

struct RuntimeSection {
  Device backend = Device::CPU;  // "cpu" | "cuda"
  CommBackend comm = CommBackend::Auto;
  int hybrid_group_size = 0;     // sharding: "full" -> 0 (shard over all ranks); "hybrid:S" -> S (S >= 1)
  DType param_dtype = DType::F32;   // what all-gathers move: f32 | bf16 (masters stay f32)
  DType reduce_dtype = DType::F32;  // what gradient reductions move: f32 | bf16
  bool reshard_after_forward = true;
  int threads = 0;               // CPU threads per rank; 0 = library default
  double comm_timeout_s = 600;   // a collective not done after this long ends the job, any backend (0 = never)
  int prefetch = 1;              // units whose all-gather starts ahead of use when overlapping (0 = none)
  // Overlap of collectives with compute (prefetched all-gathers, asynchronous reduce-scatters): on, off, or
  // auto = on where collectives progress in the background (cuda), off for MPI on host memory (cpu), where
  // non-blocking collectives only progress inside MPI calls and were measured slower than blocking ones.
  Overlap overlap = Overlap::Auto;
  // cuda: the attention kernels (see AttentionKernels): auto = fused where the model allows, flash, gemm.
  AttentionKernels attention = AttentionKernels::Auto;
  GradAccumMode grad_accum_mode = GradAccumMode::Sharded;
  // none: every block's activations are kept from the forward to its backward; blocks: only each block's input,
  // and the block's forward is recomputed in its backward (the same losses bit for bit).
  bool checkpoint_blocks = false;
  bool overlap_enabled() const {
    return overlap == Overlap::On || (overlap == Overlap::Auto && backend == Device::CUDA);
  }
  std::string sharding() const;  // "full" or "hybrid:S"
  bool operator==(const RuntimeSection&) const = default;
};

struct TrainConfig {
  ModelSection model;
  DataSection data;
  TrainSection train;
  EvalSection eval;
  OptimConfig optim;  // the optimizer's own struct, parsed by optim_config_from_json
  CheckpointSection checkpoint;
  RuntimeSection runtime;
  std::string source;  // the TOML path it was loaded from ("" = defaults), for messages

  // Every key with its value (defaults included) as TOML; loading it gives this configuration back.
  std::string resolved_toml() const;
  // One line per section with only the keys that apply here (the optimizer's own, the backend's, ...), as the
  // trainer prints it: "[train] batch_size=8 seq_len=64 ...". The whole is resolved_toml().
  std::string summary() const;
  // Tokens per optimizer step over the whole job: grad_accum · G · seq_len, G = global_batch_size or
  // world_size · batch_size.
  std::int64_t tokens_per_step(int world_size) const {
    const std::int64_t G = train.global_batch_size > 0 ? train.global_batch_size
                                                       : static_cast<std::int64_t>(world_size) * train.batch_size;
    return train.grad_accum * G * train.seq_len;
  }
};

// Loads `toml_path` ("" = all defaults) and applies `overrides` in order (later wins). An override is
// `--section.key=value` or the two items `--section.key` `value`; lists are comma-separated
// (`--optim.betas=0.9,0.95`, `--optim.adam_params=wte,wpe`); bools are true|false|1|0. Throws UsageError
// with one line naming the source and key: `cfg.toml: [train] batch_size: expected an integer, got "four"`,
// `--optim.lrr: unknown key (did you mean optim.lr?)`, `config file 'x.toml' not found`.
// Checks that need the model file or the world size (seq_len <= maxT, world size divisible by the hybrid
// group) are left to the trainer.
TrainConfig load_train_config(const std::string& toml_path, const std::vector<std::string>& overrides = {});

// The same from TOML text (a checkpoint's saved configuration); `source` names it in errors.
TrainConfig load_train_config_text(const std::string& toml_text, const std::string& source,
                                   const std::vector<std::string>& overrides = {});

// True for an argument that looks like an override (`--section.key...`), for CLI pre-filtering.
bool is_config_override(std::string_view arg);

// Every key of the schema with its type ("integer", "string", ...) and default value (a TOML literal), in schema
// order; launch/trainer/config_reference.hpp adds what each means.
struct ConfigKeyInfo {
  std::string key, type, default_value;
};
std::vector<ConfigKeyInfo> config_key_infos();

// "section.key" of every known key, in the order resolved_toml() writes them (tests, help text).
std::vector<std::string> train_config_keys();

}  // namespace orthoshard
