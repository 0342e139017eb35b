// Shared by the GPT-2 CPU kernels: below this much work (elements touched), loops stay on one thread.
#pragma once

#include <cstdint>

namespace orthoshard::ops {

inline constexpr std::int64_t kParallelMinWork = 1 << 15;

}  // namespace orthoshard::ops
