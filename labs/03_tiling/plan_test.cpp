// plan_test.cpp — host test of layer 03's attention and expert bookkeeping (no GPU needed).
//   make labs && nvcc -std=c++17 -Icommon -Ibuild -o /tmp/lab03_plan_test -x cu labs/03_tiling/plan_test.cpp
//        -Lbuild -lmoe -lcommon -lcublas && /tmp/lab03_plan_test      (one line)
// 1. Which models take the fp32 split-KV attention (lab03_attn_fits): every preset, by its
//    head_dim and grouping, and groups of 16 (the largest) and 32 (refused).
// 2. The chunks: for batches 1, 4, 64 and contexts 1..max_len, the chunk count never
//    exceeds the workspace lab03_setup sizes, every chunk is a whole number of tiles and
//    holds a key (no empty CTA), and the chunks cover every key once.
// 3. The experts' work items: for seeded routings, ch15's tables built on the host as its
//    counting sort builds them (bm from lab03_expert_plan_rows), then every work item of
//    the GEMV kernel (moe_tile_of with one tile per weight row, lab03_gemv_row) and of the
//    MMA kernel (64-column tiles): each (sorted row, output column) is covered exactly once,
//    every row of an item belongs to its expert, and the GEMV kernel's R holds every expert.
// Prints "ok: ..." / "FAILED: ..." and exits 1 on any failure.
#include "../moe/engine.cuh"
#include "layer.cuh"
#include "../moe/plan_check.h"


static void check_fits(void) {
  const char *names[] = {"gptoss20b", "gptoss120b", "gptoss20b_mixtral", "qwen3moe", "mini", "tiny_mixtral",
                         "tiny_qwen3", "tiny_gptoss"};
  const int want[] = {1, 1, 1, 1, 1, 0, 1, 0};  // head_dim 64, 64, 64, 128, 32, 16, 32, 16
  for (int i = 0; i < 8; i++) {
    MoeConfig c;
    CHECK(moe_config_preset(names[i], &c) == 0, "preset %s missing\n", names[i]);
    CHECK(lab03_attn_fits(&c) == want[i], "%s (head_dim %d, H %d, H_kv %d): fits %d, want %d\n", names[i],
          c.head_dim, c.H, c.H_kv, lab03_attn_fits(&c), want[i]);
  }
  MoeConfig c;
  moe_config_preset("gptoss20b_mixtral", &c);
  c.H = 64, c.H_kv = 4;
  CHECK(lab03_attn_fits(&c), "group 16 refused\n");
  c.H_kv = 2;
  CHECK(!lab03_attn_fits(&c), "group 32 accepted (the kernel serves at most 16 query heads per KV head)\n");
  c.H_kv = 8, c.head_dim = 96;
  CHECK(!lab03_attn_fits(&c), "head_dim 96 accepted\n");
  printf("ok: fp32 split-KV attention for head_dim 32/64/128 (all presets but tiny_mixtral, tiny_gptoss); group 16 "
         "in, 32 out\n");
}

static void check_chunks(int B, int H_kv, int max_len, int sms) {
  const int max_chunks = lab03_attn_max_chunks(B, H_kv, max_len, sms);
  int most = 0;
  for (int n = 1; n <= max_len; n++) {
    const int len = lab03_attn_chunk_len(n, max_chunks), chunks = (n + len - 1) / len;
    CHECK(len % kLab03AttnTile == 0 && len > 0, "B=%d: %d keys: chunk of %d keys\n", B, n, len);
    CHECK(chunks >= 1 && chunks <= max_chunks, "B=%d: %d keys in %d chunks, workspace for %d\n", B, n, chunks,
          max_chunks);
    CHECK((chunks - 1) * len < n && chunks * len >= n, "B=%d: %d keys: chunks of %d leave one empty or a key out\n",
          B, n, len);
    most = chunks > most ? chunks : most;
  }
  printf("ok: B=%d H_kv=%d max_len=%d sms=%d: at most %d chunks (workspace %d), every chunk non-empty\n", B, H_kv,
         max_len, sms, most, max_chunks);
}

// ch15's tables for routing idx [T·top_k] (what moe_dispatch_sort_kernel writes; the order
// inside an expert does not matter here).
static void host_sort(const int32_t *idx, int P, int E, int bm, int32_t *offsets, int32_t *tile_start) {
  offsets[0] = tile_start[0] = 0;
  for (int x = 0; x < E; x++) {
    int c = 0;
    for (int i = 0; i < P; i++) c += idx[i] == x;
    offsets[x + 1] = offsets[x] + c;
    tile_start[x + 1] = tile_start[x] + (c + bm - 1) / bm;
  }
}

static void check_items(int B, int top_k, int E, int N, uint64_t seed) {
  const int P = B * top_k;
  const Lab03ExpertPlan xp = lab03_expert_plan_rows(B, top_k, E);
  int32_t *idx = (int32_t *)malloc(sizeof(int32_t) * P), off[1025], ts[1025];
  for (int t = 0; t < B; t++)  // top_k distinct experts per token, seeded
    for (int j = 0; j < top_k; j++) {
      int x, dup;
      uint64_t k = 0;
      do {
        x = (int)gtl_uniform_u32(seed, (uint64_t)(t * top_k + j) * 977 + k++, (uint32_t)E);
        dup = 0;
        for (int q = 0; q < j; q++) dup |= idx[t * top_k + q] == x;
      } while (dup);
      idx[t * top_k + j] = x;
    }
  host_sort(idx, P, E, xp.bm, off, ts);
  const int gemv = xp.gemv_rows > 0, n_tiles = gemv ? N : (N + moe_grouped::BN - 1) / moe_grouped::BN;
  const int cols = gemv ? 1 : moe_grouped::BN;
  unsigned char *seen = (unsigned char *)calloc((size_t)P * N, 1);
  for (int x = 0; gemv && x < E; x++)
    CHECK(off[x + 1] - off[x] <= xp.gemv_rows, "B=%d: expert %d has %d rows, R = %d\n", B, x, off[x + 1] - off[x],
          xp.gemv_rows);
  for (int w = 0; w < ts[E] * n_tiles; w++) {
    const MoeTile t = moe_tile_of(w, off, ts, E, n_tiles, xp.bm);
    const int n0 = gemv ? lab03_gemv_row(t) : t.n0;
    CHECK(t.rows >= 1 && t.rows <= xp.bm && t.row0 >= off[t.e] && t.row0 + t.rows <= off[t.e + 1],
          "B=%d: item %d: rows [%d, %d) outside expert %d's [%d, %d)\n", B, w, t.row0, t.row0 + t.rows, t.e, off[t.e],
          off[t.e + 1]);
    for (int r = t.row0; r < t.row0 + t.rows; r++)
      for (int c = n0; c < n0 + cols && c < N; c++) {
        CHECK(!seen[(size_t)r * N + c], "B=%d: (row %d, column %d) twice\n", B, r, c);
        seen[(size_t)r * N + c] = 1;
      }
  }
  for (size_t i = 0; i < (size_t)P * N; i++) CHECK(seen[i], "B=%d: (row %zu, column %zu) never\n", B, i / N, i % N);
  printf("ok: B=%d top_k=%d E=%d N=%d: %s kernel (bm %d), %d work items cover every (row, column) once\n", B, top_k, E,
         N, gemv ? "GEMV" : "MMA", xp.bm, ts[E] * n_tiles);
  free(seen);
  free(idx);
}

int main(void) {
  check_fits();
  const int batches[] = {1, 4, 64};
  const int lens[] = {1, 31, 32, 33, 672, 4096, 20000};
  for (int b = 0; b < 3; b++)
    for (int m = 0; m < 7; m++) check_chunks(batches[b], 8, lens[m], 132);
  check_chunks(1, 4, 544, 132);
  const int xb[] = {1, 2, 3, 5, 8, 9, 16, 64, 200};
  for (int i = 0; i < 9; i++) check_items(xb[i], 4, 32, 136, 42 + i);  // gptoss20b_mixtral's E, top_k
  check_items(64, 8, 128, 72, 7);   // qwen3moe's E, top_k: mean load 4 (bm 16)
  check_items(1, 8, 128, 64, 8);
  check_items(300, 2, 8, 64, 9);    // mean 75: bm 64, several m-tiles per expert
  printf("plan_test: %s\n", fails ? "FAILED" : "all passed");
  return fails ? 1 : 0;
}
