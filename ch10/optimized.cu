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
#include "gemm.cuh"   // the chapter's driver
#include "mma.cuh"    // the portable kernel: cp.async ring + ldmatrix + mma.sync (the lab includes it)
#include "wgmma.cuh"  // the Hopper variant: TMA + mbarrier + wgmma, warp-specialized

static void run_mma(const GemmProblem *p, cudaStream_t s) {
  ampere::gemm_mma_launch(p->d_A, p->d_B, p->d_C, p->M, p->N, p->K, s);
}
static void run_wgmma(const GemmProblem *p, cudaStream_t s) {
  hopper::gemm_wgmma_launch(p->d_A, p->d_B, p->d_C, p->M, p->N, p->K, s);
}

// The first entry is the default; --variant=mma runs the portable (sm_80+) kernel.
static const GemmVariant variants[] = {
    {"wgmma", "TMA + mbarrier 4-stage ring, wgmma m64n240k16, producer/consumer warpgroups",
     run_wgmma, 9, 0, hopper::SMEM_BYTES, hopper::gemm_wgmma_unsupported},
    {"mma", "multi-stage cp.async ring, ldmatrix + mma.sync m16n8k16, swizzled smem",
     run_mma, 8, 0, ampere::SMEM_BYTES, NULL}};

int main(int argc, char **argv) { return gemm_main(argc, argv, "optimized", variants, 2); }
