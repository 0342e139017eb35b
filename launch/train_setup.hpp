// What the CPU and GPU training loops set up alike: the model's initial values and FSDP units, the data
// loader's configuration, and the numbers in the log lines.
#pragma once

#include "launch/train_config.hpp"
#include "models/data/loader.hpp"
#include "models/gpt2/params.hpp"
#include "runtime/fsdp/fsdp_engine.hpp"

#include <string>
#include <utility>
#include <vector>

namespace orthoshard {

struct ModelSetup {
  Gpt2Params init;  // the full initial values (identical on every rank): llm.c file or seeded random init
  Gpt2Config config;
  std::vector<Gpt2Unit> units;
  std::vector<FsdpUnitSpec> unit_specs;
  std::vector<std::pair<std::string, Shape>> param_shapes;  // every parameter, in unit order
};
// Loads or initializes the model and checks train.seq_len against its context.
ModelSetup setup_model(const TrainConfig& cfg);

// Rank `rank` of `world_size` reads its blocks of each step's window.
LoaderConfig loader_config(const TrainConfig& cfg, int world_size, int rank, std::int64_t vocab);

std::string mib(std::uint64_t bytes);  // "12.3 MiB"
std::string eta(double seconds);       // "3m07s", "1h02m"

}  // namespace orthoshard
