// GPT-2 decoding with a KV cache: the training forward's kernels at N = 1 row, attention of that row over the
// cached keys and values.
#include "models/gpt2/generator.hpp"

#include "models/gpt2/params.hpp"
#include "models/layers/attention.hpp"
#include "models/layers/gelu.hpp"
#include "models/layers/layernorm.hpp"
#include "models/layers/linear.hpp"
#include "runtime/core/blas.hpp"
#include "runtime/core/error.hpp"

#include <utility>
#include <vector>

namespace orthoshard {
namespace {

class Gpt2Generator final : public TokenGenerator {
 public:
  Gpt2Generator(const Gpt2Config& cfg, const TensorLookup& weights)
      : cfg_(cfg), embed_(embedding_weights(weights)), head_(head_weights(weights)) {
    check_unit(embed_, cfg_, DType::F32, "generation");
    check_unit(head_, cfg_, DType::F32, "generation");
    for (int l = 0; l < cfg.L; ++l) {
      blocks_.push_back(block_weights(weights, l));
      check_unit(blocks_.back(), cfg_, DType::F32, "generation, block " + std::to_string(l));
    }
    const std::int64_t C = cfg.C;
    kcache_.assign(static_cast<std::size_t>(cfg.L * cfg.maxT * C), 0.0f);
    vcache_.assign(kcache_.size(), 0.0f);
    x_.resize(static_cast<std::size_t>(C));
    y_.resize(x_.size());
    h_.resize(x_.size());
    att_.resize(x_.size());
    qkv_.resize(static_cast<std::size_t>(3 * C));
    fc_.resize(static_cast<std::size_t>(4 * C));
    logits_.resize(static_cast<std::size_t>(cfg.V));
  }

  std::int64_t position() const override { return t_; }

  const float* step(std::int32_t token) override {
    const std::int64_t C = cfg_.C, T = cfg_.maxT;
    if (token < 0 || token >= cfg_.V)
      throw UsageError(fmt::format("GPT-2 generation: token {} is outside the vocabulary [0, {})", token, cfg_.V));
    if (t_ >= T) throw UsageError(fmt::format("GPT-2 generation: the context maxT = {} is full", T));
    const float* e = embed_.wte.data<float>() + static_cast<std::int64_t>(token) * C;
    const float* p = embed_.wpe.data<float>() + t_ * C;
    for (std::int64_t c = 0; c < C; ++c) x_[static_cast<std::size_t>(c)] = e[c] + p[c];
    float mean = 0, rstd = 0;
    for (int l = 0; l < cfg_.L; ++l) {
      const BlockWeights& w = blocks_[static_cast<std::size_t>(l)];
      float* kc = kcache_.data() + l * T * C;
      float* vc = vcache_.data() + l * T * C;
      ops::layernorm_forward(h_.data(), &mean, &rstd, x_.data(), w.ln1_w.data<float>(), w.ln1_b.data<float>(), 1, C);
      ops::linear_forward(qkv_.data(), h_.data(), w.qkv_w.data<float>(), w.qkv_b.data<float>(),
                          static_cast<const float*>(nullptr), 1, C, 3 * C);
      std::copy_n(qkv_.data() + C, C, kc + t_ * C);
      std::copy_n(qkv_.data() + 2 * C, C, vc + t_ * C);
      ops::decode_attention(att_.data(), qkv_.data(), kc, vc, t_ + 1, C, cfg_.NH, cfg_.NH, C / cfg_.NH);
      ops::linear_forward(y_.data(), att_.data(), w.attn_proj_w.data<float>(), w.attn_proj_b.data<float>(), x_.data(),
                          1, C, C);
      std::swap(x_, y_);
      ops::layernorm_forward(h_.data(), &mean, &rstd, x_.data(), w.ln2_w.data<float>(), w.ln2_b.data<float>(), 1, C);
      ops::linear_forward(fc_.data(), h_.data(), w.fc_w.data<float>(), w.fc_b.data<float>(),
                          static_cast<const float*>(nullptr), 1, C, 4 * C);
      ops::gelu_forward(fc_.data(), fc_.data(), 4 * C);
      ops::linear_forward(y_.data(), fc_.data(), w.mlp_proj_w.data<float>(), w.mlp_proj_b.data<float>(), x_.data(), 1,
                          4 * C, C);
      std::swap(x_, y_);
    }
    ops::layernorm_forward(h_.data(), &mean, &rstd, x_.data(), head_.lnf_w.data<float>(), head_.lnf_b.data<float>(),
                           1, C);
    linalg::gemm<float>(false, true, 1, cfg_.V, C, 1.0f, h_.data(), C, head_.wte.data<float>(), C, 0.0f,
                        logits_.data(), cfg_.V);
    ++t_;
    return logits_.data();
  }

 private:
  Gpt2Config cfg_;
  EmbeddingWeights embed_;
  HeadWeights head_;
  std::vector<BlockWeights> blocks_;
  std::vector<float> kcache_, vcache_;  // (L, maxT, C)
  std::vector<float> x_, y_, h_, att_, qkv_, fc_, logits_;
  std::int64_t t_ = 0;
};

}  // namespace

std::unique_ptr<TokenGenerator> make_gpt2_generator(const Gpt2Config& cfg, const TensorLookup& weights) {
  return std::make_unique<Gpt2Generator>(cfg, weights);
}

}  // namespace orthoshard
