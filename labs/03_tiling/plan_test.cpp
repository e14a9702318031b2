// plan_test.cpp — host test of layer 03's attention and expert bookkeeping (no GPU needed).
//   make labs && nvcc -std=c++17 -Icommon -Ibuild -o /tmp/lab03_plan_test -x cu labs/03_tiling/plan_test.cpp
//        -Lbuild -lmoe -lcommon -lcublas && /tmp/lab03_plan_test      (one line)
// 1. Which models take ch18's kernel (lab03_splitkv_fits): every preset, by its head_dim
//    and grouping, and groups of 16 (the largest) and 32 (refused).
// 2. The identity table's page (lab03_page_shift): the smallest power of two >= max_len.
// 3. The cache addresses: for seeded shapes, every (layer, sequence, KV head, position) ch18
//    reads through lab03_kv_view (ch18's formula: table[b]·page_stride + g·head_stride +
//    (j & (P − 1))·token_stride, from the layer's base) is the element the append kernel
//    writes (engine_kv_layer(l) + ((b·H_kv + g)·max_len + j)·64), and lies inside the cache.
// 4. The workspace: ch18's split count for any context 1..max_len never exceeds the
//    chunks lab03_setup sizes the workspace for (so lab03_attend's clamp never changes it).
// 5. The experts' work items: for seeded routings, ch15's tables built on the host as its
//    counting sort builds them (bm from lab03_expert_plan_rows), then every work item of
//    the GEMV kernel (moe_tile_of with one tile per weight row, lab03_gemv_row) and of the
//    MMA kernel (64-column tiles): each (sorted row, output column) is covered exactly once,
//    every row of an item belongs to its expert, and the GEMV kernel's R holds every expert.
// Prints "ok: ..." / "FAILED: ..." and exits 1 on any failure.
#include "../moe/engine.cuh"
#include "layer.cuh"

static int fails = 0;
#define CHECK(cond, ...)                            \
  do {                                              \
    if (!(cond)) {                                  \
      fails++;                                      \
      printf("FAILED: " __VA_ARGS__);               \
      printf("  (%s, line %d)\n", #cond, __LINE__); \
      return;                                       \
    }                                               \
  } while (0)

static void check_fits(void) {
  const char *names[] = {"gptoss20b", "gptoss120b", "gptoss20b_mixtral", "qwen3moe", "mini", "tiny_mixtral",
                         "tiny_qwen3", "tiny_gptoss"};
  const int want[] = {1, 1, 1, 0, 0, 0, 0, 0};  // head_dim 64 with 64:8 heads; 128, 32, 16, 32, 16
  for (int i = 0; i < 8; i++) {
    MoeConfig c;
    CHECK(moe_config_preset(names[i], &c) == 0, "preset %s missing\n", names[i]);
    CHECK(lab03_splitkv_fits(&c) == want[i], "%s (head_dim %d, H %d, H_kv %d): fits %d, want %d\n", names[i],
          c.head_dim, c.H, c.H_kv, lab03_splitkv_fits(&c), want[i]);
  }
  MoeConfig c;
  moe_config_preset("gptoss20b_mixtral", &c);
  c.H = 64, c.H_kv = 4;
  CHECK(lab03_splitkv_fits(&c), "group 16 refused\n");
  c.H_kv = 2;
  CHECK(!lab03_splitkv_fits(&c), "group 32 accepted (ch18 serves at most 16 query heads per KV head)\n");
  printf("ok: ch18's kernel for gptoss20b, gptoss120b, gptoss20b_mixtral (head_dim 64, group 8); 02's attention "
         "for the others; group 16 in, 32 out\n");
}

static void check_page_shift(void) {
  for (int n = 1; n <= 70000; n++) {
    const int s = lab03_page_shift(n);
    CHECK((1LL << s) >= n && (s == 0 || (1LL << (s - 1)) < n), "page_shift(%d) = %d\n", n, s);
  }
  printf("ok: page_shift: the smallest power of two >= max_len for 1..70000\n");
}

static void check_view(int L, int B, int H_kv, int max_len) {
  Engine e;
  memset(&e, 0, sizeof e);
  e.cfg.L = L, e.cfg.H_kv = H_kv, e.cfg.head_dim = ATTN_HEAD_DIM, e.cfg.H = 8 * H_kv;
  e.B = B, e.kv.max_len = max_len;
  const __nv_bfloat16 *base = (const __nv_bfloat16 *)(uintptr_t)0x100000;  // never dereferenced
  int32_t table[64];
  for (int b = 0; b < B; b++) table[b] = b;
  const int64_t total = (int64_t)L * B * H_kv * max_len * ATTN_HEAD_DIM;
  for (int l = 0; l < L; l++) {
    const AttnKvView w = lab03_kv_view(base, base, table, l, B, H_kv, max_len);
    CHECK(w.k - base == (int64_t)engine_kv_layer(&e, l) && w.v == w.k, "L=%d B=%d: layer %d base %lld, want %zu\n",
          L, B, l, (long long)(w.k - base), engine_kv_layer(&e, l));
    CHECK(w.page_stride % 8 == 0 && w.head_stride % 8 == 0 && w.token_stride % 8 == 0,
          "strides not 16-byte multiples\n");
    for (int b = 0; b < B; b++)
      for (int g = 0; g < H_kv; g++)
        for (int j = 0; j < max_len; j++) {
          const int64_t ch18 = (int64_t)w.block_table[(int64_t)b * w.table_stride + (j >> w.page_shift)] * w.page_stride +
                               (int64_t)g * w.head_stride + (int64_t)(j & ((1 << w.page_shift) - 1)) * w.token_stride;
          const int64_t append = (((int64_t)b * H_kv + g) * max_len + j) * ATTN_HEAD_DIM;
          CHECK(ch18 == append, "L=%d B=%d H_kv=%d max_len=%d: (l %d, b %d, g %d, j %d) read at %lld, written at %lld\n",
                L, B, H_kv, max_len, l, b, g, j, (long long)ch18, (long long)append);
          CHECK((w.k - base) + ch18 + ATTN_HEAD_DIM <= total, "row past the cache\n");
        }
  }
  printf("ok: L=%d B=%d H_kv=%d max_len=%d: ch18 reads every row where the append writes it\n", L, B, H_kv, max_len);
}

static void check_splits(int B, int H_kv, int max_len, int slots) {
  const int tiles = (max_len + ATTN_TILE - 1) / ATTN_TILE, max_splits = tiles < 256 ? tiles : 256;
  int most = 0;
  for (int n = 1; n <= max_len; n++) {
    const int s = attn_splitkv_num_splits(B, H_kv, n, slots);
    CHECK(s >= 1 && s <= max_splits, "B=%d max_len=%d: %d keys split %d ways, workspace for %d\n", B, max_len, n, s,
          max_splits);
    most = s > most ? s : most;
  }
  printf("ok: B=%d H_kv=%d max_len=%d slots=%d: at most %d splits, workspace for %d\n", B, H_kv, max_len, slots,
         most, max_splits);
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
  check_page_shift();
  check_view(2, 1, 8, 17);
  check_view(3, 3, 2, 64);
  check_view(2, 5, 8, 65);
  check_view(1, 2, 8, 640);
  const int batches[] = {1, 4, 64};
  const int lens[] = {1, 63, 64, 65, 672, 4096, 20000};
  for (int b = 0; b < 3; b++)
    for (int m = 0; m < 7; m++) check_splits(batches[b], 8, lens[m], 132 * 4);
  check_splits(1, 8, 672, 132);
  const int xb[] = {1, 2, 3, 5, 8, 9, 16, 64, 200};
  for (int i = 0; i < 9; i++) check_items(xb[i], 4, 32, 136, 42 + i);  // gptoss20b_mixtral's E, top_k
  check_items(64, 8, 128, 72, 7);   // qwen3moe's E, top_k: mean load 4 (bm 16)
  check_items(1, 8, 128, 64, 8);
  check_items(300, 2, 8, 64, 9);    // mean 75: bm 64, several m-tiles per expert
  printf("plan_test: %s\n", fails ? "FAILED" : "all passed");
  return fails ? 1 : 0;
}
