// plan_test.cpp — host test of layer 01's expert plan and arena (no GPU needed).
//   make labs && nvcc -std=c++17 -Icommon -Ibuild -o /tmp/lab01_plan_test -x cu labs/01_basics/plan_test.cpp
//        -Lbuild -lmoe -lcommon -lcublas && /tmp/lab01_plan_test      (one line)
// 1. The plan: seeded routings (top_k distinct experts per token) for the presets' E and
//    top_k at several batches go through the plan kernel's own host/device functions
//    (lab01_plan_count, _rank, _fill, _group_expert) in the kernel's order. Each group
//    must hold exactly the token list layer 00 builds on the host for that expert
//    (lab00_expert_lists' order: ascending tokens, routed experts ascending), every
//    top-k entry's slot must point back at its token, weight and expert, slots must be
//    distinct, padding groups empty, and the combine's gather (Σ_j w · y[slot]) must
//    equal the scatter-add of 00 on stand-in expert outputs.
// 2. The arena: every region 256-byte aligned, in order, large enough for its buffer
//    (sizes recomputed here from the model, hi and lo rows included).
// 3. The hi/lo GEMM rows of the groups (lab01_hi_row): inside their group, each used once.
// Prints "ok: ..." / "FAILED: ..." and exits 1 on any failure.
#include "../moe/engine.cuh"
#include "layer.cuh"
#include "../moe/plan_check.h"


// One routing of B tokens over E experts, top_k distinct each, through the plan.
static void check_plan(int E, int top_k, int B, uint64_t seed) {
  const int n = B * top_k, G = E < n ? E : n, cap = B;
  int32_t *idx = (int32_t *)malloc(sizeof(int32_t) * n), *slot = (int32_t *)malloc(sizeof(int32_t) * n);
  float *w = (float *)malloc(sizeof(float) * n);
  int32_t *g_tok = (int32_t *)malloc(sizeof(int32_t) * G * cap), *g_count = (int32_t *)malloc(sizeof(int32_t) * G);
  float *g_wt = (float *)malloc(sizeof(float) * G * cap);
  int *count = (int *)calloc(E, sizeof(int)), *expert = (int *)calloc(E, sizeof(int));
  int *ref_cnt = (int *)calloc(E, sizeof(int)), *ref_tok = (int *)malloc(sizeof(int) * E * B);
  float *ref_w = (float *)malloc(sizeof(float) * E * B);
  plan_routing(idx, w, B, top_k, E, seed);
  for (int i = 0; i < n; i++) slot[i] = -1;
  // the kernel's phases, serially
  int n_routed = 0;
  for (int x = 0; x < E; x++) count[x] = lab01_plan_count(idx, n, x);
  for (int x = 0; x < E; x++)
    if (count[x]) {
      const int g = lab01_plan_rank(count, x);
      expert[g] = x;
      g_count[g] = lab01_plan_fill(idx, w, n, top_k, x, g, cap, g_tok, g_wt, slot);
      n_routed++;
    }
  // layer 00's host lists (lab00_expert_lists' walk)
  for (int b = 0; b < B; b++)
    for (int j = 0; j < top_k; j++) {
      const int x = idx[b * top_k + j], c = ref_cnt[x]++;
      ref_tok[x * B + c] = b;
      ref_w[x * B + c] = w[b * top_k + j];
    }
  int routed = 0;
  for (int x = 0; x < E; x++) routed += ref_cnt[x] > 0;
  char what[96];
  snprintf(what, sizeof what, "plan E=%d top_k=%d B=%d", E, top_k, B);
  CHECK(routed == n_routed && n_routed <= G, "%s: %d groups routed, expected %d (G %d)\n", what, n_routed, routed, G);
  for (int g = 0, x = 0; g < n_routed; g++, x++) {
    while (!ref_cnt[x]) x++;  // the g-th routed expert in ascending order
    CHECK(expert[g] == x && g_count[g] == ref_cnt[x] && g_count[g] <= cap, "%s: group %d holds expert %d x %d rows, "
          "expected %d x %d\n", what, g, expert[g], g_count[g], x, ref_cnt[x]);
    for (int t = 0; t < g_count[g]; t++)
      CHECK(g_tok[g * cap + t] == ref_tok[x * B + t] && g_wt[g * cap + t] == ref_w[x * B + t],
            "%s: group %d row %d: token %d, expected %d\n", what, g, t, g_tok[g * cap + t], ref_tok[x * B + t]);
  }
  for (int g = n_routed; g < G; g++) {  // padding groups
    g_count[g] = 0;
    CHECK(lab01_plan_group_expert(expert, n_routed, g) == expert[n_routed - 1], "%s: padding group %d\n", what, g);
  }
  for (int g = 0; g < n_routed; g++) CHECK(lab01_plan_group_expert(expert, n_routed, g) == expert[g], "%s\n", what);
  char *seen = (char *)calloc((size_t)G * cap, 1);
  for (int i = 0; i < n; i++) {
    const int s = slot[i];
    CHECK(s >= 0 && s < G * cap && !seen[s], "%s: entry %d has slot %d (unset, out of range or shared)\n", what, i, s);
    seen[s] = 1;
    CHECK(s % cap < g_count[s / cap] && expert[s / cap] == idx[i] && g_tok[s] == i / top_k && g_wt[s] == w[i],
          "%s: entry %d's slot %d points at another token, weight or expert\n", what, i, s);
  }
  // combine: stand-in expert outputs y[slot] = f(expert, token); gather (layer 01) vs
  // 00's per-expert scatter-add, in double
  double max_diff = 0;
  for (int b = 0; b < B; b++) {
    double gather = 0, scatter = 0;
    for (int j = 0; j < top_k; j++) {
      const int s = slot[b * top_k + j];
      gather += (double)w[b * top_k + j] * (expert[s / cap] * 131 + g_tok[s] * 7 + 1);
    }
    for (int x = 0; x < E; x++)
      for (int t = 0; t < ref_cnt[x]; t++)
        if (ref_tok[x * B + t] == b) scatter += (double)ref_w[x * B + t] * (x * 131 + b * 7 + 1);
    const double d = fabs(gather - scatter) / (fabs(scatter) + 1e-30);
    if (d > max_diff) max_diff = d;
  }
  CHECK(max_diff < 1e-12, "%s: combine gather differs from the scatter-add by %.3g\n", what, max_diff);
  printf("ok: %s: %d of %d groups routed, slots and token lists as layer 00's\n", what, n_routed, G);
  free(seen);
  free(idx); free(slot); free(w); free(g_tok); free(g_count); free(g_wt);
  free(count); free(expert); free(ref_cnt); free(ref_tok); free(ref_w);
}

static void check_arena(const char *preset, int B, int max_len) {
  MoeConfig c;
  CHECK(!moe_config_preset(preset, &c), "arena: preset %s unknown\n", preset);
  size_t off[kLab01Regions];
  const size_t total = lab01_arena_layout(&c, B, max_len, off);
  const size_t G = (size_t)(c.E < B * c.top_k ? c.E : B * c.top_k), Q = (size_t)c.H * c.head_dim;
  const size_t KV = (size_t)c.H_kv * c.head_dim, R = 2 * (size_t)B;  // GEMM rows: hi and lo
  size_t sw = Q + 2 * KV;
  if ((size_t)c.V > sw) sw = c.V;
  if ((size_t)c.D > sw) sw = c.D;
  const size_t need[kLab01Regions] = {(size_t)B * c.H * max_len * 4, R * (c.D > (int)Q ? c.D : Q) * 2, R * sw * 4,
                                      (size_t)c.L * c.E * 6 * 8, G * 4, G * B * 4, (size_t)B * c.top_k * 4, G * B * 4,
                                      11 * G * 8, G * R * c.D * 2, G * R * c.F * 2, G * R * 2 * c.F * 4,
                                      G * R * c.D * 4, kLab01Workspace};
  for (int i = 0; i < kLab01Regions; i++) {
    const size_t end = i < kLab01Regions - 1 ? off[i + 1] : total;
    CHECK(off[i] % 256 == 0 && end >= off[i] + need[i] && end - off[i] < need[i] + 256,
          "arena %s B=%d: region %d at %zu..%zu, needs %zu bytes\n", preset, B, i, off[i], end, need[i]);
  }
  printf("ok: arena %s B=%d max_len=%d: %d regions aligned and sized, %.1f MB\n", preset, B, max_len, kLab01Regions,
         total / 1e6);
}

// The GEMM rows of the logical rows s = g·cap + t: hi rows g·2cap + t, lo rows cap further,
// inside group g's 2·cap rows, every one used once.
static void check_rows(int G, int cap) {
  char *used = (char *)calloc((size_t)G * 2 * cap, 1);
  for (size_t s = 0; s < (size_t)G * cap; s++) {
    const size_t hi = lab01_hi_row(s, cap), lo = hi + cap, g = s / cap;
    CHECK(hi >= g * 2 * cap && lo < (g + 1) * 2 * cap && !used[hi] && !used[lo],
          "rows G=%d cap=%d: logical row %zu -> %zu/%zu\n", G, cap, s, hi, lo);
    used[hi] = used[lo] = 1;
  }
  free(used);
  printf("ok: rows G=%d cap=%d: hi and lo rows inside their group, each once\n", G, cap);
}

int main(void) {
  const int shapes[][2] = {{8, 2}, {4, 2}, {32, 4}, {128, 8}, {1024, 32}, {3, 3}, {1, 1}};
  const int batches[] = {1, 2, 3, 8, 64, 257};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++)
      check_plan(shapes[s][0], shapes[s][1], batches[b], 0x1AB01ull * (s + 1) + b);
  check_arena("mini", 1, 96);
  check_arena("mini", 64, 96);
  check_arena("gptoss20b_mixtral", 1, 644);
  check_arena("gptoss20b_mixtral", 64, 44);
  check_arena("qwen3moe", 7, 300);
  check_arena("tiny_qwen3", 3, 20);
  check_arena("gptoss20b", 1, 644);
  check_arena("tiny_gptoss", 3, 300);
  check_rows(1, 1);
  check_rows(4, 1);
  check_rows(32, 64);
  check_rows(7, 3);
  printf("plan_test: %s\n", fails ? "FAILED" : "all passed");
  return fails ? 1 : 0;
}
