#include "launch/train_setup.hpp"

#include "models/gpt2/checkpoint.hpp"
#include "models/gpt2/model.hpp"

#include <fmt/format.h>

namespace orthoshard {

ModelSetup setup_model(const TrainConfig& cfg) {
  ModelSetup s;
  if (!cfg.model.init_from.empty()) {
    s.init = load_llmc_model(cfg.model.init_from);
  } else {
    Gpt2Config mc = cfg.gpt2_config();
    mc.validate();
    s.init = gpt2_random_init(mc, cfg.model.seed);
  }
  s.config = s.init.config();
  s.config.check_sequence_length(cfg.train.seq_len);
  s.units = gpt2_units(s.config);
  for (const auto& u : s.units) {
    FsdpUnitSpec spec{u.name(), {}};
    for (const auto& name : unit_parameter_names(u)) {
      const Shape shape = s.init.get(name).shape();
      spec.params.push_back({name, shape});
      s.param_shapes.push_back({name, shape});
    }
    s.unit_specs.push_back(std::move(spec));
  }
  return s;
}

LoaderConfig loader_config(const TrainConfig& cfg, int world_size, int rank, std::int64_t vocab) {
  LoaderConfig lc;
  lc.B = cfg.train.batch_size;
  lc.T = cfg.train.seq_len;
  lc.world_size = world_size;
  lc.rank = rank;
  lc.grad_accum = cfg.train.grad_accum;
  lc.order = cfg.data.order;
  lc.seed = cfg.data.seed;
  lc.vocab_size = vocab;
  return lc;
}

std::string mib(std::uint64_t bytes) { return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20)); }

std::string eta(double seconds) {
  const auto s = static_cast<std::int64_t>(seconds + 0.5);
  return s >= 3600 ? fmt::format("{}h{:02}m", s / 3600, (s / 60) % 60) : fmt::format("{}m{:02}s", s / 60, s % 60);
}

}  // namespace orthoshard
