// Runs the same short training twice (overlap on, then off) and reports tokens/s and the share of the
// exposed communication time that overlapping hides: (t_serial − t_overlap) / t_comm_serial.
#include "bench/train_bench.hpp"

#include "bench/bench_json.hpp"
#include "launch/trainer/train.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"

#include <nlohmann/json.hpp>


namespace orthoshard {

int run_train_bench(Communicator& world, const std::string& config_path, const std::vector<std::string>& overrides,
                    const std::string& json_path) {
  TrainConfig cfg = load_train_config(config_path, overrides);
  cfg.train.metrics.clear();
  cfg.checkpoint.every = 0;
  cfg.checkpoint.resume = "none";
  const std::int64_t tokens = cfg.tokens_per_step(world.size());
  log::info("# orthoshard bench train: {} ranks, GPT-2 L={} C={} (from {}), {} tokens/step, {} steps, optimizer {}",
            world.size(), cfg.model.L, cfg.model.C, config_path.empty() ? "defaults" : config_path, tokens,
            cfg.train.steps, cfg.optim.name);
  TrainOptions quiet{true, true};
  const TrainResult ov = train(world, cfg, quiet);
  quiet.overlap = false;
  const TrainResult serial = train(world, cfg, quiet);
  const double t_ov = tokens / ov.tokens_per_s, t_serial = tokens / serial.tokens_per_s;
  const double comm_serial = serial.comm_wait_fraction * t_serial;
  const double hidden = comm_serial > 0 ? (t_serial - t_ov) / comm_serial : 0.0;
  log::info("{:>10} {:>12} {:>12} {:>16}", "mode", "tokens/s", "ms/step", "blocked in comm");
  log::info("{:>10} {:>12.0f} {:>12.1f} {:>15.1f}%", "overlap", ov.tokens_per_s, t_ov * 1e3,
            100 * ov.comm_wait_fraction);
  log::info("{:>10} {:>12.0f} {:>12.1f} {:>15.1f}%", "serial", serial.tokens_per_s, t_serial * 1e3,
            100 * serial.comm_wait_fraction);
  log::info("communication hidden by overlap: {:.0f}% of the serial run's {:.1f} ms/step of communication",
            100 * hidden, comm_serial * 1e3);
  if (!json_path.empty() && world.rank() == 0) {
    const nlohmann::json j = {{"ranks", world.size()},
                              {"L", cfg.model.L},
                              {"C", cfg.model.C},
                              {"B", cfg.train.batch_size},
                              {"T", cfg.train.seq_len},
                              {"grad_accum", cfg.train.grad_accum},
                              {"optimizer", cfg.optim.name},
                              {"steps", cfg.train.steps},
                              {"tokens_per_step", tokens},
                              {"overlap", {{"tokens_per_s", ov.tokens_per_s}, {"comm_wait_fraction", ov.comm_wait_fraction},
                                           {"losses", ov.losses}}},
                              {"serial", {{"tokens_per_s", serial.tokens_per_s},
                                          {"comm_wait_fraction", serial.comm_wait_fraction}, {"losses", serial.losses}}},
                              {"hidden_fraction", hidden}};
    write_bench_json(json_path, j);
  }
  return 0;
}

}  // namespace orthoshard
