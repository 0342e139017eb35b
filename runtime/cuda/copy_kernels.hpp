// Copies with dtype conversion: batched strided spans (the FSDP engine's packing: one launch moves every
// (rank, parameter) block of a unit between the all-gather layout and the full layout) and whole buffers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace orthoshard::cuda {

using bf16 = __nv_bfloat16;

// dst[dst + i] = src[src + i] for i < count (offsets in elements).
struct CopySpan {
  std::int64_t src = 0, dst = 0, count = 0;
};

// Every span of `spans` (a device array of n spans; max_count = the largest count, sizes the grid), converted
// from S to D (float or __nv_bfloat16; bf16 rounding to nearest even). Spans must not overlap in dst.
template <typename S, typename D>
void copy_spans(const CopySpan* spans, int n, std::int64_t max_count, const S* src, D* dst, cudaStream_t stream);

// dst[i] = src[i] converted, i < n.
template <typename S, typename D> void convert(const S* src, D* dst, std::int64_t n, cudaStream_t stream);

// acc[i] += src[i] in fp32, then src[i] = 0, i < n: moves a micro-batch's bf16 gradient into an fp32 sum.
void accumulate_and_zero(float* acc, __nv_bfloat16* src, std::int64_t n, cudaStream_t stream);

}  // namespace orthoshard::cuda
