// LLaMA generation on the CPU: one token at a time through every layer with a KV cache (see TokenGenerator).
#pragma once

#include "models/family.hpp"
#include "models/llama/config.hpp"

#include <memory>

namespace orthoshard {

std::unique_ptr<TokenGenerator> make_llama_generator(const LlamaConfig& cfg, const TensorLookup& weights);

}  // namespace orthoshard
