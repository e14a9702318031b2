// tune_space.cuh — the configuration spaces ch20's autotuner searches, and the launchers
// that run one point of them. Kernels come from their chapters: what is a run-time
// parameter there is varied, and so are the template parameters their bodies take (the
// chapters' own instantiations are the default point of each; the others are instantiated
// here, a compile-time table of kernel variants):
//
//   attention (ch18/decode_attn.cuh, GQA split-KV flash-decoding):
//     splits   chunks of the keys per (sequence, KV head), 1..min(64-key tiles, 256):
//              ch18 picks it with the wave model attn_splitkv_num_splits; here it is timed.
//     stages   cp.async pipeline depth: ch18 runs 3 (48 KB, 4 CTAs per SM); 2, 4, 6, 8
//              from attn_splitkv_gqa_var_kernel (fewer stages: more CTAs per SM; more
//              stages: more bytes in flight per CTA when the grid is small).
//   grouped GEMM (ch15/grouped.cuh, persistent cp.async + mma.sync):
//     bm       m-tile rows: ch15 instantiates 16, 32, 64 and picks by the mean expert load;
//              48 and 128 are instantiated here from ch15's kernel template.
//     grid_up, grid_down   blocks of the two persistent launches: ch15 fills every SM
//              (SMs × resident blocks); here any multiple of the SM count up to that, or
//              exactly one block per work item.
//     bn_*, stages_*   each launch's kernel variant (bm 16, 32, 64): ch15's own (64 columns,
//              6 stages at bm 16, 4 above) and, from moe_grouped_gemm_var_kernel, 16 and
//              32 columns (1 and 2 warps: 4x and 2x the work items; 16 at bm <= 32 only),
//              128 columns (8 warps), a deeper ring (8 / 6 stages) and a shallower one (3
//              stages: more CTAs per SM); at bm 16 also 12 stages (64 columns) and 6 (128).
//     pdl      bm 16 on sm_90: the down projection launched as a programmatic dependent of
//              gate+up (its blocks start early, stream their first weight slices, then wait).
//   mechanisms (ch20/fused.cuh), field `fused` of both kernels: a kernel launch removed.
//     attention  the split combine folded into the split kernel (the last CTA of each
//              (sequence, KV head) merges the partials): every split count > 1, every depth.
//     GEMM       no sort kernel: both launches build the work-item tables in-block from the
//              routing (bm 16, T·top_k <= 256, E <= 256), every bm-16 variant; and the
//              combine launched as a programmatic dependent of down (3 launches, 1 gap).
// Launchers only (pointers, sizes, stream in); the driver is ch20/autotune.cuh.
#pragma once
#include "../ch18/decode_attn.cuh"
#include "../ch15/grouped.cuh"
#include "fused.cuh"  // mechanisms: the split combine folded in, the dispatch sort folded in

// ---- attention ------------------------------------------------------------------------------

#define TUNE_ATTN_MAX_CANDIDATES 24

/** Split counts to try for pairs of at most max_keys visible keys: hand (ch18's choice)
 *  and a geometric ladder 1, 2, 3, 4, 6, 8, 12, … 256, each capped at the number of 64-key
 *  tiles (a split never gets less than one tile). Returns the count written to out. */
static inline int attn_tune_candidates(int hand, int max_keys, int *out) {
  static const int ladder[] = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256};
  const int tiles = (max_keys + ATTN_TILE - 1) / ATTN_TILE;
  int n = 0;
  out[n++] = hand;  // first: the search always holds the hand-picked point
  for (size_t i = 0; i < sizeof ladder / sizeof ladder[0]; i++)
    if (ladder[i] <= tiles && ladder[i] != hand && n < TUNE_ATTN_MAX_CANDIDATES) out[n++] = ladder[i];
  return n;
}

// Pipeline depths searched for the attention kernel; ch18's ATTN_STAGES (3) first.
#define TUNE_ATTN_N_STAGES 5
static const int attn_tune_stages[TUNE_ATTN_N_STAGES] = {ATTN_STAGES, 2, 4, 6, 8};

/** CTAs per SM of the split kernel at `stages` (one of attn_tune_stages); also raises that
 *  kernel's shared-memory limit, so call it before launching it. Exit 3 on error. */
static inline int attn_tune_ctas_per_sm(int stages) {
  switch (stages) {
    case ATTN_STAGES: return attn_splitkv_ctas_per_sm();
    case 2: return attn_splitkv_ctas_per_sm_stages<2>();
    case 4: return attn_splitkv_ctas_per_sm_stages<4>();
    case 6: return attn_splitkv_ctas_per_sm_stages<6>();
    case 8: return attn_splitkv_ctas_per_sm_stages<8>();
  }
  moe_die("attn_tune_ctas_per_sm: stages must be 2, 3, 4, 6 or 8");
  return 0;
}

/** One attention step (ch18's attn_splitkv_launch) with the split kernel at `stages`:
 *  ch18's own kernel at ATTN_STAGES, attn_splitkv_gqa_var_kernel otherwise. Returns 0, or
 *  -1 for arguments the kernel cannot take or an unknown depth. */
static inline int attn_tune_launch(const AttnDecodeArgs *a, int splits, int stages, float *ws, cudaStream_t s) {
  switch (stages) {
    case ATTN_STAGES: return attn_splitkv_launch(a, splits, ws, s);
    case 2: return attn_splitkv_launch_stages<2>(a, splits, ws, s);
    case 4: return attn_splitkv_launch_stages<4>(a, splits, ws, s);
    case 6: return attn_splitkv_launch_stages<6>(a, splits, ws, s);
    case 8: return attn_splitkv_launch_stages<8>(a, splits, ws, s);
  }
  fprintf(stderr, "attn_tune_launch: stages must be 2, 3, 4, 6 or 8 (got %d)\n", stages);
  return -1;
}

// The same at `stages` with the combine folded into the split kernel (ch20/fused.cuh):
// CTAs per SM (also its shared-memory opt-in), and one step in one launch. counters: B·H_kv
// unsigned, zeroed once. Same returns as above.
static inline int attn_tune_ctas_per_sm_fused(int stages) {
  switch (stages) {
    case 2: return attn_selfmerge_ctas_per_sm<2>();
    case 3: return attn_selfmerge_ctas_per_sm<3>();
    case 4: return attn_selfmerge_ctas_per_sm<4>();
    case 6: return attn_selfmerge_ctas_per_sm<6>();
    case 8: return attn_selfmerge_ctas_per_sm<8>();
  }
  moe_die("attn_tune_ctas_per_sm_fused: stages must be 2, 3, 4, 6 or 8");
  return 0;
}
static inline int attn_tune_launch_fused(const AttnDecodeArgs *a, int splits, int stages, float *ws,
                                         unsigned *counters, cudaStream_t s) {
  switch (stages) {
    case 2: return attn_selfmerge_launch<2>(a, splits, ws, counters, s);
    case 3: return attn_selfmerge_launch<3>(a, splits, ws, counters, s);
    case 4: return attn_selfmerge_launch<4>(a, splits, ws, counters, s);
    case 6: return attn_selfmerge_launch<6>(a, splits, ws, counters, s);
    case 8: return attn_selfmerge_launch<8>(a, splits, ws, counters, s);
  }
  fprintf(stderr, "attn_tune_launch_fused: stages must be 2, 3, 4, 6 or 8 (got %d)\n", stages);
  return -1;
}

// ---- grouped GEMM ---------------------------------------------------------------------------

typedef struct {
  int bm;                  // 16, 32, 48, 64 or 128
  int grid_up, grid_down;  // blocks of the gate+up and down launches
  int bn_up, stages_up;    // the gate+up launch's kernel variant (column tile, ring depth)
  int bn_down, stages_down;
  int pdl;                 // 1: programmatic dependent launch of down after gate+up (bm 16, sm_90)
  int fused;               // 1: no sort kernel; both launches sort in-block (bm 16, ch20/fused.cuh)
} GemmTuneCfg;

#define TUNE_GEMM_N_BM 5
static const int gemm_tune_bms[TUNE_GEMM_N_BM] = {16, 32, 48, 64, 128};

// The kernel variants of one tile height: {bn, stages}, ch15's own first. Heights 48 and
// 128 have ch15's variant only.
#define TUNE_GEMM_MAX_VARIANTS 8
static inline int gemm_tune_variants(int bm, int out[][2]) {
  const int own = bm == 16 ? 6 : 4;
  int n = 0;
  out[n][0] = 64, out[n++][1] = own;
  if (bm == 16 || bm == 32) out[n][0] = 16, out[n++][1] = own;  // 1 warp: 4x the work items
  if (bm == 16 || bm == 32 || bm == 64) {
    out[n][0] = 32, out[n++][1] = own;
    out[n][0] = 128, out[n++][1] = 4;
    out[n][0] = 64, out[n++][1] = bm == 16 ? 8 : 6;
    out[n][0] = 64, out[n++][1] = 3;
  }
  if (bm == 16) {  // decode: few blocks, so the bytes in flight per block decide
    out[n][0] = 64, out[n++][1] = 12;  // 216 KB of ring (gate+up)
    out[n][0] = 128, out[n++][1] = 6;
  }
  return n;
}

// moe_grouped_configure for a variant of moe_grouped_gemm_var_kernel.
template <int BM, bool GLU, int ST, int BN, bool PDL>
static inline int gemm_var_configure(int sms) {
  auto *k = moe_grouped_gemm_var_kernel<BM, GLU, ST, BN, PDL>;
  const int smem = moe_grouped::SmemOf<BM, GLU, ST, BN>::bytes;
  GTL_CUDA(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  int per_sm = 0;
  GTL_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, moe_grouped::ThreadsOf<BN>::value, smem));
  if (per_sm < 1) moe_die("a grouped-GEMM variant does not fit on an SM");
  return sms * per_sm;
}

// Launch one variant. PDL: the kernel triggers its dependent at once; the down projection
// (!GLU) is launched with programmatic stream serialization, so it starts while the gate+up
// kernel before it still runs, streams its first weight slices, and waits for h.
template <int BM, bool GLU, int ST, int BN, bool PDL>
static inline void gemm_var_launch(int grid, const __nv_bfloat16 *A, const int32_t *a_token,
                                   const __nv_bfloat16 *W0, const __nv_bfloat16 *W1, int64_t stride,
                                   const int32_t *offsets, const int32_t *tile_start, int E, int N,
                                   int K, __nv_bfloat16 *C, cudaStream_t s) {
  constexpr int threads = moe_grouped::ThreadsOf<BN>::value, smem = moe_grouped::SmemOf<BM, GLU, ST, BN>::bytes;
  if constexpr (PDL && !GLU) {
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute attr = {};
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cfg.gridDim = dim3(grid), cfg.blockDim = dim3(threads), cfg.dynamicSmemBytes = smem, cfg.stream = s;
    cfg.attrs = &attr, cfg.numAttrs = 1;
    GTL_CUDA(cudaLaunchKernelEx(&cfg, moe_grouped_gemm_var_kernel<BM, GLU, ST, BN, PDL>, A, a_token, W0, W1,
                                stride, offsets, tile_start, E, N, K, C));
  } else {
    moe_grouped_gemm_var_kernel<BM, GLU, ST, BN, PDL><<<grid, threads, smem, s>>>(
        A, a_token, W0, W1, stride, offsets, tile_start, E, N, K, C);
  }
  GTL_LAUNCH();
}

// One variant: configure it (launch == 0: returns its largest persistent grid; at bm 16
// also its PDL twin's) or launch it (the PDL twin when pdl, bm 16 only; returns 1).
template <int BM, bool GLU, int ST, int BN>
static inline int gemm_var_run(int launch, int pdl, int sms, int grid, const __nv_bfloat16 *A,
                               const int32_t *a_token, const __nv_bfloat16 *W0, const __nv_bfloat16 *W1,
                               int64_t stride, const int32_t *offsets, const int32_t *tile_start, int E,
                               int N, int K, __nv_bfloat16 *C, cudaStream_t s) {
  if (!launch) {
    if constexpr (BM == 16) gemm_var_configure<BM, GLU, ST, BN, true>(sms);
    return gemm_var_configure<BM, GLU, ST, BN, false>(sms);
  }
  if constexpr (BM == 16) {
    if (pdl) {
      gemm_var_launch<BM, GLU, ST, BN, true>(grid, A, a_token, W0, W1, stride, offsets, tile_start, E, N, K, C, s);
      return 1;
    }
  }
  gemm_var_launch<BM, GLU, ST, BN, false>(grid, A, a_token, W0, W1, stride, offsets, tile_start, E, N, K, C, s);
  return 1;
}

// The variants of one height BM (at bm 16 ch15's own too, for its PDL twin): configure
// (launch == 0) or launch. Returns the largest persistent grid (configure), 1 (launched),
// or 0 (no such variant).
template <int BM, bool GLU>
static inline int gemm_var_dispatch(int launch, int pdl, int bn, int st, int sms, int grid,
                                    const __nv_bfloat16 *A, const int32_t *a_token,
                                    const __nv_bfloat16 *W0, const __nv_bfloat16 *W1, int64_t stride,
                                    const int32_t *offsets, const int32_t *tile_start, int E, int N,
                                    int K, __nv_bfloat16 *C, cudaStream_t s) {
  constexpr int OWN = moe_grouped::Stages<BM>::value, DEEP = BM == 16 ? 8 : 6;
#define GEMM_VAR(BN_, ST_)                                                                               \
  if (bn == BN_ && st == ST_)                                                                            \
    return gemm_var_run<BM, GLU, ST_, BN_>(launch, pdl, sms, grid, A, a_token, W0, W1, stride, offsets, \
                                           tile_start, E, N, K, C, s);
  if constexpr (BM == 16) { GEMM_VAR(64, OWN) }
  if constexpr (BM <= 32) { GEMM_VAR(16, OWN) }
  GEMM_VAR(32, OWN)
  GEMM_VAR(128, 4)
  GEMM_VAR(64, DEEP)
  GEMM_VAR(64, 3)
  if constexpr (BM == 16) {
    GEMM_VAR(64, 12)
    GEMM_VAR(128, 6)
  }
#undef GEMM_VAR
  return 0;
}

// Largest persistent grid of one variant (SMs × resident blocks); also raises its
// shared-memory opt-in (and its PDL twin's), so call it before launching that variant.
// Exit 3 on error.
static inline int gemm_tune_max_grid(int bm, bool glu, int bn, int stages, int sms) {
  const int own = bn == moe_grouped::BN && stages == (bm == 16 ? 6 : 4);
  int g = 0;
  switch (bm) {
    case 16:
      g = glu ? gemm_var_dispatch<16, true>(0, 0, bn, stages, sms, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
              : gemm_var_dispatch<16, false>(0, 0, bn, stages, sms, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
      if (own) return glu ? moe_grouped_configure<16, true>(sms) : moe_grouped_configure<16, false>(sms);
      break;
    case 32:
      if (own) return glu ? moe_grouped_configure<32, true>(sms) : moe_grouped_configure<32, false>(sms);
      g = glu ? gemm_var_dispatch<32, true>(0, 0, bn, stages, sms, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
              : gemm_var_dispatch<32, false>(0, 0, bn, stages, sms, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
      break;
    case 48:
      if (own) return glu ? moe_grouped_configure<48, true>(sms) : moe_grouped_configure<48, false>(sms);
      break;
    case 64:
      if (own) return glu ? moe_grouped_configure<64, true>(sms) : moe_grouped_configure<64, false>(sms);
      g = glu ? gemm_var_dispatch<64, true>(0, 0, bn, stages, sms, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
              : gemm_var_dispatch<64, false>(0, 0, bn, stages, sms, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
      break;
    case 128:
      if (own) return glu ? moe_grouped_configure<128, true>(sms) : moe_grouped_configure<128, false>(sms);
      break;
  }
  if (g < 1) moe_die("gemm_tune_max_grid: no such grouped-GEMM variant");
  return g;
}

/** Grids to try for one launch: every multiple of the SM count up to max_grid, and `items`
 *  (one block per work item) when that is below max_grid. Returns the count (<= 9). */
static inline int gemm_tune_grids(int sms, int max_grid, int items, int *out) {
  int n = 0;
  for (int g = sms; g <= max_grid && n < 8; g += sms) out[n++] = g;
  if (n == 0) out[n++] = max_grid;
  if (items > 0 && items < max_grid) {
    int dup = 0;
    for (int i = 0; i < n; i++) dup |= out[i] == items;
    if (!dup) out[n++] = items;
  }
  return n;
}

template <int BM, bool GLU>
static inline void gemm_tune_launch_bm(int grid, const __nv_bfloat16 *A, const int32_t *a_token,
                                       const __nv_bfloat16 *W0, const __nv_bfloat16 *W1,
                                       int64_t stride, const int32_t *offsets,
                                       const int32_t *tile_start, int E, int N, int K,
                                       __nv_bfloat16 *C, cudaStream_t s) {
  moe_grouped_gemm_kernel<BM, GLU><<<grid, moe_grouped::THREADS, moe_grouped::Smem<BM, GLU>::bytes, s>>>(
      A, a_token, W0, W1, stride, offsets, tile_start, E, N, K, C);
  GTL_LAUNCH();
}

/** ch15's grouped GEMM (C = A · W^T per expert; GLU: silu(A·W0^T) ⊙ A·W1^T with rows of A
 *  gathered by a_token) with the tile height, grid and kernel variant of cfg (the gate+up
 *  fields when GLU, else the down fields); the same arguments as ch15's
 *  moe_grouped_gemm_launch. The tables come from moe_dispatch_launch with bm = cfg->bm; call
 *  gemm_tune_max_grid for the variant first. Exit 3 on bad sizes (N, K multiples of 8,
 *  1 <= E <= 1024) or an unknown variant. */
template <bool GLU>
static inline void gemm_tune_launch(const GemmTuneCfg *cfg, const __nv_bfloat16 *A,
                                    const int32_t *a_token, const __nv_bfloat16 *W0,
                                    const __nv_bfloat16 *W1, int64_t stride,
                                    const int32_t *offsets, const int32_t *tile_start, int E,
                                    int64_t N, int64_t K, __nv_bfloat16 *C, cudaStream_t s) {
  if (N % 8 || K % 8 || N < 8 || K < 8 || E < 1 || E > MOE_MAX_EXPERTS)
    moe_die("grouped GEMM needs N, K multiples of 8 and 1 <= E <= 1024");
  const int grid = GLU ? cfg->grid_up : cfg->grid_down;
  const int bn = GLU ? cfg->bn_up : cfg->bn_down, st = GLU ? cfg->stages_up : cfg->stages_down;
  const int own = bn == moe_grouped::BN && st == (cfg->bm == 16 ? 6 : 4);
  int done = 0;
  switch (cfg->bm) {
    case 16:
      if (own && !cfg->pdl) return gemm_tune_launch_bm<16, GLU>(grid, A, a_token, W0, W1, stride, offsets, tile_start, E, (int)N, (int)K, C, s);
      done = gemm_var_dispatch<16, GLU>(1, cfg->pdl, bn, st, 0, grid, A, a_token, W0, W1, stride, offsets, tile_start, E, (int)N, (int)K, C, s);
      break;
    case 32:
      if (own) return gemm_tune_launch_bm<32, GLU>(grid, A, a_token, W0, W1, stride, offsets, tile_start, E, (int)N, (int)K, C, s);
      done = gemm_var_dispatch<32, GLU>(1, 0, bn, st, 0, grid, A, a_token, W0, W1, stride, offsets, tile_start, E, (int)N, (int)K, C, s);
      break;
    case 48:
      if (own) return gemm_tune_launch_bm<48, GLU>(grid, A, a_token, W0, W1, stride, offsets, tile_start, E, (int)N, (int)K, C, s);
      break;
    case 64:
      if (own) return gemm_tune_launch_bm<64, GLU>(grid, A, a_token, W0, W1, stride, offsets, tile_start, E, (int)N, (int)K, C, s);
      done = gemm_var_dispatch<64, GLU>(1, 0, bn, st, 0, grid, A, a_token, W0, W1, stride, offsets, tile_start, E, (int)N, (int)K, C, s);
      break;
    case 128:
      if (own) return gemm_tune_launch_bm<128, GLU>(grid, A, a_token, W0, W1, stride, offsets, tile_start, E, (int)N, (int)K, C, s);
      break;
  }
  if (!done) moe_die("gemm_tune_launch: no such grouped-GEMM variant");
}

// ---- grouped GEMM with the sort inside (ch20/fused.cuh), bm 16 ------------------------------

// The bm-16 variants {bn, stages} (gemm_tune_variants(16, ...)) with the sort folded in:
// configure (launch == 0: the twins launched; returns the largest persistent grid) or
// launch (returns 1); 0 for no such variant. gate+up: the PDL twin when pdl (down launched
// as its programmatic dependent); down: always the PDL twin (it lets the combine launch
// early, moe_combine_dependent_launch), launched as a programmatic dependent when pdl.
template <bool GLU>
static inline int gemm_selfsort_dispatch(int launch, int pdl, int bn, int st, int sms, int grid,
                                         const __nv_bfloat16 *A, const int32_t *topk_idx, int P, int top_k,
                                         const __nv_bfloat16 *W0, const __nv_bfloat16 *W1, int64_t stride,
                                         int E, int N, int K, __nv_bfloat16 *C, int32_t *pair_pos,
                                         cudaStream_t s) {
#define GEMM_SELFSORT(BN_, ST_)                                                                          \
  if (bn == BN_ && st == ST_) {                                                                          \
    if (!launch) {                                                                                       \
      if (GLU) moe_selfsort_configure<16, GLU, ST_, BN_, false>(sms);                                    \
      return moe_selfsort_configure<16, GLU, ST_, BN_, true>(sms);                                       \
    }                                                                                                    \
    if (pdl || !GLU) /* down always lets the combine launch early */                                    \
      moe_selfsort_launch<16, GLU, ST_, BN_, true>(grid, A, topk_idx, P, top_k, W0, W1, stride, E, N, K, \
                                                   C, pair_pos, !GLU && pdl, s);                         \
    else                                                                                                 \
      moe_selfsort_launch<16, GLU, ST_, BN_, false>(grid, A, topk_idx, P, top_k, W0, W1, stride, E, N,  \
                                                    K, C, pair_pos, 0, s);                               \
    return 1;                                                                                            \
  }
  GEMM_SELFSORT(64, 6)
  GEMM_SELFSORT(16, 6)
  GEMM_SELFSORT(32, 6)
  GEMM_SELFSORT(128, 4)
  GEMM_SELFSORT(64, 8)
  GEMM_SELFSORT(64, 3)
  GEMM_SELFSORT(64, 12)
  GEMM_SELFSORT(128, 6)
#undef GEMM_SELFSORT
  return 0;
}

/** Shared-memory opt-in of the self-sorting twin of bm-16 variant {bn, stages} (both PDL
 *  twins); returns its largest persistent grid. Exit 3 for an unknown variant. */
static inline int gemm_tune_selfsort_max_grid(bool glu, int bn, int stages, int sms) {
  const int g = glu ? gemm_selfsort_dispatch<true>(0, 0, bn, stages, sms, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
                    : gemm_selfsort_dispatch<false>(0, 0, bn, stages, sms, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  if (g < 1) moe_die("gemm_tune_selfsort_max_grid: no such self-sorting variant");
  return g;
}

/** gemm_tune_launch for a configuration with fused = 1 (bm 16): the same product, but the
 *  work-item tables come from topk_idx [P] inside the kernel (no moe_dispatch_launch before
 *  it); the gate+up launch (GLU) also writes pair_pos [P] for the combine. Call
 *  gemm_tune_selfsort_max_grid for the variant first. Exit 3 on an unknown variant. */
template <bool GLU>
static inline void gemm_tune_launch_selfsort(const GemmTuneCfg *cfg, const __nv_bfloat16 *A,
                                             const int32_t *topk_idx, int P, int top_k,
                                             const __nv_bfloat16 *W0, const __nv_bfloat16 *W1, int64_t stride,
                                             int E, int64_t N, int64_t K, __nv_bfloat16 *C,
                                             int32_t *pair_pos, cudaStream_t s) {
  if (N % 8 || K % 8 || N < 8 || K < 8 || cfg->bm != 16)
    moe_die("self-sorting grouped GEMM needs N, K multiples of 8 and bm 16");
  const int grid = GLU ? cfg->grid_up : cfg->grid_down;
  const int bn = GLU ? cfg->bn_up : cfg->bn_down, st = GLU ? cfg->stages_up : cfg->stages_down;
  if (!gemm_selfsort_dispatch<GLU>(1, cfg->pdl, bn, st, 0, grid, A, topk_idx, P, top_k, W0, W1, stride, E,
                                   (int)N, (int)K, C, GLU ? pair_pos : nullptr, s))
    moe_die("gemm_tune_launch_selfsort: no such grouped-GEMM variant");
}
