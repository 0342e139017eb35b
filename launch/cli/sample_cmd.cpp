// orthoshard sample (see sample_cmd.hpp).
#include "launch/cli/sample_cmd.hpp"

#include "launch/cli/ckpt_tools.hpp"
#include "runtime/core/error.hpp"

#include <cmath>
#include <cstdio>

namespace orthoshard {

int run_sample(const SampleOptions& opt) {
  if (opt.tokens < 0) throw UsageError("sample --tokens: must be >= 0");
  if (!(opt.temperature >= 0) || !std::isfinite(opt.temperature))
    throw UsageError(fmt::format("sample --temperature: must be a number >= 0, got {}", opt.temperature));
  if (opt.top_k < 0) throw UsageError("sample --top-k: must be >= 0");
  std::map<std::string, Tensor> weights;
  const std::unique_ptr<Model> model = read_checkpoint_model(opt.checkpoint, weights);
  const std::int64_t V = model->vocab_size();
  const std::vector<std::int32_t> prompt = prompt_tokens(opt.prompt, V);
  std::int64_t maxT = 0;
  for (const ModelAttribute& a : model->attributes())
    if (a.name == "maxT") maxT = std::get<std::int64_t>(a.value);
  if (static_cast<std::int64_t>(prompt.size()) + opt.tokens > maxT)
    throw UsageError(fmt::format("sample: the prompt ({} tokens) and --tokens {} exceed the model's context maxT = {}",
                                 prompt.size(), opt.tokens, maxT));
  const auto gen = model->cpu_generator([&](const std::string& n) { return weights.at(n); });
  const std::vector<std::int32_t> out =
      sample_tokens(*gen, V, prompt, opt.tokens, SamplingOptions{opt.temperature, opt.top_k, opt.seed});
  std::printf("%s\n", sample_text(opt.prompt, prompt, out, V).c_str());
  return 0;
}

}  // namespace orthoshard
