// GPT-2's random initialization (llm.c's / GPT-2's scheme), whole or by rows.
#pragma once

#include "models/gpt2/params.hpp"

#include <cstdint>
#include <string>

namespace orthoshard {

// GPT-2 initialization, deterministic in (seed, parameter name, element index) whatever the thread count:
// weights and embeddings ~ N(0, 0.02²), the residual projections (attn.proj.weight, mlp.proj.weight) with
// std 0.02/sqrt(2L), biases 0, layernorm weights 1, the padded vocabulary rows of wte (V..Vp) 0.
Gpt2Params gpt2_random_init(const Gpt2Config& cfg, std::uint64_t seed, DType dtype = DType::F32);
// Rows [row_begin, row_end) of the named parameter's initial value (row-major; a 1-D parameter has one
// element per row), equal to those rows of gpt2_random_init: each rank can initialize just its shard.
template <typename T>
void gpt2_init_rows(const Gpt2Config& cfg, std::uint64_t seed, const std::string& name, std::int64_t row_begin,
                    std::int64_t row_end, T* out);

}  // namespace orthoshard
