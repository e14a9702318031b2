// ch14 compilers and kernel fusion — baseline: residual add, RMSNorm, FP8 quantize as three
// kernels.
//
// What it shows: the pipeline as a framework runs it op by op, each op a competent kernel
// of its own: 16-byte loads and stores, coalesced, one block per row where a row-wide
// reduction is needed, the row held in registers (read once per kernel).
//   1. residual_add_kernel      h = bf16(x + residual)          reads 4 B, writes 2 B per element
//   2. rmsnorm_rows_kernel      y = bf16(RMSNorm(h) · w)        reads 2 B, writes 2 B
//   3. quant_fp8_rows_kernel    amax, scale, q = E4M3(y/scale)  reads 2 B, writes 1 B (+ scale)
// 13 bytes cross the memory system per element where 7 would do: h and y are written
// only to be read back by the next kernel (from L2 where they are still there, else from
// DRAM), and every kernel pays its own launch, ramp-up and tail.
//
// Build and run:   make ch14 && ./ch14/baseline        (pair: scripts/pair.sh ch14)
//                  ./ch14/baseline --T=64              (a decode batch)
// Nsight Systems:  nsys profile -t cuda,nvtx ./ch14/baseline — three kernels per iteration
// Nsight Compute:  scripts/profile.sh ch14 baseline
//   dram__bytes_read.sum per kernel, summed over the three (93.6 MB at T=4096 against the
//   fused kernel's 46.2 MB: h and y are read back from DRAM, not L2), lts__t_sector_hit_rate.pct,
//   gpu__time_duration.sum per kernel (16.6 + 12.6 + 10.3 us, README).
// Book: compilers and kernel fusion — operator fusion, memory-bound op chains.
#include "norm_quant.cuh"

// Strategy: one 16-byte piece (8 elements) of x and of residual per thread, flat grid.
// Limiter: DRAM.
__global__ void residual_add_kernel(const uint4 *__restrict__ x, const uint4 *__restrict__ res,
                                    uint4 *__restrict__ h, int64_t n8) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= n8) return;
  float a[8], b[8];
  fnorm_unpack8(x[i], a);
  fnorm_unpack8(res[i], b);
#pragma unroll
  for (int e = 0; e < 8; e++) a[e] += b[e];
  h[i] = fnorm_pack8(a);
}

// Strategy: block per row, CPT pieces of h and w per thread in registers, one block sum of
// squares, y written as bf16. Limiter: DRAM (h from L2 when it is still there).
template <int CPT>
__global__ void __launch_bounds__(1024)
    rmsnorm_rows_kernel(const uint4 *__restrict__ h, const uint4 *__restrict__ w,
                        uint4 *__restrict__ y, int D8, float inv_D, float eps) {
  __shared__ float part[32];
  const int64_t row = blockIdx.x;
  const int nt = blockDim.x, tid = threadIdx.x;
  uint4 hv[CPT], wv[CPT];
#pragma unroll
  for (int i = 0; i < CPT; i++) {
    const int c = tid + i * nt;
    if (c < D8) hv[i] = h[row * D8 + c], wv[i] = __ldg(w + c);
  }
  float ss = 0.0f;
#pragma unroll
  for (int i = 0; i < CPT; i++) {
    if (tid + i * nt >= D8) continue;
    float a[8];
    fnorm_unpack8(hv[i], a);
#pragma unroll
    for (int e = 0; e < 8; e++) ss = fmaf(a[e], a[e], ss);
  }
  const float rinv = rsqrtf(fnorm_block_reduce<false>(ss, part) * inv_D + eps);
#pragma unroll
  for (int i = 0; i < CPT; i++) {
    const int c = tid + i * nt;
    if (c >= D8) continue;
    float a[8], wf[8];
    fnorm_unpack8(hv[i], a);
    fnorm_unpack8(wv[i], wf);
#pragma unroll
    for (int e = 0; e < 8; e++) a[e] = a[e] * rinv * wf[e];
    y[row * D8 + c] = fnorm_pack8(a);
  }
}

// Strategy: block per row, CPT pieces of y per thread in registers, one block max, 8 fp8
// bytes stored per piece. Limiter: DRAM (y from L2 when it is still there).
template <int CPT>
__global__ void __launch_bounds__(1024)
    quant_fp8_rows_kernel(const uint4 *__restrict__ y, uint2 *__restrict__ q,
                          float *__restrict__ scale, int D8) {
  __shared__ float part[32];
  const int64_t row = blockIdx.x;
  const int nt = blockDim.x, tid = threadIdx.x;
  uint4 yv[CPT];
#pragma unroll
  for (int i = 0; i < CPT; i++)
    if (tid + i * nt < D8) yv[i] = y[row * D8 + tid + i * nt];
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < CPT; i++) {
    if (tid + i * nt >= D8) continue;
    float a[8];
    fnorm_unpack8(yv[i], a);
#pragma unroll
    for (int e = 0; e < 8; e++) amax = fmaxf(amax, fabsf(a[e]));
  }
  amax = fnorm_block_reduce<true>(amax, part);
  const float s = amax > 0.0f ? FNORM_FP8_MAX / amax : 0.0f;
#pragma unroll
  for (int i = 0; i < CPT; i++) {
    if (tid + i * nt >= D8) continue;
    float a[8];
    fnorm_unpack8(yv[i], a);
    q[row * D8 + tid + i * nt] = fnorm_fp8x8(a, s);
  }
  if (tid == 0) scale[row] = amax / FNORM_FP8_MAX;
}

// Three launches back to back on s; the row kernels use the fused kernel's launch shape.
void norm_quant_launch(const NormQuantProblem *p, cudaStream_t s) {
  const int64_t n8 = p->T * p->D / 8;
  const int D8 = (int)(p->D / 8);
  int cpt, threads;
  if (fnorm_shape(D8, &cpt, &threads)) {
    fprintf(stderr, "ch14: D=%lld outside 8..32768\n", (long long)p->D);
    exit(GTL_EXIT_USAGE);
  }
  residual_add_kernel<<<(unsigned)((n8 + 255) / 256), 256, 0, s>>>(
      (const uint4 *)p->d_x, (const uint4 *)p->d_res, (uint4 *)p->d_h, n8);
  GTL_LAUNCH();
#define NORM(C)                                                                         \
  rmsnorm_rows_kernel<C><<<(unsigned)p->T, threads, 0, s>>>(                            \
      (const uint4 *)p->d_h, (const uint4 *)p->d_w, (uint4 *)p->d_y, D8, 1.0f / (float)p->D, \
      p->eps)
#define QUANT(C)                                            \
  quant_fp8_rows_kernel<C><<<(unsigned)p->T, threads, 0, s>>>( \
      (const uint4 *)p->d_y, (uint2 *)p->d_q, p->d_scale, D8)
  FNORM_CPT_SWITCH(cpt, NORM);
  GTL_LAUNCH();
  FNORM_CPT_SWITCH(cpt, QUANT);
  GTL_LAUNCH();
#undef NORM
#undef QUANT
}

int main(int argc, char **argv) {
  return norm_quant_main(argc, argv, "baseline",
                         "three kernels: residual add (flat, 16-byte), RMSNorm (block per row), "
                         "fp8 quantize (block per row)",
                         3, 1);
}
