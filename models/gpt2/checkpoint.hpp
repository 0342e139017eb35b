// GPT-2 model files in llm.c's format (256 × int32 header [20240326, version, maxT, V, L, NH, C, Vp, 0…],
// then the 16 tensors in file order: version 3 = float32, version 5 = bfloat16), and random initialization.
#pragma once

#include "models/gpt2/params.hpp"

#include <cstdint>
#include <string>

namespace orthoshard {

inline constexpr std::int32_t kLlmcModelMagic = 20240326;

// The config from a model file's header (origin = path). Errors name the file.
Gpt2Config read_llmc_config(const std::string& path);
// Loads an fp32 (version 3) or bf16 (version 5) model file as f32 parameters.
Gpt2Params load_llmc_model(const std::string& path);
// Writes version 3 (fp32; f64 parameters are rounded), to PATH.tmp then renamed over PATH.
void save_llmc_model(const Gpt2Params& params, const std::string& path);

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
