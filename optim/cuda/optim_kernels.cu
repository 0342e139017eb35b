// Optimizer kernels (see optim_kernels.hpp). Elementwise rules are one thread per element, grid-stride;
// reductions use double accumulators and fixed launch shapes, so results are bitwise reproducible.
#include "optim/cuda/optim_kernels.hpp"

#include "runtime/cuda/device_math.cuh"

#include <cmath>

namespace orthoshard::cuda {

namespace {

// torch.lerp as optim/rules.hpp: a + w (b − a), evaluated from the nearer end.
__device__ __forceinline__ float lerp_torch(float a, float b, float w) {
  return w < 0.5f ? a + w * (b - a) : b - (b - a) * (1.f - w);
}

constexpr int kReduceThreads = 256;  // one block per row of NorMuon's statistics

template <typename G>
__global__ void adamw_kernel(float* w, bf16* copy, const G* grad, float* m, float* v, std::int64_t n, AdamWScalars s) {
  const float one_minus_b1 = 1.f - s.beta1, one_minus_b2 = 1.f - s.beta2;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x) {
    const float g = to_f(grad[i]) * s.grad_scale;
    float wi = w[i] * s.keep;
    const float mi = lerp_torch(m[i], g, one_minus_b1);
    const float vi = v[i] * s.beta2 + one_minus_b2 * g * g;
    wi -= s.step * mi / (sqrtf(vi) / s.bc2_sqrt + s.eps);
    m[i] = mi;
    v[i] = vi;
    w[i] = wi;
    if (copy) copy[i] = __float2bfloat16_rn(wi);
  }
}

template <typename G>
__global__ void momentum_kernel(float* mom, float* u, const G* grad, std::int64_t n, float beta, bool nesterov) {
  const float w = 1.f - beta;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x) {
    const float g = to_f(grad[i]);
    const float mi = lerp_torch(mom[i], g, w);
    mom[i] = mi;
    u[i] = nesterov ? lerp_torch(g, mi, beta) : mi;
  }
}

template <typename U>
__global__ void decay_apply_kernel(float* w, bf16* copy, const U* upd, std::int64_t n, float keep, float step) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x) {
    float wi = w[i] * keep;
    wi -= step * to_f(upd[i]);
    w[i] = wi;
    if (copy) copy[i] = __float2bfloat16_rn(wi);
  }
}

template <typename T>
__global__ void scale_by_inverse_norm_kernel(T* x, std::int64_t n, const double* sumsq, double eps) {
  const float inv = static_cast<float>(1.0 / (sqrt(*sumsq) + eps));
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x)
    x[i] = from_f<T>(to_f(x[i]) * inv);
}

// One block per row.
template <typename T>
__global__ void normuon_rows_kernel(T* o, std::int64_t n, float* v, float beta2, double* ss_before,
                                    double* ss_after) {
  __shared__ double sh[32];
  const std::int64_t row = blockIdx.x;
  T* r = o + row * n;
  double s = 0;
  for (std::int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const double x = to_f(r[j]);
    s += x * x;
  }
  const double ss = detail::block_sum(s, sh);
  const float vi = lerp_torch(v[row], static_cast<float>(ss / static_cast<double>(n)), 1.f - beta2);
  const float d = sqrtf(vi) + 1e-10f;
  double s2 = 0;
  for (std::int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const T y = from_f<T>(to_f(r[j]) / d);
    r[j] = y;
    const double yd = to_f(y);
    s2 += yd * yd;
  }
  const double ss2 = detail::block_sum(s2, sh);
  if (threadIdx.x == 0) {
    v[row] = vi;
    if (ss_before) ss_before[row] = ss;
    if (ss_after) ss_after[row] = ss2;
  }
}

__global__ void conda_momentum_kernel(float* mom, const float* g, std::int64_t n, float b1) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x)
    mom[i] = b1 * mom[i] + (1.f - b1) * g[i];
}

__global__ void conda_normalize_kernel(float* v, const float* gt, const float* mt, float* out, std::int64_t n, float b2,
                                       float eps) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x) {
    const float vi = b2 * v[i] + (1.f - b2) * gt[i] * gt[i];
    v[i] = vi;
    out[i] = mt[i] / (sqrtf(vi) + eps);
  }
}

__global__ void conda_apply_kernel(float* w, bf16* copy, const float* upd, std::int64_t n, float step, float keep) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x) {
    float wi = w[i] - step * upd[i];
    wi *= keep;
    w[i] = wi;
    if (copy) copy[i] = __float2bfloat16_rn(wi);
  }
}

__global__ void conda_plain_kernel(float* w, bf16* copy, const float* g, float* mom, float* v, std::int64_t n, float b1,
                                   float b2, float eps, float step, float keep) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x) {
    const float gi = g[i];
    const float mi = b1 * mom[i] + (1.f - b1) * gi;
    const float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    float wi = w[i] - step * (mi / (sqrtf(vi) + eps));
    wi *= keep;
    mom[i] = mi;
    v[i] = vi;
    w[i] = wi;
    if (copy) copy[i] = __float2bfloat16_rn(wi);
  }
}

template <typename T>
__global__ void add_diagonal_kernel(T* a, std::int64_t r, float value) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < r; i += std::int64_t(gridDim.x) * blockDim.x)
    a[i * r + i] = from_f<T>(to_f(a[i * r + i]) + value);
}

// Element (i, j) of a column-major matrix is a[i + j r]; the upper triangle has i <= j.
__global__ void symmetrize_kernel(float* a, std::int64_t r) {
  const std::int64_t total = r * r;
  for (std::int64_t idx = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; idx < total; idx += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t i = idx % r, j = idx / r;
    if (i > j) a[idx] = a[j + i * r];
  }
}

// Row-major: element (i, j) is a[i r + j]; the upper triangle (i <= j) is copied into the lower one, in each
// of `count` matrices stored one after another.
template <typename T>
__global__ void symmetrize_upper_rowmajor_kernel(T* a, std::int64_t r, std::int64_t count) {
  const std::int64_t rr = r * r, total = rr * count;
  for (std::int64_t idx = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; idx < total; idx += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t e = idx % rr, i = e / r, j = e % r;
    if (i > j) a[idx] = a[idx - e + j * r + i];
  }
}

// 32 x 32 tiles through shared memory (padded against bank conflicts).
__global__ void transpose_kernel(float* out, const float* in, std::int64_t rows, std::int64_t cols) {
  __shared__ float tile[32][33];
  const std::int64_t c0 = std::int64_t(blockIdx.x) * 32, r0 = std::int64_t(blockIdx.y) * 32;
  for (int dy = threadIdx.y; dy < 32; dy += blockDim.y) {
    const std::int64_t r = r0 + dy, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[dy][threadIdx.x] = in[r * cols + c];
  }
  __syncthreads();
  for (int dy = threadIdx.y; dy < 32; dy += blockDim.y) {
    const std::int64_t oc = r0 + threadIdx.x, orow = c0 + dy;  // out (cols x rows): out[orow][oc] = in[oc][orow]
    if (orow < cols && oc < rows) out[orow * rows + oc] = tile[threadIdx.x][dy];
  }
}

__global__ void scale_rows_kernel(float* out, const float* in, const float* s, std::int64_t rows, std::int64_t cols) {
  const std::int64_t total = rows * cols;
  for (std::int64_t idx = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; idx < total; idx += std::int64_t(gridDim.x) * blockDim.x)
    out[idx] = in[idx] * s[idx / cols];
}

}  // namespace

AdamWScalars adamw_scalars(double lr, double beta1, double beta2, double eps, double weight_decay, std::int64_t t,
                           double grad_scale) {
  OS_CUDA_REQUIRE(t >= 1, "adamw_scalars: step must be >= 1");
  AdamWScalars s;
  s.beta1 = static_cast<float>(beta1);
  s.beta2 = static_cast<float>(beta2);
  s.eps = static_cast<float>(eps);
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(t));
  s.step = static_cast<float>(lr / bc1);
  s.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  s.keep = static_cast<float>(1.0 - lr * weight_decay);
  s.grad_scale = static_cast<float>(grad_scale);
  return s;
}

template <typename G>
void adamw_update(float* master, bf16* param_copy, const G* grad, float* m, float* v, std::int64_t n,
                  const AdamWScalars& s, cudaStream_t stream) {
  if (n <= 0) return;
  adamw_kernel<<<blocks_for(n), kThreads, 0, stream>>>(master, param_copy, grad, m, v, n, s);
  OS_CUDA_CHECK_LAUNCH();
}

template <typename G>
void momentum_update(float* mom, float* u, const G* grad, std::int64_t n, double beta, bool nesterov,
                     cudaStream_t stream) {
  if (n <= 0) return;
  momentum_kernel<<<blocks_for(n), kThreads, 0, stream>>>(mom, u, grad, n, static_cast<float>(beta), nesterov);
  OS_CUDA_CHECK_LAUNCH();
}

template <typename U>
void decay_then_apply(float* w, bf16* param_copy, const U* upd, std::int64_t n, double lr, double weight_decay,
                      double factor, cudaStream_t stream) {
  if (n <= 0) return;
  const float keep = static_cast<float>(1.0 - lr * weight_decay), step = static_cast<float>(lr * factor);
  decay_apply_kernel<<<blocks_for(n), kThreads, 0, stream>>>(w, param_copy, upd, n, keep, step);
  OS_CUDA_CHECK_LAUNCH();
}

template <typename T>
void normuon_normalize_rows(T* o, std::int64_t rows, std::int64_t n, float* v, double beta2, double* ss_before,
                            double* ss_after, cudaStream_t stream) {
  if (rows <= 0) return;
  OS_CUDA_REQUIRE(n > 0, "normuon_normalize_rows: rows need at least one column");
  OS_CUDA_REQUIRE(rows < (std::int64_t(1) << 31), "normuon_normalize_rows: too many rows");
  normuon_rows_kernel<<<static_cast<unsigned>(rows), kReduceThreads, 0, stream>>>(o, n, v, static_cast<float>(beta2),
                                                                                  ss_before, ss_after);
  OS_CUDA_CHECK_LAUNCH();
}

void conda_momentum(float* mom, const float* g, std::int64_t n, double beta1, cudaStream_t stream) {
  if (n <= 0) return;
  conda_momentum_kernel<<<blocks_for(n), kThreads, 0, stream>>>(mom, g, n, static_cast<float>(beta1));
  OS_CUDA_CHECK_LAUNCH();
}

void conda_normalize(float* v, const float* gt, const float* mt, float* out, std::int64_t n, double beta2, double eps,
                     cudaStream_t stream) {
  if (n <= 0) return;
  conda_normalize_kernel<<<blocks_for(n), kThreads, 0, stream>>>(v, gt, mt, out, n, static_cast<float>(beta2),
                                                                 static_cast<float>(eps));
  OS_CUDA_CHECK_LAUNCH();
}

void conda_apply(float* w, bf16* param_copy, const float* upd, std::int64_t n, double step, double lr,
                 double weight_decay, cudaStream_t stream) {
  if (n <= 0) return;
  conda_apply_kernel<<<blocks_for(n), kThreads, 0, stream>>>(w, param_copy, upd, n, static_cast<float>(step),
                                                             static_cast<float>(1.0 - lr * weight_decay));
  OS_CUDA_CHECK_LAUNCH();
}

void conda_plain_update(float* w, bf16* param_copy, const float* g, float* mom, float* v, std::int64_t n, double beta1,
                        double beta2, double eps, double step, double lr, double weight_decay, cudaStream_t stream) {
  if (n <= 0) return;
  conda_plain_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
      w, param_copy, g, mom, v, n, static_cast<float>(beta1), static_cast<float>(beta2), static_cast<float>(eps),
      static_cast<float>(step), static_cast<float>(1.0 - lr * weight_decay));
  OS_CUDA_CHECK_LAUNCH();
}

template <typename T>
void scale_by_inverse_norm(T* x, std::int64_t n, const double* sumsq, double eps, cudaStream_t stream) {
  if (n <= 0) return;
  scale_by_inverse_norm_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, n, sumsq, eps);
  OS_CUDA_CHECK_LAUNCH();
}

template <typename T> void add_diagonal(T* a, std::int64_t r, float value, cudaStream_t stream) {
  if (r <= 0) return;
  add_diagonal_kernel<<<blocks_for(r), kThreads, 0, stream>>>(a, r, value);
  OS_CUDA_CHECK_LAUNCH();
}

void symmetrize_upper_colmajor(float* a, std::int64_t r, cudaStream_t stream) {
  if (r <= 1) return;
  symmetrize_kernel<<<blocks_for(r * r), kThreads, 0, stream>>>(a, r);
  OS_CUDA_CHECK_LAUNCH();
}

template <typename T> void symmetrize_upper_rowmajor(T* a, std::int64_t r, std::int64_t count, cudaStream_t stream) {
  if (r <= 1 || count <= 0) return;
  symmetrize_upper_rowmajor_kernel<T><<<blocks_for(r * r * count), kThreads, 0, stream>>>(a, r, count);
  OS_CUDA_CHECK_LAUNCH();
}

void transpose(float* out, const float* in, std::int64_t rows, std::int64_t cols, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  const std::int64_t gx = (cols + 31) / 32, gy = (rows + 31) / 32;
  OS_CUDA_REQUIRE(gy <= 65535, "transpose: too many rows");
  transpose_kernel<<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), dim3(32, 8), 0, stream>>>(out, in, rows,
                                                                                                          cols);
  OS_CUDA_CHECK_LAUNCH();
}

void scale_rows(float* out, const float* in, const float* s, std::int64_t rows, std::int64_t cols, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  scale_rows_kernel<<<blocks_for(rows * cols), kThreads, 0, stream>>>(out, in, s, rows, cols);
  OS_CUDA_CHECK_LAUNCH();
}

template void adamw_update<float>(float*, bf16*, const float*, float*, float*, std::int64_t, const AdamWScalars&,
                                  cudaStream_t);
template void adamw_update<bf16>(float*, bf16*, const bf16*, float*, float*, std::int64_t, const AdamWScalars&,
                                 cudaStream_t);
template void momentum_update<float>(float*, float*, const float*, std::int64_t, double, bool, cudaStream_t);
template void momentum_update<bf16>(float*, float*, const bf16*, std::int64_t, double, bool, cudaStream_t);
template void decay_then_apply<float>(float*, bf16*, const float*, std::int64_t, double, double, double, cudaStream_t);
template void decay_then_apply<bf16>(float*, bf16*, const bf16*, std::int64_t, double, double, double, cudaStream_t);
template void normuon_normalize_rows<float>(float*, std::int64_t, std::int64_t, float*, double, double*, double*,
                                            cudaStream_t);
template void normuon_normalize_rows<bf16>(bf16*, std::int64_t, std::int64_t, float*, double, double*, double*,
                                           cudaStream_t);
template void scale_by_inverse_norm<float>(float*, std::int64_t, const double*, double, cudaStream_t);
template void scale_by_inverse_norm<bf16>(bf16*, std::int64_t, const double*, double, cudaStream_t);
template void add_diagonal<float>(float*, std::int64_t, float, cudaStream_t);
template void add_diagonal<bf16>(bf16*, std::int64_t, float, cudaStream_t);
template void symmetrize_upper_rowmajor<float>(float*, std::int64_t, std::int64_t, cudaStream_t);
template void symmetrize_upper_rowmajor<bf16>(bf16*, std::int64_t, std::int64_t, cudaStream_t);

}  // namespace orthoshard::cuda
