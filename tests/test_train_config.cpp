// The trainer's configuration (TOML + overrides, errors naming the key, resolved TOML round trip), the LR
// schedule against hand-computed values, and the metrics JSONL format.
#include "launch/trainer/metrics.hpp"
#include "launch/trainer/schedule.hpp"
#include "launch/trainer/config_reference.hpp"
#include "launch/trainer/train_config.hpp"
#include "models/gpt2/family.hpp"
#include "runtime/core/error.hpp"

#include "models/family.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace orthoshard;
namespace fs = std::filesystem;

namespace {

// A fresh directory per test under the system temp dir.
fs::path scratch_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const fs::path dir = fs::temp_directory_path() /
                       (std::string("orthoshard_test_train_config_") + info->test_suite_name() + "_" + info->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string write_file(const fs::path& path, const std::string& text) {
  std::ofstream(path) << text;
  return path.string();
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The UsageError message of load_train_config(path, overrides), or "" when it loads.
std::string load_error(const std::string& path, const std::vector<std::string>& overrides = {}) {
  try {
    load_train_config(path, overrides);
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

void expect_same_optim(const OptimConfig& a, const OptimConfig& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.lr, b.lr);
  EXPECT_EQ(a.weight_decay, b.weight_decay);
  EXPECT_EQ(a.beta1, b.beta1);
  EXPECT_EQ(a.beta2_adam, b.beta2_adam);
  EXPECT_EQ(a.eps, b.eps);
  EXPECT_EQ(a.momentum, b.momentum);
  EXPECT_EQ(a.nesterov, b.nesterov);
  EXPECT_EQ(a.ns_steps, b.ns_steps);
  EXPECT_EQ(a.scale, b.scale);
  EXPECT_EQ(a.beta2, b.beta2);
  EXPECT_EQ(a.update_proj_gap, b.update_proj_gap);
  EXPECT_EQ(a.conda_scale, b.conda_scale);
  EXPECT_EQ(a.proj_type, b.proj_type);
  EXPECT_EQ(a.correct_bias, b.correct_bias);
  EXPECT_EQ(a.ortho_scheme, b.ortho_scheme);
  EXPECT_EQ(a.adam.lr, b.adam.lr);
  EXPECT_EQ(a.adam.beta1, b.adam.beta1);
  EXPECT_EQ(a.adam.beta2, b.adam.beta2);
  EXPECT_EQ(a.adam.eps, b.adam.eps);
  EXPECT_EQ(a.adam.weight_decay, b.adam.weight_decay);
  EXPECT_EQ(a.matrix_params, b.matrix_params);
  EXPECT_EQ(a.adam_params, b.adam_params);
}

void expect_same_config(const TrainConfig& a, const TrainConfig& b) {
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.data, b.data);
  EXPECT_EQ(a.train, b.train);
  EXPECT_EQ(a.checkpoint, b.checkpoint);
  EXPECT_EQ(a.runtime, b.runtime);
  expect_same_optim(a.optim, b.optim);
}

TrainConfig roundtrip(const TrainConfig& c, const fs::path& dir) {
  return load_train_config(write_file(dir / "resolved.toml", c.resolved_toml()));
}

}  // namespace

// ---------------------------------------------------------------- defaults and files

TEST(TrainConfig, DefaultsWithoutFile) {
  const TrainConfig c = load_train_config("", {});
  EXPECT_EQ(c.model, ModelSection{});
  EXPECT_EQ(c.data, DataSection{});
  EXPECT_EQ(c.train, TrainSection{});
  EXPECT_EQ(c.checkpoint, CheckpointSection{});
  EXPECT_EQ(c.runtime, RuntimeSection{});
  expect_same_optim(c.optim, OptimConfig{});
  EXPECT_EQ(c.model.init_from, "");
  EXPECT_EQ(c.data.path, "builtin:synthetic");
  EXPECT_EQ(c.train.grad_clip, 0.0);
  EXPECT_EQ(c.train.metrics, "");
  EXPECT_EQ(c.train.nan_policy, NanPolicy::Stop);
  EXPECT_EQ(c.runtime.sharding(), "full");
  EXPECT_TRUE(c.runtime.reshard_after_forward);
  EXPECT_EQ(c.source, "");
}

// runtime.comm defaults to auto (CPU: MPI; GPU: NCCL unless ranks share a GPU, decided at start); auto and mpi
// are valid on either backend, nccl only on cuda; the value round-trips through the resolved TOML.
TEST(TrainConfig, CommDefaultsToAuto) {
  EXPECT_EQ(load_train_config("", {}).runtime.comm, CommBackend::Auto);
  EXPECT_EQ(load_train_config("", {"--runtime.comm=mpi"}).runtime.comm, CommBackend::Mpi);
  EXPECT_EQ(load_train_config("", {"--runtime.backend=cuda", "--runtime.comm=auto"}).runtime.comm, CommBackend::Auto);
  const TrainConfig c = load_train_config("", {"--runtime.backend=cuda"});
  EXPECT_NE(c.resolved_toml().find("comm = \"auto\""), std::string::npos) << c.resolved_toml();
}

TEST(TrainConfig, OverlapAutoIsOnForCudaAndOffForCpu) {
  EXPECT_EQ(load_train_config("", {}).runtime.overlap, Overlap::Auto);
  EXPECT_FALSE(load_train_config("", {}).runtime.overlap_enabled());
  EXPECT_TRUE(load_train_config("", {"--runtime.backend=cuda"}).runtime.overlap_enabled());
  EXPECT_TRUE(load_train_config("", {"--runtime.overlap=on"}).runtime.overlap_enabled());
  EXPECT_FALSE(load_train_config("", {"--runtime.backend=cuda", "--runtime.overlap=off"}).runtime.overlap_enabled());
}

TEST(TrainConfig, AttentionKernelsAreAutoFlashOrGemm) {
  EXPECT_EQ(load_train_config("", {}).runtime.attention, AttentionKernels::Auto);
  EXPECT_EQ(load_train_config("", {"--runtime.attention=flash"}).runtime.attention, AttentionKernels::Flash);
  const TrainConfig c = load_train_config("", {"--runtime.attention=gemm"});
  EXPECT_EQ(c.runtime.attention, AttentionKernels::Gemm);
  EXPECT_NE(c.resolved_toml().find("attention = \"gemm\""), std::string::npos) << c.resolved_toml();
  EXPECT_NE(load_error("", {"--runtime.attention=fast"}).find("--runtime.attention"), std::string::npos);
}

TEST(TrainConfig, ParsesEverySectionOfAFile) {
  const fs::path dir = scratch_dir();
  const std::string path = write_file(dir / "cfg.toml", R"(
[model]
init_from = "gpt2_124M.bin"
L = 2
C = 64
NH = 4
V = 256
Vp = 320
maxT = 128
seed = 7

[data]
path = "data/shard_*.bin"
order = "shuffled"
seed = 11

[train]
batch_size = 8
seq_len = 64
grad_accum = 3
steps = 50
schedule = "cosine"
warmup_steps = 5
min_lr_ratio = 0.1
grad_clip = 1     # an integer is a fine number
seed = 3
metrics = "runs/m.jsonl"
log_every = 2
nan_policy = "skip"

[optim]
name = "normuon"
lr = 0.03
betas = [0.8, 0.99]
nesterov = false
ns_steps = 6
scale = "paper"
adam_lr = 3e-3
adam_betas = [0.9, 0.95]
matrix_params = ["h.*.attn.*"]
adam_params = "lm_head"   # one pattern is a list of one

[checkpoint]
dir = "ck"
every = 100
keep = 2
resume = "auto"

[runtime]
backend = "cuda"
comm = "nccl"
sharding = "hybrid:4"
param_dtype = "bf16"
reduce_dtype = "f32"
reshard_after_forward = false
threads = 8
)");
  const TrainConfig c = load_train_config(path, {});
  EXPECT_EQ(c.source, path);
  EXPECT_EQ(c.model.init_from, "gpt2_124M.bin");
  EXPECT_EQ(c.model.L, 2);
  EXPECT_EQ(c.model.C, 64);
  EXPECT_EQ(c.model.NH, 4);
  EXPECT_EQ(c.model.V, 256);
  EXPECT_EQ(c.model.Vp, 320);
  EXPECT_EQ(c.model.maxT, 128);
  EXPECT_EQ(c.model.seed, 7u);
  EXPECT_EQ(c.data.path, "data/shard_*.bin");
  EXPECT_EQ(c.data.order, DataOrder::Shuffled);
  EXPECT_EQ(c.data.seed, 11u);
  EXPECT_EQ(c.train.batch_size, 8);
  EXPECT_EQ(c.train.seq_len, 64);
  EXPECT_EQ(c.train.grad_accum, 3);
  EXPECT_EQ(c.train.steps, 50);
  EXPECT_EQ(c.train.schedule, LrSchedule::Cosine);
  EXPECT_EQ(c.train.warmup_steps, 5);
  EXPECT_EQ(c.train.min_lr_ratio, 0.1);
  EXPECT_EQ(c.train.grad_clip, 1.0);
  EXPECT_EQ(c.train.seed, 3u);
  EXPECT_EQ(c.train.metrics, "runs/m.jsonl");
  EXPECT_EQ(c.train.log_every, 2);
  EXPECT_EQ(c.train.nan_policy, NanPolicy::Skip);
  EXPECT_EQ(c.optim.name, "normuon");
  EXPECT_EQ(c.optim.matrix_rule(), RuleKind::NorMuon);
  EXPECT_EQ(c.optim.lr, 0.03);
  EXPECT_EQ(c.optim.beta1, 0.8);
  EXPECT_EQ(c.optim.beta2_adam, 0.99);
  EXPECT_FALSE(c.optim.nesterov);
  EXPECT_EQ(c.optim.ns_steps, 6);
  EXPECT_EQ(c.optim.scale, MatrixScale::Paper);
  EXPECT_EQ(c.optim.adam.lr, 3e-3);
  EXPECT_EQ(c.optim.adam.beta2, 0.95);
  EXPECT_EQ(c.optim.matrix_params, std::vector<std::string>{"h.*.attn.*"});
  EXPECT_EQ(c.optim.adam_params, std::vector<std::string>{"lm_head"});
  EXPECT_EQ(c.checkpoint.dir, "ck");
  EXPECT_EQ(c.checkpoint.every, 100);
  EXPECT_EQ(c.checkpoint.keep, 2);
  EXPECT_EQ(c.checkpoint.resume, "auto");
  EXPECT_EQ(c.runtime.backend, Device::CUDA);
  EXPECT_EQ(c.runtime.comm, CommBackend::Nccl);
  EXPECT_EQ(c.runtime.hybrid_group_size, 4);
  EXPECT_EQ(c.runtime.sharding(), "hybrid:4");
  EXPECT_EQ(c.runtime.param_dtype, DType::BF16);
  EXPECT_EQ(c.runtime.reduce_dtype, DType::F32);
  EXPECT_FALSE(c.runtime.reshard_after_forward);
  EXPECT_EQ(c.runtime.threads, 8);
  EXPECT_EQ(c.tokens_per_step(2), 2 * 3 * 8 * 64);
  const Gpt2Config g = gpt2_config(c.model);
  EXPECT_EQ(g.describe(), "L=2 C=64 NH=4 V=256 Vp=320 maxT=128");
  EXPECT_EQ(g.origin, path);
}

// ---------------------------------------------------------------- overrides

TEST(TrainConfig, OverridesOfEveryType) {
  const fs::path dir = scratch_dir();
  const std::string path = write_file(dir / "cfg.toml", "[train]\nsteps = 10\n[optim]\nname = \"conda\"\n");
  const TrainConfig c = load_train_config(
      path, {"--train.steps=20",                        // int, beats the file
             "--train.min_lr_ratio=0.25",               // float
             "--optim.lr", "1e-3",                      // two-item form
             "--runtime.reshard_after_forward=false",   // bool
             "--optim.nesterov=0",                      // bool as 0/1
             "--model.init_from=m.bin",                 // string
             "--train.schedule=linear",                 // enum
             "--optim.betas=0.85,0.97",                 // list of numbers
             "--optim.adam_betas=[0.8, 0.9]",           // brackets and spaces are fine
             "--optim.matrix_params=h.*.mlp.*, h.*.attn.*",  // list of strings
             "--optim.scale=0.5",                       // string-or-number: a number (conda)
             "--runtime.sharding=hybrid:2",
             "--data.seed=99",
             "--train.steps", "30"});                   // the last one wins
  EXPECT_EQ(c.train.steps, 30);
  EXPECT_EQ(c.train.min_lr_ratio, 0.25);
  EXPECT_EQ(c.optim.lr, 1e-3);
  EXPECT_FALSE(c.runtime.reshard_after_forward);
  EXPECT_FALSE(c.optim.nesterov);
  EXPECT_EQ(c.model.init_from, "m.bin");
  EXPECT_EQ(c.train.schedule, LrSchedule::Linear);
  EXPECT_EQ(c.optim.beta1, 0.85);
  EXPECT_EQ(c.optim.beta2_adam, 0.97);
  EXPECT_EQ(c.optim.adam.beta1, 0.8);
  EXPECT_EQ(c.optim.adam.beta2, 0.9);
  EXPECT_EQ(c.optim.matrix_params, (std::vector<std::string>{"h.*.mlp.*", "h.*.attn.*"}));
  EXPECT_EQ(c.optim.name, "conda");
  EXPECT_EQ(c.optim.conda_scale, 0.5);
  EXPECT_EQ(c.runtime.hybrid_group_size, 2);
  EXPECT_EQ(c.data.seed, 99u);

  // A string scale, an empty list, true as 1, a string key given an empty value.
  const TrainConfig d = load_train_config("", {"--optim.name=muon", "--optim.scale=moonlight",
                                               "--optim.adam_params=", "--optim.nesterov=1", "--train.metrics="});
  EXPECT_EQ(d.optim.scale, MatrixScale::Moonlight);
  EXPECT_TRUE(d.optim.adam_params.empty());
  EXPECT_TRUE(d.optim.nesterov);
  EXPECT_EQ(d.train.metrics, "");
}

TEST(TrainConfig, OverrideRecognition) {
  EXPECT_TRUE(is_config_override("--train.steps=3"));
  EXPECT_TRUE(is_config_override("--optim.lr"));
  EXPECT_FALSE(is_config_override("--config"));
  EXPECT_FALSE(is_config_override("--config=a.toml"));
  EXPECT_FALSE(is_config_override("train.steps=3"));
  EXPECT_FALSE(is_config_override("--.x"));
  EXPECT_FALSE(is_config_override("--x.=3"));
  const auto keys = train_config_keys();
  // [model] gained arch (the model family), [runtime] grad_accum_mode and activation_checkpointing.
  EXPECT_EQ(keys.size(), 14u + 3u + 15u + 6u + 21u + 6u + 13u);
  EXPECT_EQ(keys.front(), "model.init_from");
}

// ---------------------------------------------------------------- errors name the key and the source

TEST(TrainConfigErrors, FileErrorsNameFileSectionAndKey) {
  const fs::path dir = scratch_dir();
  const std::string p = (dir / "cfg.toml").string();

  write_file(p, "[train]\nbatch_size = \"four\"\n");
  EXPECT_EQ(load_error(p), p + ": [train] batch_size: expected an integer, got \"four\"");

  write_file(p, "[train]\nbatch_sise = 4\n");
  EXPECT_EQ(load_error(p), p + ": [train] batch_sise: unknown key (did you mean [train] batch_size?)");

  write_file(p, "[train]\nlr = 0.1\n");  // a key of another section
  EXPECT_EQ(load_error(p), p + ": [train] lr: unknown key (did you mean [optim] lr?)");

  write_file(p, "[optim]\nzzzzzzzz = 1\n");  // nothing close: no suggestion
  EXPECT_EQ(load_error(p), p + ": [optim] zzzzzzzz: unknown key");

  write_file(p, "[trian]\nsteps = 4\n");
  EXPECT_EQ(load_error(p), p + ": unknown section [trian] (known: model, data, train, optim, checkpoint, runtime)");

  write_file(p, "steps = 4\n");
  EXPECT_EQ(load_error(p), p + ": steps: a key outside any section (did you mean [train] steps?)");

  write_file(p, "[optim]\nbetas = 0.9\n");
  EXPECT_EQ(load_error(p), p + ": [optim] betas: expected a list of numbers, got 0.9");

  write_file(p, "[optim]\nlr = \"fast\"\n");
  EXPECT_EQ(load_error(p), p + ": [optim] lr: expected a number, got \"fast\"");

  write_file(p, "[optim]\nns_steps = 5.5\n");
  EXPECT_EQ(load_error(p), p + ": [optim] ns_steps: expected an integer, got 5.5");

  write_file(p, "[runtime]\nreshard_after_forward = \"yes\"\n");
  EXPECT_EQ(load_error(p), p + ": [runtime] reshard_after_forward: expected true or false, got \"yes\"");

  write_file(p, "[train]\nschedule = \"exponential\"\n");
  EXPECT_EQ(load_error(p), p + ": [train] schedule: 'exponential' is not constant, cosine or linear");

  write_file(p, "[optim]\nname = \"sgd\"\n");  // the optimizer's own message, behind the key's source
  EXPECT_EQ(load_error(p), p + ": [optim] name: 'sgd' is not adamw, muon, normuon or conda");

  write_file(p, "[optim]\nbetas = [0.9, 1.5]\n");
  EXPECT_EQ(load_error(p), p + ": [optim] betas[1]: 1.5 is not in [0, 1)");

  write_file(p, "[train]\nsteps = 4\nsteps = 5\n");  // TOML itself: one line with the position
  const std::string dup = load_error(p);
  EXPECT_EQ(dup.rfind(p + ":3:", 0), 0u) << dup;
  EXPECT_NE(dup.find("TOML syntax error"), std::string::npos) << dup;
}

TEST(TrainConfigErrors, OverrideErrorsNameTheFlag) {
  EXPECT_EQ(load_error("", {"--optim.lrr=0.1"}), "--optim.lrr: unknown key (did you mean --optim.lr?)");
  EXPECT_EQ(load_error("", {"--train.batch_size=four"}), "--train.batch_size: expected an integer, got \"four\"");
  EXPECT_EQ(load_error("", {"--train.min_lr_ratio=1.5"}), "--train.min_lr_ratio: must be in [0, 1], got 1.5");
  EXPECT_EQ(load_error("", {"--train.min_lr_ratio=nan"}), "--train.min_lr_ratio: expected a finite number, got \"nan\"");
  EXPECT_EQ(load_error("", {"--optim.betas=0.9;0.95"}),
            "--optim.betas: expected a comma-separated list of numbers, got \"0.9;0.95\"");
  EXPECT_EQ(load_error("", {"--optim.betas=0.9"}), "--optim.betas: expected two numbers [beta1, beta2], got [0.9]");
  EXPECT_EQ(load_error("", {"--runtime.reshard_after_forward=maybe"}),
            "--runtime.reshard_after_forward: expected true or false, got \"maybe\"");
  EXPECT_EQ(load_error("", {"--runtime.backend=tpu"}), "--runtime.backend: 'tpu' is not cpu or cuda");
  EXPECT_EQ(load_error("", {"--runtime.prefetch=-1"}).rfind("--runtime.prefetch: ", 0), 0u);
  EXPECT_EQ(load_error("", {"--runtime.comm_timeout_s=-5"}).rfind("--runtime.comm_timeout_s: ", 0), 0u);
  EXPECT_EQ(load_error("", {"--runtime.overlap=yes"}).rfind("--runtime.overlap: ", 0), 0u);
  EXPECT_EQ(load_error("", {"--runtime.comm=gloo"}), "--runtime.comm: 'gloo' is not auto, mpi or nccl");
  EXPECT_EQ(load_error("", {"--runtime.param_dtype=f16"}), "--runtime.param_dtype: 'f16' is not f32 or bf16");
  EXPECT_EQ(load_error("", {"--data.order=random"}), "--data.order: 'random' is not sequential or shuffled");
  EXPECT_EQ(load_error("", {"--train.nan_policy=ignore"}), "--train.nan_policy: 'ignore' is not stop or skip");
  EXPECT_EQ(load_error("", {"--runtime.sharding=hybrid:0"}),
            "--runtime.sharding: expected \"full\" or \"hybrid:S\" (S >= 1 ranks per shard group), got \"hybrid:0\"");
  EXPECT_EQ(load_error("", {"--train.steps=0"}), "--train.steps: must be >= 1, got 0");
  EXPECT_EQ(load_error("", {"--train.batch_size=-2"}), "--train.batch_size: must be >= 1, got -2");
  EXPECT_EQ(load_error("", {"--train.seq_len=0"}), "--train.seq_len: must be >= 1, got 0");
  EXPECT_EQ(load_error("", {"--train.grad_accum=0"}), "--train.grad_accum: must be >= 1, got 0");
  EXPECT_EQ(load_error("", {"--train.warmup_steps=-1"}), "--train.warmup_steps: must be >= 0, got -1");
  EXPECT_EQ(load_error("", {"--train.grad_clip=-0.5"}), "--train.grad_clip: must be >= 0, got -0.5");
  EXPECT_EQ(load_error("", {"--train.log_every=0"}), "--train.log_every: must be >= 1, got 0");
  EXPECT_EQ(load_error("", {"--optim.name=sgd"}), "--optim.name: 'sgd' is not adamw, muon, normuon or conda");
  EXPECT_EQ(load_error("", {"--optim.lr=-1"}), "--optim.lr: must be >= 0, got -1");
  EXPECT_EQ(load_error("", {"--optim.name=muon", "--optim.scale=0.3"}),
            "--optim.scale: a number is Conda's scale: write it as optim.conda_scale (then optim.name can change "
            "freely); optim.scale is Muon's and NorMuon's: keller, moonlight, none");
  EXPECT_EQ(load_error("", {"--optim.name=conda", "--optim.scale=0.3", "--optim.conda_scale=0.3"}),
            "--optim.scale: a number here is the old spelling of optim.conda_scale, which is set too; remove one");
  // Muon's and NorMuon's scale does not bother Conda, and Conda's has its own key.
  EXPECT_EQ(load_train_config("", {"--optim.name=conda", "--optim.scale=keller"}).optim.conda_scale, 0.25);
  EXPECT_EQ(load_train_config("", {"--optim.name=conda", "--optim.conda_scale=0.5"}).optim.conda_scale, 0.5);
  EXPECT_EQ(load_train_config("", {"--optim.name=conda", "--optim.scale=0.375"}).optim.conda_scale, 0.375);
  EXPECT_EQ(load_error("", {"--model.C=100", "--model.NH=3"}), "--model.C: 100 is not divisible by [model] NH = 3");
  EXPECT_EQ(load_error("", {"--model.arch=gpt3"}), "--model.arch: 'gpt3' is not gpt2 or llama");
  EXPECT_EQ(load_error("", {"--runtime.comm=nccl"}),
            "--runtime.comm: 'nccl' needs [runtime] backend = \"cuda\" (backend is \"cpu\")");
  EXPECT_EQ(load_error("", {"--train.steps"}), "--train.steps: missing value (--train.steps=VALUE)");
  EXPECT_EQ(load_error("", {"--train.steps", "--train.seq_len=4"}),
            "--train.steps: missing value (--train.steps=VALUE)");
  EXPECT_EQ(load_error("", {"--steps=3"}),
            "--steps: expected --section.key=value (sections: model, data, train, optim, checkpoint, runtime)");
  EXPECT_EQ(load_error("", {"--trian.steps=3"}),
            "--trian.steps: unknown section [trian] (known: model, data, train, optim, checkpoint, runtime)");
  EXPECT_EQ(load_error("", {"steps=3"}), "unexpected argument 'steps=3' (overrides are --section.key=value)");
}

TEST(TrainConfigErrors, CrossKeyErrorNamesTheFileWhenTheValueCameFromIt) {
  const fs::path dir = scratch_dir();
  const std::string p = write_file(dir / "cfg.toml", "[runtime]\ncomm = \"nccl\"\n");
  EXPECT_EQ(load_error(p), p + ": [runtime] comm: 'nccl' needs [runtime] backend = \"cuda\" (backend is \"cpu\")");
  EXPECT_EQ(load_error(p, {"--runtime.backend=cuda"}), "");
}

TEST(TrainConfigErrors, MissingFileNamesThePath) {
  const fs::path dir = scratch_dir();
  const std::string p = (dir / "nope.toml").string();
  EXPECT_EQ(load_error(p), "config file '" + p + "' not found");
}

// ---------------------------------------------------------------- resolved TOML

TEST(TrainConfig, ResolvedTomlRoundTripsEveryKey) {
  const fs::path dir = scratch_dir();
  // Every key away from its default (where the key allows it), awkward strings and doubles included.
  const TrainConfig c = load_train_config(
      "", {"--model.init_from=we \"quote\" \\ and\ttab.bin", "--model.L=3", "--model.C=96", "--model.NH=6",
           "--model.V=300", "--model.Vp=384", "--model.maxT=96", "--model.seed=123456789012",
           "--data.path=d/x_*.bin", "--data.order=shuffled", "--data.seed=5",
           "--train.batch_size=3", "--train.seq_len=48", "--train.grad_accum=2", "--train.steps=77",
           "--train.schedule=cosine", "--train.warmup_steps=7", "--train.min_lr_ratio=0.30000000000000004",
           "--train.grad_clip=1", "--train.seed=9", "--train.metrics=out/m.jsonl", "--train.log_every=3",
           "--train.nan_policy=skip",
           "--optim.name=normuon", "--optim.lr=0.1", "--optim.weight_decay=1e-5", "--optim.betas=0.81,0.991",
           "--optim.eps=1e-12", "--optim.momentum=0.9", "--optim.beta2=0.975", "--optim.nesterov=false",
           "--optim.ns_steps=4", "--optim.scale=paper", "--optim.update_proj_gap=7", "--optim.proj_type=left",
           "--optim.correct_bias=false", "--optim.ortho_scheme=gram", "--optim.adam_lr=0.0007",
           "--optim.adam_betas=0.7,0.8", "--optim.adam_eps=3e-9", "--optim.adam_weight_decay=0.125",
           "--optim.matrix_params=a.*,b", "--optim.adam_params=lm_head",
           "--checkpoint.dir=ck dir", "--checkpoint.every=10", "--checkpoint.keep=4", "--checkpoint.resume=auto",
           "--runtime.backend=cuda", "--runtime.comm=nccl", "--runtime.sharding=hybrid:3",
           "--runtime.param_dtype=bf16", "--runtime.reduce_dtype=bf16", "--runtime.reshard_after_forward=false",
           "--runtime.threads=6", "--runtime.comm_timeout_s=90.5", "--runtime.prefetch=2", "--runtime.overlap=on"});
  EXPECT_EQ(c.runtime.comm_timeout_s, 90.5);
  EXPECT_EQ(c.runtime.prefetch, 2);
  EXPECT_EQ(c.runtime.overlap, Overlap::On);
  const std::string text = c.resolved_toml();
  for (const std::string& k : train_config_keys()) {
    const std::string key = k.substr(k.find('.') + 1);
    EXPECT_NE(text.find("\n" + key + " = "), std::string::npos) << k << " missing from\n" << text;
  }
  EXPECT_NE(text.find("min_lr_ratio = 0.30000000000000004"), std::string::npos) << text;
  EXPECT_NE(text.find("grad_clip = 1.0"), std::string::npos) << text;
  EXPECT_NE(text.find("sharding = \"hybrid:3\""), std::string::npos) << text;

  const TrainConfig back = roundtrip(c, dir);
  expect_same_config(c, back);
  const std::string text_back = back.resolved_toml();  // the same but for the "# from" comment
  EXPECT_EQ(text_back.substr(text_back.find("[model]")), text.substr(text.find("[model]")));

  // Defaults, and Conda (whose scale is a number) round trip too.
  expect_same_config(load_train_config("", {}), roundtrip(load_train_config("", {}), dir));
  const TrainConfig conda = load_train_config("", {"--optim.name=conda", "--optim.scale=0.375"});
  const TrainConfig conda_back = roundtrip(conda, dir);
  expect_same_config(conda, conda_back);
  EXPECT_EQ(conda_back.optim.conda_scale, 0.375);
}

// ---------------------------------------------------------------- LR schedule

TEST(LrSchedule, WarmupThenConstant) {
  TrainConfig c;
  c.train.steps = 10;
  c.train.warmup_steps = 4;
  c.train.schedule = LrSchedule::Constant;
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 0), 0.25);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 1), 0.5);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 3), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 4), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 9), 1.0);
  c.train.warmup_steps = 0;
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 0), 1.0);
  EXPECT_THROW(lr_multiplier(c, -1), Error);
}

TEST(LrSchedule, CosineFromOneToMinAtTheLastStep) {
  TrainConfig c;
  c.train.steps = 11;
  c.train.warmup_steps = 2;
  c.train.min_lr_ratio = 0.1;
  c.train.schedule = LrSchedule::Cosine;
  // Warm-up: 1/2, 2/2. Decay over steps 2..10 (8 intervals): m = 0.1 + 0.9·(1 + cos(π·(s−2)/8))/2.
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 0), 0.5);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 1), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 2), 1.0);
  EXPECT_NEAR(lr_multiplier(c, 4), 0.1 + 0.9 * (1 + std::sqrt(0.5)) / 2, 1e-15);  // p = 1/4: cos = √2/2
  EXPECT_NEAR(lr_multiplier(c, 6), 0.55, 1e-15);                                 // p = 1/2: cos = 0
  EXPECT_NEAR(lr_multiplier(c, 8), 0.1 + 0.9 * (1 - std::sqrt(0.5)) / 2, 1e-15);  // p = 3/4
  EXPECT_NEAR(lr_multiplier(c, 10), 0.1, 1e-15);                                 // the last step
  EXPECT_NEAR(lr_multiplier(c, 15), 0.1, 1e-15);                                 // past the end: stays
  // Decreasing over the decay.
  for (std::int64_t s = 2; s < 10; ++s) EXPECT_GT(lr_multiplier(c, s), lr_multiplier(c, s + 1)) << s;
}

TEST(LrSchedule, LinearFromOneToMinAtTheLastStep) {
  TrainConfig c;
  c.train.steps = 5;
  c.train.warmup_steps = 0;
  c.train.min_lr_ratio = 0.2;
  c.train.schedule = LrSchedule::Linear;
  // Steps 0..4, 4 intervals: 1, 0.8, 0.6, 0.4, 0.2.
  const double expected[] = {1.0, 0.8, 0.6, 0.4, 0.2};
  for (int s = 0; s < 5; ++s) EXPECT_NEAR(lr_multiplier(c, s), expected[s], 1e-15) << s;
  // One step only, or warm-up to the end: the step after warm-up is the last one, at min_lr_ratio.
  c.train.steps = 1;
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 0), 0.2);
  c.train.steps = 4;
  c.train.warmup_steps = 3;
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 2), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 3), 0.2);
}

// ---------------------------------------------------------------- metrics

TEST(Metrics, LineFormatRoundTripsDoubles) {
  const double tricky = 0.1 + 0.2;  // 0.30000000000000004: needs 17 digits
  const std::string line = metrics_line(7, tricky, 1e-3, 2.5, 12345.678);
  EXPECT_EQ(line.rfind(R"({"step": 7, "loss": 0.30000000000000004, "lr": 0.001, "grad_norm": 2.5, )", 0), 0u) << line;
  const auto j = nlohmann::json::parse(line);
  ASSERT_TRUE(j["step"].is_number_integer());
  EXPECT_EQ(j["step"].get<std::int64_t>(), 7);
  EXPECT_EQ(j["loss"].get<double>(), tricky);  // bit-exact
  EXPECT_EQ(j["lr"].get<double>(), 1e-3);
  EXPECT_EQ(j["grad_norm"].get<double>(), 2.5);
  EXPECT_EQ(j["tokens_per_s"].get<double>(), 12345.678);
  const float f = 2.7182817f;  // a float passed as double reads back as the same float
  EXPECT_EQ(static_cast<float>(nlohmann::json::parse(metrics_line(1, f, 0, 0, 0))["loss"].get<double>()), f);
  // JSON has no NaN or Inf.
  const auto k = nlohmann::json::parse(metrics_line(2, std::nan(""), INFINITY, -INFINITY, 1.0));
  EXPECT_TRUE(k["loss"].is_null());
  EXPECT_TRUE(k["lr"].is_null());
  EXPECT_TRUE(k["grad_norm"].is_null());
  EXPECT_EQ(k["tokens_per_s"].get<double>(), 1.0);
}

TEST(Metrics, WriterCreatesDirectoriesTruncatesAndFlushes) {
  const fs::path dir = scratch_dir();
  const fs::path path = dir / "a" / "b" / "metrics.jsonl";
  {
    MetricsWriter w(path.string());
    w.write(1, 3.5, 0.02, 1.25, 1000.0);
    w.write(2, 3.25, 0.02, 1.0, 1100.0);
    // Flushed line by line: readable before the writer closes.
    EXPECT_EQ(read_text(path), metrics_line(1, 3.5, 0.02, 1.25, 1000.0) + "\n" +
                                   metrics_line(2, 3.25, 0.02, 1.0, 1100.0) + "\n");
  }
  {
    MetricsWriter w(path.string());  // a new run truncates
    w.write(1, 4.0, 0.01, 0.5, 10.0);
  }
  std::istringstream lines(read_text(path));
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["step"].get<int>(), 1);
    EXPECT_EQ(j["loss"].get<double>(), 4.0);
    ++n;
  }
  EXPECT_EQ(n, 1);
}

TEST(Metrics, AValidationLossIsOneMoreField) {
  const auto j = nlohmann::json::parse(metrics_line(3, 2.5, 0.01, 1.0, 10.0, 2.75));
  EXPECT_EQ(j["val_loss"].get<double>(), 2.75);
  EXPECT_FALSE(nlohmann::json::parse(metrics_line(3, 2.5, 0.01, 1.0, 10.0)).contains("val_loss"));
}

TEST(Metrics, AResumedRunKeepsTheLinesUpToItsStepAndAppends) {
  const fs::path path = scratch_dir() / "metrics.jsonl";
  {
    MetricsWriter w(path.string());
    for (int s = 1; s <= 20; ++s) w.write(s, 10.0 - 0.1 * s, 0.01, 1.0, 100.0);  // a run checkpointed at 10, died at 20
  }
  {
    MetricsWriter w(path.string(), 10);  // resumed from the checkpoint of step 10
    for (int s = 11; s <= 25; ++s) w.write(s, 5.0, 0.01, 1.0, 100.0);
  }
  std::istringstream lines(read_text(path));
  std::string line;
  std::vector<int> steps;
  while (std::getline(lines, line)) steps.push_back(nlohmann::json::parse(line)["step"].get<int>());
  std::vector<int> want(25);
  for (int i = 0; i < 25; ++i) want[i] = i + 1;
  EXPECT_EQ(steps, want);  // every step exactly once, in order
  EXPECT_NE(read_text(path).find(metrics_line(10, 10.0 - 0.1 * 10, 0.01, 1.0, 100.0)), std::string::npos);
}

TEST(Metrics, UnwritablePathIsAnErrorNamingIt) {
  const fs::path dir = scratch_dir();
  const fs::path blocker = dir / "file";
  write_file(blocker, "x");
  const std::string path = (blocker / "metrics.jsonl").string();  // parent is a regular file
  try {
    MetricsWriter w(path);
    FAIL() << "no error";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("'" + path + "'"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- the example configs

TEST(ConfigReference, EveryKeyIsDescribedAndDocsConfigMdIsCurrent) {
  EXPECT_EQ(undocumented_config_keys(), "");
  const std::string want = config_reference_markdown();
  EXPECT_EQ(read_text(fs::path(ORTHOSHARD_SOURCE_DIR) / "docs/config.md"), want)
      << "docs/config.md is stale: regenerate it with `orthoshard train --config-reference > docs/config.md`";
  for (const auto& key : train_config_keys())
    EXPECT_NE(config_reference_text().find(key), std::string::npos) << key << " is missing from train --help";
}

TEST(ExampleConfigs, EveryOptimizerRunsOnEveryShippedConfig) {
  // Switching optim.name on a shipped configuration needs no other edit (optimizer keys do not collide).
  for (const auto& e : fs::directory_iterator(fs::path(ORTHOSHARD_SOURCE_DIR) / "launch/configs")) {
    if (e.path().extension() != ".toml") continue;
    for (const char* name : {"adamw", "muon", "normuon", "conda"}) {
      try {
        const TrainConfig c = load_train_config(e.path().string(), {std::string("--optim.name=") + name});
        EXPECT_EQ(c.optim.name, name);
      } catch (const std::exception& ex) {
        ADD_FAILURE() << e.path() << " with optim.name = " << name << ": " << ex.what();
      }
    }
  }
}

TEST(ExampleConfigs, LoadWithoutError) {
  const fs::path root = ORTHOSHARD_SOURCE_DIR;
  const TrainConfig smoke = load_train_config((root / "launch/configs/smoke.toml").string(), {});
  EXPECT_EQ(smoke.data.path, "builtin:synthetic");
  EXPECT_EQ(smoke.optim.name, "normuon");
  EXPECT_EQ(gpt2_config(smoke.model).describe(), "L=2 C=64 NH=4 V=256 Vp=256 maxT=64");
  EXPECT_LE(smoke.train.seq_len, smoke.model.maxT);
  EXPECT_NO_THROW(gpt2_config(smoke.model).validate());
  EXPECT_EQ(smoke.runtime.backend, Device::CPU);

  const TrainConfig big = load_train_config((root / "launch/configs/gpt2-124m.toml").string(), {});
  EXPECT_EQ(gpt2_config(big.model).describe(), "L=12 C=768 NH=12 V=50257 Vp=50304 maxT=1024");
  EXPECT_EQ(big.train.seq_len, 1024);
  EXPECT_EQ(big.optim.name, "normuon");
  EXPECT_EQ(big.runtime.backend, Device::CUDA);
  EXPECT_EQ(big.runtime.param_dtype, DType::BF16);
  EXPECT_EQ(big.runtime.reduce_dtype, DType::BF16);
  EXPECT_EQ(big.tokens_per_step(8), 524288);

  const TrainConfig ls = load_train_config((root / "launch/configs/llama-smoke.toml").string(), {});
  EXPECT_EQ(ls.model.arch, "llama");
  EXPECT_EQ(make_model(ls.model)->describe(), "LLaMA L=2 C=64 NH=4 NKV=2 FF=176 V=256 Vp=256 maxT=64 untied");
  // GaLore's and Conda's LLaMA shapes at sequence length 256.
  const std::pair<const char*, const char*> papers[] = {
      {"llama-60m.toml", "LLaMA L=8 C=512 NH=8 NKV=8 FF=1376 V=32000 Vp=32000 maxT=256 untied"},
      {"llama-130m.toml", "LLaMA L=12 C=768 NH=12 NKV=12 FF=2048 V=32000 Vp=32000 maxT=256 untied"}};
  for (const auto& [file, want] : papers) {
    const TrainConfig c = load_train_config((root / "launch/configs" / file).string(), {});
    EXPECT_EQ(make_model(c.model)->describe(), want) << file;
    EXPECT_EQ(c.train.seq_len, 256) << file;
    EXPECT_EQ(c.optim.name, "normuon") << file;
  }
}
