// GPT-2's random initialization, a pure function of (seed, parameter name, element index).
#include "models/gpt2/init.hpp"

#include "models/random.hpp"
#include "runtime/core/error.hpp"

#include <algorithm>
#include <cmath>

namespace orthoshard {

template <typename T>
void gpt2_init_rows(const Gpt2Config& cfg, std::uint64_t seed, const std::string& name, std::int64_t row_begin,
                    std::int64_t row_end, T* out) {
  Shape shape;
  for (const auto& [n, s] : gpt2_parameter_specs(cfg))
    if (n == name) shape = s;
  if (shape.empty()) fail("GPT-2 has no parameter named '{}'", name);
  OS_CHECK(0 <= row_begin && row_begin <= row_end && row_end <= shape[0], "rows [{}, {}) outside {} {}", row_begin,
           row_end, name, shape_str(shape));
  const std::int64_t row = shape_numel(shape) / shape[0];
  const std::int64_t n = (row_end - row_begin) * row;
  auto ends_with = [&](const char* suffix) {
    const std::string t(suffix);
    return name.size() >= t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0;
  };
  if (ends_with(".bias")) {
    std::fill(out, out + n, T(0));
    return;
  }
  if (name == "lnf.weight" || ends_with("ln1.weight") || ends_with("ln2.weight")) {
    std::fill(out, out + n, T(1));
    return;
  }
  const bool resid = ends_with("attn.proj.weight") || ends_with("mlp.proj.weight");
  const double s = resid ? 0.02 / std::sqrt(2.0 * static_cast<double>(cfg.L)) : 0.02;
  const std::int64_t live_rows = name == "wte" ? cfg.V : shape[0];  // padded vocabulary rows stay 0
  const std::uint64_t k = rng::key(seed, rng::hash_name(name));
  const std::int64_t first = row_begin * row;
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t g = first + i;
    out[i] = g / row < live_rows ? static_cast<T>(s * rng::normal_at(k, static_cast<std::uint64_t>(g))) : T(0);
  }
}

Gpt2Params gpt2_random_init(const Gpt2Config& cfg, std::uint64_t seed, DType dtype) {
  Gpt2Params p = Gpt2Params::zeros(cfg, dtype);
  for (const auto& [name, t] : p.named()) {
    if (dtype == DType::F64) gpt2_init_rows(cfg, seed, name, 0, t.dim(0), t.data<double>());
    else gpt2_init_rows(cfg, seed, name, 0, t.dim(0), t.data<float>());
  }
  return p;
}

template void gpt2_init_rows<float>(const Gpt2Config&, std::uint64_t, const std::string&, std::int64_t, std::int64_t,
                                    float*);
template void gpt2_init_rows<double>(const Gpt2Config&, std::uint64_t, const std::string&, std::int64_t,
                                     std::int64_t, double*);

}  // namespace orthoshard
