// GPT-2 generation on the CPU: one token at a time through every block with a KV cache (see TokenGenerator).
#pragma once

#include "models/family.hpp"
#include "models/gpt2/config.hpp"

#include <memory>

namespace orthoshard {

std::unique_ptr<TokenGenerator> make_gpt2_generator(const Gpt2Config& cfg, const TensorLookup& weights);

}  // namespace orthoshard
