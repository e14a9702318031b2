// ceilings_kernels.cuh — ch02/ceilings' kernels: the HBM copy and read-and-sum kernels, the
// exact-compare and tf32-rounding helpers of its checks, the FFMA-bound kernel (with its
// host twin ffma_chains, for the bit-exact check) and the empty kernel of the launch rows.
// The timed jobs and measurements are in ceilings_rows.cuh, the driver in ceilings.cu.
#pragma once
#include <math.h>  // fmaf (the host twin)
#include <stddef.h>

#define THREADS 256
#define FFMA_CHAINS 16  // independent FMA chains per thread: hides the 4-cycle FMA latency

// Strategy: grid-stride, 4 independent 16-byte loads in flight before the 4 stores.
// Limiter: HBM bandwidth.
__global__ void copy_kernel(const uint4 *__restrict__ src, uint4 *__restrict__ dst, size_t n) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    uint4 a = src[i], b = src[i + stride], c = src[i + 2 * stride], d = src[i + 3 * stride];
    dst[i] = a;
    dst[i + stride] = b;
    dst[i + 2 * stride] = c;
    dst[i + 3 * stride] = d;
  }
  for (; i < n; i += stride) dst[i] = src[i];
}

__host__ __device__ unsigned words_sum(uint4 v) { return v.x + v.y + v.z + v.w; }

// Strategy: the same loads, summed as wrapping uint32 (exact in any order, so checkable),
// a warp shuffle reduction and one atomic per warp. Limiter: HBM read bandwidth.
__global__ void read_kernel(const uint4 *__restrict__ src, size_t n, unsigned *sum) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  unsigned s = 0;
  for (; i + 3 * stride < n; i += 4 * stride) {
    uint4 a = src[i], b = src[i + stride], c = src[i + 2 * stride], d = src[i + 3 * stride];
    s += words_sum(a) + words_sum(b) + words_sum(c) + words_sum(d);
  }
  for (; i < n; i += stride) s += words_sum(src[i]);
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31) == 0) atomicAdd(sum, s);
}

// Strategy: grid-stride compare, one atomic per thread that saw a difference. Validation only.
__global__ void mismatch_kernel(const uint4 *a, const uint4 *b, size_t n, unsigned long long *bad) {
  unsigned long long c = 0;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    uint4 x = a[i], y = b[i];
    c += (x.x != y.x) | (x.y != y.y) | (x.z != y.z) | (x.w != y.w);
  }
  if (c) atomicAdd(bad, c);
}

// Round fp32 to tf32 in place (nearest even), the host gemm_round_tf32's device twin.
__global__ void round_tf32_kernel(unsigned *x, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    unsigned u = x[i];
    if ((u & 0x7f800000u) != 0x7f800000u) x[i] = (u + 0xfffu + ((u >> 13) & 1u)) & 0xffffe000u;
  }
}

#ifdef __CUDA_ARCH__  // the host compiler of the __host__ twin does not know #pragma unroll
#define DEVICE_UNROLL _Pragma("unroll")
#else
#define DEVICE_UNROLL
#endif

// The FFMA chains both sides compute: x = fma(x, mul, add), 16 chains, then their sum.
// fmaf is correctly rounded on host and device, so the host result is bit-exact.
__host__ __device__ float ffma_chains(unsigned t, int iters, float mul, float add) {
  float x[FFMA_CHAINS];
DEVICE_UNROLL
  for (int j = 0; j < FFMA_CHAINS; j++) x[j] = (float)((t & 1023u) * FFMA_CHAINS + j) * 0x1p-14f;
  for (int it = 0; it < iters; it += 8) {
DEVICE_UNROLL
    for (int u = 0; u < 8; u++)
DEVICE_UNROLL
      for (int j = 0; j < FFMA_CHAINS; j++) x[j] = fmaf(x[j], mul, add);
  }
  float s = 0.0f;
  for (int j = 0; j < FFMA_CHAINS; j++) s += x[j];
  return s;
}

// Strategy: 16 independent FFMA chains per thread, 128 FFMAs per loop trip, full occupancy.
// Limiter: the FP32 pipe (128 FMA lanes per SM).
__global__ void ffma_kernel(float *out, int iters, float mul, float add) {
  const unsigned t = blockIdx.x * blockDim.x + threadIdx.x;
  out[t] = ffma_chains(t, iters, mul, add);
}

// Strategy: nothing (count is NULL when timed; the validated run counts launches).
__global__ void empty_kernel(int *count) {
  if (count) atomicAdd(count, 1);
}
