// ch07 memory access patterns — optimized: warp-per-token, 16-byte coalesced scatter.
//
// The one change: a warp (not a thread) owns a token row, and each lane moves 16 bytes
// (8 bf16) per access. Lane i touches bytes [16i, 16i+16) of the row, so one warp
// instruction covers 512 contiguous bytes — 16 full sectors, every byte useful, where
// the baseline needed 32 sectors for 64 useful bytes. The warp loads a chunk of the row
// (12 × 16 B per lane, all loads in flight before the first use) and stores it to each
// of the token's top_k slots: the row crosses L2 → SM once, not top_k times. (Measured
// on an H200: a warp-per-row gather of the same permutation, reading each x row top_k
// times, tops out near 76% of the copy ceiling because the L2 → SM traffic is then
// 188 MB instead of 118 MB; see README.) Stores are streaming (st.global.cs): the output
// is not read again, so it should not push x out of L2.
// Rows are D·2 bytes, a multiple of 16 when D % 8 == 0 (checked by the driver), and
// cudaMalloc'd bases are 256-byte aligned, so every uint4 access is aligned.
//
// Build and run:   make ch07 && ./ch07/optimized       (pair: scripts/pair.sh ch07)
// Nsight Compute:  scripts/profile.sh ch07 optimized
//   sectors/request falls from 32 to 4 (l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum /
//   l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum); dram__throughput near its peak.
// Book: memory access patterns — coalescing, vectorized access.
#include "permute.cuh"

#define CHUNK 12  // uint4 per lane held in registers: 32 × 12 × 16 B = 6 KB of the row
// Unroll factor of the slot loop. Left to itself nvcc unrolls it 3x (36 stores and 3 dst
// loads issued back to back per trip), which measured 3% slower on an H200 (README,
// exercise 4). Build with -DPERMUTE_SLOT_UNROLL=4 to see it.
#ifndef PERMUTE_SLOT_UNROLL
#define PERMUTE_SLOT_UNROLL 1
#endif
static constexpr int slot_unroll = PERMUTE_SLOT_UNROLL;  // #pragma unroll takes a constant, not a macro

// Strategy: warp per token, uint4 per lane, read once / write top_k. Limiter: DRAM.
__global__ void permute_warptoken_kernel(const uint4 *__restrict__ x,
                                         const int32_t *__restrict__ dst,
                                         uint4 *__restrict__ out, int64_t T, int64_t top_k,
                                         int64_t D8) {
  const int64_t t = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (t >= T) return;
  const uint4 *in = x + t * D8;
  for (int64_t base = lane; base < D8; base += 32 * CHUNK) {
    uint4 v[CHUNK];
#pragma unroll
    for (int i = 0; i < CHUNK; i++)  // all loads first: 12 independent 16-byte loads
      if (base + 32 * i < D8) v[i] = in[base + 32 * i];
    // one slot's 12 stores per loop trip (PERMUTE_SLOT_UNROLL = 1, see above)
#pragma unroll slot_unroll
    for (int64_t j = 0; j < top_k; j++) {
      uint4 *o = out + (int64_t)dst[t * top_k + j] * D8;
#pragma unroll
      for (int i = 0; i < CHUNK; i++)
        if (base + 32 * i < D8) __stcs(o + base + 32 * i, v[i]);
    }
  }
}

void permute_launch(const PermuteProblem *p, cudaStream_t s) {
  const int threads = 256, tokens_per_block = threads / 32;
  permute_warptoken_kernel<<<(unsigned)((p->T + tokens_per_block - 1) / tokens_per_block),
                             threads, 0, s>>>((const uint4 *)p->d_x, p->d_dst,
                                              (uint4 *)p->d_out, p->T, p->top_k, p->D / 8);
  GTL_LAUNCH();
}

int main(int argc, char **argv) {
  return permute_main(argc, argv, "optimized",
                      "warp per token, 16-byte lanes, row read once and stored to its top_k slots");
}
