// GPT-2's embedding kernels (see embedding_kernels.hpp): token + learned position embedding, and its
// deterministic backward (positions bucketed by token on the host, no float atomics).
#include "models/gpt2/cuda/embedding_kernels.hpp"

#include "runtime/cuda/device_math.cuh"

#include <algorithm>
#include <cstdint>
#include <numeric>

namespace orthoshard::cuda {

namespace {

// ---------------- embedding ----------------

template <typename T>
__global__ void embedding_forward_kernel(T* out, const std::int32_t* tokens, const T* wte, const T* wpe,
                                         std::int64_t N, std::int64_t Tn, std::int64_t C) {
  const std::int64_t total = N * C;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t n = i / C, c = i % C;
    const std::int64_t tok = tokens[n];
    out[i] = wpe ? from_f<T>(to_f(wte[tok * C + c]) + to_f(wpe[(n % Tn) * C + c])) : wte[tok * C + c];
  }
}

// grid (buckets, channel blocks): each thread sums one channel over its token's positions in order.
template <typename T>
__global__ void embedding_backward_wte_kernel(T* dwte, const T* dout, const std::int32_t* order,
                                              const std::int32_t* starts, const std::int32_t* bucket_token,
                                              std::int64_t C) {
  const std::int64_t bucket = blockIdx.x;
  const std::int64_t c = std::int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const std::int32_t s0 = starts[bucket], s1 = starts[bucket + 1];
  float s = 0.f;
  for (std::int32_t i = s0; i < s1; ++i) s += to_f(dout[std::int64_t(order[i]) * C + c]);
  T* d = dwte + std::int64_t(bucket_token[bucket]) * C + c;
  *d = from_f<T>(to_f(*d) + s);
}

template <typename T>
__global__ void embedding_backward_wpe_kernel(T* dwpe, const T* dout, std::int64_t B, std::int64_t Tn,
                                              std::int64_t C) {
  const std::int64_t total = Tn * C;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    float s = 0.f;
    for (std::int64_t b = 0; b < B; ++b) s += to_f(dout[b * total + i]);
    dwpe[i] = from_f<T>(to_f(dwpe[i]) + s);
  }
}

}  // namespace

template <typename T>
void embedding_forward(T* out, const std::int32_t* tokens, const T* wte, const T* wpe, std::int64_t B,
                       std::int64_t Tn, std::int64_t C, cudaStream_t stream) {
  OS_CUDA_REQUIRE(B >= 0 && Tn >= 0 && C >= 0, "embedding_forward: negative shape");
  const std::int64_t total = B * Tn * C;
  if (total == 0) return;
  embedding_forward_kernel<<<blocks_for(total), kThreads, 0, stream>>>(out, tokens, wte, wpe, B * Tn, Tn, C);
  OS_CUDA_CHECK_LAUNCH();
}

EmbeddingBuckets bucket_tokens(const std::int32_t* host_tokens, std::int64_t N) {
  EmbeddingBuckets b;
  b.order.resize(static_cast<std::size_t>(N));
  std::iota(b.order.begin(), b.order.end(), 0);
  std::stable_sort(b.order.begin(), b.order.end(),
                   [&](std::int32_t x, std::int32_t y) { return host_tokens[x] < host_tokens[y]; });
  for (std::int64_t i = 0; i < N; ++i) {
    const std::int32_t tok = host_tokens[b.order[static_cast<std::size_t>(i)]];
    if (i == 0 || tok != b.bucket_token.back()) {
      b.starts.push_back(static_cast<std::int32_t>(i));
      b.bucket_token.push_back(tok);
    }
  }
  b.starts.push_back(static_cast<std::int32_t>(N));
  return b;
}

template <typename T>
void embedding_backward(T* dwte, T* dwpe, const T* dout, const EmbeddingBucketsView& buckets, std::int64_t B,
                        std::int64_t Tn, std::int64_t C, cudaStream_t stream) {
  OS_CUDA_REQUIRE(B * Tn < (std::int64_t(1) << 31), "embedding_backward: more than 2^31 positions");
  if (B * Tn == 0 || C == 0) return;
  if (dwte && buckets.buckets > 0) {
    const dim3 grid(static_cast<unsigned>(buckets.buckets), static_cast<unsigned>((C + kThreads - 1) / kThreads));
    OS_CUDA_REQUIRE(grid.y <= 65535, "embedding_backward: too many channels");
    embedding_backward_wte_kernel<<<grid, kThreads, 0, stream>>>(dwte, dout, buckets.order, buckets.starts,
                                                                 buckets.bucket_token, C);
    OS_CUDA_CHECK_LAUNCH();
  }
  if (dwpe) {
    embedding_backward_wpe_kernel<<<blocks_for(Tn * C), kThreads, 0, stream>>>(dwpe, dout, B, Tn, C);
    OS_CUDA_CHECK_LAUNCH();
  }
}

#define ORTHOSHARD_EMBEDDING_KERNELS(T)                                                                          \
  template void embedding_forward<T>(T*, const std::int32_t*, const T*, const T*, std::int64_t, std::int64_t,      \
                                     std::int64_t, cudaStream_t);                                                  \
  template void embedding_backward<T>(T*, T*, const T*, const EmbeddingBucketsView&, std::int64_t, std::int64_t,   \
                                      std::int64_t, cudaStream_t);

ORTHOSHARD_EMBEDDING_KERNELS(float)
ORTHOSHARD_EMBEDDING_KERNELS(bf16)

}  // namespace orthoshard::cuda
