// ch10 tensor cores, intra-kernel pipelining — optimized: a pipelined K loop, two ways.
//
// The one change: the K loop becomes a pipeline, so copies of later K slices overlap the
// tensor-core work on the current one. This program offers it twice (--variant=NAME):
//
// wgmma (default; Hopper, sm_90a, in wgmma.cuh): the copy engine (TMA) fills a 4-stage
// ring of 46 KB slices and signals per-stage mbarriers; two consumer warpgroups run
// wgmma.mma_async m64n240k16 straight from the swizzled shared tiles; one producer
// warpgroup issues the copies (warp specialization) and setmaxnreg hands its registers to
// the consumers. Persistent grid, 128x240 tiles. 670 TFLOP/s on an H200, 88% of cuBLAS.
//
// mma (any GPU from sm_80, below): global → shared copies are issued with cp.async
// (LDGSTS: straight to shared memory, no registers, no waiting), STAGES-1 K slices ahead
// of the slice being multiplied, in a ring of STAGES shared-memory buffers. One
// __syncthreads per slice both publishes the slice that landed and frees the buffer the
// next copies refill, and it sits where the tensor cores still have queued work:
// fragments are double-buffered in registers, so the next k-step's ldmatrix loads (the
// next slice's, across the barrier) overlap this k-step's mma.syncs. To feed the tensor
// cores at that rate the inner product moves from WMMA to what WMMA hides: ldmatrix (one
// instruction loads a warp's 16x16 fragment, 16 B per lane) from an XOR-swizzled shared
// layout (conflict-free for cp.async writes and ldmatrix reads, no padding), and
// mma.sync.m16n8k16 on 64x64 warp tiles (32 MMAs per 8 ldmatrix.x4). A 128x128 block of 4
// warps with 3 stages takes 96 KB (dynamic, opt-in above 48 KB) and 236 registers per
// thread, so two blocks share an SM: one block's barrier wait is the other's compute
// (measured on an H200: 403 TFLOP/s, against 367 for one 128x256 block of 8 warps per SM).
// Edges: cp.async with src-size 0 (mma) and TMA's out-of-bounds fill (wgmma) write zeros,
// so tiles past M, N or K add nothing; the epilogues store only in-range elements.
//
// Build and run:   make ch10 && ./ch10/optimized         (pair: scripts/pair.sh ch10)
//                  ./ch10/optimized --variant=mma        (the sm_80+ kernel)
//                  ./ch10/optimized --M=4000 --N=5000 --K=2000   (edges off the tile grid)
// SASS check: cuobjdump --dump-sass ch10/optimized |
//               grep -oE 'UTMALDG|HGMMA|LDGSTS|LDSM|HMMA' | sort | uniq -c
// Nsight Compute:  scripts/profile.sh ch10 optimized   (add --variant=mma for the other)
//   sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed (tensor pipe
//   busy, HGMMA included: ~27% baseline, ~63% mma, ~76% wgmma, ~91% cuBLAS's kernel),
//   l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum (18.7 M in the baseline, ~0.4 M
//   in mma, from the epilogue), lts__t_sectors_srcunit_tex.avg.pct_of_peak_sustained_elapsed
//   (L2 feeding the SMs: ~58% mma, ~67% wgmma).
// Book: tensor cores (WMMA, mma.sync, wgmma) and intra-kernel pipelining.
#include "gemm.cuh"
#include "wgmma.cuh"  // the Hopper variant: TMA + mbarrier + wgmma, warp-specialized

namespace {
constexpr int BM = 128, BN = 128, BK = 64;  // block tile; K slice per stage
constexpr int STAGES = 3;                   // shared-memory ring: STAGES-1 slices in flight
constexpr int WARPS_M = 2, WARPS_N = 2;     // 4 warps
constexpr int MIN_BLOCKS = 2;               // resident blocks per SM (caps registers)
constexpr int THREADS = 32 * WARPS_M * WARPS_N;
constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;  // 64 x 64 per warp
constexpr int MT = WM / 16, NT = WN / 8;    // 4 x 8 mma tiles of m16n8
constexpr int KSTEPS = BK / 16;             // mma k-steps per slice: 4
constexpr int CHUNKS = BK / 8;              // 16-byte chunks per shared row: 8
constexpr int A_COPIES = BM * CHUNKS / THREADS, B_COPIES = BN * CHUNKS / THREADS;
constexpr int SMEM_BYTES = STAGES * (BM + BN) * BK * 2;  // 96 KB: needs the opt-in
static_assert(CHUNKS == 8, "the swizzle below is written for 128-byte rows");
static_assert((BM * CHUNKS) % THREADS == 0 && (BN * CHUNKS) % THREADS == 0, "whole rows");
}  // namespace

// Element offset of 16-byte chunk `chunk` of row `row` in a [rows][64] bf16 tile. A row is
// 128 B = all 32 banks; XOR-ing the chunk index with row % 8 puts the same logical chunk
// of 8 consecutive rows (what one ldmatrix 8x8 matrix reads) in 8 different bank groups.
__device__ __forceinline__ int swz(int row, int chunk) {
  return row * BK + ((chunk ^ (row & 7)) * 8);
}

__device__ __forceinline__ void cp_async_16(void *smem, const void *gmem, bool in_range) {
  const unsigned dst = (unsigned)__cvta_generic_to_shared(smem);
  const int src_bytes = in_range ? 16 : 0;  // 0: read nothing, fill 16 zero bytes
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {  // until at most N groups are pending
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// Four 8x8 b16 matrices; lane i gives the address of row i % 8 of matrix i / 8, and gets
// elements (lane / 4, 2·(lane % 4) + {0,1}) of each — exactly an mma operand fragment.
__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], const void *smem) {
  const unsigned a = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
// D[16x8] += A[16x16] · B[16x8], bf16 in, fp32 accumulate (PTX ISA, "mma.m16n8k16").
__device__ __forceinline__ void mma_bf16_16816(float d[4], const unsigned a[4],
                                               const unsigned b[2]) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Strategy: STAGES-deep cp.async ring + ldmatrix + mma.sync m16n8k16, 64x64 warp tiles.
// Limiter: the mma.sync (HMMA) path itself; Hopper's full tensor rate needs wgmma.
__global__ void __launch_bounds__(THREADS, MIN_BLOCKS)
    gemm_mma_pipelined_kernel(const __nv_bfloat16 *__restrict__ A,
                              const __nv_bfloat16 *__restrict__ B,
                              __nv_bfloat16 *__restrict__ C, int M, int N, int K) {
  extern __shared__ __align__(128) unsigned char smem[];
  __nv_bfloat16 *sA = (__nv_bfloat16 *)smem;  // [STAGES][BM][BK], swizzled rows
  __nv_bfloat16 *sB = sA + STAGES * BM * BK;  // [STAGES][BN][BK], B's [n][k] layout
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int wm = (warp / WARPS_N) * WM, wn = (warp % WARPS_N) * WN;
  const int KT = (K + BK - 1) / BK;

  // Copy roles: thread t moves chunk t % 8 of rows t / 8, t / 8 + THREADS / 8, ... — a warp
  // covers 4 whole 128-byte rows per instruction, coalesced in global, conflict-free in
  // shared. A slice's copies are issued in KSTEPS parts, one per mma k-step, so that they
  // interleave with the tensor-core work instead of stalling it in one burst.
  const int ld_row = tid / CHUNKS, ld_chunk = tid % CHUNKS;
  auto copy_slice_part = [&](int stage, int kt, int part) {
    const int k = kt * BK + ld_chunk * 8;
    __nv_bfloat16 *a = sA + stage * BM * BK, *b = sB + stage * BN * BK;
#pragma unroll
    for (int i = part; i < A_COPIES; i += KSTEPS) {  // copy i goes with k-step i % KSTEPS
      const int r = ld_row + i * (THREADS / CHUNKS);
      const bool ok = m0 + r < M && k < K;
      cp_async_16(a + swz(r, ld_chunk), ok ? A + (m0 + r) * K + k : A, ok);
    }
#pragma unroll
    for (int i = part; i < B_COPIES; i += KSTEPS) {
      const int r = ld_row + i * (THREADS / CHUNKS);
      const bool ok = n0 + r < N && k < K;
      cp_async_16(b + swz(r, ld_chunk), ok ? B + (n0 + r) * K + k : B, ok);
    }
  };
  // Fragments of k-step kk of a slice. A 16x16: matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15)
  // from lanes 0-7, 8-15, 16-23, 24-31 are a0..a3 in the order mma expects. B: each [n][k]
  // row is a column of B^T, so the plain (non-.trans) ldmatrix gives the "col" operand:
  // matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15) are b0, b1
  // of tile j and b0, b1 of tile j+1.
  auto load_fragments = [&](unsigned (&af)[MT][4], unsigned (&bf)[NT][2], int stage, int kk) {
    const __nv_bfloat16 *a = sA + stage * BM * BK, *b = sB + stage * BN * BK;
#pragma unroll
    for (int i = 0; i < MT; i++)
      ldmatrix_x4(af[i], a + swz(wm + i * 16 + (lane & 15), kk * 2 + (lane >> 4)));
#pragma unroll
    for (int j = 0; j < NT; j += 2) {
      unsigned t[4];
      ldmatrix_x4(t, b + swz(wn + j * 8 + (lane & 7) + ((lane >> 4) << 3),
                             kk * 2 + ((lane >> 3) & 1)));
      bf[j][0] = t[0];
      bf[j][1] = t[1];
      bf[j + 1][0] = t[2];
      bf[j + 1][1] = t[3];
    }
  };

  float acc[MT][NT][4];
#pragma unroll
  for (int i = 0; i < MT; i++)
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

  // Prologue: put STAGES-1 slices in flight, one commit group each; wait for slice 0 and
  // load its first fragments.
#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (s < KT)
#pragma unroll
      for (int part = 0; part < KSTEPS; part++) copy_slice_part(s, s, part);
    cp_async_commit();
  }
  cp_async_wait<STAGES - 2>();
  __syncthreads();
  unsigned af[2][MT][4], bf[2][NT][2];  // fragments double-buffered across k-steps
  load_fragments(af[0], bf[0], 0, 0);

  int rd = 0, wr = STAGES - 1;  // the stage being multiplied, the stage being refilled
  for (int kt = 0; kt < KT; kt++) {
#pragma unroll
    for (int kk = 0; kk < KSTEPS; kk++) {
      // Part kk of the refill of stage wr (freed by the last barrier) with slice kt+STAGES-1.
      if (kt + STAGES - 1 < KT) copy_slice_part(wr, kt + STAGES - 1, kk);
      if (kk == KSTEPS - 1) {
        // Close the refill's commit group (empty past the end, which keeps the count), then
        // wait until slice kt+1 has landed for every thread. The barrier also tells the
        // next slice's refill that slice kt is fully read (its last fragments are already
        // in registers). The mma.syncs issued just before keep the tensor cores busy while
        // the warps meet here.
        cp_async_commit();
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        rd = (rd + 1) % STAGES;
      }
      // Fragments for the next k-step (the next slice's first one after the barrier) load
      // while this k-step's 32 mma.syncs run.
      load_fragments(af[(kk + 1) % 2], bf[(kk + 1) % 2], rd, (kk + 1) % KSTEPS);
#pragma unroll
      for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++) mma_bf16_16816(acc[i][j], af[kk % 2][i], bf[kk % 2][j]);
    }
    wr = (wr + 1) % STAGES;
  }

  // Epilogue: accumulator e of tile (i, j) sits at row lane/4 (+8 for e >= 2), column
  // 2·(lane%4) + (e & 1) of the 16x8 tile: two neighbours per store.
#pragma unroll
  for (int i = 0; i < MT; i++)
#pragma unroll
    for (int j = 0; j < NT; j++) {
      const int row = m0 + wm + i * 16 + lane / 4, col = n0 + wn + j * 8 + (lane % 4) * 2;
      gemm_store_pair(C, M, N, row, col, acc[i][j][0], acc[i][j][1]);
      gemm_store_pair(C, M, N, row + 8, col, acc[i][j][2], acc[i][j][3]);
    }
}

void gemm_mma_launch(const GemmProblem *p, cudaStream_t s) {
  static int configured = 0;  // the opt-in above 48 KB, once per process
  if (!configured) {
    GTL_CUDA(cudaFuncSetAttribute(gemm_mma_pipelined_kernel,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM_BYTES));
    configured = 1;
  }
  const dim3 grid((unsigned)((p->N + BN - 1) / BN), (unsigned)((p->M + BM - 1) / BM));
  gemm_mma_pipelined_kernel<<<grid, THREADS, SMEM_BYTES, s>>>(p->d_A, p->d_B, p->d_C,
                                                              (int)p->M, (int)p->N, (int)p->K);
  GTL_LAUNCH();
}

// The first entry is the default; --variant=mma runs the portable (sm_80+) kernel.
static const GemmVariant variants[] = {
    {"wgmma", "TMA + mbarrier 4-stage ring, wgmma m64n240k16, producer/consumer warpgroups",
     hopper::gemm_wgmma_launch, 9, 0, hopper::SMEM_BYTES, hopper::gemm_wgmma_unsupported},
    {"mma", "multi-stage cp.async ring, ldmatrix + mma.sync m16n8k16, swizzled smem",
     gemm_mma_launch, 8, 0, SMEM_BYTES, NULL}};

int main(int argc, char **argv) { return gemm_main(argc, argv, "optimized", variants, 2); }
