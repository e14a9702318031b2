// plan_test.cpp — host test of layer 00's model-dependent choices (no GPU needed).
//   make labs && nvcc -std=c++17 -Icommon -Ibuild -o /tmp/lab00_plan_test -x cu labs/00_baseline/plan_test.cpp
//        -Lbuild -lmoe -lcommon -lcublas && /tmp/lab00_plan_test      (one line)
// 1. configure: lab00_configure takes every preset (gpt-oss included).
// 2. The sliding window: lab00_first_key at the edge (positions 126-130 of a 128-key
//    window) on gpt-oss's sliding layers, 0 on its full layers and on Mixtral; the keys
//    read, pos − first + 1, never exceed the window and equal the count of keys k with
//    pos − w < k <= pos (the definition, counted here).
// 3. The KV ring of sliding-window layers: lab00_configure sets window_len = 128 for
//    gpt-oss (the context when shorter) and 0 for Mixtral/Qwen3; the slot map
//    lab00_kv_slot at positions 126-130 (126 127 0 1 2) and after the second wrap; a
//    host ring written through the slot map for positions 0..600 holds, at every step,
//    each key of the window (first key .. pos) where the attention reads it; full layers
//    and window-less models keep row = position.
// 4. The KV cache's size and layer offsets (engine_kv_layer, engine_kv_len) against a
//    count from the definition: gptoss20b's 12 sliding layers keep 128 positions, its
//    12 full layers max_len, and the bytes saved per sequence; window-less models keep
//    the old L·max_len layout exactly.
// 5. The RoPE table: default RoPE θ^(−2i/hd) with factor 1; gpt-oss's YaRN: factor
//    0.1·ln 32 + 1, pair 0 unscaled (below the correction range), the last pair divided
//    by 32 (above it), the frequencies decreasing.
// 6. The optional tensors the stages pass (lab00_w_opt): every gpt-oss bias and the sinks
//    found at their layout offset; NULL for a Mixtral model (the kernels' "no bias").
// Prints "ok: ..." / "FAILED: ..." and exits 1 on any failure.
#include "../moe/engine.cuh"
#include "layer.cuh"
#include "../moe/plan_check.h"


static void preset(const char *name, Engine *e) {
  memset(e, 0, sizeof *e);
  if (moe_config_preset(name, &e->cfg)) {
    printf("FAILED: preset %s unknown\n", name);
    exit(1);
  }
  e->kv.max_len = 1024;  // past gpt-oss's window: its sliding layers keep rings
}

static void check_configure(void) {
  const char *all[] = {"gptoss20b", "gptoss120b", "gptoss20b_mixtral", "qwen3moe", "mini", "tiny_mixtral",
                       "tiny_qwen3", "tiny_gptoss"};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    Engine e;
    char err[320] = "";
    preset(all[i], &e);
    CHECK(lab00_configure(&e, err, sizeof err) == 0, "lab00_configure refuses %s: %s\n", all[i], err);
  }
  printf("ok: configure: 00 takes all 8 presets\n");
}

static void check_window(void) {
  Engine e;
  preset("tiny_gptoss", &e);
  const MoeConfig *c = &e.cfg;
  CHECK(c->sliding_window == 128 && moe_layer_window(c, 0) == 128 && moe_layer_window(c, 1) == 0,
        "tiny_gptoss: window %lld, layer 0 %lld, layer 1 %lld\n", (long long)c->sliding_window,
        (long long)moe_layer_window(c, 0), (long long)moe_layer_window(c, 1));
  const int want[] = {0, 0, 1, 2, 3};  // positions 126..130, window 128
  for (int pos = 126; pos <= 130; pos++) {
    const int t0 = lab00_first_key(c, 0, pos);
    CHECK(t0 == want[pos - 126], "sliding layer, pos %d: first key %d, want %d\n", pos, t0, want[pos - 126]);
    CHECK(lab00_first_key(c, 1, pos) == 0, "full layer, pos %d: first key %d\n", pos, lab00_first_key(c, 1, pos));
  }
  for (int pos = 0; pos < 600; pos++) {
    int visible = 0;  // keys k with pos − w < k <= pos, counted from the definition
    for (int k = 0; k <= pos; k++) visible += pos - 128 < k;
    const int t0 = lab00_first_key(c, 0, pos);
    CHECK(pos - t0 + 1 == visible && visible <= 128, "pos %d: reads %d keys, %d visible\n", pos, pos - t0 + 1,
          visible);
  }
  Engine m;
  preset("gptoss20b_mixtral", &m);
  for (int l = 0; l < m.cfg.L; l++)
    CHECK(lab00_first_key(&m.cfg, l, 5000) == 0, "gptoss20b_mixtral layer %d: first key %d\n", l,
          lab00_first_key(&m.cfg, l, 5000));
  printf("ok: window: first key 0 0 1 2 3 at positions 126-130 of sliding layers, 0 on full layers and Mixtral\n");
}

static void check_ring(void) {
  Engine e;
  char err[320];
  preset("tiny_gptoss", &e);
  CHECK(lab00_configure(&e, err, sizeof err) == 0, "tiny_gptoss: %s\n", err);
  CHECK(e.kv.window_len == 128, "tiny_gptoss: window_len %d, want 128\n", e.kv.window_len);
  CHECK(lab00_kv_ring(&e, 0) == 128 && lab00_kv_ring(&e, 1) == 0, "tiny_gptoss rings %d %d\n", lab00_kv_ring(&e, 0),
        lab00_kv_ring(&e, 1));
  const int want[] = {126, 127, 0, 1, 2};  // positions 126..130 in a 128-slot ring
  for (int pos = 126; pos <= 130; pos++) {
    CHECK(lab00_kv_slot(pos, 128) == want[pos - 126], "pos %d: slot %d, want %d\n", pos, lab00_kv_slot(pos, 128),
          want[pos - 126]);
    CHECK(lab00_kv_slot(pos, 0) == pos, "full layer, pos %d: row %d\n", pos, lab00_kv_slot(pos, 0));
  }
  const int wrap[] = {255, 256, 257, 383, 384};  // after the first and second wrap
  const int wrap_want[] = {127, 0, 1, 127, 0};
  for (int i = 0; i < 5; i++)
    CHECK(lab00_kv_slot(wrap[i], 128) == wrap_want[i], "pos %d: slot %d, want %d\n", wrap[i],
          lab00_kv_slot(wrap[i], 128), wrap_want[i]);
  int ring[128];  // what the append kernel wrote to each slot (key position), -1: never
  for (int i = 0; i < 128; i++) ring[i] = -1;
  for (int pos = 0; pos <= 600; pos++) {
    ring[lab00_kv_slot(pos, 128)] = pos;  // the step appends its own key, then attends
    for (int t = lab00_first_key(&e.cfg, 0, pos); t <= pos; t++)
      CHECK(ring[lab00_kv_slot(t, 128)] == t, "pos %d: key %d read from slot %d holding key %d\n", pos, t,
            lab00_kv_slot(t, 128), ring[lab00_kv_slot(t, 128)]);
  }
  e.kv.max_len = 100;  // a context shorter than the window: a ring of the context, row = position
  CHECK(lab00_configure(&e, err, sizeof err) == 0 && e.kv.window_len == 100, "max_len 100: window_len %d\n",
        e.kv.window_len);
  for (int pos = 0; pos < 100; pos++)
    CHECK(lab00_kv_slot(pos, lab00_kv_ring(&e, 0)) == pos, "max_len 100, pos %d: slot %d\n", pos,
          lab00_kv_slot(pos, lab00_kv_ring(&e, 0)));
  const char *none[] = {"gptoss20b_mixtral", "mini", "tiny_qwen3"};
  for (int m = 0; m < 3; m++) {
    Engine n;
    preset(none[m], &n);
    CHECK(lab00_configure(&n, err, sizeof err) == 0 && n.kv.window_len == 0, "%s: window_len %d\n", none[m],
          n.kv.window_len);
    for (int l = 0; l < n.cfg.L; l++) CHECK(lab00_kv_ring(&n, l) == 0, "%s layer %d: a ring\n", none[m], l);
  }
  printf("ok: ring: slots 126 127 0 1 2 at positions 126-130, 127 0 1 127 0 at 255-257/383-384; every window key "
         "read where it was written up to position 600; no ring on full layers or Mixtral/Qwen3\n");
}

static void check_kv_size(void) {
  const int lens[] = {160, 544, 1024, 4128};
  for (int i = 0; i < 4; i++) {
    Engine e;
    char err[320];
    preset("gptoss20b", &e);
    e.B = 3;
    e.kv.max_len = lens[i];
    CHECK(lab00_configure(&e, err, sizeof err) == 0, "gptoss20b: %s\n", err);
    const size_t row = (size_t)e.B * 8 * 64;  // one position of one layer, all sequences, elements
    size_t at = 0;
    for (int l = 0; l < 24; l++) {  // gpt-oss-20b: even layers slide (128 keys), odd layers full
      CHECK(engine_kv_layer(&e, l) == at, "max_len %d layer %d: offset %zu, want %zu\n", lens[i], l,
            engine_kv_layer(&e, l), at);
      const int len = l % 2 == 0 ? 128 : lens[i];
      CHECK(engine_kv_len(&e, l) == len, "max_len %d layer %d: %d positions, want %d\n", lens[i], l,
            engine_kv_len(&e, l), len);
      at += row * len;
    }
    CHECK(engine_kv_layer(&e, 24) == at, "max_len %d: cache of %zu elements, want %zu\n", lens[i],
          engine_kv_layer(&e, 24), at);
    const double seq_full = 24.0 * lens[i] * 8 * 64 * 4 * 2, seq = (double)engine_kv_layer(&e, 24) * 4 * 2 / e.B;
    const double saved = 12.0 * (lens[i] - 128) * 8 * 64 * 4 * 2;  // fp32 K and V
    CHECK(seq_full - seq == saved, "max_len %d: saves %.0f bytes per sequence, want %.0f\n", lens[i],
          seq_full - seq, saved);
    printf("ok: KV gptoss20b max_len %d: %.2f MB per sequence (fp32 K+V), %.2f MB saved by the rings (%.0f%%)\n",
           lens[i], seq / 1e6, saved / 1e6, 100 * saved / seq_full);
  }
  const char *none[] = {"gptoss20b_mixtral", "qwen3moe", "mini"};
  for (int m = 0; m < 3; m++) {
    Engine e;
    char err[320];
    preset(none[m], &e);
    e.B = 2;
    CHECK(lab00_configure(&e, err, sizeof err) == 0, "%s: %s\n", none[m], err);
    for (int l = 0; l <= e.cfg.L; l++)
      CHECK(engine_kv_layer(&e, l) == (size_t)l * e.B * e.cfg.H_kv * e.kv.max_len * e.cfg.head_dim &&
                (l == e.cfg.L || engine_kv_len(&e, l) == e.kv.max_len),
            "%s layer %d: offset %zu\n", none[m], l, engine_kv_layer(&e, l));
  }
  printf("ok: KV without a window (gptoss20b_mixtral, qwen3moe, mini): L x max_len layout unchanged\n");
}

static void check_rope(void) {
  Engine e;
  preset("gptoss20b_mixtral", &e);
  Lab00Rope r = lab00_rope_table(&e.cfg);
  const int half = e.cfg.head_dim / 2;
  CHECK(r.scale == 1.0, "default RoPE: factor %g\n", r.scale);
  for (int i = 0; i < half; i++)
    CHECK(fabs(r.inv_freq[i] / pow(e.cfg.rope_theta, -2.0 * i / e.cfg.head_dim) - 1) < 1e-14,
          "default RoPE pair %d: %.17g\n", i, r.inv_freq[i]);
  preset("gptoss20b", &e);
  r = lab00_rope_table(&e.cfg);
  CHECK(fabs(r.scale - (0.1 * log(32.0) + 1)) < 1e-15, "YaRN factor %.17g\n", r.scale);
  CHECK(r.inv_freq[0] == 1.0, "YaRN pair 0: %.17g (below the correction range: unscaled)\n", r.inv_freq[0]);
  const double last = pow(150000.0, -2.0 * (half - 1) / 64) / 32;
  CHECK(fabs(r.inv_freq[half - 1] / last - 1) < 1e-14, "YaRN pair %d: %.17g, want %.17g\n", half - 1,
        r.inv_freq[half - 1], last);
  for (int i = 1; i < half; i++) CHECK(r.inv_freq[i] < r.inv_freq[i - 1], "YaRN pair %d not decreasing\n", i);
  printf("ok: RoPE table: default theta^(-2i/hd) x 1; YaRN x %.7f, pair 0 = 1, pair %d = theta^(-62/64)/32\n", r.scale,
         half - 1);
}

static void check_optional(void) {
  const MoeKind kinds[] = {MOE_Q_BIAS, MOE_K_BIAS, MOE_V_BIAS, MOE_O_BIAS, MOE_SINKS, MOE_ROUTER_BIAS,
                           MOE_GATE_BIAS, MOE_UP_BIAS, MOE_DOWN_BIAS};
  const char *names[] = {"gptoss20b_mixtral", "tiny_gptoss"};
  for (int m = 0; m < 2; m++) {
    Engine e;
    preset(names[m], &e);
    CHECK(moe_layout_build(&e.cfg, &e.lay) == 0, "layout of %s\n", names[m]);
    e.d_w = (__nv_bfloat16 *)(uintptr_t)0x10000;  // never dereferenced: offsets only
    const int oss = e.cfg.arch == MOE_ARCH_GPTOSS;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
      for (int l = 0; l < e.cfg.L; l++)
        for (int x = 0; x < e.cfg.E; x++) {
          const __nv_bfloat16 *p = lab00_w_opt(&e, kinds[k], l, x);
          if (!oss) {
            CHECK(p == NULL, "%s: %s of layer %d is not NULL\n", names[m], moe_kind_name(kinds[k]), l);
            continue;
          }
          const int i = moe_tensor_index(&e.lay, kinds[k], l, x);
          CHECK(i >= 0 && p == e.d_w + e.lay.t[i].offset && e.lay.t[i].layer == l,
                "%s: %s of layer %d expert %d at the wrong place\n", names[m], moe_kind_name(kinds[k]), l, x);
        }
    moe_layout_free(&e.lay);
  }
  printf("ok: optional tensors: the 9 gpt-oss bias/sink kinds found at their offsets, NULL for Mixtral\n");
}

int main(void) {
  check_configure();
  check_window();
  check_ring();
  check_kv_size();
  check_rope();
  check_optional();
  printf("lab00 plan_test: %s\n", fails ? "FAILED" : "all passed");
  return fails ? 1 : 0;
}
