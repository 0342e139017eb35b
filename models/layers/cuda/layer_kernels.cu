// Transformer layer kernels (see layer_kernels.hpp). One thread per element for elementwise work, one warp per
// row for layernorm and the attention softmax, one block per row for the cross-entropy; column sums (weight
// and bias gradients) in two fixed-order passes over row chunks, so nothing depends on atomics.
#include "models/layers/cuda/layer_kernels.hpp"

#include "runtime/cuda/device_math.cuh"

#include <algorithm>
#include <cstdint>

namespace orthoshard::cuda {

namespace {

constexpr float kLayerNormEps = 1e-5f;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

// ---------------- layernorm ----------------

// One warp per row; two passes over the row (mean, then the centred variance) as the CPU kernel.
template <typename T>
__global__ void layernorm_forward_kernel(T* out, float* mean, float* rstd, const T* x, const T* w, const T* b,
                                         std::int64_t N, std::int64_t C) {
  const std::int64_t row = blockIdx.x * std::int64_t(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= N) return;
  const T* xr = x + row * C;
  float s = 0.f;
  for (std::int64_t c = lane; c < C; c += 32) s += to_f(xr[c]);
  const float m = detail::warp_sum(s) / static_cast<float>(C);
  float v = 0.f;
  for (std::int64_t c = lane; c < C; c += 32) {
    const float d = to_f(xr[c]) - m;
    v += d * d;
  }
  const float r = 1.0f / sqrtf(detail::warp_sum(v) / static_cast<float>(C) + kLayerNormEps);
  T* o = out + row * C;
  for (std::int64_t c = lane; c < C; c += 32) o[c] = from_f<T>((to_f(xr[c]) - m) * r * to_f(w[c]) + to_f(b[c]));
  if (lane == 0) {
    if (mean) mean[row] = m;
    if (rstd) rstd[row] = r;
  }
}

// dx = rstd · (dnorm − mean(dnorm) − x̂ · mean(dnorm · x̂)), dnorm = dout · w; one warp per row; dx +=.
template <typename T>
__global__ void layernorm_backward_dx_kernel(T* dx, const T* dout, const T* x, const T* w, const float* mean,
                                             const float* rstd, std::int64_t N, std::int64_t C) {
  const std::int64_t row = blockIdx.x * std::int64_t(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= N) return;
  const T* xr = x + row * C;
  const T* dr = dout + row * C;
  const float m = mean[row], r = rstd[row];
  float sum_d = 0.f, sum_dx = 0.f;
  for (std::int64_t c = lane; c < C; c += 32) {
    const float dn = to_f(dr[c]) * to_f(w[c]);
    sum_d += dn;
    sum_dx += dn * (to_f(xr[c]) - m) * r;
  }
  sum_d = detail::warp_sum(sum_d) / static_cast<float>(C);
  sum_dx = detail::warp_sum(sum_dx) / static_cast<float>(C);
  T* o = dx + row * C;
  for (std::int64_t c = lane; c < C; c += 32) {
    const float xhat = (to_f(xr[c]) - m) * r;
    o[c] = from_f<T>(to_f(o[c]) + r * (to_f(dr[c]) * to_f(w[c]) - sum_d - xhat * sum_dx));
  }
}

// The same with 16-byte loads, for rows of nv·32 packs of 16 bytes (nv <= MaxP <= kLnMaxPacks): each lane keeps
// its dout and x packs in registers between the two passes (MaxP = 4 or 8: registers for the rows at hand).
// On an H100, for GPT-2 124M's rows at B=8, T=1024, the kernel above took 0.20 ms (Nsight Compute), about 13
// times the forward kernel's 16 us over the same rows; with this one the step's 25 layernorm backwards (this
// kernel and the column sums) took 1.0 ms instead of 5.5.
constexpr int kLnMaxPacks = 8;
template <typename T> struct alignas(16) Pack16 {
  T v[16 / sizeof(T)];
};
template <typename T, int MaxP>
__global__ void layernorm_backward_dx_packed_kernel(T* __restrict__ dx, const T* __restrict__ dout,
                                                    const T* __restrict__ x, const T* __restrict__ w,
                                                    const float* __restrict__ mean, const float* __restrict__ rstd,
                                                    std::int64_t N, int nv) {
  constexpr int V = 16 / sizeof(T);
  using P = Pack16<T>;
  const std::int64_t row = blockIdx.x * std::int64_t(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= N) return;
  const std::int64_t C = std::int64_t(nv) * 32 * V;
  const P* dr = reinterpret_cast<const P*>(dout + row * C);
  const P* xr = reinterpret_cast<const P*>(x + row * C);
  const P* wr = reinterpret_cast<const P*>(w);
  P* o = reinterpret_cast<P*>(dx + row * C);
  const float m = mean[row], r = rstd[row];
  P d[MaxP], xv[MaxP];
#pragma unroll
  for (int i = 0; i < MaxP; ++i)
    if (i < nv) {
      d[i] = dr[lane + 32 * i];
      xv[i] = xr[lane + 32 * i];
    }
  float sum_d = 0.f, sum_dx = 0.f;
#pragma unroll
  for (int i = 0; i < MaxP; ++i)
    if (i < nv) {
      const P wv = wr[lane + 32 * i];
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float dn = to_f(d[i].v[j]) * to_f(wv.v[j]);
        sum_d += dn;
        sum_dx += dn * (to_f(xv[i].v[j]) - m) * r;
      }
    }
  sum_d = detail::warp_sum(sum_d) / static_cast<float>(C);
  sum_dx = detail::warp_sum(sum_dx) / static_cast<float>(C);
#pragma unroll
  for (int i = 0; i < MaxP; ++i)
    if (i < nv) {
      const P wv = wr[lane + 32 * i];
      P ov = o[lane + 32 * i];
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float xhat = (to_f(xv[i].v[j]) - m) * r;
        ov.v[j] = from_f<T>(to_f(ov.v[j]) + r * (to_f(d[i].v[j]) * to_f(wv.v[j]) - sum_d - xhat * sum_dx));
      }
      o[lane + 32 * i] = ov;
    }
}

// Rows are cut into chunks of chunk_rows: 32 rows, or more so that there are at most 1024 chunks. Many short
// chunks keep enough loads in flight; the cap bounds the scratch and the finishing pass. (On an H100, GPT-2
// 124M's layernorm weight and bias sums at B=8, T=1024 took 14 us for the partials and 5 us to finish.)
std::int64_t chunk_rows_for(std::int64_t N) { return std::max<std::int64_t>(32, (N + 1023) / 1024); }
std::int64_t chunks_for(std::int64_t N) {
  const std::int64_t r = chunk_rows_for(N);
  return std::max<std::int64_t>(1, (N + r - 1) / r);
}

// Pass 1 of the column sums, grid (channel blocks, row chunks): each thread sums one column over the chunk's
// rows in order. Layout per chunk: kLayerNorm ? [Σ dout·x̂ (C) | Σ dout (C)] : [Σ dout (C)].
template <typename T, bool kLayerNorm>
__global__ void column_partials_kernel(float* partial, const T* dout, const T* x, const float* mean,
                                       const float* rstd, std::int64_t N, std::int64_t C, std::int64_t chunk_rows) {
  const std::int64_t c = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const std::int64_t chunk = blockIdx.y;
  const std::int64_t r0 = chunk * chunk_rows, r1 = r0 + chunk_rows < N ? r0 + chunk_rows : N;
  float sw = 0.f, sb = 0.f;
#pragma unroll 8
  for (std::int64_t n = r0; n < r1; ++n) {
    const float d = to_f(dout[n * C + c]);
    sb += d;
    if constexpr (kLayerNorm) sw += d * (to_f(x[n * C + c]) - (mean ? mean[n] : 0.f)) * rstd[n];  // RMSNorm: no mean
  }
  if constexpr (kLayerNorm) {
    partial[chunk * 2 * C + c] = sw;
    partial[chunk * 2 * C + C + c] = sb;
  } else {
    partial[chunk * C + c] = sb;
  }
}

// Pass 2: out_k[c] += Σ_chunks partial, for k < sums (1 or 2 sums per column). Block (32, kFinishGroups): 32
// columns; thread row g sums chunks g, g + kFinishGroups, ... in order, then thread row 0 adds the groups'
// sums in group order (a fixed order that depends only on the chunk count).
constexpr int kFinishGroups = 16;
template <typename T>
__global__ void column_finish_kernel(T* out0, T* out1, const float* partial, std::int64_t chunks, std::int64_t C,
                                     int sums) {
  __shared__ float part[2][kFinishGroups][33];
  const std::int64_t c = std::int64_t(blockIdx.x) * 32 + threadIdx.x;
  const int g = threadIdx.y;
  float s0 = 0.f, s1 = 0.f;
  if (c < C) {
#pragma unroll 4
    for (std::int64_t k = g; k < chunks; k += kFinishGroups) {
      s0 += partial[k * sums * C + c];
      if (sums == 2) s1 += partial[k * sums * C + C + c];
    }
  }
  part[0][g][threadIdx.x] = s0;
  part[1][g][threadIdx.x] = s1;
  __syncthreads();
  if (g != 0 || c >= C) return;
  s0 = 0.f;
  s1 = 0.f;
  for (int q = 0; q < kFinishGroups; ++q) {
    s0 += part[0][q][threadIdx.x];
    s1 += part[1][q][threadIdx.x];
  }
  if (out0) out0[c] = from_f<T>(to_f(out0[c]) + s0);
  if (sums == 2 && out1) out1[c] = from_f<T>(to_f(out1[c]) + s1);
}

// ---------------- elementwise ----------------

__device__ __forceinline__ float gelu_tanh(float x) {
  return 0.5f * x * (1.f + tanhf(kSqrt2OverPi * (x + kGeluCubic * x * x * x)));
}
__device__ __forceinline__ float gelu_tanh_grad(float x) {
  const float th = tanhf(kSqrt2OverPi * (x + kGeluCubic * x * x * x));
  const float sech2 = 1.f - th * th;
  return 0.5f * (1.f + th) + 0.5f * x * sech2 * kSqrt2OverPi * (1.f + 3.f * kGeluCubic * x * x);
}

template <typename T>
__global__ void gelu_forward_kernel(T* out, const T* inp, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x)
    out[i] = from_f<T>(gelu_tanh(to_f(inp[i])));
}
template <typename T>
__global__ void gelu_backward_kernel(T* dinp, const T* inp, const T* dout, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x)
    dinp[i] = from_f<T>(gelu_tanh_grad(to_f(inp[i])) * to_f(dout[i]));
}
template <typename T>
__global__ void bias_add_kernel(T* out, const T* bias, std::int64_t total, std::int64_t OC) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total; i += std::int64_t(gridDim.x) * blockDim.x)
    out[i] = from_f<T>(to_f(out[i]) + to_f(bias[i % OC]));
}
template <typename T>
__global__ void residual_add_kernel(T* out, const T* a, const T* b, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x)
    out[i] = from_f<T>(to_f(a[i]) + to_f(b[i]));
}
// ---------------- softmax cross-entropy ----------------

constexpr int kCeThreads = 512;

// (max, sum of exp(z - max)) pairs combine associatively; -inf maxima (no elements yet) are handled.
struct MaxSum {
  float m, s;
};
__device__ __forceinline__ MaxSum combine(MaxSum a, MaxSum b) {
  if (a.m == -INFINITY) return b;
  if (b.m == -INFINITY) return a;
  const float m = fmaxf(a.m, b.m);
  return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

// lse of row z over j < V with the whole block; every thread gets it.
template <typename T>
__device__ float row_logsumexp(const T* z, std::int64_t V) {
  __shared__ float sm[32], ss[32];
  MaxSum acc{-INFINITY, 0.f};
  for (std::int64_t j = threadIdx.x; j < V; j += blockDim.x) acc = combine(acc, MaxSum{to_f(z[j]), 1.f});
  for (int o = 16; o > 0; o >>= 1) {
    const MaxSum other{__shfl_xor_sync(0xffffffffu, acc.m, o), __shfl_xor_sync(0xffffffffu, acc.s, o)};
    acc = combine(acc, other);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (lane == 0) {
    sm[warp] = acc.m;
    ss[warp] = acc.s;
  }
  __syncthreads();
  MaxSum tot{-INFINITY, 0.f};
  for (int w = 0; w < warps; ++w) tot = combine(tot, MaxSum{sm[w], ss[w]});  // same order in every thread
  return tot.m + logf(tot.s);
}

// mode bit 1: write losses/lse; bit 2: overwrite logits with the gradient (needs lse from this pass or given).
template <typename T, bool kForward, bool kBackward>
__global__ void cross_entropy_kernel(float* losses, float* lse_out, T* logits, const float* lse_in,
                                     const std::int32_t* targets, float scale, std::int64_t V, std::int64_t Vp) {
  const std::int64_t row = blockIdx.x;
  T* z = logits + row * Vp;
  const std::int32_t target = targets ? targets[row] : -1;
  const bool target_ok = target >= 0 && target < V;
  // The target's logit is read before any thread overwrites the row (the reduction below synchronizes).
  const float z_target = (kForward && threadIdx.x == 0 && target_ok) ? to_f(z[target]) : 0.f;
  float lse;
  if constexpr (kForward) {
    lse = row_logsumexp(z, V);
    if (threadIdx.x == 0) {
      if (lse_out) lse_out[row] = lse;
      if (losses && targets) losses[row] = target_ok ? lse - z_target : NAN;
    }
  } else {
    lse = lse_in[row];
  }
  if constexpr (kBackward) {
    for (std::int64_t j = threadIdx.x; j < V; j += blockDim.x) {
      float g = scale * expf(to_f(z[j]) - lse);
      if (j == target) g -= scale;
      z[j] = from_f<T>(g);
    }
    for (std::int64_t j = V + threadIdx.x; j < Vp; j += blockDim.x) z[j] = from_f<T>(0.f);
  }
}

// ---------------- attention softmax ----------------

// One warp per row r of the (BNH·T, T) scores; t = r mod T is the query position.
template <typename T>
__global__ void causal_softmax_kernel(T* att, std::int64_t rows, std::int64_t Tn) {
  const std::int64_t r = blockIdx.x * std::int64_t(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const std::int64_t t = r % Tn;
  T* p = att + r * Tn;
  float mx = -INFINITY;
  for (std::int64_t j = lane; j <= t; j += 32) mx = fmaxf(mx, to_f(p[j]));
  mx = detail::warp_max(mx);
  float sum = 0.f;
  for (std::int64_t j = lane; j <= t; j += 32) sum += expf(to_f(p[j]) - mx);
  const float inv = 1.f / detail::warp_sum(sum);
  for (std::int64_t j = lane; j < Tn; j += 32) p[j] = from_f<T>(j <= t ? expf(to_f(p[j]) - mx) * inv : 0.f);
}

template <typename T>
__global__ void causal_softmax_backward_kernel(T* datt, const T* att, float scale, std::int64_t rows,
                                               std::int64_t Tn) {
  const std::int64_t r = blockIdx.x * std::int64_t(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const std::int64_t t = r % Tn;
  const T* p = att + r * Tn;
  T* d = datt + r * Tn;
  float dot = 0.f;
  for (std::int64_t j = lane; j <= t; j += 32) dot += to_f(p[j]) * to_f(d[j]);
  dot = detail::warp_sum(dot);
  for (std::int64_t j = lane; j < Tn; j += 32)
    d[j] = from_f<T>(j <= t ? to_f(p[j]) * (to_f(d[j]) - dot) * scale : 0.f);
}

// ---------------- head layout ----------------

// i indexes (B, NH, T, hs); returns the offset of the same element in a (B, T, parts·NH·hs) tensor's part 0.
__device__ __forceinline__ std::int64_t bthd_offset(std::int64_t i, std::int64_t Tn, std::int64_t NH, std::int64_t hs,
                                                    std::int64_t row_width) {
  const std::int64_t d = i % hs, t = (i / hs) % Tn, h = (i / (hs * Tn)) % NH, b = i / (hs * Tn * NH);
  return (b * Tn + t) * row_width + h * hs + d;
}

// Packed rows (B, T, (NH + 2·NKV)·hs): q heads, then k heads, then v heads. i indexes q (B, NH, T, hs) when
// i < nq, else k and v (B, NKV, T, hs) at i - nq.
template <typename T>
__global__ void split_heads_kernel(T* q, T* k, T* v, const T* qkv, std::int64_t nq, std::int64_t nkv,
                                   std::int64_t Tn, std::int64_t NH, std::int64_t NKV, std::int64_t hs) {
  const std::int64_t W = (NH + 2 * NKV) * hs;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < nq + nkv;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    if (i < nq) {
      q[i] = qkv[bthd_offset(i, Tn, NH, hs, W)];
    } else {
      const std::int64_t j = i - nq, o = bthd_offset(j, Tn, NKV, hs, W) + NH * hs;
      k[j] = qkv[o];
      v[j] = qkv[o + NKV * hs];
    }
  }
}
template <typename T>
__global__ void merge_qkv_heads_kernel(T* qkv, const T* q, const T* k, const T* v, std::int64_t nq, std::int64_t nkv,
                                       std::int64_t Tn, std::int64_t NH, std::int64_t NKV, std::int64_t hs) {
  const std::int64_t W = (NH + 2 * NKV) * hs;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < nq + nkv;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    if (i < nq) {
      qkv[bthd_offset(i, Tn, NH, hs, W)] = q[i];
    } else {
      const std::int64_t j = i - nq, o = bthd_offset(j, Tn, NKV, hs, W) + NH * hs;
      qkv[o] = k[j];
      qkv[o + NKV * hs] = v[j];
    }
  }
}

// ---------------- RMSNorm, rotary embeddings, SwiGLU (LLaMA) ----------------

// One warp per row: out = x · rstd · w, rstd = 1 / sqrt(mean(x²) + eps).
template <typename T>
__global__ void rmsnorm_forward_kernel(T* out, float* rstd, const T* x, const T* w, std::int64_t N, std::int64_t C,
                                       float eps) {
  const std::int64_t row = blockIdx.x * std::int64_t(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= N) return;
  const T* xr = x + row * C;
  float s = 0.f;
  for (std::int64_t c = lane; c < C; c += 32) s += to_f(xr[c]) * to_f(xr[c]);
  const float r = 1.0f / sqrtf(detail::warp_sum(s) / static_cast<float>(C) + eps);
  T* o = out + row * C;
  for (std::int64_t c = lane; c < C; c += 32) o[c] = from_f<T>(to_f(xr[c]) * r * to_f(w[c]));
  if (lane == 0 && rstd) rstd[row] = r;
}

// dx += rstd · (dnorm − x̂ · mean(dnorm · x̂)), dnorm = dout · w; one warp per row.
template <typename T>
__global__ void rmsnorm_backward_dx_kernel(T* dx, const T* dout, const T* x, const T* w, const float* rstd,
                                           std::int64_t N, std::int64_t C) {
  const std::int64_t row = blockIdx.x * std::int64_t(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= N) return;
  const T* xr = x + row * C;
  const T* dr = dout + row * C;
  const float r = rstd[row];
  float sum = 0.f;
  for (std::int64_t c = lane; c < C; c += 32) sum += to_f(dr[c]) * to_f(w[c]) * to_f(xr[c]) * r;
  sum = detail::warp_sum(sum) / static_cast<float>(C);
  T* o = dx + row * C;
  for (std::int64_t c = lane; c < C; c += 32)
    o[c] = from_f<T>(to_f(o[c]) + r * (to_f(dr[c]) * to_f(w[c]) - to_f(xr[c]) * r * sum));
}

// One thread per rotated pair (b, t, head, i < hs/2), in place; cos/sin tables (maxT, hs/2) in fp32.
template <typename T>
__global__ void rope_kernel(T* x, const float* cosv, const float* sinv, std::int64_t total, std::int64_t Tn,
                            std::int64_t stride, std::int64_t heads, std::int64_t half, float sign) {
  for (std::int64_t id = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; id < total;
       id += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t i = id % half, h = (id / half) % heads, bt = id / (half * heads), t = bt % Tn;
    T* lo = x + bt * stride + h * 2 * half + i;
    T* hi = lo + half;
    const float c = cosv[t * half + i], s = sign * sinv[t * half + i];
    const float a = to_f(*lo), d = to_f(*hi);
    *lo = from_f<T>(a * c - d * s);
    *hi = from_f<T>(d * c + a * s);
  }
}

template <typename T>
__global__ void swiglu_forward_kernel(T* out, const T* gate, const T* up, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x) {
    const float g = to_f(gate[i]);
    out[i] = from_f<T>(g / (1.f + expf(-g)) * to_f(up[i]));
  }
}
template <typename T>
__global__ void swiglu_backward_kernel(T* dgate, T* dup, const T* dout, const T* gate, const T* up, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x) {
    const float g = to_f(gate[i]), u = to_f(up[i]), d = to_f(dout[i]);
    const float sg = 1.f / (1.f + expf(-g));
    dgate[i] = from_f<T>(d * u * sg * (1.f + g * (1.f - sg)));
    dup[i] = from_f<T>(d * g * sg);
  }
}

template <typename T>
__global__ void merge_heads_kernel(T* out, const T* y, std::int64_t total, std::int64_t Tn, std::int64_t NH,
                                   std::int64_t hs) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total; i += std::int64_t(gridDim.x) * blockDim.x)
    out[bthd_offset(i, Tn, NH, hs, NH * hs)] = y[i];
}
template <typename T>
__global__ void split_heads_one_kernel(T* y, const T* out, std::int64_t total, std::int64_t Tn, std::int64_t NH,
                                       std::int64_t hs) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total; i += std::int64_t(gridDim.x) * blockDim.x)
    y[i] = out[bthd_offset(i, Tn, NH, hs, NH * hs)];
}

// Warp-per-row kernels do not loop: the grid covers every row (kThreads / 32 rows per block).
unsigned warp_row_blocks(std::int64_t rows) { return blocks_for(rows * 32, kThreads, (std::int64_t(1) << 31) - 1); }

}  // namespace

// ================= host entry points =================

template <typename T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* x, const T* w, const T* b, std::int64_t N,
                       std::int64_t C, cudaStream_t stream) {
  OS_CUDA_REQUIRE(C > 0 || N == 0, "layernorm_forward: C must be positive");
  if (N == 0) return;
  layernorm_forward_kernel<<<warp_row_blocks(N), kThreads, 0, stream>>>(out, mean, rstd, x, w, b, N, C);
  OS_CUDA_CHECK_LAUNCH();
}

std::size_t column_sums_scratch_floats(std::int64_t N, std::int64_t C, int sums_per_column) {
  return static_cast<std::size_t>(chunks_for(N) * C * sums_per_column);
}

namespace {
template <typename T, bool kLayerNorm>
void column_sums(T* out0, T* out1, float* scratch, const T* dout, const T* x, const float* mean, const float* rstd,
                 std::int64_t N, std::int64_t C, cudaStream_t stream) {
  const std::int64_t chunk_rows = chunk_rows_for(N), chunks = chunks_for(N);
  const dim3 grid(static_cast<unsigned>((C + kThreads - 1) / kThreads), static_cast<unsigned>(chunks));
  column_partials_kernel<T, kLayerNorm><<<grid, kThreads, 0, stream>>>(scratch, dout, x, mean, rstd, N, C, chunk_rows);
  OS_CUDA_CHECK_LAUNCH();
  column_finish_kernel<T><<<static_cast<unsigned>((C + 31) / 32), dim3(32, kFinishGroups), 0, stream>>>(
      out0, out1, scratch, chunks, C, kLayerNorm ? 2 : 1);
  OS_CUDA_CHECK_LAUNCH();
}
}  // namespace

template <typename T>
void layernorm_backward(T* dx, T* dw, T* db, float* scratch, const T* dout, const T* x, const T* w,
                        const float* mean, const float* rstd, std::int64_t N, std::int64_t C, cudaStream_t stream) {
  if (N == 0 || C == 0) return;
  if (dx) {
    constexpr std::int64_t kPackRow = 32 * (16 / sizeof(T));  // elements of one pack per lane
    const auto aligned = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; };
    const bool packed = C % kPackRow == 0 && C / kPackRow <= kLnMaxPacks && aligned(dx) && aligned(dout) &&
                        aligned(x) && aligned(w);
    const int nv = static_cast<int>(C / kPackRow);
    const unsigned blocks = warp_row_blocks(N);
    if (packed && nv <= 4) {
      layernorm_backward_dx_packed_kernel<T, 4><<<blocks, kThreads, 0, stream>>>(dx, dout, x, w, mean, rstd, N, nv);
    } else if (packed) {
      layernorm_backward_dx_packed_kernel<T, kLnMaxPacks><<<blocks, kThreads, 0, stream>>>(dx, dout, x, w, mean,
                                                                                          rstd, N, nv);
    } else {
      layernorm_backward_dx_kernel<<<blocks, kThreads, 0, stream>>>(dx, dout, x, w, mean, rstd, N, C);
    }
    OS_CUDA_CHECK_LAUNCH();
  }
  if (dw || db) {
    OS_CUDA_REQUIRE(scratch != nullptr, "layernorm_backward: scratch (column_sums_scratch_floats(N, C, 2)) is null");
    column_sums<T, true>(dw, db, scratch, dout, x, mean, rstd, N, C, stream);
  }
}

template <typename T> void gelu_forward(T* out, const T* inp, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  gelu_forward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(out, inp, n);
  OS_CUDA_CHECK_LAUNCH();
}
template <typename T>
void gelu_backward(T* dinp, const T* inp, const T* dout, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  gelu_backward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dinp, inp, dout, n);
  OS_CUDA_CHECK_LAUNCH();
}
template <typename T> void bias_add(T* out, const T* bias, std::int64_t N, std::int64_t OC, cudaStream_t stream) {
  if (N * OC <= 0) return;
  bias_add_kernel<<<blocks_for(N * OC), kThreads, 0, stream>>>(out, bias, N * OC, OC);
  OS_CUDA_CHECK_LAUNCH();
}
template <typename T>
void bias_backward(T* dbias, float* scratch, const T* dout, std::int64_t N, std::int64_t OC, cudaStream_t stream) {
  if (N == 0 || OC == 0 || !dbias) return;
  OS_CUDA_REQUIRE(scratch != nullptr, "bias_backward: scratch (column_sums_scratch_floats(N, OC, 1)) is null");
  column_sums<T, false>(dbias, nullptr, scratch, dout, nullptr, nullptr, nullptr, N, OC, stream);
}
template <typename T> void residual_add(T* out, const T* a, const T* b, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  residual_add_kernel<<<blocks_for(n), kThreads, 0, stream>>>(out, a, b, n);
  OS_CUDA_CHECK_LAUNCH();
}

namespace {
void check_ce_shape(std::int64_t N, std::int64_t V, std::int64_t Vp) {
  OS_CUDA_REQUIRE(V > 0 && V <= Vp, "cross_entropy: need 0 < V <= Vp");
  OS_CUDA_REQUIRE(N < (std::int64_t(1) << 31), "cross_entropy: more than 2^31 rows");
}
}  // namespace

template <typename T>
void cross_entropy_forward(float* losses, float* lse, const T* logits, const std::int32_t* targets, std::int64_t N,
                           std::int64_t V, std::int64_t Vp, cudaStream_t stream) {
  if (N == 0) return;
  check_ce_shape(N, V, Vp);
  cross_entropy_kernel<T, true, false><<<static_cast<unsigned>(N), kCeThreads, 0, stream>>>(
      losses, lse, const_cast<T*>(logits), nullptr, targets, 0.f, V, Vp);  // the forward-only kernel never writes
  OS_CUDA_CHECK_LAUNCH();
}
template <typename T>
void cross_entropy_backward_inplace(T* logits, const float* lse, const std::int32_t* targets, float scale,
                                    std::int64_t N, std::int64_t V, std::int64_t Vp, cudaStream_t stream) {
  if (N == 0) return;
  check_ce_shape(N, V, Vp);
  cross_entropy_kernel<T, false, true><<<static_cast<unsigned>(N), kCeThreads, 0, stream>>>(
      nullptr, nullptr, logits, lse, targets, scale, V, Vp);
  OS_CUDA_CHECK_LAUNCH();
}
template <typename T>
void softmax_cross_entropy_fused(float* losses, T* logits, const std::int32_t* targets, float scale,
                                 std::int64_t N, std::int64_t V, std::int64_t Vp, cudaStream_t stream) {
  if (N == 0) return;
  check_ce_shape(N, V, Vp);
  OS_CUDA_REQUIRE(targets != nullptr, "softmax_cross_entropy_fused: targets are required");
  cross_entropy_kernel<T, true, true><<<static_cast<unsigned>(N), kCeThreads, 0, stream>>>(
      losses, nullptr, logits, nullptr, targets, scale, V, Vp);
  OS_CUDA_CHECK_LAUNCH();
}

template <typename T> void causal_softmax_inplace(T* att, std::int64_t BNH, std::int64_t Tn, cudaStream_t stream) {
  if (BNH * Tn == 0) return;
  causal_softmax_kernel<<<warp_row_blocks(BNH * Tn), kThreads, 0, stream>>>(att, BNH * Tn, Tn);
  OS_CUDA_CHECK_LAUNCH();
}
template <typename T>
void causal_softmax_backward_inplace(T* datt, const T* att, float scale, std::int64_t BNH, std::int64_t Tn,
                                     cudaStream_t stream) {
  if (BNH * Tn == 0) return;
  causal_softmax_backward_kernel<<<warp_row_blocks(BNH * Tn), kThreads, 0, stream>>>(datt, att, scale, BNH * Tn, Tn);
  OS_CUDA_CHECK_LAUNCH();
}

template <typename T>
void split_heads(T* q, T* k, T* v, const T* qkv, std::int64_t B, std::int64_t Tn, std::int64_t NH, std::int64_t NKV,
                 std::int64_t hs, cudaStream_t stream) {
  OS_CUDA_REQUIRE(NKV > 0 && NH % NKV == 0, "split_heads: NH must be a multiple of NKV");
  const std::int64_t nq = B * NH * Tn * hs, nkv = B * NKV * Tn * hs;
  if (nq == 0) return;
  split_heads_kernel<<<blocks_for(nq + nkv), kThreads, 0, stream>>>(q, k, v, qkv, nq, nkv, Tn, NH, NKV, hs);
  OS_CUDA_CHECK_LAUNCH();
}
template <typename T>
void merge_qkv_heads(T* qkv, const T* q, const T* k, const T* v, std::int64_t B, std::int64_t Tn, std::int64_t NH,
                     std::int64_t NKV, std::int64_t hs, cudaStream_t stream) {
  OS_CUDA_REQUIRE(NKV > 0 && NH % NKV == 0, "merge_qkv_heads: NH must be a multiple of NKV");
  const std::int64_t nq = B * NH * Tn * hs, nkv = B * NKV * Tn * hs;
  if (nq == 0) return;
  merge_qkv_heads_kernel<<<blocks_for(nq + nkv), kThreads, 0, stream>>>(qkv, q, k, v, nq, nkv, Tn, NH, NKV, hs);
  OS_CUDA_CHECK_LAUNCH();
}
template <typename T>
void rmsnorm_forward(T* out, float* rstd, const T* x, const T* w, std::int64_t N, std::int64_t C, float eps,
                     cudaStream_t stream) {
  OS_CUDA_REQUIRE(C > 0 || N == 0, "rmsnorm_forward: C must be positive");
  if (N == 0) return;
  rmsnorm_forward_kernel<<<warp_row_blocks(N), kThreads, 0, stream>>>(out, rstd, x, w, N, C, eps);
  OS_CUDA_CHECK_LAUNCH();
}
template <typename T>
void rmsnorm_backward(T* dx, T* dw, float* scratch, const T* dout, const T* x, const T* w, const float* rstd,
                      std::int64_t N, std::int64_t C, cudaStream_t stream) {
  if (N == 0 || C == 0) return;
  if (dx) {
    rmsnorm_backward_dx_kernel<<<warp_row_blocks(N), kThreads, 0, stream>>>(dx, dout, x, w, rstd, N, C);
    OS_CUDA_CHECK_LAUNCH();
  }
  if (dw) {
    // Σ_n dout·x̂ is layernorm's weight sum with no mean: the same fixed-order column sums (the Σ dout half unused).
    OS_CUDA_REQUIRE(scratch != nullptr, "rmsnorm_backward: scratch (column_sums_scratch_floats(N, C, 2)) is null");
    column_sums<T, true>(dw, nullptr, scratch, dout, x, nullptr, rstd, N, C, stream);
  }
}
template <typename T>
void rope_apply(T* x, const float* cosv, const float* sinv, std::int64_t B, std::int64_t Tn, std::int64_t stride,
                std::int64_t heads, std::int64_t hs, bool inverse, cudaStream_t stream) {
  OS_CUDA_REQUIRE(hs % 2 == 0, "rope_apply: the head size must be even");
  const std::int64_t total = B * Tn * heads * (hs / 2);
  if (total == 0) return;
  rope_kernel<<<blocks_for(total), kThreads, 0, stream>>>(x, cosv, sinv, total, Tn, stride, heads, hs / 2,
                                                          inverse ? -1.f : 1.f);
  OS_CUDA_CHECK_LAUNCH();
}
template <typename T> void swiglu_forward(T* out, const T* gate, const T* up, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  swiglu_forward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(out, gate, up, n);
  OS_CUDA_CHECK_LAUNCH();
}
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  swiglu_backward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dgate, dup, dout, gate, up, n);
  OS_CUDA_CHECK_LAUNCH();
}
template <typename T>
void merge_heads(T* out, const T* y, std::int64_t B, std::int64_t Tn, std::int64_t NH, std::int64_t hs,
                 cudaStream_t stream) {
  const std::int64_t total = B * NH * Tn * hs;
  if (total == 0) return;
  merge_heads_kernel<<<blocks_for(total), kThreads, 0, stream>>>(out, y, total, Tn, NH, hs);
  OS_CUDA_CHECK_LAUNCH();
}
template <typename T>
void split_heads_one(T* y, const T* out, std::int64_t B, std::int64_t Tn, std::int64_t NH, std::int64_t hs,
                     cudaStream_t stream) {
  const std::int64_t total = B * NH * Tn * hs;
  if (total == 0) return;
  split_heads_one_kernel<<<blocks_for(total), kThreads, 0, stream>>>(y, out, total, Tn, NH, hs);
  OS_CUDA_CHECK_LAUNCH();
}

#define ORTHOSHARD_LAYER_KERNELS(T)                                                                                 \
  template void layernorm_forward<T>(T*, float*, float*, const T*, const T*, const T*, std::int64_t, std::int64_t, \
                                     cudaStream_t);                                                                \
  template void layernorm_backward<T>(T*, T*, T*, float*, const T*, const T*, const T*, const float*, const float*, \
                                      std::int64_t, std::int64_t, cudaStream_t);                                   \
  template void gelu_forward<T>(T*, const T*, std::int64_t, cudaStream_t);                                         \
  template void gelu_backward<T>(T*, const T*, const T*, std::int64_t, cudaStream_t);                              \
  template void bias_add<T>(T*, const T*, std::int64_t, std::int64_t, cudaStream_t);                              \
  template void bias_backward<T>(T*, float*, const T*, std::int64_t, std::int64_t, cudaStream_t);                  \
  template void residual_add<T>(T*, const T*, const T*, std::int64_t, cudaStream_t);                               \
  template void cross_entropy_forward<T>(float*, float*, const T*, const std::int32_t*, std::int64_t, std::int64_t, \
                                         std::int64_t, cudaStream_t);                                              \
  template void cross_entropy_backward_inplace<T>(T*, const float*, const std::int32_t*, float, std::int64_t,      \
                                                  std::int64_t, std::int64_t, cudaStream_t);                       \
  template void softmax_cross_entropy_fused<T>(float*, T*, const std::int32_t*, float, std::int64_t, std::int64_t, \
                                               std::int64_t, cudaStream_t);                                        \
  template void causal_softmax_inplace<T>(T*, std::int64_t, std::int64_t, cudaStream_t);                           \
  template void causal_softmax_backward_inplace<T>(T*, const T*, float, std::int64_t, std::int64_t, cudaStream_t); \
  template void split_heads<T>(T*, T*, T*, const T*, std::int64_t, std::int64_t, std::int64_t, std::int64_t,       \
                               std::int64_t, cudaStream_t);                                                        \
  template void merge_qkv_heads<T>(T*, const T*, const T*, const T*, std::int64_t, std::int64_t, std::int64_t,     \
                                   std::int64_t, std::int64_t, cudaStream_t);                                      \
  template void rmsnorm_forward<T>(T*, float*, const T*, const T*, std::int64_t, std::int64_t, float, cudaStream_t); \
  template void rmsnorm_backward<T>(T*, T*, float*, const T*, const T*, const T*, const float*, std::int64_t,      \
                                    std::int64_t, cudaStream_t);                                                   \
  template void rope_apply<T>(T*, const float*, const float*, std::int64_t, std::int64_t, std::int64_t,            \
                              std::int64_t, std::int64_t, bool, cudaStream_t);                                     \
  template void swiglu_forward<T>(T*, const T*, const T*, std::int64_t, cudaStream_t);                             \
  template void swiglu_backward<T>(T*, T*, const T*, const T*, const T*, std::int64_t, cudaStream_t);              \
  template void merge_heads<T>(T*, const T*, std::int64_t, std::int64_t, std::int64_t, std::int64_t, cudaStream_t); \
  template void split_heads_one<T>(T*, const T*, std::int64_t, std::int64_t, std::int64_t, std::int64_t,           \
                                   cudaStream_t);

ORTHOSHARD_LAYER_KERNELS(float)
ORTHOSHARD_LAYER_KERNELS(bf16)

}  // namespace orthoshard::cuda
