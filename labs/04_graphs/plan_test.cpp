// plan_test.cpp — host test of layer 04's graph bookkeeping (no GPU needed).
//   make labs && nvcc -std=c++17 -arch=sm_90 -Icommon -Ibuild -o /tmp/lab04_plan_test -x cu labs/04_graphs/plan_test.cpp
//        -Lbuild -lmoe -lcommon -lcublas && /tmp/lab04_plan_test      (one line)
// 1. The fixed attention split (lab04_attn_split): for batches 1, 4, 64 and several
//    max_len, the chunk count fits the workspace lab03_setup sizes (and is 1 when it has
//    none), chunks are whole tiles, and at every context 1..max_len the kernel's chunk
//    bounds read each key once, chunk 0 holding a key (the merge's maximum is finite).
// 2. At gptoss20b_mixtral's batch-1 run (prompt 512, gen 128, 4 instrumented steps) the
//    fixed split equals 03's per-step split at every decode position, and at batch 64 both
//    are one chunk: the replayed attention does 03's work there, no more.
// 3. The table: lab04_ops() is lab03_ops() with graph = 1, graph_edit = lab04_graph_edit
//    and rope, attend, configure, setup replaced, every other stage 03's.
// 5. The PDL-ready table lab04_pdl_register fills (no GPU: kernel addresses only): every
//    entry a distinct kernel, 04's RoPE and every projection / attention / expert instance
//    the launchers may pick among them, room left for a later layer's (kLab04PdlMax).
// 4. A sliding-window layer (gpt-oss, window 128) under the fixed split: at every
//    position below max_len the chunks, starting at the first key lab00_window_first gives
//    (as lab03_attn_split_kernel starts them), read each key of the window once and no
//    other, chunk 0 holds a key, and the keys' ring slots (lab00_kv_slot, ring = the
//    window or max_len when shorter; the slot lab04_rope_kernel writes) are distinct.
// Prints "ok: ..." / "FAILED: ..." and exits 1 on any failure.
#include "../moe/engine.cuh"
#include "layer.cuh"
#include "../moe/plan_check.h"

static void check_split(int B, int H_kv, int max_len, int sms) {
  const int max_chunks = lab03_attn_max_chunks(B, H_kv, max_len, sms);
  int n_chunks, len;
  lab04_attn_split(max_len, max_chunks, &n_chunks, &len);
  CHECK(len > 0 && len % kLab03AttnTile == 0, "B=%d max_len=%d: chunk of %d keys\n", B, max_len, len);
  CHECK(n_chunks >= 1 && n_chunks <= max_chunks, "B=%d max_len=%d: %d chunks, workspace for %d\n", B, max_len,
        n_chunks, max_chunks);
  CHECK(max_chunks > 1 || n_chunks == 1, "B=%d max_len=%d: %d chunks but no workspace\n", B, max_len, n_chunks);
  CHECK((n_chunks - 1) * len < max_len && n_chunks * len >= max_len, "B=%d max_len=%d: %d x %d keys\n", B, max_len,
        n_chunks, len);
  int *seen = (int *)malloc(sizeof(int) * max_len);
  for (int n = 1; n <= max_len; n++) {  // lab03_attn_split_kernel's bounds for n keys
    memset(seen, 0, sizeof(int) * n);
    for (int ch = 0; ch < n_chunks; ch++) {
      const int c0 = ch * len, c1 = ch == n_chunks - 1 ? n : (c0 + len < n ? c0 + len : n);
      if (ch == 0) CHECK(c1 > c0, "B=%d max_len=%d: %d keys, chunk 0 empty\n", B, max_len, n);
      for (int t = c0; t < c1; t++) seen[t]++;
    }
    for (int t = 0; t < n; t++) CHECK(seen[t] == 1, "B=%d max_len=%d: %d keys, key %d read %d times\n", B, max_len, n, t, seen[t]);
  }
  free(seen);
  printf("ok: B=%d H_kv=%d max_len=%d sms=%d: fixed split %d x %d keys (workspace %d), every key once at every "
         "context\n", B, H_kv, max_len, sms, n_chunks, len, max_chunks);
}

static void check_same_as_03(int B, int prompt, int gen, int stage_steps) {
  MoeConfig c;
  moe_config_preset("gptoss20b_mixtral", &c);
  const int max_len = prompt + gen + stage_steps, max_chunks = lab03_attn_max_chunks(B, c.H_kv, max_len, 132);
  int n_chunks, len;
  lab04_attn_split(max_len, max_chunks, &n_chunks, &len);
  for (int pos = prompt; pos < max_len; pos++) {
    const int len3 = lab03_attn_chunk_len(pos + 1, max_chunks), n3 = (pos + 1 + len3 - 1) / len3;
    const int used = (pos + 1 + len - 1) / len;  // chunks of the fixed split that hold keys
    // equal chunks; a single chunk takes every key whatever its length
    CHECK(n3 == used && (n3 == 1 || len3 == len), "B=%d position %d: 03 splits %d x %d, 04 %d x %d (%d with keys)\n", B, pos, n3,
          len3, n_chunks, len, used);
  }
  printf("ok: gptoss20b_mixtral B=%d P%d G%d: 04's fixed split (%d x %d keys) is 03's at every decode position\n", B,
         prompt, gen, n_chunks, len);
}

static void check_table(void) {
  const LayerOps a = lab03_ops(), b = lab04_ops();
  CHECK(b.graph == 1 && a.graph == 0, "graph: 03 %d, 04 %d\n", a.graph, b.graph);
  CHECK(b.graph_edit == lab04_graph_edit && !a.graph_edit, "graph_edit: 04's edit, none in 03\n");
  CHECK(b.rope == lab04_rope && b.attend == lab04_attend && b.configure == lab04_configure && b.setup == lab04_setup,
        "04 does not replace rope, attend, configure, setup\n");
  CHECK(b.embed == a.embed && b.qkv == a.qkv && b.out == a.out && b.router == a.router && b.topk == a.topk &&
            b.experts_plan == a.experts_plan && b.dispatch == a.dispatch && b.expert_up == a.expert_up &&
            b.expert_down == a.expert_down && b.combine == a.combine && b.logits == a.logits &&
            b.sample == a.sample && b.teardown == a.teardown && b.kv_alloc == a.kv_alloc,
        "04 replaces a stage graphs do not need\n");
  CHECK(b.tol_rel_l2 == a.tol_rel_l2 && b.tol_top1 == a.tol_top1 && b.kv_bytes == a.kv_bytes &&
            b.expert_fmt == a.expert_fmt && b.dense_fmt == a.dense_fmt,
        "04's tolerances or roofline formats differ from 03's\n");
  printf("ok: lab04_ops = lab03_ops + graph, rope, attend, configure, setup\n");
}

static void check_window(int B, int max_len, int w) {
  const int max_chunks = lab03_attn_max_chunks(B, 8, max_len, 132), ring = w < max_len ? w : max_len;
  int n_chunks, len;
  lab04_attn_split(max_len, max_chunks, &n_chunks, &len);
  int *seen = (int *)calloc(max_len, sizeof(int)), *slot = (int *)calloc(ring, sizeof(int));
  for (int pos = 0; pos < max_len; pos++) {
    const int first = lab00_window_first(pos, w);
    memset(seen, 0, sizeof(int) * max_len);
    memset(slot, 0, sizeof(int) * ring);
    for (int ch = 0; ch < n_chunks; ch++) {
      const int c0 = first + ch * len, c1 = ch == n_chunks - 1 ? pos + 1 : (c0 + len < pos + 1 ? c0 + len : pos + 1);
      if (ch == 0) CHECK(c1 > c0, "window B=%d max_len=%d pos %d: chunk 0 empty\n", B, max_len, pos);
      for (int t = c0; t < c1; t++) seen[t]++, slot[lab00_kv_slot(t, ring)]++;
    }
    for (int t = 0; t <= pos; t++)
      CHECK(seen[t] == (t >= pos - w + 1), "window B=%d max_len=%d pos %d: key %d read %d times\n", B, max_len, pos,
            t, seen[t]);
    for (int r = 0; r < ring; r++) CHECK(slot[r] <= 1, "window pos %d: ring slot %d read %d times\n", pos, r, slot[r]);
  }
  free(seen);
  free(slot);
  printf("ok: window %d, B=%d max_len=%d: fixed split %d x %d keys reads each window key once from its own ring slot "
         "at every position\n", w, B, max_len, n_chunks, len);
}

static void check_pdl_table(void) {
  Engine *e = (Engine *)calloc(1, sizeof(Engine));
  Lab04 *p = (Lab04 *)calloc(1, sizeof(Lab04));
  e->layer = p;
  lab04_pdl_register(e);
  int dup = 0;
  for (int i = 0; i < p->n_ready; i++)
    for (int j = 0; j < i; j++) dup += p->ready[i] == p->ready[j] || !p->ready[i];
  const void *need[] = {(const void *)lab04_rope_kernel, (const void *)lab03_proj_gemv_kernel<1, 1>,
                        (const void *)lab03_proj_gemv_kernel<4, 4>, (const void *)lab03_attn_split_kernel<64>,
                        (const void *)lab03_attn_combine_kernel<64>, (const void *)router_topk_any_kernel<1>,
                        (const void *)moe_dispatch_sort_kernel, (const void *)lab03_grouped_gemv_kernel<1, true>,
                        (const void *)lab03_grouped_gemv_kernel<8, false>, (const void *)lab03_grouped_mma_kernel<16, true>,
                        (const void *)lab03_grouped_mma_kernel<64, false>, (const void *)lab03_combine_kernel,
                        (const void *)gemv_warprow_kernel<2, GEMV_ILP>, (const void *)lab02_sum_split_kernel};
  int missing = 0;
  for (size_t k = 0; k < sizeof need / sizeof need[0]; k++) {
    int found = 0;
    for (int i = 0; i < p->n_ready; i++) found |= p->ready[i] == need[k];
    missing += !found;
  }
  CHECK(!dup && !missing && p->n_ready <= kLab04PdlMax / 2,
        "PDL table: %d entries, %d duplicate or NULL, %d expected kernels missing (room: %d)\n", p->n_ready, dup, missing,
        kLab04PdlMax);
  printf("ok: PDL-ready table: %d distinct kernels, the step's instances among them, %d slots left\n", p->n_ready,
         kLab04PdlMax - p->n_ready);
  free(p);
  free(e);
}

int main(void) {
  check_pdl_table();
  check_window(1, 212, 128);
  check_window(1, 644, 128);
  check_window(64, 44, 128);
  check_window(3, 100, 128);
  const int batches[] = {1, 4, 64};
  const int lens[] = {1, 31, 32, 33, 644, 4096, 20000};
  for (int b = 0; b < 3; b++)
    for (int m = 0; m < 7; m++) check_split(batches[b], 8, lens[m], 132);
  check_split(1, 4, 544, 132);
  check_same_as_03(1, 512, 128, 4);
  check_same_as_03(64, 32, 8, 4);
  check_same_as_03(64, 512, 128, 4);
  check_table();
  printf("plan_test: %s\n", fails ? "FAILED" : "all passed");
  return fails ? 1 : 0;
}
