// The trainer at 1-4 ranks: N ranks reproduce one rank with the same global batch (every optimizer),
// grad_accum K x batch B equals batch K·B, hybrid sharding equals full sharding, bf16 transport stays
// close, the shared GPT-2 reference's AdamW losses are reproduced, and the NaN policy acts.
#include "tests/mpi_test.hpp"
#include "tests/test_util.hpp"

#include "launch/trainer/train.hpp"
#include "runtime/core/error.hpp"
#include "runtime/io/h5file.hpp"

#include <nlohmann/json.hpp>

#include <cmath>

using namespace orthoshard;
using orthoshard::testing::max_rel;
using orthoshard::testing::MpiTest;

namespace {
const std::string kData = ORTHOSHARD_TESTDATA;

TrainConfig tiny(const std::string& optimizer, std::vector<std::string> extra = {}) {
  std::vector<std::string> o = {"--model.L=2", "--model.C=32", "--model.NH=4", "--model.V=256", "--model.Vp=256",
                                "--model.maxT=32", "--train.seq_len=16", "--train.batch_size=2", "--train.steps=10",
                                "--train.log_every=100", "--optim.name=" + optimizer, "--optim.lr=0.01",
                                "--optim.update_proj_gap=3"};
  if (optimizer == "conda") o.push_back("--optim.scale=0.25");
  o.insert(o.end(), extra.begin(), extra.end());
  return load_train_config("", o);
}

// The same global batch on one rank: K·W micro-batches of B instead of W ranks x K.
TrainResult one_rank(Communicator& world, TrainConfig cfg) {
  cfg.train.grad_accum *= world.size();
  auto self = world.split(world.rank(), 0);
  return train(*self, cfg, {true, true});
}
}  // namespace

TEST_F(MpiTest, NRanksReproduceOneRankForEveryOptimizer) {
  for (const char* name : {"adamw", "muon", "normuon", "conda"}) {
    const TrainConfig cfg = tiny(name);
    const TrainResult dist = train(comm(), cfg, {true, true});
    const TrainResult ref = one_rank(comm(), cfg);
    EXPECT_LT(max_rel(dist.losses, ref.losses), 1e-5) << name;
    EXPECT_LT(dist.losses.back(), dist.losses.front()) << name << " does not learn";
  }
}

TEST_F(MpiTest, ValidationLossIsTheSameAtAnyWorldSize) {
  // lr 0: the model stays the initial one, so every validation evaluates the same model, at N ranks and at one.
  // 5 batches of 2 sequences = 10 sequences: uneven over 3 and 4 ranks.
  const TrainConfig cfg = tiny("adamw", {"--optim.lr=0", "--train.steps=4", "--eval.every=2", "--eval.batches=5"});
  const TrainResult dist = train(comm(), cfg, {true, true});
  const TrainResult ref = one_rank(comm(), cfg);
  ASSERT_EQ(dist.val_losses.size(), 2u);  // after steps 2 and 4
  ASSERT_EQ(ref.val_losses.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(dist.val_losses[i].first, static_cast<std::int64_t>(2 * (i + 1)));
    EXPECT_NEAR(dist.val_losses[i].second, ref.val_losses[i].second, 1e-6 * ref.val_losses[i].second);
    EXPECT_NEAR(dist.val_losses[i].second, ref.val_losses[0].second, 1e-6 * ref.val_losses[0].second);
  }
  // An untrained byte-level model is close to uniform over V = 256: ln 256 = 5.545.
  EXPECT_NEAR(ref.val_losses[0].second, std::log(256.0), 0.1);
  // With training the validation loss falls, and "none" turns it off.
  const TrainResult trained = train(comm(), tiny("adamw", {"--eval.every=5"}), {true, true});
  ASSERT_EQ(trained.val_losses.size(), 2u);
  EXPECT_LT(trained.val_losses[1].second, ref.val_losses[0].second);
  EXPECT_TRUE(train(comm(), tiny("adamw", {"--eval.path=none"}), {true, true}).val_losses.empty());
}

TEST_F(MpiTest, GradAccumulationEqualsTheLargerBatch) {
  const TrainResult k2 = train(comm(), tiny("normuon", {"--train.grad_accum=2", "--train.batch_size=1"}), {true, true});
  // Same tokens: with W ranks, K = 2 micro-batches of 1 sequence cover the same window as K = 1 of 2,
  // but in a different rank order; compare against one rank doing both.
  const TrainResult ref = one_rank(comm(), tiny("normuon", {"--train.grad_accum=2", "--train.batch_size=1"}));
  EXPECT_LT(max_rel(k2.losses, ref.losses), 1e-5);
  if (comm().size() == 1) {
    const TrainResult b2 = train(comm(), tiny("normuon", {"--train.batch_size=2"}), {true, true});
    EXPECT_LT(max_rel(k2.losses, b2.losses), 1e-5);
  }
}

// Micro-batches reduced one by one into the shards (sharded, the default) or kept whole and reduced once per step
// (unsharded): the same with one micro-batch, and both reproduce one rank with four.
TEST_F(MpiTest, ShardedAndUnshardedGradientAccumulation) {
  const TrainResult s1 = train(comm(), tiny("normuon"), {true, true});
  const TrainResult u1 = train(comm(), tiny("normuon", {"--runtime.grad_accum_mode=unsharded"}), {true, true});
  EXPECT_EQ(s1.losses, u1.losses);
  for (const char* mode : {"sharded", "unsharded"}) {
    const std::vector<std::string> k4 = {"--train.grad_accum=4", "--train.batch_size=1",
                                         std::string("--runtime.grad_accum_mode=") + mode};
    const TrainResult got = train(comm(), tiny("muon", k4), {true, true});
    const TrainResult ref = one_rank(comm(), tiny("muon", k4));
    EXPECT_LT(max_rel(got.losses, ref.losses), 1e-5) << mode;
    EXPECT_LT(got.losses.back(), got.losses.front()) << mode << " does not learn";
  }
}

// Blocks recompute their forward in the backward: the same losses bit for bit.
TEST_F(MpiTest, ActivationCheckpointingGivesTheSameLosses) {
  for (const char* name : {"adamw", "normuon"}) {
    const TrainResult a = train(comm(), tiny(name, {"--train.grad_accum=2"}), {true, true});
    const TrainResult b =
        train(comm(), tiny(name, {"--train.grad_accum=2", "--runtime.activation_checkpointing=blocks"}), {true, true});
    EXPECT_EQ(a.losses, b.losses) << name;
    EXPECT_EQ(a.grad_norms, b.grad_norms) << name;
  }
}

TEST_F(MpiTest, HybridShardingEqualsFullSharding) {
  if (comm().size() % 2 != 0) return;
  const TrainResult full = train(comm(), tiny("muon"), {true, true});
  const TrainResult hybrid = train(comm(), tiny("muon", {"--runtime.sharding=hybrid:2"}), {true, true});
  EXPECT_LT(max_rel(hybrid.losses, full.losses), 1e-5);
}

TEST_F(MpiTest, NoOverlapAndNoReshardGiveTheSameLosses) {
  const TrainResult a = train(comm(), tiny("normuon"), {true, true});
  const TrainResult b = train(
      comm(), tiny("normuon", {"--runtime.reshard_after_forward=false", "--runtime.overlap=off"}), {true, std::nullopt});
  EXPECT_EQ(a.losses, b.losses);
  const TrainResult c = train(comm(), tiny("normuon"), {true, std::nullopt});  // runtime.overlap = auto: blocking on the CPU
  EXPECT_EQ(a.losses, c.losses);
}

TEST_F(MpiTest, Bf16TransportStaysClose) {
  const TrainResult f = train(comm(), tiny("adamw"), {true, true});
  const TrainResult b =
      train(comm(), tiny("adamw", {"--runtime.param_dtype=bf16", "--runtime.reduce_dtype=bf16"}), {true, true});
  EXPECT_LT(max_rel(b.losses, f.losses), 2e-2);
}

TEST_F(MpiTest, Gpt2ReferenceAdamWLosses) {
  // Global batch 4 x 32 as the reference; with W ranks each rank takes 4/W sequences (W = 1, 2, 4).
  if (4 % comm().size() != 0) return;
  H5File ref = H5File::open_read(kData + "/gpt2/reference.h5");
  const auto hp = nlohmann::json::parse(ref.string_attr("/", "adamw"));
  Tensor want = ref.read("/adamw_losses", DType::F64);
  const TrainConfig cfg = load_train_config(
      "", {"--model.init_from=" + kData + "/gpt2/model.bin", "--data.path=" + kData + "/gpt2/tokens.bin",
           "--train.batch_size=" + std::to_string(4 / comm().size()), "--train.seq_len=32",
           "--train.steps=" + std::to_string(want.numel()), "--optim.name=adamw",
           "--optim.lr=" + hp["lr"].dump(), "--optim.betas=0.9,0.95", "--optim.eps=" + hp["eps"].dump(),
           "--optim.weight_decay=" + hp["weight_decay"].dump()});
  const TrainResult got = train(comm(), cfg, {true, true});
  std::vector<double> w(want.data<double>(), want.data<double>() + want.numel());
  EXPECT_LT(max_rel(got.losses, w), 1e-4);
}

TEST_F(MpiTest, NanPolicyStopsOrSkips) {
  // An absurd learning rate drives the weights to Inf; the next loss is NaN.
  const std::vector<std::string> blow = {"--optim.lr=1e38", "--train.steps=4"};
  try {
    train(comm(), tiny("adamw", blow), {true, true});
    ADD_FAILURE() << "a NaN loss must stop the run";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not finite"), std::string::npos) << e.what();
  }
  auto skip = blow;
  skip.push_back("--train.nan_policy=skip");
  const TrainResult r = train(comm(), tiny("adamw", skip), {true, true});
  EXPECT_EQ(r.losses.size(), 4u);
}

// ---- LLaMA from the shared Hugging Face-layout case (../shared/testdata/llama) ----

namespace {

// The reference's run: global batch B x T = 4 x 32 over W ranks and K micro-batches, from the model directory
// (train.global_batch_size: 3 ranks take 1, 1 and 2 of the 4 sequences).
TrainConfig llama_reference_config(Communicator&, const std::string& run, int K, std::vector<std::string> extra = {}) {
  H5File ref = H5File::open_read(kData + "/llama/reference.h5");
  const auto hp = nlohmann::json::parse(ref.string_attr("/", run));
  const std::int64_t steps = ref.read("/" + run + "_losses", DType::F64).numel();
  std::vector<std::string> o = {"--model.init_from=" + kData + "/llama", "--data.path=" + kData + "/llama/tokens.bin",
                                "--train.global_batch_size=" + std::to_string(4 / K),
                                "--train.grad_accum=" + std::to_string(K), "--train.seq_len=32",
                                "--train.steps=" + std::to_string(steps), "--eval.path=none", "--optim.lr=" + hp["lr"].dump(),
                                "--optim.weight_decay=" + hp["weight_decay"].dump()};
  if (run == "adamw") {
    o.insert(o.end(), {"--optim.name=adamw", "--optim.betas=" + hp["betas"][0].dump() + "," + hp["betas"][1].dump(),
                       "--optim.eps=" + hp["eps"].dump()});
  } else {
    o.insert(o.end(), {"--optim.name=muon", "--optim.momentum=" + hp["momentum"].dump(),
                       "--optim.nesterov=" + hp["nesterov"].dump(), "--optim.ns_steps=" + hp["ns_steps"].dump(),
                       "--optim.scale=" + hp["scale"].get<std::string>(), "--optim.adam_lr=" + hp["adam_lr"].dump(),
                       "--optim.adam_betas=" + hp["adam_betas"][0].dump() + "," + hp["adam_betas"][1].dump(),
                       "--optim.adam_eps=" + hp["adam_eps"].dump(),
                       "--optim.adam_weight_decay=" + hp["adam_weight_decay"].dump()});
  }
  o.insert(o.end(), extra.begin(), extra.end());
  return load_train_config("", o);
}

std::vector<double> llama_reference_losses(const std::string& run) {
  H5File ref = H5File::open_read(kData + "/llama/reference.h5");
  const Tensor t = ref.read("/" + run + "_losses", DType::F64);
  return {t.data<double>(), t.data<double>() + t.numel()};
}

}  // namespace

TEST_F(MpiTest, LlamaReferenceAdamWAndMuonLosses) {
  // Losses of the float64 reference run within 1e-4, from the Hugging Face directory, at any world size (the
  // 4 sequences split unevenly over 3 ranks); Muon on the 2-D layer weights and AdamW on the embedding, head and
  // norms checks the routing by role.
  for (const char* run : {"adamw", "muon"}) {
    const TrainResult got = train(comm(), llama_reference_config(comm(), run, 1), {true, true});
    EXPECT_LT(max_rel(got.losses, llama_reference_losses(run)), 1e-4) << run;
  }
  if (comm().size() <= 2) {  // 2 micro-batches of 2 sequences
    const TrainResult got = train(comm(), llama_reference_config(comm(), "adamw", 2), {true, true});
    EXPECT_LT(max_rel(got.losses, llama_reference_losses("adamw")), 1e-4) << "grad_accum 2";
  }
}

TEST_F(MpiTest, LlamaNRanksReproduceOneRankForEveryOptimizer) {
  // Grouped-query attention (NKV = 2 of 4 heads), tied and untied embeddings; at 3 ranks every shard is uneven.
  for (const char* tie : {"false", "true"})
    for (const char* name : {"adamw", "muon", "normuon", "conda"}) {
      const TrainConfig cfg = tiny(name, {"--model.arch=llama", "--model.NKV=2", "--model.FF=48",
                                          std::string("--model.tie_embeddings=") + tie, "--train.steps=6"});
      const TrainResult dist = train(comm(), cfg, {true, true});
      const TrainResult ref = one_rank(comm(), cfg);
      EXPECT_LT(max_rel(dist.losses, ref.losses), 1e-5) << name << " tied=" << tie;
      EXPECT_LT(dist.losses.back(), dist.losses.front()) << name << " tied=" << tie;
    }
}

TEST_F(MpiTest, GlobalBatchSplitsUnevenlyAndEqualsOneRank) {
  // train.global_batch_size = 5 sequences at any world size (at 3 ranks: 1, 2, 2; at 4: 1, 1, 1, 2): the losses of
  // one rank taking all 5, for every optimizer, with gradient accumulation too.
  for (const char* name : {"adamw", "normuon"}) {
    const std::vector<std::string> g5 = {"--train.global_batch_size=5", "--train.grad_accum=2", "--train.steps=5"};
    const TrainResult dist = train(comm(), tiny(name, g5), {true, true});
    auto self = comm().split(comm().rank(), 0);
    const TrainResult ref = train(*self, tiny(name, g5), {true, true});
    EXPECT_LT(max_rel(dist.losses, ref.losses), 1e-5) << name;
    EXPECT_LT(max_rel(dist.grad_norms, ref.grad_norms), 1e-4) << name;
  }
  if (comm().size() > 1) {
    try {
      train(comm(), tiny("adamw", {"--train.global_batch_size=" + std::to_string(comm().size() - 1)}), {true, true});
      ADD_FAILURE() << "a global batch smaller than the ranks must be refused";
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find("is smaller than the"), std::string::npos) << e.what();
    }
  }
}
