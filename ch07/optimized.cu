// ch07 memory access patterns — optimized: warp-per-token, 16-byte coalesced scatter; on
// Hopper, the same scatter handed to the copy engine.
//
// The one change (kernel "warp", every GPU): a warp (not a thread) owns a token row, and
// each lane moves 16 bytes (8 bf16) per access. Lane i touches bytes [16i, 16i+16) of the
// row, so one warp instruction covers 512 contiguous bytes — 16 full sectors, every byte
// useful, where the baseline needed 32 sectors for 64 useful bytes. The warp loads a chunk
// of the row (12 × 16 B per lane, all loads in flight before the first use) and stores it
// to each of the token's top_k slots: the row crosses L2 → SM once, not top_k times.
// (Measured on an H200: a warp-per-row gather of the same permutation, reading each x row
// top_k times, tops out near 76% of the copy ceiling because the L2 → SM traffic is then
// 188 MB instead of 118 MB; see README.) Stores are streaming (st.global.cs): the output
// is not read again, so it should not push x out of L2.
// Rows are D·2 bytes, a multiple of 16 when D % 8 == 0 (checked by the driver), and
// cudaMalloc'd bases are 256-byte aligned, so every uint4 access is aligned.
//
// Kernel "bulk" (CC 9.0+, the default there): the same scatter, with the moving done by
// the SM's bulk copy engine (the TMA unit; PTX cp.async.bulk, 1-D, no tensor map). One
// thread per token asks for its row in shared memory, waits on an mbarrier for the
// bytes, and asks for top_k stores of it. 1 + top_k instructions per row instead of
// 12 × (1 + top_k) per lane, and no registers holding data. On an H200 it measured
// 31.4 µs against the warp kernel's 32.6 µs at the default size (README).
//
// Build and run:   make ch07 && ./ch07/optimized       (pair: scripts/pair.sh ch07)
//                  ./ch07/optimized --variant=warp    (only the portable kernel)
// Nsight Compute:  scripts/profile.sh ch07 optimized
//   warp: every sector a load request moves is used (l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum
//   / l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum: 16 sectors for 512 useful bytes); bulk: smsp__inst_executed.sum falls
//   5x (2.45 M → 0.49 M warp instructions).
// Book: memory access patterns — coalescing, vectorized access.
#include "permute.cuh"

#define CHUNK 12  // uint4 per lane held in registers: 32 × 12 × 16 B = 6 KB of the row
// Unroll factor of the slot loop. Left to itself nvcc unrolls it (36 stores and 3 dst
// loads per trip); the unrolled loop needs more registers, halves the resident warps and
// measured 3% slower on an H200 (README, exercise 4). -DPERMUTE_SLOT_UNROLL=4 shows it.
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

static void permute_warp_launch(const PermuteProblem *p, cudaStream_t s) {
  const int threads = 256, tokens_per_block = threads / 32;
  permute_warptoken_kernel<<<(unsigned)((p->T + tokens_per_block - 1) / tokens_per_block),
                             threads, 0, s>>>((const uint4 *)p->d_x, p->d_dst,
                                              (uint4 *)p->d_out, p->T, p->top_k, p->D / 8);
  GTL_LAUNCH();
}

#define BULK_TOKENS 4       // tokens (threads) per block: 4 rows = 23 KB of shared memory at D = 2880
#define BULK_BAR_BYTES 128  // the block's mbarriers (8 B each), then its rows
static_assert(BULK_TOKENS * 8 <= BULK_BAR_BYTES, "one 8-byte mbarrier per token fits before the rows");

// Strategy: thread per token, the copy engine moves the row: global → shared once
// (cp.async.bulk, completion counted in bytes on an mbarrier), shared → global top_k
// times (cp.async.bulk ... bulk_group). Limiter: DRAM. (PTX ISA, "Data movement:
// cp.async.bulk" and "mbarrier"; the wait loop is the mbarrier.try_wait idiom.)
__global__ void permute_bulk_kernel(const unsigned char *__restrict__ x,
                                    const int32_t *__restrict__ dst,
                                    unsigned char *__restrict__ out, int64_t T, int64_t top_k,
                                    uint32_t row_bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) unsigned char smem[];
  const int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (t >= T) return;
  const uint32_t bar = (uint32_t)__cvta_generic_to_shared(smem + 8 * threadIdx.x);
  const uint32_t row =
      (uint32_t)__cvta_generic_to_shared(smem + BULK_BAR_BYTES + (size_t)threadIdx.x * row_bytes);
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

// Up to BULK_TOKENS rows per block, fewer when rows are long (D up to 65536: 128 KB).
static void permute_bulk_launch(const PermuteProblem *p, cudaStream_t s) {
  const uint32_t row_bytes = (uint32_t)(p->D * 2);
  static size_t max_smem = 0, set_smem = 0;
  if (!max_smem) {
    int dev, v;
    GTL_CUDA(cudaGetDevice(&dev));
    GTL_CUDA(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    max_smem = (size_t)v;
  }
  int tpb = BULK_TOKENS;
  while (tpb > 1 && BULK_BAR_BYTES + (size_t)tpb * row_bytes > max_smem) tpb--;
  const size_t smem = BULK_BAR_BYTES + (size_t)tpb * row_bytes;
  if (smem > set_smem) {  // above 48 KB a kernel must opt in
    GTL_CUDA(cudaFuncSetAttribute(permute_bulk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)smem));
    set_smem = smem;
  }
  permute_bulk_kernel<<<(unsigned)((p->T + tpb - 1) / tpb), tpb, smem, s>>>(
      (const unsigned char *)p->d_x, p->d_dst, (unsigned char *)p->d_out, p->T, p->top_k,
      row_bytes);
  GTL_LAUNCH();
}

// Every kernel this GPU can run gets a row; the first is the JSON line.
static const PermuteVariant variants[] = {
    {"bulk", "thread per token, copy engine: row to shared memory once (cp.async.bulk), "
             "top_k bulk stores",
     90, permute_bulk_launch},
    {"warp", "warp per token, 16-byte lanes, row read once and stored to its top_k slots", 0,
     permute_warp_launch}};

int main(int argc, char **argv) { return permute_main(argc, argv, "optimized", variants, 2); }
