#include "launch/cli/eval_cmd.hpp"

#include "launch/trainer/train.hpp"
#include "runtime/checkpoint/commit.hpp"
#include "runtime/checkpoint/h5_parallel.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"

namespace orthoshard {

int run_eval(Communicator& world, const EvalOptions& opt) {
  const std::string path = resolve_checkpoint_path(opt.checkpoint);
  if (path.ends_with(".partial")) throw UsageError(fmt::format("eval: '{}' is a save that never completed", path));
  // The configuration the checkpoint was trained with (model shape, optimizer: what loading it needs).
  std::string saved;
  {
    H5ParallelFile::check_readable(path);
    H5ParallelFile f = H5ParallelFile::open_read(path, nullptr);
    if (!f.has_attr("/", "config")) throw UsageError(fmt::format("eval: '{}' holds no configuration", path));
    saved = f.string_attr("/", "config");
  }
  std::vector<std::string> overrides = {"--checkpoint.resume=" + path, "--checkpoint.every=0", "--data.path=" + opt.data,
                                        "--eval.path=" + opt.data, "--eval.every=0",
                                        fmt::format("--eval.batches={}", opt.batches), "--train.grad_accum=1"};
  if (opt.batch_size > 0) overrides.push_back(fmt::format("--train.batch_size={}", opt.batch_size));
  if (opt.seq_len > 0) overrides.push_back(fmt::format("--train.seq_len={}", opt.seq_len));
  const TrainConfig cfg = load_train_config_text(saved, path + " (its saved configuration)", overrides);
  TrainOptions t;
  t.quiet = true;
  t.evaluate_only = true;
  const TrainResult r = train(world, cfg, t);
  if (world.rank() == 0 && !r.val_losses.empty())
    fmt::print("eval {} (step {}) on '{}': loss {:.6f} over {} sequences of {} tokens, {} rank(s)\n", path,
               r.first_step, opt.data, r.val_losses.front().second, r.val_sequences, cfg.train.seq_len, world.size());
  return 0;
}

}  // namespace orthoshard
