#include "launch/trainer/config_reference.hpp"

#include "launch/trainer/train_config.hpp"

#include <fmt/format.h>

#include <map>

namespace orthoshard {
namespace {

// What each key means, one line each.
const std::map<std::string, std::string>& descriptions() {
  static const std::map<std::string, std::string> d = {
      {"model.init_from", "weights to start from: a model file of the family's format (GPT-2: llm.c .bin), a Hugging Face model directory (config.json + safetensors; LLaMA) or an orthoshard checkpoint .h5 to fine-tune (its architecture and weights, fresh optimizer, step 0); \"\" = random init"},
      {"model.arch", "model family: gpt2 or llama (from config.json's model_type when init_from is a Hugging Face directory)"},
      {"model.L", "layers (blocks)"},
      {"model.C", "width (channels); divisible by NH"},
      {"model.NH", "attention heads"},
      {"model.V", "vocabulary size (tokens must be < V)"},
      {"model.Vp", "vocabulary padded for the embedding and head (>= V; rows >= V never trained)"},
      {"model.maxT", "longest sequence the position embedding holds (>= train.seq_len)"},
      {"model.seed", "seed of the random initialization"},
      {"model.NKV", "LLaMA key/value heads (grouped-query attention; NH divisible by it); 0 = NH"},
      {"model.FF", "LLaMA SwiGLU intermediate size; 0 = 8C/3 rounded up to a multiple of 256"},
      {"model.norm_eps", "LLaMA RMSNorm epsilon"},
      {"model.rope_theta", "LLaMA rotary embedding base"},
      {"model.tie_embeddings", "LLaMA: the output head is the token embedding"},
      {"data.path", "training tokens: an llm.c token shard, a glob of shards, or builtin:synthetic"},
      {"data.order", "sequential, or shuffled (a permutation of the sequences per epoch)"},
      {"data.seed", "seed of the shuffled order"},
      {"train.batch_size", "sequences per rank per micro-batch (B)"},
      {"train.global_batch_size", "sequences per micro-batch over all ranks (any number >= the ranks, split as evenly as can be; the loss and gradients weighted by each rank's share); 0 = ranks x batch_size"},
      {"train.seq_len", "tokens per sequence (T)"},
      {"train.grad_accum", "micro-batches per optimizer step (K); the global batch is W x K x B sequences"},
      {"train.steps", "optimizer steps of the run"},
      {"train.schedule", "learning-rate schedule after warm-up: constant, cosine or linear"},
      {"train.warmup_steps", "linear warm-up steps"},
      {"train.min_lr_ratio", "where cosine and linear end, as a fraction of the peak lr"},
      {"train.grad_clip", "global gradient-norm clip; 0 = off"},
      {"train.seed", "seed of the trainer's own randomness"},
      {"train.metrics", "JSON Lines file with one object per step (step, loss, lr, grad_norm, tokens_per_s, val_loss); \"\" = none"},
      {"train.log_every", "rank 0 prints a step line every N steps"},
      {"train.nan_policy", "a non-finite loss or gradient: stop the run, or skip the step's update"},
      {"train.max_skipped_steps", "nan_policy = skip: this many skipped steps in a row stop the run"},
      {"train.loss_limit", "a loss above this stops the run (diverged); 0 = no limit"},
      {"eval.path", "validation tokens: auto (<data>_val.bin beside a data file, builtin:synthetic:val), none, or a token file"},
      {"eval.every", "validate every N steps; 0 = only after the last step"},
      {"eval.batches", "batches of batch_size sequences in the validation set (the same ones every time)"},
      {"eval.sample_every", "rank 0 prints text sampled from the model every N steps and after the last (temperature 1, seed train.seed); 0 = never"},
      {"eval.sample_prompt", "the samples' prompt: text for a byte-level model (V = 256), else space-separated token ids; \"\" = a newline"},
      {"eval.sample_tokens", "tokens each sample generates (prompt + tokens <= the model's maxT)"},
      {"optim.name", "optimizer of the hidden matrices: adamw, muon, normuon or conda (the rest takes AdamW)"},
      {"optim.lr", "peak learning rate of the optimizer"},
      {"optim.weight_decay", "decoupled weight decay of the optimizer"},
      {"optim.betas", "AdamW's and Conda's (beta1, beta2)"},
      {"optim.eps", "AdamW's, NorMuon's and Conda's epsilon"},
      {"optim.momentum", "Muon's and NorMuon's momentum"},
      {"optim.beta2", "NorMuon's row second-moment decay"},
      {"optim.nesterov", "Muon's and NorMuon's Nesterov momentum"},
      {"optim.ns_steps", "Newton-Schulz iterations"},
      {"optim.scale", "Muon's and NorMuon's update scale: keller, moonlight, none (NorMuon also paper)"},
      {"optim.conda_scale", "Conda's update scale"},
      {"optim.update_proj_gap", "Conda: steps between refreshes of the projection basis"},
      {"optim.proj_type", "Conda's projection: std, reverse_std, left or right"},
      {"optim.correct_bias", "Conda's bias correction"},
      {"optim.ortho_scheme", "distributed orthogonalization: auto, owner (whole matrices at owner ranks) or gram (CPU)"},
      {"optim.adam_lr", "learning rate of the AdamW that embeddings, head and vectors take"},
      {"optim.adam_betas", "that AdamW's (beta1, beta2)"},
      {"optim.adam_eps", "that AdamW's epsilon"},
      {"optim.adam_weight_decay", "that AdamW's weight decay"},
      {"optim.matrix_params", "glob patterns of parameters forced to the matrix rule"},
      {"optim.adam_params", "glob patterns of parameters forced to AdamW"},
      {"checkpoint.dir", "directory of step_<N>.h5, latest, config.toml and the run's lock"},
      {"checkpoint.every", "write a checkpoint every N steps and after the last; 0 = never"},
      {"checkpoint.keep", "keep the newest N checkpoints; 0 = all"},
      {"checkpoint.resume", "none, auto (the newest that verifies in dir), or a checkpoint path"},
      {"checkpoint.on_error", "a save that fails (full disk, I/O error): stop the run, or warn and train on"},
      {"checkpoint.overwrite", "resume = none into a directory holding checkpoints: refused unless true (true deletes them)"},
      {"runtime.backend", "cpu or cuda (one GPU per rank)"},
      {"runtime.comm", "auto, mpi or nccl"},
      {"runtime.sharding", "full (over all ranks) or hybrid:S (groups of S ranks, replicated across groups)"},
      {"runtime.param_dtype", "what all-gathers move and GPU models compute in: f32 or bf16 (masters stay f32)"},
      {"runtime.reduce_dtype", "what gradient reductions move: f32 or bf16"},
      {"runtime.reshard_after_forward", "release a unit's gathered parameters after its forward (re-gathered in backward)"},
      {"runtime.threads", "CPU threads per rank; 0 = the library default (OMP_NUM_THREADS)"},
      {"runtime.comm_timeout_s", "a collective stuck this long ends the job naming it and the ranks not heard from; 0 = never"},
      {"runtime.prefetch", "units whose all-gather starts ahead of use when overlapping"},
      {"runtime.overlap", "collectives behind compute: auto (on for cuda, off for cpu), on or off"},
      {"runtime.attention", "GPU attention kernels: auto, flash or gemm"},
      {"runtime.grad_accum_mode", "sharded (reduce every micro-batch into fp32 shards) or unsharded (one reduction per step)"},
      {"runtime.activation_checkpointing", "none, or blocks (keep each block's input, recompute it in backward)"},
  };
  return d;
}

std::string describe(const std::string& key) {
  const auto it = descriptions().find(key);
  return it == descriptions().end() ? std::string() : it->second;
}

}  // namespace

std::string config_reference_text() {
  std::string out = "Configuration keys (TOML [section] key, or --section.key=value), type, default:\n";
  for (const auto& k : config_key_infos())
    out += fmt::format("  {:<34} {:<16} {:<14} {}\n", k.key, k.type, k.default_value, describe(k.key));
  return out;
}

std::string config_reference_markdown() {
  std::string out =
      "# Configuration keys\n\n"
      "Generated from the trainer's schema by `orthoshard train --config-reference` (a test fails when this file\n"
      "differs). Set a key in a TOML file's `[section]` or on the command line as `--section.key=value` (lists\n"
      "comma-separated); `orthoshard train --help` prints the same list.\n";
  std::string section;
  for (const auto& k : config_key_infos()) {
    const std::string s = k.key.substr(0, k.key.find('.'));
    if (s != section) {
      section = s;
      out += fmt::format("\n## [{}]\n\n| key | type | default | meaning |\n| --- | --- | --- | --- |\n", s);
    }
    std::string def = k.default_value;
    out += fmt::format("| `{}` | {} | `{}` | {} |\n", k.key.substr(s.size() + 1), k.type, def, describe(k.key));
  }
  return out;
}

std::string undocumented_config_keys() {
  std::string out;
  for (const auto& k : config_key_infos())
    if (describe(k.key).empty()) out += (out.empty() ? "" : ", ") + k.key;
  return out;
}

}  // namespace orthoshard
