// permute.cuh — ch07's optimized dispatch kernels and their launchers (no driver: the
// lab includes this file; ch07/permute_driver.cuh holds the chapter's problem and timing).
//
// MoE dispatch in scatter form: out[dst[t·top_k + j]][:] = x[t][:] for t < T, j < top_k,
// rows bf16 of D elements (D % 8 == 0, bases 16-byte aligned: every uint4 access is
// aligned). dst comes from a counting sort by expert, so out holds rows grouped by expert.
//   permute_warptoken_launch  warp per token, 16-byte lanes, row read once, top_k stores
//   permute_bulk_launch       thread per token, the copy engine (cp.async.bulk), CC 9.0+
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

#include "../common/check.h"

constexpr int kPermuteChunk = 12;  // uint4 per lane held in registers: 32 × 12 × 16 B = 6 KB of the row
// Unroll factor of the slot loop. Left to itself nvcc unrolls it (36 stores and 3 dst
// loads per trip); the unrolled loop needs more registers, halves the resident warps and
// measured 3% slower on an H200 (README, "What was tried"). -DPERMUTE_SLOT_UNROLL=4 shows it.
#ifndef PERMUTE_SLOT_UNROLL
#define PERMUTE_SLOT_UNROLL 1
#endif
static constexpr int kPermuteSlotUnroll = PERMUTE_SLOT_UNROLL;  // #pragma unroll takes a constant, not a macro

// Strategy: warp per token, uint4 per lane, read once / write top_k. Limiter: DRAM.
__global__ void permute_warptoken_kernel(const uint4 *__restrict__ x,
                                         const int32_t *__restrict__ dst,
                                         uint4 *__restrict__ out, int64_t T, int64_t top_k,
                                         int64_t D8) {
  const int64_t t = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (t >= T) return;
  const uint4 *in = x + t * D8;
  for (int64_t base = lane; base < D8; base += 32 * kPermuteChunk) {
    uint4 v[kPermuteChunk];
#pragma unroll
    for (int i = 0; i < kPermuteChunk; i++)  // all loads first: 12 independent 16-byte loads
      if (base + 32 * i < D8) v[i] = in[base + 32 * i];
    // one slot's 12 stores per loop trip (PERMUTE_SLOT_UNROLL = 1, see above)
#pragma unroll kPermuteSlotUnroll
    for (int64_t j = 0; j < top_k; j++) {
      uint4 *o = out + (int64_t)dst[t * top_k + j] * D8;
#pragma unroll
      for (int i = 0; i < kPermuteChunk; i++)
        if (base + 32 * i < D8) __stcs(o + base + 32 * i, v[i]);
    }
  }
}

// Enqueue out[dst[t·top_k + j]][:] = x[t][:] (t < T, j < top_k) on s: x [T][D] and out
// [T·top_k][D] bf16, 16-byte aligned, D % 8 == 0.
static inline void permute_warptoken_launch(const __nv_bfloat16 *x, const int32_t *dst, __nv_bfloat16 *out,
                                            int64_t T, int64_t top_k, int64_t D, cudaStream_t s) {
  const int threads = 256, tokens_per_block = threads / 32;
  permute_warptoken_kernel<<<(unsigned)((T + tokens_per_block - 1) / tokens_per_block),
                             threads, 0, s>>>((const uint4 *)x, dst, (uint4 *)out, T, top_k, D / 8);
  GTL_LAUNCH();
}

constexpr int kPermuteBulkTokens = 4;  // tokens (threads) per block: 4 rows = 23 KB of shared memory at D = 2880
constexpr int kPermuteBulkBarBytes = 128;  // the block's mbarriers (8 B each), then its rows
static_assert(kPermuteBulkTokens * 8 <= kPermuteBulkBarBytes, "one 8-byte mbarrier per token fits before the rows");

// Strategy: thread per token, the copy engine moves the row: global → shared once
// (cp.async.bulk, completion counted in bytes on an mbarrier), shared → global top_k
// times (cp.async.bulk ... bulk_group). Limiter: DRAM. (PTX ISA, "Data movement:
// cp.async.bulk" and "mbarrier"; the wait loop is the mbarrier.try_wait idiom.)
__global__ void permute_bulk_kernel(const unsigned char *__restrict__ x,
                                    const int32_t *__restrict__ dst,
                                    unsigned char *__restrict__ out, int64_t T, int64_t top_k,
                                    uint32_t row_bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) unsigned char permute_smem[];
  const int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (t >= T) return;
  const uint32_t bar = (uint32_t)__cvta_generic_to_shared(permute_smem + 8 * threadIdx.x);
  const uint32_t row =
      (uint32_t)__cvta_generic_to_shared(permute_smem + kPermuteBulkBarBytes + (size_t)threadIdx.x * row_bytes);
  // The barrier expects one arrival and row_bytes from the engine; the thread arrives,
  // asks for the row, and sleeps in try_wait until phase 0 completes.
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "mbarrier.init.shared::cta.b64 [%0], 1;\n"
      "fence.mbarrier_init.release.cluster;\n"
      "fence.proxy.async.shared::cta;\n"
      "mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %2;\n"
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%1], [%3], %2, [%0];\n"
      "WAIT_ROW:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], 0;\n"
      "@!done bra WAIT_ROW;\n"
      "}\n" ::"r"(bar),
      "r"(row), "r"(row_bytes), "l"(x + t * row_bytes)
      : "memory");
  for (int64_t j = 0; j < top_k; j++)
    asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;\n" ::"l"(
                     out + (int64_t)dst[t * top_k + j] * row_bytes),
                 "r"(row), "r"(row_bytes)
                 : "memory");
  // The stores must finish before the thread (and its shared memory) goes away.
  asm volatile("cp.async.bulk.commit_group;\ncp.async.bulk.wait_group 0;\n" ::: "memory");
#endif
}

// The same scatter by the copy engine (CC 9.0+): up to kPermuteBulkTokens rows per block,
// fewer when rows are long (D up to 65536: 128 KB). Same arguments as the warp launcher.
static inline void permute_bulk_launch(const __nv_bfloat16 *x, const int32_t *dst, __nv_bfloat16 *out, int64_t T,
                                       int64_t top_k, int64_t D, cudaStream_t s) {
  const uint32_t row_bytes = (uint32_t)(D * 2);
  static size_t max_smem = 0, set_smem = 0;
  if (!max_smem) {
    int dev, v;
    GTL_CUDA(cudaGetDevice(&dev));
    GTL_CUDA(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    max_smem = (size_t)v;
  }
  int tpb = kPermuteBulkTokens;
  while (tpb > 1 && kPermuteBulkBarBytes + (size_t)tpb * row_bytes > max_smem) tpb--;
  const size_t smem = kPermuteBulkBarBytes + (size_t)tpb * row_bytes;
  if (smem > set_smem) {  // above 48 KB a kernel must opt in
    GTL_CUDA(cudaFuncSetAttribute(permute_bulk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)smem));
    set_smem = smem;
  }
  permute_bulk_kernel<<<(unsigned)((T + tpb - 1) / tpb), tpb, smem, s>>>(
      (const unsigned char *)x, dst, (unsigned char *)out, T, top_k, row_bytes);
  GTL_LAUNCH();
}
