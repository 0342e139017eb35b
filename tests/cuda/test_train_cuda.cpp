// `orthoshard train` with runtime.backend = cuda at 1-4 ranks against the CPU trainer and the shared GPT-2
// reference: f32 on the GPU reproduces the CPU run for every optimizer, bf16 stays close, the reference's AdamW
// losses come out, a GPU run resumed from its checkpoint (on the GPU, or on the CPU) continues the same run,
// gradient accumulation, hybrid sharding, overlap/reshard settings and the NaN policy behave as on the CPU. With
// one GPU for several ranks the tests use runtime.comm = mpi (NCCL needs a GPU per rank). Every test
// skips where a rank sees no GPU.
#include "tests/mpi_test.hpp"
#include "tests/test_util.hpp"

#include "launch/trainer/train.hpp"
#include "runtime/checkpoint/commit.hpp"
#include "runtime/core/error.hpp"
#include "runtime/io/h5file.hpp"
#include "runtime/cuda/device.hpp"

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>

#include <unistd.h>

using namespace orthoshard;
using orthoshard::testing::max_rel;
using orthoshard::testing::MpiTest;

namespace {

std::string testdata() {
  const char* env = std::getenv("ORTHOSHARD_TESTDATA");
  return env && *env ? env : ORTHOSHARD_TESTDATA;
}

// NCCL when every rank of this node can have its own GPU, else MPI through host staging.
std::string comm_for(Communicator& world) {
#if ORTHOSHARD_HAVE_NCCL
  return cuda::device_count() >= world.local_size() ? "nccl" : "mpi";
#else
  (void)world;
  return "mpi";
#endif
}

class CudaTrainTest : public MpiTest {
 protected:
  void SetUp() override {
    const cuda::DeviceQuery q = cuda::query_devices();
    const double none = comm().all_reduce_scalar(q.count == 0 ? 1.0 : 0.0, ReduceOp::Max);
    if (none > 0) GTEST_SKIP() << "no CUDA device on some rank (" << (q.count ? "another rank" : q.why_none) << ")";
  }
  std::vector<std::string> gpu(const std::string& dtype) {
    return {"--runtime.backend=cuda", "--runtime.comm=" + comm_for(comm()), "--runtime.param_dtype=" + dtype,
            "--runtime.reduce_dtype=" + dtype};
  }
};

TrainConfig tiny(const std::string& optimizer, std::vector<std::string> extra = {}) {
  std::vector<std::string> o = {"--model.L=2", "--model.C=64", "--model.NH=4", "--model.V=256", "--model.Vp=256",
                                "--model.maxT=32", "--train.seq_len=32", "--train.batch_size=2", "--train.steps=8",
                                "--train.log_every=100", "--optim.name=" + optimizer, "--optim.lr=0.01",
                                "--optim.update_proj_gap=3",
                                "--eval.path=none"};  // (validation: its own test below; on the emulator it is slow)
  if (optimizer == "conda") o.push_back("--optim.scale=0.25");
  o.insert(o.end(), extra.begin(), extra.end());
  return load_train_config("", o);
}

std::vector<std::string> plus(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

TEST_F(CudaTrainTest, F32OnTheGpuReproducesTheCpuForEveryOptimizer) {
  for (const char* name : {"adamw", "muon", "normuon", "conda"}) {
    const TrainResult cpu = train(comm(), tiny(name), {true, true});
    const TrainResult dev = train(comm(), tiny(name, gpu("f32")), {true, true});
    const double rel = max_rel(dev.losses, cpu.losses);
    if (comm().rank() == 0) std::printf("  %-8s f32 GPU vs CPU: max relative loss difference %.3g\n", name, rel);
    EXPECT_LT(rel, 1e-4) << name;
    EXPECT_LT(dev.losses.back(), dev.losses.front()) << name << " does not learn on the GPU";
  }
}

TEST_F(CudaTrainTest, ValidationOnTheGpuEqualsTheCpu) {
  // The validation pass (one sequence per forward, split over the ranks) on the GPU gives the CPU's loss.
  const std::vector<std::string> v = {"--eval.path=builtin:synthetic:val", "--eval.batches=2", "--train.steps=2"};
  const TrainResult cpu = train(comm(), tiny("adamw", v), {true, true});
  const TrainResult dev = train(comm(), tiny("adamw", plus(v, gpu("f32"))), {true, true});
  ASSERT_EQ(cpu.val_losses.size(), 1u);
  ASSERT_EQ(dev.val_losses.size(), 1u);
  EXPECT_NEAR(dev.val_losses[0].second, cpu.val_losses[0].second, 1e-4 * cpu.val_losses[0].second);
}

TEST_F(CudaTrainTest, Bf16StaysCloseToTheCpu) {
  // A trajectory without loss spikes: at lr 0.01 AdamW's run at 3 ranks spikes (step 5 or 6, gradient norm 13 to
  // 35), where Adam turns bf16 rounding of tiny gradient components into full-size updates, and the spike step's
  // loss moves by 1-15% with any bf16 change (on the CPU as on the GPU, with either attention): the comparison
  // would measure the spike. Clipped, at lr 0.003 both attention paths stay within 0.2% at 1-4 ranks.
  const std::vector<std::string> clip = {"--train.grad_clip=1.0", "--optim.lr=0.003"};
  for (const char* name : {"adamw", "normuon"}) {
    const TrainResult cpu = train(comm(), tiny(name, clip), {true, true});
    const TrainResult dev = train(comm(), tiny(name, plus(gpu("bf16"), clip)), {true, true});
    const double rel = max_rel(dev.losses, cpu.losses);
    if (comm().rank() == 0) std::printf("  %-8s bf16 GPU vs f32 CPU: max relative loss difference %.3g\n", name, rel);
    EXPECT_LT(rel, 2e-2) << name;
  }
  // Four bf16 micro-batches summed in fp32 on the GPU, against the CPU (which sums in fp32 too).
  const auto accum = plus(clip, {"--train.grad_accum=4", "--train.batch_size=1"});
  const TrainResult cpu = train(comm(), tiny("adamw", accum), {true, true});
  const TrainResult dev = train(comm(), tiny("adamw", plus(gpu("bf16"), accum)), {true, true});
  const double rel = max_rel(dev.losses, cpu.losses);
  if (comm().rank() == 0) std::printf("  adamw    bf16 GPU vs f32 CPU, grad_accum 4: max relative loss difference %.3g\n", rel);
  EXPECT_LT(rel, 2e-2);
}

TEST_F(CudaTrainTest, Gpt2ReferenceAdamWLosses) {
  if (4 % comm().size() != 0) GTEST_SKIP() << "the reference's global batch of 4 does not split over " << comm().size();
  const std::string data = testdata();
  H5File ref = H5File::open_read(data + "/gpt2/reference.h5");
  const auto hp = nlohmann::json::parse(ref.string_attr("/", "adamw"));
  Tensor want = ref.read("/adamw_losses", DType::F64);
  const std::vector<double> w(want.data<double>(), want.data<double>() + want.numel());
  const std::vector<std::string> base = {
      "--model.init_from=" + data + "/gpt2/model.bin", "--data.path=" + data + "/gpt2/tokens.bin",
      "--train.batch_size=" + std::to_string(4 / comm().size()), "--train.seq_len=32",
      "--train.steps=" + std::to_string(want.numel()), "--optim.name=adamw", "--optim.lr=" + hp["lr"].dump(),
      "--optim.betas=0.9,0.95", "--optim.eps=" + hp["eps"].dump(),
      "--optim.weight_decay=" + hp["weight_decay"].dump()};
  for (const auto& [dtype, tol] : {std::pair<std::string, double>{"f32", 1e-4}, {"bf16", 2e-2}}) {
    const TrainResult got = train(comm(), load_train_config("", plus(base, gpu(dtype))), {true, true});
    const double rel = max_rel(got.losses, w);
    if (comm().rank() == 0) std::printf("  reference AdamW losses, %s on the GPU: max relative difference %.3g\n",
                                        dtype.c_str(), rel);
    EXPECT_LT(rel, tol) << dtype;
  }
}

TEST_F(CudaTrainTest, ResumedRunContinuesOnTheGpuAndOnTheCpu) {
  // One directory per job (rank 0's pid), so concurrent runs at other rank counts do not collide.
  const auto pid = static_cast<long>(comm().all_reduce_scalar(comm().rank() == 0 ? ::getpid() : 0, ReduceOp::Sum));
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("orthoshard_cuda_resume_" + std::to_string(pid))).string();
  if (comm().rank() == 0) std::filesystem::remove_all(dir);
  comm().barrier();
  const std::vector<std::string> ck = {"--checkpoint.dir=" + dir, "--checkpoint.every=3", "--checkpoint.resume=none"};
  const auto g = gpu("f32");
  // Uninterrupted: 6 steps. Interrupted: 3 steps (saved), then resumed to 6 on the GPU and on the CPU.
  const TrainResult whole = train(comm(), tiny("conda", plus(g, {"--train.steps=6"})), {true, true});
  train(comm(), tiny("conda", plus(plus(g, ck), {"--train.steps=3"})), {true, true});
  const std::string step3 = (std::filesystem::path(dir) / checkpoint_file_name(3)).string();
  const TrainResult gpu_rest = train(
      comm(), tiny("conda", plus(g, {"--train.steps=6", "--checkpoint.dir=" + dir, "--checkpoint.resume=" + step3})),
      {true, true});
  const TrainResult cpu_rest =
      train(comm(), tiny("conda", {"--train.steps=6", "--checkpoint.dir=" + dir, "--checkpoint.resume=" + step3}),
            {true, true});
  EXPECT_EQ(gpu_rest.first_step, 3);
  EXPECT_EQ(cpu_rest.first_step, 3);
  if (gpu_rest.losses.size() == 3 && cpu_rest.losses.size() == 3 && whole.losses.size() == 6) {
    const std::vector<double> tail(whole.losses.begin() + 3, whole.losses.end());
    EXPECT_LT(max_rel(gpu_rest.losses, tail), 1e-6);
    EXPECT_LT(max_rel(cpu_rest.losses, tail), 1e-4);
  } else {
    ADD_FAILURE() << "losses: " << whole.losses.size() << " uninterrupted, " << gpu_rest.losses.size()
                  << " resumed on the GPU, " << cpu_rest.losses.size() << " on the CPU";
  }
  comm().barrier();
  if (comm().rank() == 0) std::filesystem::remove_all(dir);
}

// The trainer's properties of tests/test_train.cpp, on the GPU path (f32, so they hold to rounding).
TEST_F(CudaTrainTest, GradAccumulationEqualsTheLargerBatch) {
  const auto g = gpu("f32");
  const TrainResult k2 =
      train(comm(), tiny("normuon", plus(g, {"--train.grad_accum=2", "--train.batch_size=1"})), {true, true});
  const TrainResult b2 = train(comm(), tiny("normuon", plus(g, {"--train.batch_size=2"})), {true, true});
  // Over W ranks the K = 2 micro-batches of one sequence see the tokens in another rank order than one batch of
  // two; the CPU trainer with the same settings is the reference then.
  const TrainResult cpu = train(comm(), tiny("normuon", {"--train.grad_accum=2", "--train.batch_size=1"}), {true, true});
  EXPECT_LT(max_rel(k2.losses, cpu.losses), 1e-4);
  if (comm().size() == 1) {
    EXPECT_LT(max_rel(k2.losses, b2.losses), 1e-5);
  }
}

// Blocks recompute their forward in the backward (flash attention included, bf16): the same losses bit for bit.
TEST_F(CudaTrainTest, ActivationCheckpointingGivesTheSameLosses) {
  for (const char* dtype : {"f32", "bf16"}) {
    const auto g = gpu(dtype);
    const TrainResult a = train(comm(), tiny("normuon", g), {true, true});
    const TrainResult b = train(comm(), tiny("normuon", plus(g, {"--runtime.activation_checkpointing=blocks"})),
                                {true, true});
    EXPECT_EQ(a.losses, b.losses) << dtype;
    EXPECT_EQ(a.grad_norms, b.grad_norms) << dtype;
  }
}

TEST_F(CudaTrainTest, HybridShardingEqualsFullSharding) {
  // Shard groups of 2 where the rank count allows; else groups of 1 (every rank a whole replica, all ranks
  // replicas of each other), so odd rank counts test replication instead of skipping.
  const std::string group = comm().size() % 2 == 0 ? "2" : "1";
  const auto g = gpu("f32");
  const TrainResult full = train(comm(), tiny("muon", g), {true, true});
  const TrainResult hybrid = train(comm(), tiny("muon", plus(g, {"--runtime.sharding=hybrid:" + group})), {true, true});
  EXPECT_LT(max_rel(hybrid.losses, full.losses), 1e-5);
}

TEST_F(CudaTrainTest, NoOverlapAndNoReshardGiveTheSameLosses) {
  const auto g = gpu("bf16");
  const TrainResult a = train(comm(), tiny("normuon", plus(g, {"--runtime.overlap=on"})), {true, true});
  const TrainResult b = train(
      comm(), tiny("normuon", plus(g, {"--runtime.overlap=off", "--runtime.reshard_after_forward=false"})),
      {true, true});
  EXPECT_EQ(a.losses, b.losses);
}

TEST_F(CudaTrainTest, NanPolicyStopsOrSkips) {
  const auto blow = plus(gpu("f32"), {"--optim.lr=1e38", "--train.steps=4"});  // weights go to Inf, the loss NaN
  try {
    train(comm(), tiny("adamw", blow), {true, true});
    ADD_FAILURE() << "a NaN loss must stop the run";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not finite"), std::string::npos) << e.what();
  }
  const TrainResult r = train(comm(), tiny("adamw", plus(blow, {"--train.nan_policy=skip"})), {true, true});
  EXPECT_EQ(r.losses.size(), 4u);
}

TEST_F(CudaTrainTest, LlamaOnTheGpuReproducesTheCpu) {
  // LLaMA (grouped-query attention, untied head) with NorMuon: f32 on the GPU within 1e-4 of the CPU run, bf16
  // (GEMM attention) close. At 1 and 2 ranks (the CPU tests cover 3 and 4; the emulator is slow).
  if (comm().size() > 2) GTEST_SKIP() << "LLaMA on the GPU runs at 1 and 2 ranks";
  const std::vector<std::string> llama = {"--model.arch=llama", "--model.NKV=2", "--model.FF=96", "--train.steps=4"};
  const TrainResult cpu = train(comm(), tiny("normuon", llama), {true, true});
  const TrainResult f32 = train(comm(), tiny("normuon", plus(llama, gpu("f32"))), {true, true});
  const TrainResult bf16 = train(comm(), tiny("normuon", plus(llama, gpu("bf16"))), {true, true});
  EXPECT_LT(max_rel(f32.losses, cpu.losses), 1e-4);
  EXPECT_LT(max_rel(bf16.losses, cpu.losses), 3e-2);
}

TEST_F(CudaTrainTest, UnevenGlobalBatchWithValidationOnTheGpuEqualsTheCpu) {
  // train.global_batch_size = 3 (2 ranks: 1 and 2 sequences) with a validation after steps 2 and 3: the GPU runner
  // is sized back to this rank's share after each validation; f32 on the GPU within 1e-4 of the CPU.
  if (comm().size() > 2) GTEST_SKIP() << "runs at 1 and 2 ranks";
  const std::vector<std::string> o = {"--train.global_batch_size=3", "--train.steps=3", "--eval.path=auto",
                                      "--eval.batches=1", "--eval.every=2"};
  const TrainResult cpu = train(comm(), tiny("adamw", o), {true, true});
  const TrainResult f32 = train(comm(), tiny("adamw", plus(o, gpu("f32"))), {true, true});
  EXPECT_LT(max_rel(f32.losses, cpu.losses), 1e-4);
  ASSERT_EQ(f32.val_losses.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) EXPECT_NEAR(f32.val_losses[i].second, cpu.val_losses[i].second, 1e-4);
}
