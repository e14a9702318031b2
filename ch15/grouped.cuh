// grouped.cuh — ch15's expert GEMMs: ONE persistent grouped-GEMM launch per projection for
// all experts at once, with no host synchronization:
//   moe_grouped_plan        once per shape: m-tile height and persistent grid sizes
//   moe_expert_up_launch    h[r][f] = silu(x_t · Wg_e[f]) · (x_t · Wu_e[f]) over every
//                           (expert, tile) work item, rows gathered by token, SwiGLU fused
//                           in the epilogue
//   moe_expert_down_launch  the same kernel for y[r][d] = h[r] · Wd_e[d]
// Their work items come from dispatch.cuh's counting sort (moe_dispatch_launch, same bm).
// Kernels and launchers only (pointers, sizes and a stream in; no main, no globals), so the
// lab's layer 03 includes this header as it is. Layouts (bf16, row-major, nn.Linear):
//   x [T][D]; expert e's gate and up [F][D] at w_gate + e·stride, w_up + e·stride; its down
//   [D][F] at w_down + e·stride (one stride: the lab's arena and ch15's buffer both keep
//   experts at a fixed pitch); h [P][F] and y [P][D] in expert-sorted row order (P =
//   T·top_k). fp32 accumulation, one bf16 rounding per output.
// Preconditions (checked by the launchers, exit 3): 1 <= E <= 1024, D and F multiples of 8.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../common/check.h"
#include "dispatch.cuh"  // MoeTile's tables come from moe_dispatch_launch

namespace moe_grouped {
constexpr int THREADS = 128;      // 4 warps, side by side along N
constexpr int WARPS = THREADS / 32;
constexpr int BN = 64;            // output columns per work item (per matrix: gate and up each)
constexpr int WN = BN / WARPS;    // 16 output columns per warp
constexpr int NT = WN / 8;        // 2 mma tiles of n8 per warp
constexpr int BK = 64;            // K slice per pipeline stage: one 128-byte row of bf16
constexpr int KSTEPS = BK / 16;
// Deeper rings for the weight-streaming decode shapes (small BM, little smem per stage).
template <int BM>
struct Stages {
  static constexpr int value = BM == 16 ? 6 : 4;
};
template <int BM, bool GLU>
struct Smem {
  static constexpr int bytes = Stages<BM>::value * (BM + (GLU ? 2 : 1) * BN) * BK * 2;
};
// The kernel's body takes the pipeline depth and the column tile as template parameters
// (16 columns per warp, so the column tile also sets the warps per CTA); ch15 uses one
// point, Stages<BM> and BN above. Other points (moe_grouped_gemm_var_kernel) are for
// autotuners, e.g. ch20. Threads and shared memory of a point:
template <int BN_>
struct ThreadsOf {
  static constexpr int value = BN_ / 16 * 32;
};
template <int BM, bool GLU, int STAGES, int BN_>
struct SmemOf {
  static constexpr int bytes = STAGES * (BM + (GLU ? 2 : 1) * BN_) * BK * 2;
};
}  // namespace moe_grouped

// ---- the grouped GEMM -------------------------------------------------------------------

// 16-byte asynchronous global → shared copy (sm_80+: LDGSTS); src-size 0 writes 16 zero
// bytes and reads nothing (PTX ISA, "cp.async").
__device__ __forceinline__ void moe_cp_async16(void *smem, const void *gmem, bool valid) {
  const unsigned dst = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(valid ? 16 : 0));
}
// ldmatrix .x4: lane i names row i % 8 of 8x8 matrix i / 8 and receives, from each matrix,
// the two b16 at (lane / 4, 2·(lane % 4)) — the mma.sync operand fragment layout.
__device__ __forceinline__ void moe_ldsm_x4(unsigned r[4], const void *smem) {
  const unsigned a = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
// d[16x8] += a[16x16] · b[16x8]: bf16 operands, fp32 accumulators (PTX ISA, mma.m16n8k16).
__device__ __forceinline__ void moe_mma_bf16(float d[4], const unsigned a[4], unsigned b0,
                                             unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// Element offset of 16-byte chunk `chunk` of row `row` in a [rows][64] bf16 stage. A row is
// 128 B, all 32 banks; XOR-ing the chunk with row % 8 spreads the same chunk of 8
// consecutive rows (one 8x8 ldmatrix matrix) over 8 bank groups: no conflicts.
__host__ __device__ __forceinline__ int moe_swz(int row, int chunk) {
  return row * moe_grouped::BK + ((chunk ^ (row & 7)) << 3);
}

// One work item: expert e, sorted rows [row0, row0 + rows), output columns [n0, n0 + BN).
struct MoeTile {
  int e, row0, rows, n0;
};
// Work item w of the launch. Items are numbered expert by expert; inside an expert, n-tile
// major and m-tile minor, so the m-tiles that share a weight tile run side by side in the
// same wave and the second one finds it in L2.
// BN_: the launch's column tile (moe_grouped::BN unless a tuned variant).
template <int BN_ = moe_grouped::BN>
__host__ __device__ __forceinline__ MoeTile moe_tile_of(int w, const int32_t *__restrict__ offsets,
                                               const int32_t *__restrict__ tile_start, int E,
                                               int n_tiles, int bm) {
  int lo = 0, hi = E - 1;  // the last expert whose first item is <= w (empty ones skipped)
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (tile_start[mid] * n_tiles <= w) lo = mid; else hi = mid - 1;
  }
  const int mt = tile_start[lo + 1] - tile_start[lo];
  const int local = w - tile_start[lo] * n_tiles;
  MoeTile t;
  t.e = lo;
  t.row0 = offsets[lo] + (local % mt) * bm;
  t.rows = offsets[lo + 1] - t.row0 < bm ? offsets[lo + 1] - t.row0 : bm;
  t.n0 = (local / mt) * BN_;
  return t;
}

// Strategy: persistent grid (every SM full, blocks stride over the work items) and ONE
// cp.async ring that runs across item boundaries — the copies for the next item start while
// the current one is still multiplying — feeding ldmatrix + mma.sync m16n8k16. GLU: the
// stage holds the gate and up rows of the same 64 columns, each warp owns both halves of its
// 16 columns, and the epilogue writes silu(gate) · up. Limiter: HBM (weights streamed once)
// at decode sizes; the mma.sync path at large T.
// Which operands a call of the body's slice loader copies: 1 A, 2 B (weights), 3 both.
template <int P>
struct MoeParts {
  static constexpr int value = P;
};
// The body, shared by ch15's kernel and the tuned variants: STAGES-deep ring, BN columns
// per work item, THREADS = BN / 16 warps (each owns 16 columns). PDL (sm_90, for a launch
// with programmatic stream serialization): let the next kernel launch at once, and start
// the first STAGES - 1 weight slices, which no earlier kernel writes, before waiting for
// the previous kernel (griddepcontrol.wait) to read A. The work-item tables must be
// complete before this kernel starts (they come from the kernel before the previous one).
template <int BM, bool GLU, int STAGES, int BN, int THREADS, bool PDL = false>
__device__ __forceinline__ void moe_grouped_gemm_body(const __nv_bfloat16 *__restrict__ A,
                                                      const int32_t *__restrict__ a_token,
                                                      const __nv_bfloat16 *__restrict__ W0,
                                                      const __nv_bfloat16 *__restrict__ W1,
                                                      int64_t expert_stride,
                                                      const int32_t *__restrict__ offsets,
                                                      const int32_t *__restrict__ tile_start,
                                                      int E, int N, int K,
                                                      __nv_bfloat16 *__restrict__ C) {
  using moe_grouped::BK;
  using moe_grouped::KSTEPS;
  constexpr int WN = 16, NT = WN / 8;  // 16 columns per warp: 2 mma tiles of n8
  constexpr int MT = BM / 16, MATS = GLU ? 2 : 1;
  constexpr int BROWS = MATS * BN;  // weight rows per stage
  constexpr int A_COPIES = BM * 8 / THREADS > 0 ? BM * 8 / THREADS : 1;
  constexpr int B_COPIES = BROWS * 8 / THREADS;
  static_assert(BM % 16 == 0 && (BM * 8 % THREADS == 0 || BM * 8 < THREADS) &&
                    BROWS * 8 % THREADS == 0 && BN == THREADS / 32 * WN && STAGES >= 2,
                "tiling");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (PDL) asm volatile("griddepcontrol.launch_dependents;\n" ::);
#endif
  extern __shared__ __align__(128) unsigned char moe_smem[];
  __nv_bfloat16 *sA = (__nv_bfloat16 *)moe_smem;   // [STAGES][BM][BK]
  __nv_bfloat16 *sB = sA + STAGES * BM * BK;       // [STAGES][BROWS][BK]
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int n_tiles = (N + BN - 1) / BN, KT = (K + BK - 1) / BK;
  const int total = tile_start[E] * n_tiles;
  const int mine = total > (int)blockIdx.x ? (total - 1 - (int)blockIdx.x) / gridDim.x + 1 : 0;
  const int n_slices = mine * KT;

  // Copy roles: thread t moves chunk t % 8 of rows t / 8 + 16·i, so a warp covers four whole
  // 128-byte rows per instruction. The source rows of the item being loaded are kept here.
  const int ld_chunk = tid % 8, ld_row = tid / 8;
  const __nv_bfloat16 *a_src[A_COPIES], *b_src[B_COPIES];
  int ld_item = -1;
  auto load_slice = [&](int j, auto parts) {
    constexpr int P = decltype(parts)::value;
    const int item = j / KT, kt = j - item * KT;
    if (item != ld_item) {  // first slice of a new item: find its rows
      ld_item = item;
      const MoeTile t = moe_tile_of<BN>((int)blockIdx.x + item * gridDim.x, offsets, tile_start, E,
                                    n_tiles, BM);
#pragma unroll
      for (int i = 0; i < A_COPIES; i++) {
        const int r = ld_row + i * (THREADS / 8);
        a_src[i] = nullptr;
        if (r < BM && r < t.rows) {
          const int64_t src = GLU ? a_token[t.row0 + r] : t.row0 + r;
          a_src[i] = A + src * K;
        }
      }
#pragma unroll
      for (int i = 0; i < B_COPIES; i++) {
        const int r = ld_row + i * (THREADS / 8), n = t.n0 + r % BN;
        const __nv_bfloat16 *W = (GLU && r >= BN) ? W1 : W0;
        b_src[i] = n < N ? W + t.e * expert_stride + (int64_t)n * K : nullptr;
      }
    }
    const int stage = j % STAGES, k = kt * BK + ld_chunk * 8;
    __nv_bfloat16 *a = sA + stage * BM * BK, *b = sB + stage * BROWS * BK;
    if constexpr ((P & 1) != 0) {
#pragma unroll
      for (int i = 0; i < A_COPIES; i++) {
        const int r = ld_row + i * (THREADS / 8);
        const bool ok = a_src[i] != nullptr && k < K;
        if (r < BM) moe_cp_async16(a + moe_swz(r, ld_chunk), ok ? a_src[i] + k : A, ok);
      }
    }
    if constexpr ((P & 2) != 0) {
#pragma unroll
      for (int i = 0; i < B_COPIES; i++) {
        const int r = ld_row + i * (THREADS / 8);
        const bool ok = b_src[i] != nullptr && k < K;
        moe_cp_async16(b + moe_swz(r, ld_chunk), ok ? b_src[i] + k : W0, ok);
      }
    }
  };

  float acc[MATS][MT][NT][4];
  auto zero_acc = [&]() {
#pragma unroll
    for (int g = 0; g < MATS; g++)
#pragma unroll
      for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
          for (int q = 0; q < 4; q++) acc[g][i][j][q] = 0.0f;
  };
  zero_acc();

  if constexpr (PDL) {
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++)  // weights first: in the first commit group
      if (s < n_slices) load_slice(s, MoeParts<2>{});
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");  // A is the previous kernel's output
#endif
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
      if (s < n_slices) load_slice(s, MoeParts<1>{});
      asm volatile("cp.async.commit_group;\n");
    }
  } else {
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
      if (s < n_slices) load_slice(s, MoeParts<3>{});
      asm volatile("cp.async.commit_group;\n");
    }
  }
  const int wn = warp * WN;
  for (int j = 0; j < n_slices; j++) {
    // Slice j has landed for every thread, and everyone is done with slice j-1's stage,
    // which the copy issued next refills.
    asm volatile("cp.async.wait_group %0;\n" ::"n"(STAGES - 2) : "memory");
    __syncthreads();
    if (j + STAGES - 1 < n_slices) load_slice(j + STAGES - 1, MoeParts<3>{});
    asm volatile("cp.async.commit_group;\n");  // an empty group past the end keeps the count

    const int stage = j % STAGES;
    const __nv_bfloat16 *a = sA + stage * BM * BK, *b = sB + stage * BROWS * BK;
#pragma unroll
    for (int kk = 0; kk < KSTEPS; kk++) {
      unsigned af[MT][4], bf[MATS][4];
#pragma unroll
      for (int i = 0; i < MT; i++)
        moe_ldsm_x4(af[i], a + moe_swz(i * 16 + (lane & 15), kk * 2 + (lane >> 4)));
      // B fragments from [n][k] rows: matrices (n 0-7 | 8-15) x (k 0-7 | 8-15) give b0, b1
      // of n-tile 0 and b0, b1 of n-tile 1.
#pragma unroll
      for (int g = 0; g < MATS; g++)
        moe_ldsm_x4(bf[g], b + moe_swz(g * BN + wn + (lane & 7) + ((lane >> 4) << 3),
                                       kk * 2 + ((lane >> 3) & 1)));
#pragma unroll
      for (int g = 0; g < MATS; g++)
#pragma unroll
        for (int i = 0; i < MT; i++)
#pragma unroll
          for (int n = 0; n < NT; n++)
            moe_mma_bf16(acc[g][i][n], af[i], bf[g][2 * n], bf[g][2 * n + 1]);
    }

    if ((j + 1) % KT == 0) {  // the item's last slice: epilogue straight from registers
      const MoeTile t = moe_tile_of<BN>((int)blockIdx.x + (j / KT) * gridDim.x, offsets,
                                    tile_start, E, n_tiles, BM);
#pragma unroll
      for (int i = 0; i < MT; i++)
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
          for (int h = 0; h < 2; h++) {  // accumulator rows lane/4 and lane/4 + 8
            const int r = i * 16 + lane / 4 + h * 8;
            const int col = t.n0 + wn + n * 8 + (lane % 4) * 2;
            if (r >= t.rows || col >= N) continue;  // N % 8 == 0: col + 1 < N too
            float v0 = acc[0][i][n][2 * h], v1 = acc[0][i][n][2 * h + 1];
            if (GLU) {  // SwiGLU: silu(gate) · up, in fp32, one rounding at the store
              v0 = v0 / (1.0f + __expf(-v0)) * acc[MATS - 1][i][n][2 * h];
              v1 = v1 / (1.0f + __expf(-v1)) * acc[MATS - 1][i][n][2 * h + 1];
            }
            *(__nv_bfloat162 *)(C + (int64_t)(t.row0 + r) * N + col) =
                __floats2bfloat162_rn(v0, v1);
          }
      zero_acc();
    }
  }
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

// ch15's grouped GEMM: the body at Stages<BM> and BN = 64 (4 warps).
template <int BM, bool GLU>
__global__ void __launch_bounds__(moe_grouped::THREADS)
    moe_grouped_gemm_kernel(const __nv_bfloat16 *__restrict__ A,
                            const int32_t *__restrict__ a_token,  // GLU: row → token of A
                            const __nv_bfloat16 *__restrict__ W0,
                            const __nv_bfloat16 *__restrict__ W1, int64_t expert_stride,
                            const int32_t *__restrict__ offsets,
                            const int32_t *__restrict__ tile_start, int E, int N, int K,
                            __nv_bfloat16 *__restrict__ C) {
  moe_grouped_gemm_body<BM, GLU, moe_grouped::Stages<BM>::value, moe_grouped::BN,
                        moe_grouped::THREADS>(A, a_token, W0, W1, expert_stride, offsets,
                                              tile_start, E, N, K, C);
}

// Another point of the same body, for autotuners (ch20): STAGES-deep ring, BN columns per
// work item (16, 32, 64 or 128: 1, 2, 4 or 8 warps), PDL as in the body. Launch with
// ThreadsOf<BN>::value threads and SmemOf<BM, GLU, STAGES, BN>::bytes of dynamic shared
// memory; the work items are ch15's (moe_dispatch_launch with the same BM), numbered with
// n_tiles = ceil(N / BN).
template <int BM, bool GLU, int STAGES, int BN, bool PDL = false>
__global__ void __launch_bounds__(moe_grouped::ThreadsOf<BN>::value)
    moe_grouped_gemm_var_kernel(const __nv_bfloat16 *__restrict__ A,
                                const int32_t *__restrict__ a_token,
                                const __nv_bfloat16 *__restrict__ W0,
                                const __nv_bfloat16 *__restrict__ W1, int64_t expert_stride,
                                const int32_t *__restrict__ offsets,
                                const int32_t *__restrict__ tile_start, int E, int N, int K,
                                __nv_bfloat16 *__restrict__ C) {
  moe_grouped_gemm_body<BM, GLU, STAGES, BN, moe_grouped::ThreadsOf<BN>::value, PDL>(
      A, a_token, W0, W1, expert_stride, offsets, tile_start, E, N, K, C);
}

// ---- launchers ------------------------------------------------------------------------------

// What the launchers need to know once per shape: the m-tile height (rows of tokens per work
// item), and the persistent grid of each GEMM (SMs × resident blocks per SM).
typedef struct {
  int bm;                   // 16, 32 or 64
  int grid_up, grid_down;   // blocks of the persistent launches
} MoeGroupedPlan;

template <int BM, bool GLU>
static inline int moe_grouped_configure(int sms) {
  auto *k = moe_grouped_gemm_kernel<BM, GLU>;
  const int smem = moe_grouped::Smem<BM, GLU>::bytes;
  GTL_CUDA(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  int per_sm = 0;
  GTL_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, moe_grouped::THREADS, smem));
  if (per_sm < 1) moe_die("the grouped GEMM does not fit on an SM");
  return sms * per_sm;
}

/** Plan the grouped GEMMs for T tokens routed to top_k of E experts on a GPU with `sms`
 *  SMs: bm = the smallest of 16, 32, 64 rows that holds the mean load T·top_k/E (so decode
 *  wastes little of each m16 MMA, and prefill re-reads each weight tile from L2 at most
 *  ceil(load / 64) times); sets the kernels' shared-memory opt-in (host calls, once per
 *  shape, outside any timed region). Exit 3 on a CUDA error. */
static inline MoeGroupedPlan moe_grouped_plan(int64_t T, int top_k, int E, int sms) {
  const double mean = (double)T * top_k / E;
  MoeGroupedPlan p;
  p.bm = mean <= 16 ? 16 : mean <= 32 ? 32 : 64;
  if (p.bm == 16) {
    p.grid_up = moe_grouped_configure<16, true>(sms);
    p.grid_down = moe_grouped_configure<16, false>(sms);
  } else if (p.bm == 32) {
    p.grid_up = moe_grouped_configure<32, true>(sms);
    p.grid_down = moe_grouped_configure<32, false>(sms);
  } else {
    p.grid_up = moe_grouped_configure<64, true>(sms);
    p.grid_down = moe_grouped_configure<64, false>(sms);
  }
  return p;
}

template <bool GLU>
static inline void moe_grouped_gemm_launch(const MoeGroupedPlan *p, const __nv_bfloat16 *A,
                                           const int32_t *a_token, const __nv_bfloat16 *W0,
                                           const __nv_bfloat16 *W1, int64_t stride,
                                           const int32_t *offsets, const int32_t *tile_start,
                                           int E, int64_t N, int64_t K, __nv_bfloat16 *C,
                                           cudaStream_t s) {
  if (N % 8 || K % 8 || N < 8 || K < 8 || E < 1 || E > MOE_MAX_EXPERTS)
    moe_die("grouped GEMM needs N, K multiples of 8 and 1 <= E <= 1024");
  const int grid = GLU ? p->grid_up : p->grid_down;
  using namespace moe_grouped;
  if (p->bm == 16)
    moe_grouped_gemm_kernel<16, GLU><<<grid, THREADS, Smem<16, GLU>::bytes, s>>>(
        A, a_token, W0, W1, stride, offsets, tile_start, E, (int)N, (int)K, C);
  else if (p->bm == 32)
    moe_grouped_gemm_kernel<32, GLU><<<grid, THREADS, Smem<32, GLU>::bytes, s>>>(
        A, a_token, W0, W1, stride, offsets, tile_start, E, (int)N, (int)K, C);
  else
    moe_grouped_gemm_kernel<64, GLU><<<grid, THREADS, Smem<64, GLU>::bytes, s>>>(
        A, a_token, W0, W1, stride, offsets, tile_start, E, (int)N, (int)K, C);
  GTL_LAUNCH();
}

/** h [P][F] bf16 = silu(x_t · Wg_e^T) ⊙ (x_t · Wu_e^T) for every sorted row (token t =
 *  sorted_token[row], expert e by offsets), one launch. x [T][D]; gate/up of expert e at
 *  w_gate/w_up + e·stride, each [F][D]. Needs moe_dispatch_launch's outputs (same bm). */
static inline void moe_expert_up_launch(const MoeGroupedPlan *p, const __nv_bfloat16 *x,
                                        const int32_t *sorted_token,
                                        const __nv_bfloat16 *w_gate,
                                        const __nv_bfloat16 *w_up, int64_t stride,
                                        const int32_t *offsets, const int32_t *tile_start,
                                        int E, int64_t D, int64_t F, __nv_bfloat16 *h,
                                        cudaStream_t s) {
  moe_grouped_gemm_launch<true>(p, x, sorted_token, w_gate, w_up, stride, offsets, tile_start,
                                E, F, D, h, s);
}

/** y [P][D] bf16 = h_row · Wd_e^T for every sorted row, one launch; down of expert e at
 *  w_down + e·stride, [D][F]. */
static inline void moe_expert_down_launch(const MoeGroupedPlan *p, const __nv_bfloat16 *h,
                                          const __nv_bfloat16 *w_down, int64_t stride,
                                          const int32_t *offsets, const int32_t *tile_start,
                                          int E, int64_t F, int64_t D, __nv_bfloat16 *y,
                                          cudaStream_t s) {
  moe_grouped_gemm_launch<false>(p, h, nullptr, w_down, nullptr, stride, offsets, tile_start,
                                 E, D, F, y, s);
}

