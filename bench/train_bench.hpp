// `orthoshard bench train`: training tokens/s on the ranks of the job, with communication overlapped
// (prefetch, asynchronous reduce-scatter) and without, to show how much communication is hidden.
#pragma once

#include "runtime/comm/communicator.hpp"

#include <string>
#include <vector>

namespace orthoshard {

int run_train_bench(Communicator& world, const std::string& config_path, const std::vector<std::string>& overrides,
                    const std::string& json_path = "");

}  // namespace orthoshard
