// wgmma.cuh — ch10's Hopper variant (--variant=wgmma of ch10/optimized): TMA loads that
// complete on mbarriers, wgmma from shared memory, one producer warpgroup and two consumer
// warpgroups (warp specialization), setmaxnreg moving registers to the consumers.
//
// Strategy: a persistent grid (one block per SM) walks 128x240 output tiles. Per tile,
// warpgroup 0 (one thread of it) streams 64-wide K slices of A and B into a 4-stage
// shared-memory ring with the copy engine (cp.async.bulk.tensor, SASS UTMALDG); warpgroups
// 1 and 2 each multiply 64 rows of the tile with wgmma.mma_async m64n240k16 (SASS HGMMA),
// reading both operands straight from shared memory. Full/empty mbarriers per stage
// replace __syncthreads: nobody waits for anybody it does not depend on.
// Measured on an H200: 670 TFLOP/s at 4096x5760x2880, 88% of cuBLAS in the same run
// (tensor pipe busy 76% of the kernel's time against cuBLAS's 91%). Not overlapped: the
// epilogue (registers → global) and the last, partly filled round of tiles.
//
// Everything here follows the PTX ISA (version 8.x, sections named at each helper) and the
// CUDA C++ Programming Guide ("Tensor Memory Access", "Asynchronous Barrier"); the PTX is
// inline asm written for this chapter.
//
// Built for sm_90a only (Makefile: ch10/optimized adds -gencode=arch=compute_90a,code=
// sm_90a beside the common sm_90 one). wgmma and setmaxnreg do not exist in plain sm_90,
// so the kernel's body is compiled only where nvcc defines __CUDA_ARCH_FEAT_SM90_ALL (the
// sm_90a pass); the sm_90 pass gets a body that traps, and gemm_wgmma_unsupported()
// waives the variant before launch on any GPU or binary that would reach it.
//
// Kernel and launcher only (no driver: the lab includes this file; ch10/gemm.cuh is the
// chapter's driver):  hopper::gemm_wgmma_launch(A, B, C, M, N, K, stream), after
// hopper::gemm_wgmma_unsupported(dev) said NULL.
#pragma once
#include <cuda.h>          // CUtensorMap and its enums: types only, the program never links -lcuda
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled_v12000, the encoder's pointer type
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../common/gauntlet.h"
#include "gemm_epilogue.cuh"

namespace hopper {
// BN = 240, not 256: 5760 = 24 x 240, so the default problem has 32 x 24 = 768 full tiles
// (5.8 per SM), where 256 leaves a half-empty last tile column and 736 tiles that still
// take 6 rounds of 256-wide work on the busiest SMs (measured: 637 vs 672 TFLOP/s). Off
// the default shape 256 can win: at 4000x5000x2000 it needs 5 rounds where 240 needs 6.
constexpr int BM = 128, BN = 240, BK = 64;  // block tile; K slice per stage (64 bf16 = 128 B)
constexpr int STAGES = 4;                   // shared-memory ring depth
constexpr int CONSUMERS = 2;                // consumer warpgroups, 64 tile rows each
constexpr int THREADS = 128 * (1 + CONSUMERS);
constexpr int A_BYTES = BM * BK * 2, B_BYTES = BN * BK * 2;
constexpr int STAGE_BYTES = A_BYTES + B_BYTES;  // 46 KB: the bytes one full barrier awaits
// + 1 KB so that the ring can start on a 1024-byte boundary (the 128-byte swizzle repeats
// every 8 rows x 128 B; TMA and wgmma must agree on where that pattern starts).
constexpr int SMEM_BYTES = STAGES * STAGE_BYTES + 1024;
constexpr int GROUP_M = 16;  // tile raster: 16 tile-rows per band, for L2 reuse of B
// setmaxnreg: the producer needs few registers, each consumer thread holds a 64x240 fp32
// accumulator slice (120 registers). 128·40 + 256·232 = 64512 <= 65536 per SM.
constexpr int PRODUCER_REGS = 40, CONSUMER_REGS = 232;
static_assert(BK * 2 == 128, "one K slice row must be exactly the 128-byte swizzle span");
static_assert(A_BYTES % 1024 == 0 && B_BYTES % 1024 == 0, "stages stay 1024-byte aligned");
static_assert(BM == 64 * CONSUMERS, "each consumer warpgroup owns 64 rows (wgmma M = 64)");

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ uint32_t smem_addr(const void *p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}

// ---- mbarrier (PTX ISA, "Parallel synchronization: mbarrier") --------------------------
// A 64-bit object in shared memory with a phase bit, a pending-arrival count and a pending
// transaction (byte) count. A phase completes when both counts reach zero; then the phase
// bit flips and the counts reload. Waiters name the parity of the phase they wait for.

// mbarrier.init: expect `count` arrivals per phase; the barrier starts in phase 0.
__device__ __forceinline__ void mbar_init(uint64_t *bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count)
               : "memory");
}
// mbarrier.arrive.expect_tx: one arrival, and raise the transaction count by `bytes`: the
// phase cannot complete until the copy engine has also reported that many bytes written
// (complete_tx, done by cp.async.bulk.tensor below). The result state is discarded (_).
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t *bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(
                   smem_addr(bar)),
               "r"(bytes)
               : "memory");
}
// mbarrier.arrive: one plain arrival (release semantics: this thread's earlier accesses
// are visible to whoever then sees the phase complete).
__device__ __forceinline__ void mbar_arrive(uint64_t *bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}
// mbarrier.try_wait.parity: true once the phase with this parity has completed (acquire
// semantics). It may suspend the thread for a while before answering false, so the loop
// is a polite wait, not a hot spin. A barrier still in phase 0 counts phase "-1" (parity
// 1) as complete: that is why a producer's first wait on an empty slot passes at once.
__device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity) {
  uint32_t done;
  do {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
  } while (!done);
}

// ---- TMA: the tensor copy engine (PTX ISA, "cp.async.bulk.tensor") ---------------------
// One thread asks for a whole 2-D box (here 64 x 128 or 64 x 240 bf16) described by the
// tensor map: the engine computes the addresses, zero-fills what lies outside the tensor
// (the M, N, K edges), applies the 128-byte swizzle while writing shared memory, and
// reports the bytes on the mbarrier. c0 is the inner (K) coordinate, c1 the row.
__device__ __forceinline__ void tma_load_2d(void *dst, const CUtensorMap *map, uint64_t *bar,
                                            int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4}], [%2];\n" ::"r"(smem_addr(dst)),
      "l"((uint64_t)map), "r"(smem_addr(bar)), "r"(c0), "r"(c1)
      : "memory");
}
// prefetch.tensormap: pull the 128-byte map (a kernel parameter) into the cache the copy
// engine reads it from, before the first copy needs it.
__device__ __forceinline__ void tma_prefetch_map(const CUtensorMap *map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"((uint64_t)map) : "memory");
}

// ---- setmaxnreg (PTX ISA, "setmaxnreg") -------------------------------------------------
// Executed by every thread of a warpgroup: release registers down to N per thread (dec) or
// wait until the block's pool can grant N per thread (inc). The kernel starts at the cap
// from __launch_bounds__(THREADS, 1) (168); the producer gives back, the consumers take.
template <int N>
__device__ __forceinline__ void regs_release() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N>
__device__ __forceinline__ void regs_claim() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}

// ---- wgmma (PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate") ------
// Shared-memory matrix descriptor, 64 bits: start address >> 4 in bits 0-13, leading
// byte offset >> 4 in 16-29, stride byte offset >> 4 in 32-45, base offset in 49-51,
// swizzle mode in 62-63 (1 = 128-byte). Our tiles are K-major: each row (an M row of A,
// an N row of B) is one 128-byte line of 64 bf16, swizzled by TMA; 8 rows make a
// 1024-byte swizzle atom, and the stride byte offset is the distance between atoms along
// M/N (1024). The leading byte offset (between atoms along K) is not used when the
// instruction's K extent (16 bf16 = 32 B) sits inside one 128-byte row; it is set to 1 as
// the ISA's tables for swizzled K-major layouts show. Base offset 0: atoms 1024-aligned.
__device__ __forceinline__ uint64_t smem_desc_sw128(const void *tile) {
  const uint64_t start = (smem_addr(tile) & 0x3FFFF) >> 4;
  return start | (uint64_t)1 << 16 | (uint64_t)(1024 >> 4) << 32 | (uint64_t)1 << 62;
}
// wgmma.fence: order this warpgroup's earlier register accesses (to the accumulators)
// before the wgmma operations that follow. Needed before the first wgmma and whenever
// other instructions touched the accumulator registers.
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
// wgmma.commit_group: close the wgmma operations issued so far into one group.
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
// wgmma.wait_group N: wait until at most N groups of this warp are still running. Until
// then their accumulators must not be read and their shared memory must not be reused.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Pin each accumulator register after a wgmma_wait: an empty asm that "writes" it, so the
// compiler cannot move a read of the accumulators above the wait.
template <int N>
__device__ __forceinline__ void acc_fence(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}
// D[64xN] (+)= A[64x16] · B[Nx16]^T, bf16 in, fp32 accumulate, both operands K-major in
// shared memory (imm-trans-a = imm-trans-b = 0: the "TN" case). Issued by all 128 threads
// of a warpgroup; it only starts the work (mma_async). scale_d = 0 ignores the old
// accumulator (D = A·B), which spares zeroing it per tile. Thread t of the warpgroup holds
// rows 16·(t/32) + (t%32)/4 (+8) and columns 8·j + 2·(t%4) (+1) of D in d[4j .. 4j+3].
template <int N>
__device__ __forceinline__ void wgmma_m64nNk16(float (&d)[N / 2], uint64_t desc_a,
                                               uint64_t desc_b, int scale_d) {
  static_assert(N == 256 || N == 240, "written out for N = 256 and N = 240");
  if constexpr (N == 256) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "
        "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, "
        "%36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, "
        "%53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, "
        "%70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, "
        "%87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, "
        "%103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, "
        "%117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "
        "%128, %129, p, 1, 1, 0, 0;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),
          "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),
          "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
          "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),
          "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]),
          "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]),
          "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
          "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]),
          "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]),
          "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]),
          "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]),
          "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]),
          "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]),
          "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]),
          "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]),
          "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]),
          "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]),
          "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]),
          "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]),
          "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]),
          "+f"(d[127])
        : "l"(desc_a), "l"(desc_b), "r"(scale_d));
  } else {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %122, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n240k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "
        "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, "
        "%36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, "
        "%53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, "
        "%70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, "
        "%87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, "
        "%103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, "
        "%117, %118, %119}, "
        "%120, %121, p, 1, 1, 0, 0;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),
          "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),
          "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
          "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),
          "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]),
          "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]),
          "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
          "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]),
          "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]),
          "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]),
          "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]),
          "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]),
          "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]),
          "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]),
          "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]),
          "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]),
          "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]),
          "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]),
          "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119])
        : "l"(desc_a), "l"(desc_b), "r"(scale_d));
  }
}

// Tile t of the persistent walk → (tile row mt, tile column nt). Bands of GROUP_M tile-rows
// are walked column by column, so the ~132 tiles in flight at once share a few B columns
// and one band of A in L2 instead of sweeping all of A for every column.
__device__ __forceinline__ void tile_coords(int t, int m_tiles, int n_tiles, int &mt, int &nt) {
  const int band = GROUP_M * n_tiles;
  const int first = (t / band) * GROUP_M;
  const int rows = min(GROUP_M, m_tiles - first);
  mt = first + (t % band) % rows;
  nt = (t % band) / rows;
}
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// Strategy: persistent, warp-specialized: TMA producer warpgroup → 4-stage mbarrier ring →
// two wgmma m64n240k16 consumer warpgroups (128x240 tile). Limiter: the tensor pipe (76%
// busy); the epilogue and the last partial round of tiles are not overlapped with it.
__global__ void __launch_bounds__(THREADS, 1)
    gemm_wgmma_kernel(const __grid_constant__ CUtensorMap map_a,
                      const __grid_constant__ CUtensorMap map_b, __nv_bfloat16 *__restrict__ C,
                      int M, int N, int K) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ unsigned char smem_raw[];
  __shared__ __align__(8) uint64_t full_bar[STAGES];   // "stage s holds data": TMA bytes
  __shared__ __align__(8) uint64_t empty_bar[STAGES];  // "stage s was read": consumers
  unsigned char *ring = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);

  const int wg = threadIdx.x / 128, lane = threadIdx.x % 32, warp_in_wg = threadIdx.x / 32 % 4;
  const int m_tiles = (M + BM - 1) / BM, n_tiles = (N + BN - 1) / BN;
  const int tiles = m_tiles * n_tiles, kblocks = (K + BK - 1) / BK;

  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; s++) {
      mbar_init(&full_bar[s], 1);                // the producer's arrive.expect_tx
      mbar_init(&empty_bar[s], CONSUMERS * 4);  // one arrival per consumer warp
    }
    // The inits are ordinary (generic-proxy) writes; the copy engine updates the
    // barriers through the async proxy. fence.mbarrier_init makes the inits visible to
    // it (and to the cluster), fence.proxy.async orders generic against async accesses to
    // shared memory in general; __syncthreads then publishes them to the other threads.
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  }
  __syncthreads();  // the last block-wide barrier: the roles split below

  if (wg == 0) {
    // ---- producer warpgroup: one thread issues every copy ---------------------------
    regs_release<PRODUCER_REGS>();
    if (threadIdx.x == 0) {
      tma_prefetch_map(&map_a);
      tma_prefetch_map(&map_b);
      int s = 0;
      uint32_t phase = 0;  // flips each time the ring wraps
      for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
        int mt, nt;
        tile_coords(t, m_tiles, n_tiles, mt, nt);
        for (int kb = 0; kb < kblocks; kb++) {
          mbar_wait(&empty_bar[s], phase ^ 1);  // consumers are done with this slot
          unsigned char *a = ring + s * STAGE_BYTES, *b = a + A_BYTES;
          mbar_arrive_expect_tx(&full_bar[s], STAGE_BYTES);  // boxes are full size, edges too
          tma_load_2d(a, &map_a, &full_bar[s], kb * BK, mt * BM);
          tma_load_2d(b, &map_b, &full_bar[s], kb * BK, nt * BN);
          if (++s == STAGES) s = 0, phase ^= 1;
        }
      }
    }
  } else {
    // ---- consumer warpgroups: wgmma on rows 64·cw .. 64·cw+63 of each tile ------------
    regs_claim<CONSUMER_REGS>();
    const int cw = wg - 1;
    float acc[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; i++) acc[i] = 0.0f;
    int s = 0, prev = 0;
    uint32_t phase = 0;
    for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
      int mt, nt;
      tile_coords(t, m_tiles, n_tiles, mt, nt);
      for (int kb = 0; kb < kblocks; kb++) {
        mbar_wait(&full_bar[s], phase);  // TMA has written all STAGE_BYTES of stage s
        const unsigned char *a = ring + s * STAGE_BYTES + cw * 64 * BK * 2;
        const unsigned char *b = ring + s * STAGE_BYTES + A_BYTES;
        const uint64_t da = smem_desc_sw128(a), db = smem_desc_sw128(b);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++)  // +32 B along K = +2 in the address field
          wgmma_m64nNk16<BN>(acc, da + 2 * kk, db + 2 * kk, kb > 0 || kk > 0);
        wgmma_commit();
        // Keep this slice's group running; wait only for the previous slice's, then hand
        // its stage back to the producer (one arrival per warp, after the whole warp's
        // wait: wait_group is warp-synchronous).
        wgmma_wait<1>();
        if (kb > 0 && lane == 0) mbar_arrive(&empty_bar[prev]);
        prev = s;
        if (++s == STAGES) s = 0, phase ^= 1;
      }
      wgmma_wait<0>();
      if (lane == 0) mbar_arrive(&empty_bar[prev]);  // the producer may run ahead now
      acc_fence(acc);
      // Epilogue straight from registers (bf16 pairs), while the producer already fills
      // the ring with the next tile's first slices. Interior tiles (all but the last
      // tile-row and tile-column when M or N is off the grid) skip the per-pair bounds
      // checks: two stores per column group, addresses as immediate offsets.
      const int row = mt * BM + cw * 64 + warp_in_wg * 16 + lane / 4;
      const int col = nt * BN + 2 * (lane % 4);
      if ((mt + 1) * BM <= M && (nt + 1) * BN <= N && N % 2 == 0) {
        __nv_bfloat16 *c0 = C + (size_t)row * N + col, *c8 = c0 + (size_t)8 * N;
#pragma unroll
        for (int j = 0; j < BN / 8; j++) {
          *(__nv_bfloat162 *)(c0 + 8 * j) = __floats2bfloat162_rn(acc[4 * j], acc[4 * j + 1]);
          *(__nv_bfloat162 *)(c8 + 8 * j) =
              __floats2bfloat162_rn(acc[4 * j + 2], acc[4 * j + 3]);
        }
      } else {
#pragma unroll
        for (int j = 0; j < BN / 8; j++) {
          gemm_store_pair(C, M, N, row, col + 8 * j, acc[4 * j], acc[4 * j + 1]);
          gemm_store_pair(C, M, N, row + 8, col + 8 * j, acc[4 * j + 2], acc[4 * j + 3]);
        }
      }
    }
  }
#else
  __trap();  // compiled without sm_90a: gemm_wgmma_unsupported() waives before any launch
#endif
}

// Writes 1 from the sm_90a image and 0 from any other: which image did the driver load?
__global__ void gemm_wgmma_probe_kernel(int *has_sm90a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  *has_sm90a = 1;
#else
  *has_sm90a = 0;
#endif
}

// The driver's tensor-map encoder, fetched through the runtime (no -lcuda): NULL if the
// driver does not export it.
static inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = NULL;
  if (!fn) {
    void *p = NULL;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000,
                                         cudaEnableDefault, &q) == cudaSuccess &&
        q == cudaDriverEntryPointSuccess)
      fn = (PFN_cuTensorMapEncodeTiled_v12000)p;
  }
  return fn;
}

// A [rows][K] bf16 row-major tensor, copied in boxes of BK x box_rows, 128-byte swizzle,
// zeros outside. Dimensions and strides are listed innermost first; the row stride
// (K·2 bytes) must be a multiple of 16, which the driver's K % 8 == 0 rule guarantees.
static inline void tensor_map_make(CUtensorMap *map, const void *base, int64_t rows, int64_t K,
                            int box_rows) {
  const cuuint64_t dims[2] = {(cuuint64_t)K, (cuuint64_t)rows};
  const cuuint64_t strides[1] = {(cuuint64_t)K * 2};
  const cuuint32_t box[2] = {BK, (cuuint32_t)box_rows};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUresult r = tensor_map_encoder()(
      map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, (void *)base, dims, strides, box,
      elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    fprintf(stderr, "ch10: cuTensorMapEncodeTiled failed (CUresult %d) for a %lld x %lld "
                    "tensor, box %d x %d\n",
            (int)r, (long long)rows, (long long)K, BK, box_rows);
    exit(GTL_EXIT_RUNTIME);
  }
}

// NULL when the wgmma kernel can run here, else why not (the program waives, exit 77).
static inline const char *gemm_wgmma_unsupported(const GtlDevice *dev) {
  static char why[448];
  if (dev->cc_major != 9 || dev->cc_minor != 0) {
    snprintf(why, sizeof why,
             "wgmma and setmaxnreg are sm_90a instructions and run only on compute "
             "capability 9.0 (Hopper); %s is %d.%d (try --variant=mma)",
             dev->name, dev->cc_major, dev->cc_minor);
    return why;
  }
  cudaFuncAttributes fa;
  int *d_flag = NULL, has_sm90a = 0;
  if (cudaFuncGetAttributes(&fa, gemm_wgmma_kernel) != cudaSuccess ||
      cudaMalloc(&d_flag, sizeof(int)) != cudaSuccess) {
    (void)cudaGetLastError();
    return "this binary has no loadable wgmma kernel (build ch10/optimized with make: it "
           "adds -gencode=arch=compute_90a,code=sm_90a)";
  }
  gemm_wgmma_probe_kernel<<<1, 1>>>(d_flag);
  const cudaError_t e = cudaMemcpy(&has_sm90a, d_flag, sizeof(int), cudaMemcpyDeviceToHost);
  GTL_CUDA(cudaFree(d_flag));
  if (e != cudaSuccess || !has_sm90a)
    return "the driver loaded this binary's sm_90 image, not its sm_90a one (wgmma needs "
           "sm_90a; build with make, which adds -gencode=arch=compute_90a,code=sm_90a)";
  if (!tensor_map_encoder())
    return "the CUDA driver does not export cuTensorMapEncodeTiled (TMA needs driver >= 12.0)";
  return NULL;
}

// Enqueue C = A·B^T on s: A [M][K], B [N][K] (K contiguous), C [M][N] row-major, bf16 in
// and out, fp32 accumulation; K % 8 == 0 (TMA row strides are multiples of 16 bytes).
static inline void gemm_wgmma_launch(const __nv_bfloat16 *d_A, const __nv_bfloat16 *d_B, __nv_bfloat16 *d_C,
                                     int64_t M, int64_t N, int64_t K, cudaStream_t s) {
  // Once per process: the shared-memory opt-in and the SM count. Once per problem: the
  // two tensor maps (host-side encoding, kept out of the timed loop).
  static int sms = 0;
  static const void *map_A = NULL, *map_B = NULL;
  static int64_t map_M = 0, map_N = 0, map_K = 0;
  static CUtensorMap map_a, map_b;
  if (!sms) {
    GTL_CUDA(cudaFuncSetAttribute(gemm_wgmma_kernel,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM_BYTES));
    int dev;
    GTL_CUDA(cudaGetDevice(&dev));
    GTL_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  }
  if (map_A != d_A || map_B != d_B || map_M != M || map_N != N || map_K != K) {
    tensor_map_make(&map_a, d_A, M, K, BM);
    tensor_map_make(&map_b, d_B, N, K, BN);
    map_A = d_A, map_B = d_B, map_M = M, map_N = N, map_K = K;
  }
  const int64_t tiles = ((M + BM - 1) / BM) * ((N + BN - 1) / BN);
  const int grid = (int)(tiles < sms ? tiles : sms);  // persistent: at most one block per SM
  gemm_wgmma_kernel<<<grid, THREADS, SMEM_BYTES, s>>>(map_a, map_b, d_C, (int)M,
                                                      (int)N, (int)K);
  GTL_LAUNCH();
}
}  // namespace hopper
