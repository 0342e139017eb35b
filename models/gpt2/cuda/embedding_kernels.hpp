// GPT-2's embedding on the GPU: token embedding wte plus learned position embedding wpe, forward and a
// deterministic backward, with the semantics of models/gpt2/embedding.hpp. T is float or __nv_bfloat16.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

namespace orthoshard::cuda {

using bf16 = __nv_bfloat16;

// ---- embedding ----
// out (B, T, C) = wte[tokens[b, t]] + wpe[t] (wpe null: the token embedding alone, as LLaMA's); tokens must lie
// in [0, rows of wte) (the caller checks).
template <typename T>
void embedding_forward(T* out, const std::int32_t* tokens, const T* wte, const T* wpe, std::int64_t B,
                       std::int64_t Tn, std::int64_t C, cudaStream_t stream);

// The deterministic backward needs the positions grouped by token, built on the host from the host copy of
// the tokens (which the data loader has anyway): order (N) = positions sorted by token, ascending within a
// token; starts (U + 1) = bucket boundaries in `order`; bucket_token (U) = each bucket's token.
struct EmbeddingBuckets {
  std::vector<std::int32_t> order, starts, bucket_token;
  std::int64_t buckets() const { return static_cast<std::int64_t>(bucket_token.size()); }
};
EmbeddingBuckets bucket_tokens(const std::int32_t* host_tokens, std::int64_t N);

// Device copies of an EmbeddingBuckets (uploaded by the caller).
struct EmbeddingBucketsView {
  const std::int32_t* order = nullptr;
  const std::int32_t* starts = nullptr;
  const std::int32_t* bucket_token = nullptr;
  std::int64_t buckets = 0;
};

// dwte (V, C) += Σ dout over each token's positions (summed in fp32 in position order, added once),
// dwpe (T, C) += Σ_b dout (fp32, b order; dwpe may be null). No float atomics: the result is bitwise
// reproducible.
template <typename T>
void embedding_backward(T* dwte, T* dwpe, const T* dout, const EmbeddingBucketsView& buckets, std::int64_t B,
                        std::int64_t Tn, std::int64_t C, cudaStream_t stream);

}  // namespace orthoshard::cuda
