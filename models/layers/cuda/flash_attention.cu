// Fused causal attention (see flash_attention.hpp). Every block works on one (batch, head) and one tile of rows;
// each warp owns 16 of those rows. Tensor-core products go through WMMA 16x16x16 fragments in shared memory
// only (their register layout is unspecified, so nothing here depends on it): a warp stores a product to its
// own scratch rows, its lanes then work on whole rows (two lanes per row, even and odd columns: rows 8 apart
// share banks, so shared-memory accesses conflict at most 2-way), and write
// the bf16 operand of the next product back to shared memory. Shared memory stays under the 48 KiB a block may
// have statically: at hs = 128 blocks have 2 warps and key tiles of 32.
#include "models/layers/cuda/flash_attention.hpp"

#include "runtime/cuda/check.hpp"

#include <mma.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>

namespace orthoshard::cuda {

namespace {

using bf16 = __nv_bfloat16;
namespace wmma = nvcuda::wmma;
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBt = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

constexpr unsigned kFull = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;
constexpr std::size_t kMaxStaticShared = 48 * 1024;

constexpr int cmax(int a, int b) { return a > b ? a : b; }
__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
constexpr bool aligned32(std::size_t bytes) { return bytes % 32 == 0; }

// Blocks of 16·WARPS rows; key (or query) tiles of TILE rows streamed through shared memory.
template <int HS> struct Shape {
  static constexpr int kWarps = HS == 128 ? 2 : 4;
  static constexpr int kForwardTile = HS == 128 ? 32 : 64;
  static constexpr int kBackwardTile = 32;
};

// Rows [row0, row0 + ROWS) of one head's HS columns (`src` at the head's column 0 of row 0, rows `stride` elements
// apart) into shared memory of leading dimension LD, 16 bytes at a time; rows at or past Tn read as zeros.
template <int ROWS, int HS, int LD>
__device__ __forceinline__ void load_rows(bf16* dst, const bf16* src, int row0, int Tn, std::int64_t stride) {
  constexpr int kVecs = HS / 8;
  for (int i = threadIdx.x; i < ROWS * kVecs; i += blockDim.x) {
    const int r = i / kVecs, c = (i % kVecs) * 8;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (row0 + r < Tn) v = *reinterpret_cast<const uint4*>(src + (row0 + r) * stride + c);
    *reinterpret_cast<uint4*>(dst + r * LD + c) = v;
  }
}

// out (16 x 16·NT floats, leading dimension ldo) = a · bᵀ, where a is 16 x HS (HS/16 fragments) and b is
// (16·NT x HS) row-major in shared memory (leading dimension ldb).
template <int HS, int NT>
__device__ __forceinline__ void product_abt(float* out, int ldo, const FragA (&a)[HS / 16], const bf16* b, int ldb) {
#pragma unroll
  for (int n = 0; n < NT; ++n) {
    FragC acc;
    wmma::fill_fragment(acc, 0.f);
#pragma unroll
    for (int kk = 0; kk < HS / 16; ++kk) {
      FragBt bt;
      wmma::load_matrix_sync(bt, b + n * 16 * ldb + kk * 16, ldb);
      wmma::mma_sync(acc, a[kk], bt, acc);
    }
    wmma::store_matrix_sync(out + n * 16, acc, ldo, wmma::mem_row_major);
  }
}

// acc (16 x HS, HS/16 fragments) += a · b, where a is 16 x 16·KT and b is (16·KT x HS), both row-major bf16 in
// shared memory.
template <int HS, int KT>
__device__ __forceinline__ void accumulate_ab(FragC (&acc)[HS / 16], const bf16* a, int lda, const bf16* b, int ldb) {
#pragma unroll
  for (int kk = 0; kk < KT; ++kk) {
    FragA af;
    wmma::load_matrix_sync(af, a + kk * 16, lda);
#pragma unroll
    for (int i = 0; i < HS / 16; ++i) {
      FragB bf;
      wmma::load_matrix_sync(bf, b + kk * 16 * ldb + i * 16, ldb);
      wmma::mma_sync(acc[i], af, bf, acc[i]);
    }
  }
}

// Stores a warp's 16 x HS fragments to `scratch` (leading dimension ld) and writes the lane's half row `r` to
// dst[c] = scratch[r][c] · factor for its HS/2 columns; dst null (a row past T): nothing. The caller has
// __syncwarp'ed since `scratch` was last read.
template <int HS>
__device__ __forceinline__ void write_rows(bf16* dst, float* scratch, int ld, const FragC (&acc)[HS / 16], int r,
                                           int half, float factor) {
#pragma unroll
  for (int i = 0; i < HS / 16; ++i) wmma::store_matrix_sync(scratch + i * 16, acc[i], ld, wmma::mem_row_major);
  __syncwarp();
  if (dst == nullptr) return;
  for (int c = half * (HS / 2); c < (half + 1) * (HS / 2); ++c) dst[c] = __float2bfloat16_rn(scratch[r * ld + c] * factor);
}

// Where a head's rows start in packed q | k | v rows of width W = C + 2·NKV·hs (grouped-query attention: query
// head h reads key/value head h / (NH / NKV); GPT-2 is NKV = NH, W = 3C).
struct Heads {
  std::int64_t W;
  const bf16 *q, *k, *v;
  __device__ Heads(const bf16* qkv, int b, int h, int Tn, int C, int NH, int NKV)
      : W(std::int64_t(C) + 2 * std::int64_t(C / NH) * NKV) {
    const int hs = C / NH, kvh = h / (NH / NKV);
    const bf16* row0 = qkv + std::int64_t(b) * Tn * W;
    q = row0 + std::int64_t(h) * hs;
    k = row0 + C + std::int64_t(kvh) * hs;
    v = k + std::int64_t(NKV) * hs;
  }
};

// ---------------- forward ----------------

template <int HS> struct ForwardLayout {
  static constexpr int kWarps = Shape<HS>::kWarps, kTile = Shape<HS>::kForwardTile;
  static constexpr int kRows = 16 * kWarps;
  static constexpr int kLdh = HS + 8, kLds = kTile + 4, kLdp = kTile + 8, kLdo = HS + 4;
  static constexpr int kScratchFloats = 16 * cmax(kLds, kLdo);  // per warp: scores, then the output rows
  static constexpr int kQpElems = cmax(kRows * kLdh, kWarps * 16 * kLdp);  // the Q tile, then each warp's P
  static constexpr std::size_t kK = 0;
  static constexpr std::size_t kV = kK + std::size_t(kTile) * kLdh * 2;
  static constexpr std::size_t kScratch = kV + std::size_t(kTile) * kLdh * 2;
  static constexpr std::size_t kQp = kScratch + std::size_t(kWarps) * kScratchFloats * 4;
  static constexpr std::size_t kBytes = kQp + std::size_t(kQpElems) * 2;
  static_assert(kBytes <= kMaxStaticShared, "forward tiles exceed static shared memory");
  static_assert(aligned32(kV) && aligned32(kScratch) && aligned32(kQp), "WMMA needs 256-bit aligned tiles");
};

// Grid (B·NH, query tiles), the tiles with the most keys first. stats as flash_attention_forward.
template <int HS>
__global__ void __launch_bounds__(ForwardLayout<HS>::kWarps * 32)
    flash_forward_kernel(bf16* out, float* stats, const bf16* qkv, int Tn, int C, int NH, int NKV, float scale_log2) {
  using L = ForwardLayout<HS>;
  __shared__ __align__(32) unsigned char smem[L::kBytes];
  bf16* sk = reinterpret_cast<bf16*>(smem + L::kK);
  bf16* sv = reinterpret_cast<bf16*>(smem + L::kV);
  bf16* sqp = reinterpret_cast<bf16*>(smem + L::kQp);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* scratch = reinterpret_cast<float*>(smem + L::kScratch) + warp * L::kScratchFloats;
  bf16* sp = sqp + warp * 16 * L::kLdp;
  const int bh = blockIdx.x, b = bh / NH, h = bh % NH;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * L::kRows;
  const Heads hd(qkv, b, h, Tn, C, NH, NKV);

  load_rows<L::kRows, HS, L::kLdh>(sqp, hd.q, q0, Tn, hd.W);
  __syncthreads();
  FragA qf[HS / 16];
  FragC of[HS / 16];
#pragma unroll
  for (int i = 0; i < HS / 16; ++i) {
    wmma::load_matrix_sync(qf[i], sqp + warp * 16 * L::kLdh + i * 16, L::kLdh);
    wmma::fill_fragment(of[i], 0.f);
  }
  const int r = lane / 2, half = lane % 2;
  const int q = q0 + warp * 16 + r;  // this lane's query row
  float m = -INFINITY, l = 0.f;      // running max (log2 domain) and sum of the row
  const int kend = imin(q0 + L::kRows, Tn);
  for (int k0 = 0; k0 < kend; k0 += L::kTile) {
    __syncthreads();  // every warp holds its Q fragments and is done with the previous K and V tiles
    load_rows<L::kTile, HS, L::kLdh>(sk, hd.k, k0, Tn, hd.W);
    load_rows<L::kTile, HS, L::kLdh>(sv, hd.v, k0, Tn, hd.W);
    __syncthreads();
    product_abt<HS, L::kTile / 16>(scratch, L::kLds, qf, sk, L::kLdh);
    __syncwarp();
    // Online softmax of row r over this tile's keys (causal and in-range only).
    float s[L::kTile / 2];
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < L::kTile / 2; ++j) {
      const int c = 2 * j + half, key = k0 + c;
      s[j] = (key <= q && key < Tn) ? scratch[r * L::kLds + c] * scale_log2 : -INFINITY;
      mx = fmaxf(mx, s[j]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(kFull, mx, 1));
    const float mnew = fmaxf(m, mx);
    const float alpha = mnew == -INFINITY ? 1.f : exp2f(m - mnew);
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < L::kTile / 2; ++j) {
      const float p = mnew == -INFINITY ? 0.f : exp2f(s[j] - mnew);
      sp[r * L::kLdp + 2 * j + half] = __float2bfloat16_rn(p);
      sum += p;
    }
    sum += __shfl_xor_sync(kFull, sum, 1);
    l = l * alpha + sum;
    m = mnew;
    int rescale = alpha != 1.f;
    for (int o = 16; o > 0; o >>= 1) rescale |= __shfl_xor_sync(kFull, rescale, o);
    __syncwarp();  // P written, the scores read
    if (k0 > 0 && rescale) {  // the warp's output rows times their alpha, through the scratch rows
#pragma unroll
      for (int i = 0; i < HS / 16; ++i) wmma::store_matrix_sync(scratch + i * 16, of[i], L::kLdo, wmma::mem_row_major);
      __syncwarp();
      for (int c = half * (HS / 2); c < (half + 1) * (HS / 2); ++c) scratch[r * L::kLdo + c] *= alpha;
      __syncwarp();
#pragma unroll
      for (int i = 0; i < HS / 16; ++i) wmma::load_matrix_sync(of[i], scratch + i * 16, L::kLdo, wmma::mem_row_major);
    }
    accumulate_ab<HS, L::kTile / 16>(of, sp, L::kLdp, sv, L::kLdh);
  }
  __syncwarp();
  write_rows<HS>(q < Tn ? out + (std::int64_t(b) * Tn + q) * C + h * HS : nullptr, scratch, L::kLdo, of, r, half,
                 1.f / l);
  if (q < Tn && half == 0) stats[std::int64_t(bh) * Tn + q] = m + log2f(l);
}

// ---------------- backward ----------------

// delta[(b·NH + h)·T + t] = Σ_d dout[b, t, h·hs + d] · out[b, t, h·hs + d], one thread per (b, t, h).
__global__ void row_dot_kernel(float* delta, const bf16* dout, const bf16* out, std::int64_t B, int Tn, int NH,
                               int hs) {
  const std::int64_t total = B * Tn * NH;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t h = i % NH, bt = i / NH, b = bt / Tn, t = bt % Tn;
    const bf16* g = dout + bt * NH * hs + h * hs;
    const bf16* o = out + bt * NH * hs + h * hs;
    float acc = 0.f;
    for (int d = 0; d < hs; ++d) acc += __bfloat162float(g[d]) * __bfloat162float(o[d]);
    delta[(b * NH + h) * Tn + t] = acc;
  }
}

// What both backward kernels share: 16·kWarps rows per block (queries for dQ, keys for dK/dV), tiles of kTile
// rows of the other side, and region A at the start of shared memory: first the block's two input tiles (Q and
// dO, or K and V) until they are in fragments, then per warp two 16 x kTile float products, at the end the
// warp's 16 output rows.
template <int HS> struct BackwardShape {
  static constexpr int kWarps = Shape<HS>::kWarps, kTile = Shape<HS>::kBackwardTile;
  static constexpr int kRows = 16 * kWarps;
  static constexpr int kLdh = HS + 8, kLds = kTile + 4, kLdp = kTile + 8, kLdo = HS + 4;
  static constexpr int kWarpFloats = cmax(2 * 16 * kLds, 16 * kLdo);
  static constexpr std::size_t kA = 0;
  static constexpr std::size_t kTileBytes = std::size_t(kTile) * kLdh * 2;  // one bf16 tile of the other side
  static constexpr std::size_t kABytes = std::size_t(cmax(2 * kRows * kLdh * 2, kWarps * kWarpFloats * 4));
  static_assert(aligned32(kABytes) && aligned32(kTileBytes) && aligned32(std::size_t(kRows) * kLdh * 2),
                "WMMA needs 256-bit aligned tiles");
};

template <int HS> struct DqLayout : BackwardShape<HS> {
  using S = BackwardShape<HS>;
  static constexpr std::size_t kK = S::kABytes;
  static constexpr std::size_t kV = kK + S::kTileBytes;
  static constexpr std::size_t kDs = kV + S::kTileBytes;  // per warp dS (16 x kLdp bf16)
  static constexpr std::size_t kBytes = kDs + std::size_t(S::kWarps) * 16 * S::kLdp * 2;
  static_assert(kBytes <= kMaxStaticShared, "dQ tiles exceed static shared memory");
};

// dQ for one query tile: grid (B·NH, query tiles), the tiles with the most keys first.
template <int HS>
__global__ void __launch_bounds__(DqLayout<HS>::kWarps * 32)
    flash_backward_dq_kernel(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* stats, const float* delta,
                             int Tn, int C, int NH, int NKV, float scale, float scale_log2) {
  using L = DqLayout<HS>;
  __shared__ __align__(32) unsigned char smem[L::kBytes];
  bf16* sq = reinterpret_cast<bf16*>(smem + L::kA);
  bf16* sdo = sq + L::kRows * L::kLdh;
  bf16* sk = reinterpret_cast<bf16*>(smem + L::kK);
  bf16* sv = reinterpret_cast<bf16*>(smem + L::kV);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* ss = reinterpret_cast<float*>(smem + L::kA) + warp * L::kWarpFloats;
  float* sdp = ss + 16 * L::kLds;
  bf16* sds = reinterpret_cast<bf16*>(smem + L::kDs) + warp * 16 * L::kLdp;
  const int bh = blockIdx.x, b = bh / NH, h = bh % NH;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * L::kRows;
  const Heads hd(qkv, b, h, Tn, C, NH, NKV);

  load_rows<L::kRows, HS, L::kLdh>(sq, hd.q, q0, Tn, hd.W);
  load_rows<L::kRows, HS, L::kLdh>(sdo, dout + std::int64_t(b) * Tn * C + h * HS, q0, Tn, C);
  __syncthreads();
  FragA qf[HS / 16], dof[HS / 16];
  FragC dqf[HS / 16];
#pragma unroll
  for (int i = 0; i < HS / 16; ++i) {
    wmma::load_matrix_sync(qf[i], sq + warp * 16 * L::kLdh + i * 16, L::kLdh);
    wmma::load_matrix_sync(dof[i], sdo + warp * 16 * L::kLdh + i * 16, L::kLdh);
    wmma::fill_fragment(dqf[i], 0.f);
  }
  const int r = lane / 2, half = lane % 2;
  const int q = q0 + warp * 16 + r;
  const float lse = q < Tn ? stats[std::int64_t(bh) * Tn + q] : 0.f;
  const float dd = q < Tn ? delta[std::int64_t(bh) * Tn + q] : 0.f;
  const int kend = imin(q0 + L::kRows, Tn);
  for (int k0 = 0; k0 < kend; k0 += L::kTile) {
    __syncthreads();  // fragments loaded (the first time); the previous K and V tiles no longer read
    load_rows<L::kTile, HS, L::kLdh>(sk, hd.k, k0, Tn, hd.W);
    load_rows<L::kTile, HS, L::kLdh>(sv, hd.v, k0, Tn, hd.W);
    __syncthreads();
    product_abt<HS, L::kTile / 16>(ss, L::kLds, qf, sk, L::kLdh);    // S = Q Kᵀ
    product_abt<HS, L::kTile / 16>(sdp, L::kLds, dof, sv, L::kLdh);  // dP = dO Vᵀ
    __syncwarp();
    for (int j = 0; j < L::kTile / 2; ++j) {
      const int c = 2 * j + half, key = k0 + c;
      const bool live = key <= q && key < Tn && q < Tn;
      const float p = live ? exp2f(ss[r * L::kLds + c] * scale_log2 - lse) : 0.f;
      sds[r * L::kLdp + c] = __float2bfloat16_rn(p * (sdp[r * L::kLds + c] - dd) * scale);
    }
    __syncwarp();
    accumulate_ab<HS, L::kTile / 16>(dqf, sds, L::kLdp, sk, L::kLdh);  // dQ += dS K
  }
  __syncwarp();
  write_rows<HS>(q < Tn ? dqkv + (std::int64_t(b) * Tn + q) * hd.W + h * HS : nullptr, ss, L::kLdo, dqf, r, half, 1.f);
}

template <int HS> struct DkvLayout : BackwardShape<HS> {
  using S = BackwardShape<HS>;
  static constexpr std::size_t kQ = S::kABytes;
  static constexpr std::size_t kDo = kQ + S::kTileBytes;
  static constexpr std::size_t kStats = kDo + S::kTileBytes;                // the tile's lse, then delta
  static constexpr std::size_t kP = kStats + std::size_t(2 * S::kTile) * 4;  // per warp Pᵀ, then dSᵀ
  static constexpr std::size_t kBytes = kP + std::size_t(S::kWarps) * 2 * 16 * S::kLdp * 2;
  static_assert(kBytes <= kMaxStaticShared, "dK/dV tiles exceed static shared memory");
  static_assert(aligned32(kStats) && aligned32(kP), "WMMA needs 256-bit aligned tiles");
};

// dK and dV for one key tile of one key/value head: grid (B·NKV, key tiles), the tiles with the most queries (the
// first) first; the group's query heads one after another into the same accumulators (one writer per dK, dV).
template <int HS>
__global__ void __launch_bounds__(DkvLayout<HS>::kWarps * 32)
    flash_backward_dkv_kernel(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* stats, const float* delta,
                              int Tn, int C, int NH, int NKV, float scale, float scale_log2) {
  using L = DkvLayout<HS>;
  __shared__ __align__(32) unsigned char smem[L::kBytes];
  bf16* sk = reinterpret_cast<bf16*>(smem + L::kA);
  bf16* sv = sk + L::kRows * L::kLdh;
  bf16* sq = reinterpret_cast<bf16*>(smem + L::kQ);
  bf16* sdo = reinterpret_cast<bf16*>(smem + L::kDo);
  float* slse = reinterpret_cast<float*>(smem + L::kStats);
  float* sdelta = slse + L::kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* sst = reinterpret_cast<float*>(smem + L::kA) + warp * L::kWarpFloats;
  float* sdpt = sst + 16 * L::kLds;
  bf16* spt = reinterpret_cast<bf16*>(smem + L::kP) + warp * 2 * 16 * L::kLdp;
  bf16* sdst = spt + 16 * L::kLdp;
  const int G = NH / NKV, b = blockIdx.x / NKV, kvh = blockIdx.x % NKV;
  const int k0 = blockIdx.y * L::kRows;
  const Heads kv(qkv, b, kvh * G, Tn, C, NH, NKV);

  load_rows<L::kRows, HS, L::kLdh>(sk, kv.k, k0, Tn, kv.W);
  load_rows<L::kRows, HS, L::kLdh>(sv, kv.v, k0, Tn, kv.W);
  __syncthreads();
  FragA kf[HS / 16], vf[HS / 16];
  FragC dkf[HS / 16], dvf[HS / 16];
#pragma unroll
  for (int i = 0; i < HS / 16; ++i) {
    wmma::load_matrix_sync(kf[i], sk + warp * 16 * L::kLdh + i * 16, L::kLdh);
    wmma::load_matrix_sync(vf[i], sv + warp * 16 * L::kLdh + i * 16, L::kLdh);
    wmma::fill_fragment(dkf[i], 0.f);
    wmma::fill_fragment(dvf[i], 0.f);
  }
  const int r = lane / 2, half = lane % 2;
  const int key = k0 + warp * 16 + r;  // this lane's key row
  for (int h = kvh * G; h < (kvh + 1) * G; ++h) {
    const std::int64_t bh = std::int64_t(b) * NH + h;
    const bf16* qbase = kv.q + std::int64_t(h - kvh * G) * HS;
    const bf16* dbase = dout + std::int64_t(b) * Tn * C + h * HS;
    for (int qs = k0 - k0 % L::kTile; qs < Tn; qs += L::kTile) {
      __syncthreads();  // fragments loaded (the first time); the previous Q, dO tiles and statistics no longer read
      load_rows<L::kTile, HS, L::kLdh>(sq, qbase, qs, Tn, kv.W);
      load_rows<L::kTile, HS, L::kLdh>(sdo, dbase, qs, Tn, C);
      for (int i = threadIdx.x; i < L::kTile; i += blockDim.x) {
        const bool in = qs + i < Tn;
        slse[i] = in ? stats[std::int64_t(bh) * Tn + qs + i] : 0.f;
        sdelta[i] = in ? delta[std::int64_t(bh) * Tn + qs + i] : 0.f;
      }
      __syncthreads();
      product_abt<HS, L::kTile / 16>(sst, L::kLds, kf, sq, L::kLdh);    // Sᵀ = K Qᵀ
      product_abt<HS, L::kTile / 16>(sdpt, L::kLds, vf, sdo, L::kLdh);  // dPᵀ = V dOᵀ
      __syncwarp();
      for (int j = 0; j < L::kTile / 2; ++j) {
        const int c = 2 * j + half, qq = qs + c;
        const bool live = qq >= key && qq < Tn && key < Tn;
        const float p = live ? exp2f(sst[r * L::kLds + c] * scale_log2 - slse[c]) : 0.f;
        spt[r * L::kLdp + c] = __float2bfloat16_rn(p);
        sdst[r * L::kLdp + c] = __float2bfloat16_rn(p * (sdpt[r * L::kLds + c] - sdelta[c]) * scale);
      }
      __syncwarp();
      accumulate_ab<HS, L::kTile / 16>(dvf, spt, L::kLdp, sdo, L::kLdh);  // dV += Pᵀ dO
      accumulate_ab<HS, L::kTile / 16>(dkf, sdst, L::kLdp, sq, L::kLdh);  // dK += dSᵀ Q
    }
  }
  __syncwarp();
  bf16* row = key < Tn ? dqkv + (std::int64_t(b) * Tn + key) * kv.W : nullptr;
  write_rows<HS>(row ? row + C + std::int64_t(kvh) * HS : nullptr, sst, L::kLdo, dkf, r, half, 1.f);
  __syncwarp();
  write_rows<HS>(row ? row + C + std::int64_t(NKV + kvh) * HS : nullptr, sst, L::kLdo, dvf, r, half, 1.f);
}

// `vectors` are read 16 bytes at a time (qkv, and dout in the backward): they must be 16-byte aligned.
void check_args(std::initializer_list<const void*> vectors, std::int64_t B, std::int64_t Tn, std::int64_t C,
                std::int64_t NH, std::int64_t NKV) {
  OS_CUDA_REQUIRE(B >= 0 && Tn >= 0 && C > 0 && NH > 0, "flash attention: bad shape");
  OS_CUDA_REQUIRE(NKV > 0 && NH % NKV == 0, "flash attention: NH must be a multiple of NKV");
  OS_CUDA_REQUIRE(flash_attention_supported(C, NH), "flash attention: the head size must be 16, 32, 64 or 128");
  // Row tiles (32 or more rows) run along gridDim.y, at most 65535 of them.
  OS_CUDA_REQUIRE(Tn <= std::int64_t(65535) * 32 && B * NH <= 0x7fffffff && B * Tn * 3 * C < (std::int64_t(1) << 62),
                  "flash attention: shape too large");
  for (const void* p : vectors)
    OS_CUDA_REQUIRE(reinterpret_cast<std::uintptr_t>(p) % 16 == 0, "flash attention: qkv and dout must be 16-byte aligned");
}

template <int HS>
void forward_for(bf16* out, float* stats, const bf16* qkv, std::int64_t B, std::int64_t Tn, std::int64_t C,
                 std::int64_t NH, std::int64_t NKV, cudaStream_t stream) {
  using L = ForwardLayout<HS>;
  const float scale_log2 = kLog2e / std::sqrt(static_cast<float>(HS));
  const dim3 grid(static_cast<unsigned>(B * NH), static_cast<unsigned>((Tn + L::kRows - 1) / L::kRows));
  flash_forward_kernel<HS><<<grid, L::kWarps * 32, 0, stream>>>(out, stats, qkv, static_cast<int>(Tn),
                                                                 static_cast<int>(C), static_cast<int>(NH),
                                                                 static_cast<int>(NKV), scale_log2);
  OS_CUDA_CHECK_LAUNCH();
}

template <int HS>
void backward_for(bf16* dqkv, const float* delta, const bf16* dout, const bf16* qkv, const float* stats,
                  std::int64_t B, std::int64_t Tn, std::int64_t C, std::int64_t NH, std::int64_t NKV,
                  cudaStream_t stream) {
  const float scale = 1.f / std::sqrt(static_cast<float>(HS)), scale_log2 = scale * kLog2e;
  const int T = static_cast<int>(Tn), Ci = static_cast<int>(C), NHi = static_cast<int>(NH), NKVi = static_cast<int>(NKV);
  {
    using L = DqLayout<HS>;
    const dim3 grid(static_cast<unsigned>(B * NH), static_cast<unsigned>((Tn + L::kRows - 1) / L::kRows));
    flash_backward_dq_kernel<HS><<<grid, L::kWarps * 32, 0, stream>>>(dqkv, dout, qkv, stats, delta, T, Ci, NHi,
                                                                       NKVi, scale, scale_log2);
    OS_CUDA_CHECK_LAUNCH();
  }
  {
    using L = DkvLayout<HS>;
    const dim3 grid(static_cast<unsigned>(B * NKV), static_cast<unsigned>((Tn + L::kRows - 1) / L::kRows));
    flash_backward_dkv_kernel<HS><<<grid, L::kWarps * 32, 0, stream>>>(dqkv, dout, qkv, stats, delta, T, Ci, NHi,
                                                                        NKVi, scale, scale_log2);
    OS_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

bool flash_attention_supported(std::int64_t C, std::int64_t NH) {
  if (C <= 0 || NH <= 0 || C % NH != 0) return false;
  const std::int64_t hs = C / NH;
  return hs == 16 || hs == 32 || hs == 64 || hs == 128;
}

std::size_t flash_attention_stats_floats(std::int64_t B, std::int64_t Tn, std::int64_t NH) {
  return static_cast<std::size_t>(B * NH * Tn);
}

void flash_attention_forward(bf16* out, float* stats, const bf16* qkv, std::int64_t B, std::int64_t Tn,
                             std::int64_t C, std::int64_t NH, std::int64_t NKV, cudaStream_t stream) {
  check_args({qkv}, B, Tn, C, NH, NKV);
  if (B * Tn == 0) return;
  switch (C / NH) {
    case 16: return forward_for<16>(out, stats, qkv, B, Tn, C, NH, NKV, stream);
    case 32: return forward_for<32>(out, stats, qkv, B, Tn, C, NH, NKV, stream);
    case 64: return forward_for<64>(out, stats, qkv, B, Tn, C, NH, NKV, stream);
    default: return forward_for<128>(out, stats, qkv, B, Tn, C, NH, NKV, stream);
  }
}

void flash_attention_forward(bf16* out, float* stats, const bf16* qkv, std::int64_t B, std::int64_t Tn,
                             std::int64_t C, std::int64_t NH, cudaStream_t stream) {
  flash_attention_forward(out, stats, qkv, B, Tn, C, NH, NH, stream);
}

void flash_attention_backward(bf16* dqkv, float* workspace, const bf16* dout, const bf16* qkv, const bf16* out,
                              const float* stats, std::int64_t B, std::int64_t Tn, std::int64_t C, std::int64_t NH,
                              cudaStream_t stream) {
  flash_attention_backward(dqkv, workspace, dout, qkv, out, stats, B, Tn, C, NH, NH, stream);
}

void flash_attention_backward(bf16* dqkv, float* workspace, const bf16* dout, const bf16* qkv, const bf16* out,
                              const float* stats, std::int64_t B, std::int64_t Tn, std::int64_t C, std::int64_t NH,
                              std::int64_t NKV, cudaStream_t stream) {
  check_args({qkv, dout}, B, Tn, C, NH, NKV);
  if (B * Tn == 0) return;
  const std::int64_t rows = B * Tn * NH;
  const unsigned blocks = static_cast<unsigned>(std::min<std::int64_t>((rows + 255) / 256, std::int64_t(1) << 20));
  row_dot_kernel<<<blocks, 256, 0, stream>>>(workspace, dout, out, B, static_cast<int>(Tn), static_cast<int>(NH),
                                             static_cast<int>(C / NH));
  OS_CUDA_CHECK_LAUNCH();
  switch (C / NH) {
    case 16: return backward_for<16>(dqkv, workspace, dout, qkv, stats, B, Tn, C, NH, NKV, stream);
    case 32: return backward_for<32>(dqkv, workspace, dout, qkv, stats, B, Tn, C, NH, NKV, stream);
    case 64: return backward_for<64>(dqkv, workspace, dout, qkv, stats, B, Tn, C, NH, NKV, stream);
    default: return backward_for<128>(dqkv, workspace, dout, qkv, stats, B, Tn, C, NH, NKV, stream);
  }
}

}  // namespace orthoshard::cuda
