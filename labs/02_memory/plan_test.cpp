// plan_test.cpp — host test of layer 02's row layout (no GPU needed).
//   make labs && nvcc -std=c++17 -Icommon -Ibuild -o /tmp/lab02_plan_test -x cu labs/02_memory/plan_test.cpp
//        -Lbuild -lmoe -lcommon -lcublas && /tmp/lab02_plan_test      (one line)
// 1. The dispatch: seeded routings go through 01's plan functions (lab01_plan_count,
//    _rank, _fill) in the kernel's order; token rows [hi | lo] of 2D tagged values are
//    scattered as ch07's permute does (out[dst[i]] = x[i / top_k], rows of 2D). Every
//    top-k entry's rows lab02_hi_row(slot) and the next must hold its token's hi and lo
//    rows, inside its group's 2·cap rows (what the expert GEMV and cuBLAS read) and inside
//    xg (01's arena size); no two entries may share a row.
// 2. The packed projection outputs (lab02_packed_base, lab02_packed_at): for the q/k/v,
//    o, router and lm_head shapes of the presets at batches 1–5 and 64, the hi and lo
//    values of every output map one to one onto the scratch's 2·B·(n0 + n1 + n2) floats,
//    each output lands once in its out_j, and the scratch fits 01's s region; the split
//    rows fit 01's xb region.
//    The range lab02_setup zeroes (xg to the workspace) holds exactly xg, hb, gu, yg.
// 3. The batch threshold: a batch takes the GEMV path exactly when its 2·B rows fit ch08's
//    GEMV_MAX_BATCH (the expert GEMV's switch covers 2, 4, 6, 8).
// Prints "ok: ..." / "FAILED: ..." and exits 1 on any failure.
#include "../moe/engine.cuh"
#include "layer.cuh"
#include "../moe/plan_check.h"


// A value naming (token, hi or lo, element): what the permute must carry unchanged.
static int32_t tag(int b, int lo, int d) { return (b * 2 + lo) * 100003 + d; }

static void check_dispatch(int E, int top_k, int B, int D, uint64_t seed) {
  const int n = B * top_k, G = E < n ? E : n, cap = B;
  const size_t rows = (size_t)2 * G * cap;  // xg's rows: 01's arena holds G·2cap rows of D
  int32_t *idx = (int32_t *)malloc(sizeof(int32_t) * n), *slot = (int32_t *)malloc(sizeof(int32_t) * n);
  float *w = (float *)malloc(sizeof(float) * n), *g_wt = (float *)malloc(sizeof(float) * G * cap);
  int32_t *g_tok = (int32_t *)malloc(sizeof(int32_t) * G * cap), *g_count = (int32_t *)malloc(sizeof(int32_t) * G);
  int *count = (int *)calloc(E, sizeof(int));
  int32_t *xb = (int32_t *)malloc(sizeof(int32_t) * 2 * B * D), *xg = (int32_t *)malloc(sizeof(int32_t) * rows * D);
  char *written = (char *)calloc(rows, 1);
  char what[96];
  snprintf(what, sizeof what, "dispatch E=%d top_k=%d B=%d D=%d", E, top_k, B, D);
  plan_routing(idx, w, B, top_k, E, seed);
  for (int x = 0; x < E; x++) count[x] = lab01_plan_count(idx, n, x);
  for (int x = 0; x < E; x++)
    if (count[x]) g_count[lab01_plan_rank(count, x)] = lab01_plan_fill(idx, w, n, top_k, x,
                                                                        lab01_plan_rank(count, x), cap, g_tok, g_wt, slot);
  // the router's split rows: token b at rows lab02_hi_row(b) (hi) and the next (lo)
  for (int b = 0; b < B; b++)
    for (int lo = 0; lo < 2; lo++)
      for (int d = 0; d < D; d++) xb[(lab02_hi_row(b) + lo) * D + d] = tag(b, lo, d);
  for (size_t i = 0; i < rows * D; i++) xg[i] = -1;
  // ch07's permute, rows of 2D: out[dst[i]][:] = x[i / top_k][:]
  for (int i = 0; i < n; i++) {
    CHECK(slot[i] >= 0 && (size_t)slot[i] < (size_t)G * cap, "%s: entry %d slot %d\n", what, i, slot[i]);
    memcpy(xg + (size_t)slot[i] * 2 * D, xb + (size_t)(i / top_k) * 2 * D, sizeof(int32_t) * 2 * D);
  }
  for (int i = 0; i < n; i++) {  // what the GEMMs, SwiGLU and combine read for entry i
    const size_t s = (size_t)slot[i], hi = lab02_hi_row(s), g = s / cap;
    CHECK(hi + 1 < rows && hi >= g * 2 * cap && hi + 1 < (g + 1) * 2 * cap && !written[hi] && !written[hi + 1],
          "%s: entry %d (slot %zu) at rows %zu/%zu: outside group %zu or shared\n", what, i, s, hi, hi + 1, g);
    written[hi] = written[hi + 1] = 1;
    for (int lo = 0; lo < 2; lo++)
      for (int d = 0; d < D; d++)
        CHECK(xg[(hi + lo) * D + d] == tag(i / top_k, lo, d), "%s: entry %d row %zu element %d holds %d\n", what, i,
              hi + lo, d, xg[(hi + lo) * D + d]);
  }
  printf("ok: %s: every entry's hi and lo rows in its group, its token's values, no row shared\n", what);
  free(idx); free(slot); free(w); free(g_wt); free(g_tok); free(g_count); free(count); free(xb); free(xg);
  free(written);
}

// n0, n1, n2 outputs per row (n2, n1 may be 0) at batch B; s_floats: 01's s region in floats.
static void check_packed(const char *name, int B, int n0, int n1, int n2, size_t s_floats) {
  const int n = n0 + n1 + n2, N[3] = {n0, n1, n2};
  const size_t total = (size_t)2 * B * n;
  char what[96];
  snprintf(what, sizeof what, "packed %s B=%d (%d, %d, %d)", name, B, n0, n1, n2);
  CHECK(total <= s_floats, "%s: %zu floats, 01's s holds %zu\n", what, total, s_floats);
  char *seen = (char *)calloc(total, 1), *out[3];
  for (int j = 0; j < 3; j++) out[j] = (char *)calloc((size_t)B * N[j] + 1, 1);
  for (int b = 0; b < B; b++)
    for (int c = 0; c < n; c++) {
      size_t hi, at;
      const int j = lab02_packed_at(b, c, B, n0, n1, n2, &hi, &at);
      CHECK(j >= 0 && j < 3 && N[j] > 0 && hi + N[j] < total + 1 && !seen[hi] && !seen[hi + N[j]],
            "%s: output (%d, %d) -> matrix %d at %zu: outside or shared\n", what, b, c, j, hi);
      // the writer's row of the hi value is lab02_hi_row(b) of matrix j: (hi - base) / N_j
      const size_t r = (hi - lab02_packed_base(j, B, n0, n1)) / N[j];
      CHECK(r == lab02_hi_row(b) && at < (size_t)B * N[j] && !out[j][at], "%s: output (%d, %d): row %zu, out %zu\n",
            what, b, c, r, at);
      seen[hi] = seen[hi + N[j]] = 1;
      out[j][at] = 1;
    }
  size_t covered = 0;
  for (size_t i = 0; i < total; i++) covered += seen[i];
  CHECK(covered == total, "%s: %zu of %zu scratch floats read\n", what, covered, total);
  printf("ok: %s: hi and lo of every output read once, every output written once\n", what);
  free(seen);
  for (int j = 0; j < 3; j++) free(out[j]);
}

static void check_model(const char *preset, int B) {
  MoeConfig c;
  CHECK(!moe_config_preset(preset, &c), "preset %s unknown\n", preset);
  size_t sz[kLab01Regions];
  lab01_arena_sizes(&c, B, 64, sz);
  const int Q = c.H * c.head_dim, KV = c.H_kv * c.head_dim, G = c.E < B * c.top_k ? c.E : B * c.top_k;
  const size_t sf = sz[2] / 4;
  check_packed("qkv", B, Q, KV, KV, sf);
  check_packed("o", B, c.D, 0, 0, sf);
  check_packed("router", B, c.E, 0, 0, sf);
  check_packed("lm_head", B, c.V, 0, 0, sf);
  const size_t K = (size_t)(c.D > Q ? c.D : Q);
  CHECK(sz[1] >= (size_t)2 * B * K * 2, "%s B=%d: xb %zu bytes < the split rows\n", preset, B, sz[1]);
  CHECK(sz[9] >= (size_t)G * 2 * B * c.D * 2 && sz[10] >= (size_t)G * 2 * B * c.F * 2, "%s B=%d: xg or hb short\n",
        preset, B);
  // lab02_setup zeroes xg … yg (regions 9–12) as one range, from xg to the workspace:
  // those four must be adjacent and after every region 01 fills at setup (wptr, 3).
  size_t off[kLab01Regions], span = 0;
  lab01_arena_layout(&c, B, 64, off);
  for (int i = 9; i <= 12; i++) span += (sz[i] + 255) / 256 * 256;
  CHECK(off[13] - off[9] == span && off[9] >= off[3] + sz[3], "%s B=%d: the zeroed range %zu..%zu is not xg..yg\n",
        preset, B, off[9], off[13]);
  printf("ok: model %s B=%d: split rows and packed outputs fit 01's arena; zeroed range = xg..yg\n", preset, B);
}

static void check_threshold(void) {
  for (int B = 1; B <= 2 * GEMV_MAX_BATCH; B++) {
    const int gemv = lab02_use_gemv(B);
    CHECK(gemv == (2 * B <= GEMV_MAX_BATCH), "threshold: batch %d takes the %s path\n", B, gemv ? "GEMV" : "cuBLAS");
    CHECK(!gemv || (2 * B >= 2 && 2 * B <= 8), "threshold: batch %d, %d GEMV rows outside the switch\n", B, 2 * B);
  }
  printf("ok: threshold: GEMV at batch 1..%d (2·B <= %d rows), cuBLAS above\n", kLab02GemvMaxBatch, GEMV_MAX_BATCH);
}

int main(void) {
  const int shapes[][2] = {{8, 2}, {32, 4}, {128, 8}, {3, 3}, {1, 1}};
  const int batches[] = {1, 2, 3, 4, 5, 64};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++)
      check_dispatch(shapes[s][0], shapes[s][1], batches[b], 24, 0x1AB02ull * (s + 1) + b);
  for (int B = 1; B <= 5; B++) {
    check_model("mini", B);
    check_model("gptoss20b_mixtral", B);
    check_model("tiny_qwen3", B);
  }
  check_model("gptoss20b_mixtral", 64);
  check_threshold();
  printf("plan_test: %s\n", fails ? "FAILED" : "all passed");
  return fails ? 1 : 0;
}
