// LLaMA decoding with a KV cache: the training forward's kernels at N = 1 row, rotary embeddings at the token's
// position, attention of that row over the cached keys and values.
#include "models/llama/generator.hpp"

#include "models/layers/attention.hpp"
#include "models/layers/linear.hpp"
#include "models/layers/rmsnorm.hpp"
#include "models/layers/rope.hpp"
#include "models/layers/swiglu.hpp"
#include "models/llama/params.hpp"
#include "runtime/core/blas.hpp"
#include "runtime/core/error.hpp"

#include <algorithm>
#include <utility>
#include <vector>

namespace orthoshard {
namespace {

class LlamaGenerator final : public TokenGenerator {
 public:
  LlamaGenerator(const LlamaConfig& cfg, const TensorLookup& weights)
      : cfg_(cfg), rope_(cfg.maxT, cfg.head_size(), cfg.rope_theta), embed_(llama_embedding_weights(weights)),
        head_(llama_head_weights(weights, cfg)) {
    for (int l = 0; l < cfg.L; ++l) {
      blocks_.push_back(llama_block_weights(weights, l));
      check_unit(blocks_.back(), cfg_, DType::F32, "generation, layer " + std::to_string(l));
    }
    check_unit(embed_, cfg_, DType::F32, "generation");
    check_unit(head_, cfg_, DType::F32, "generation");
    const std::int64_t C = cfg.C, KV = cfg.kv_dim();
    kcache_.assign(static_cast<std::size_t>(cfg.L * cfg.maxT * KV), 0.0f);
    vcache_.assign(kcache_.size(), 0.0f);
    x_.resize(static_cast<std::size_t>(C));
    y_.resize(x_.size());
    h_.resize(x_.size());
    att_.resize(x_.size());
    q_.resize(x_.size());
    gate_.resize(static_cast<std::size_t>(cfg.FF));
    up_.resize(gate_.size());
    logits_.resize(static_cast<std::size_t>(cfg.Vp));
  }

  std::int64_t position() const override { return t_; }

  const float* step(std::int32_t token) override {
    const std::int64_t C = cfg_.C, KV = cfg_.kv_dim(), FF = cfg_.FF, hs = cfg_.head_size(), T = cfg_.maxT;
    if (token < 0 || token >= cfg_.V)
      throw UsageError(fmt::format("LLaMA generation: token {} is outside the vocabulary [0, {})", token, cfg_.V));
    if (t_ >= T) throw UsageError(fmt::format("LLaMA generation: the context maxT = {} is full", T));
    float rstd = 0;
    std::copy_n(embed_.embed.data<float>() + static_cast<std::int64_t>(token) * C, C, x_.data());
    for (int l = 0; l < cfg_.L; ++l) {
      const LlamaBlockWeights& w = blocks_[static_cast<std::size_t>(l)];
      float* kc = kcache_.data() + l * T * KV;
      float* vc = vcache_.data() + l * T * KV;
      ops::rmsnorm_forward(h_.data(), &rstd, x_.data(), w.attn_norm.data<float>(), 1, C, cfg_.norm_eps);
      ops::linear_forward(q_.data(), h_.data(), w.wq.data<float>(), static_cast<const float*>(nullptr),
                          static_cast<const float*>(nullptr), 1, C, C);
      ops::linear_forward(kc + t_ * KV, h_.data(), w.wk.data<float>(), static_cast<const float*>(nullptr),
                          static_cast<const float*>(nullptr), 1, C, KV);
      ops::linear_forward(vc + t_ * KV, h_.data(), w.wv.data<float>(), static_cast<const float*>(nullptr),
                          static_cast<const float*>(nullptr), 1, C, KV);
      ops::rope_apply(q_.data(), rope_, 1, 1, C, cfg_.NH, hs, false, t_);
      ops::rope_apply(kc + t_ * KV, rope_, 1, 1, KV, cfg_.NKV, hs, false, t_);
      ops::decode_attention(att_.data(), q_.data(), kc, vc, t_ + 1, KV, cfg_.NH, cfg_.NKV, hs);
      ops::linear_forward(y_.data(), att_.data(), w.wo.data<float>(), static_cast<const float*>(nullptr), x_.data(), 1,
                          C, C);
      std::swap(x_, y_);
      ops::rmsnorm_forward(h_.data(), &rstd, x_.data(), w.mlp_norm.data<float>(), 1, C, cfg_.norm_eps);
      ops::linear_forward(gate_.data(), h_.data(), w.w_gate.data<float>(), static_cast<const float*>(nullptr),
                          static_cast<const float*>(nullptr), 1, C, FF);
      ops::linear_forward(up_.data(), h_.data(), w.w_up.data<float>(), static_cast<const float*>(nullptr),
                          static_cast<const float*>(nullptr), 1, C, FF);
      ops::swiglu_forward(gate_.data(), gate_.data(), up_.data(), FF);
      ops::linear_forward(x_.data(), gate_.data(), w.w_down.data<float>(), static_cast<const float*>(nullptr),
                          x_.data(), 1, FF, C);
    }
    ops::rmsnorm_forward(h_.data(), &rstd, x_.data(), head_.norm.data<float>(), 1, C, cfg_.norm_eps);
    linalg::gemm<float>(false, true, 1, cfg_.V, C, 1.0f, h_.data(), C, head_.head.data<float>(), C, 0.0f,
                        logits_.data(), cfg_.V);
    ++t_;
    return logits_.data();
  }

 private:
  LlamaConfig cfg_;
  ops::RopeTable<float> rope_;
  LlamaEmbeddingWeights embed_;
  LlamaHeadWeights head_;
  std::vector<LlamaBlockWeights> blocks_;
  std::vector<float> kcache_, vcache_;  // (L, maxT, NKV·hs) keys after the rotary embedding, values
  std::vector<float> x_, y_, h_, att_, q_, gate_, up_, logits_;
  std::int64_t t_ = 0;
};

}  // namespace

std::unique_ptr<TokenGenerator> make_llama_generator(const LlamaConfig& cfg, const TensorLookup& weights) {
  return std::make_unique<LlamaGenerator>(cfg, weights);
}

}  // namespace orthoshard
