// tune_space.cuh — the configuration spaces ch20's autotuner searches, and the launchers
// that run one point of them. Kernels come from their chapters unchanged; only what is a
// run-time parameter there, or a template argument we may instantiate here, is varied:
//
//   attention (ch18/decode_attn.cuh, GQA split-KV flash-decoding):
//     splits   chunks of the keys per (sequence, KV head), 1..min(64-key tiles, 256):
//              ch18 picks it with the wave model attn_splitkv_num_splits; here it is timed.
//     (its cp.async depth ATTN_STAGES is a preprocessor constant of the header, one value
//      per program: it is not in this space.)
//   grouped GEMM (ch15/grouped.cuh, persistent cp.async + mma.sync):
//     bm       m-tile rows: ch15 instantiates 16, 32, 64 and picks by the mean expert load;
//              48 and 128 are instantiated here from ch15's kernel template (its pipeline
//              depth follows bm through ch15's moe_grouped::Stages: 6 at 16, else 4).
//     grid_up, grid_down   blocks of the two persistent launches: ch15 fills every SM
//              (SMs × resident blocks); here any multiple of the SM count up to that, or
//              exactly one block per work item.
// Launchers only (pointers, sizes, stream in); the driver is ch20/autotune.cuh.
#pragma once
#include "../ch18/decode_attn.cuh"
#include "../ch15/grouped.cuh"

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

// ---- grouped GEMM ---------------------------------------------------------------------------

typedef struct {
  int bm;                  // 16, 32, 48, 64 or 128
  int grid_up, grid_down;  // blocks of the gate+up and down launches
} GemmTuneCfg;

#define TUNE_GEMM_N_BM 5
static const int gemm_tune_bms[TUNE_GEMM_N_BM] = {16, 32, 48, 64, 128};

// Largest persistent grid of one instantiation (SMs × resident blocks); also raises its
// shared-memory opt-in, so call it before launching that instantiation. Exit 3 on error.
static inline int gemm_tune_max_grid(int bm, bool glu, int sms) {
  switch (bm) {
    case 16: return glu ? moe_grouped_configure<16, true>(sms) : moe_grouped_configure<16, false>(sms);
    case 32: return glu ? moe_grouped_configure<32, true>(sms) : moe_grouped_configure<32, false>(sms);
    case 48: return glu ? moe_grouped_configure<48, true>(sms) : moe_grouped_configure<48, false>(sms);
    case 64: return glu ? moe_grouped_configure<64, true>(sms) : moe_grouped_configure<64, false>(sms);
    case 128: return glu ? moe_grouped_configure<128, true>(sms) : moe_grouped_configure<128, false>(sms);
  }
  moe_die("gemm_tune_max_grid: bm must be 16, 32, 48, 64 or 128");
  return 0;
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
 *  gathered by a_token) with the tile height and grid of cfg; the same arguments as ch15's
 *  moe_grouped_gemm_launch. The tables come from moe_dispatch_launch with bm = cfg->bm.
 *  Exit 3 on bad sizes (N, K multiples of 8, 1 <= E <= 1024) or an unknown bm. */
template <bool GLU>
static inline void gemm_tune_launch(const GemmTuneCfg *cfg, const __nv_bfloat16 *A,
                                    const int32_t *a_token, const __nv_bfloat16 *W0,
                                    const __nv_bfloat16 *W1, int64_t stride,
                                    const int32_t *offsets, const int32_t *tile_start, int E,
                                    int64_t N, int64_t K, __nv_bfloat16 *C, cudaStream_t s) {
  if (N % 8 || K % 8 || N < 8 || K < 8 || E < 1 || E > MOE_MAX_EXPERTS)
    moe_die("grouped GEMM needs N, K multiples of 8 and 1 <= E <= 1024");
  const int grid = GLU ? cfg->grid_up : cfg->grid_down;
  switch (cfg->bm) {
    case 16: return gemm_tune_launch_bm<16, GLU>(grid, A, a_token, W0, W1, stride, offsets, tile_start, E, (int)N, (int)K, C, s);
    case 32: return gemm_tune_launch_bm<32, GLU>(grid, A, a_token, W0, W1, stride, offsets, tile_start, E, (int)N, (int)K, C, s);
    case 48: return gemm_tune_launch_bm<48, GLU>(grid, A, a_token, W0, W1, stride, offsets, tile_start, E, (int)N, (int)K, C, s);
    case 64: return gemm_tune_launch_bm<64, GLU>(grid, A, a_token, W0, W1, stride, offsets, tile_start, E, (int)N, (int)K, C, s);
    case 128: return gemm_tune_launch_bm<128, GLU>(grid, A, a_token, W0, W1, stride, offsets, tile_start, E, (int)N, (int)K, C, s);
  }
  moe_die("gemm_tune_launch: bm must be 16, 32, 48, 64 or 128");
}
