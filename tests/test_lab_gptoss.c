/* test_lab_gptoss.c — gpt-oss in the lab's host model core (labs/moe/): MXFP4 decoding
 * bit-exact for every nibble and several scale exponents against values computed here
 * from the E2M1 definition; YaRN's frequencies and cos/sin factor against the closed
 * form; the sliding-window edge (positions 127, 128, 129); a real-format gpt-oss-20b
 * config.json (tests/fixtures/lab_gptoss20b_config.json, written from the fields of the
 * released config); the writer → loader round trip of dense (interleaved gate/up,
 * transposed) and MXFP4 checkpoints; a corrupt _scales shape refused with the tensor
 * named; the bytes model with MXFP4 experts. */
#include "cmocka_all.h"
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "convert.h"
#include "mxfp4.h"
#include "reference.h"

#include "tmpdir.h"

static char *tmp_dir(void) { return tmp_dir_named("test_lab_gptoss"); }

/* E2M1 from its definition (OCP MX v1.0): sign bit 3, exponent bits 2-1 (bias 1), mantissa
 * bit 0; exponent 0 is subnormal (0 or 0.5). Scaled by 2^(s−127) by repeated doubling. */
static double e2m1_def(unsigned n, int s) {
  const int e = (n >> 1) & 3, m = n & 1;
  double v = e == 0 ? 0.5 * m : (1.0 + 0.5 * m) * (double)(1 << (e - 1));
  for (int k = 127; k < s; k++) v *= 2.0;
  for (int k = s; k < 127; k++) v *= 0.5;
  return (n & 8) ? -v : v;
}

static void mxfp4_every_nibble_and_scale(void **state) {
  (void)state;
  const int scales[] = {1, 100, 119, 122, 123, 124, 125, 126, 127, 128, 130, 140, 200, 253};
  for (size_t k = 0; k < sizeof scales / sizeof scales[0]; k++)
    for (unsigned n = 0; n < 16; n++) {
      /* a row of 32 inputs: byte b = nibble n low, nibble 15 − n high */
      uint8_t blocks[16], sc = (uint8_t)scales[k];
      uint16_t out[32];
      for (int b = 0; b < 16; b++) blocks[b] = (uint8_t)(n | ((15u - n) << 4));
      moe_mxfp4_decode_row(blocks, &sc, 32, out);
      const double lo = e2m1_def(n, scales[k]), hi = e2m1_def(15u - n, scales[k]);
      for (int b = 0; b < 16; b++) {
        const float g0 = gtl_bf16_to_f32(out[2 * b]), g1 = gtl_bf16_to_f32(out[2 * b + 1]);
        if (g0 != (float)lo || !signbit(g0) != !signbit(lo) || g1 != (float)hi || !signbit(g1) != !signbit(hi))
          fail_msg("nibble %u scale %d: got %g/%g want %g/%g", n, scales[k], g0, g1, lo, hi);
        /* exact in bf16: the low 16 bits of the fp32 are zero */
        union { float f; uint32_t u; } x = {(float)lo};
        assert_int_equal(x.u & 0xFFFF, 0);
      }
    }
  /* two blocks of one row: the second block's scale applies to inputs 32..63 */
  uint8_t blocks[32], sc[2] = {127, 129};
  uint16_t out[64];
  for (int b = 0; b < 32; b++) blocks[b] = (uint8_t)(0x2 | (0x9 << 4)); /* 1.0 low, −0.5 high */
  moe_mxfp4_decode_row(blocks, sc, 64, out);
  assert_true(gtl_bf16_to_f32(out[0]) == 1.0f && gtl_bf16_to_f32(out[1]) == -0.5f);
  assert_true(gtl_bf16_to_f32(out[32]) == 4.0f && gtl_bf16_to_f32(out[63]) == -2.0f);
  /* past fp32's range: ±inf, as torch.ldexp gives in bf16 */
  assert_true(isinf(moe_mxfp4_value(7, 255)) && moe_mxfp4_value(15, 255) < 0);
}

static void yarn_closed_form(void **state) {
  (void)state;
  MoeConfig c;
  assert_int_equal(moe_config_preset("gptoss20b", &c), 0);
  double inv[32], low, high;
  const double ms = moe_rope_inv_freq(&c, inv, &low, &high);
  /* the values gpt-oss's settings give (factor 32, beta 32/1, original 4096, theta 150000) */
  assert_true(fabs(low - 8.092779) < 1e-6 && fabs(high - 17.398025) < 1e-6);
  assert_true(fabs(ms - 1.3465736) < 1e-7);
  assert_true(fabs(ms - (0.1 * log(32.0) + 1.0)) < 1e-15);
  const double lo = 64 * log(4096 / (32 * 2 * M_PI)) / (2 * log(150000.0));
  const double hi = 64 * log(4096 / (1 * 2 * M_PI)) / (2 * log(150000.0));
  for (int i = 0; i < 32; i++) {
    const double pf = pow(150000.0, 2.0 * i / 64), r = fmin(fmax((i - lo) / (hi - lo), 0), 1);
    const double want = (1 / pf) * (1 - r) + (1 / (32 * pf)) * r;
    if (!(fabs(inv[i] - want) <= 1e-15 * want)) fail_msg("inv_freq[%d] = %.17g, want %.17g", i, inv[i], want);
    if (i <= 8) assert_true(inv[i] == 1 / pf);           /* below low: extrapolated (kept) */
    if (i >= 18) assert_true(fabs(inv[i] * 32 * pf - 1) < 1e-15); /* above high: interpolated */
  }
  c.yarn_truncate = 1; /* truncate true: floor / ceil */
  moe_rope_inv_freq(&c, inv, &low, &high);
  assert_true(low == 8.0 && high == 18.0);
  moe_config_preset("tiny_mixtral", &c); /* default RoPE: theta^(−2i/d), factor 1 */
  assert_true(moe_rope_inv_freq(&c, inv, NULL, NULL) == 1.0);
  assert_true(inv[3] == pow(10000.0, -6.0 / 16));
}

/* Logits of tiny_gptoss at positions 0..n-1 (seed 11), into out[n][V]. */
static void run_tiny(const MoeConfig *c, int n, double *out) {
  MoeLayout lay;
  assert_int_equal(moe_layout_build(c, &lay), 0);
  uint16_t *arena = moe_synth_arena(&lay, 11);
  MoeArenaFetch fa = {&lay, arena};
  MoeRef r;
  assert_int_equal(moe_ref_init(&r, &lay, moe_ref_fetch_arena, &fa, 1, n, 2), 0);
  for (int p = 0; p < n; p++) {
    const int tok = (p * 53 + 7) % c->V;
    moe_ref_step(&r, &tok, p, out + (size_t)p * c->V);
  }
  moe_ref_free(&r);
  free(arena);
  moe_layout_free(&lay);
}

static void sliding_window_edge(void **state) {
  (void)state;
  MoeConfig w, full;
  moe_config_preset("tiny_gptoss", &w);
  assert_true(moe_layer_window(&w, 0) == 128 && moe_layer_window(&w, 1) == 0);
  full = w;
  full.sliding_window = 0; /* the same model, every layer full attention */
  assert_true(moe_layer_window(&full, 0) == 0);
  const int n = 130, V = w.V;
  double *a = (double *)malloc(sizeof(double) * n * V), *b = (double *)malloc(sizeof(double) * n * V);
  run_tiny(&w, n, a);
  run_tiny(&full, n, b);
  /* position 127 sees keys 0..127 (128 keys) either way; 128 loses key 0; 129 keys 0, 1 */
  for (int p = 0; p <= 127; p++) assert_memory_equal(a + (size_t)p * V, b + (size_t)p * V, sizeof(double) * V);
  for (int p = 128; p <= 129; p++) {
    double d = 0;
    for (int v = 0; v < V; v++) d = fmax(d, fabs(a[(size_t)p * V + v] - b[(size_t)p * V + v]));
    if (!(d > 1e-6)) fail_msg("position %d: the window changed nothing (max diff %g)", p, d);
  }
  free(a);
  free(b);
}

static int parse_text(const char *text, MoeConfig *c, char *err, size_t n) {
  char e2[200];
  GtlJson *j = gtl_json_parse(text, strlen(text), e2, sizeof e2);
  if (!j) fail_msg("bad test JSON: %s", e2);
  const int rc = moe_config_from_hf(j, c, err, n);
  gtl_json_free(j);
  return rc;
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("%s: missing (run from the repository root)", path);
  static char buf[1 << 16];
  const size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

/* text with the first `from` replaced by `to`, must be refused naming `field`. */
static void refused(const char *text, const char *from, const char *to, const char *field) {
  char buf[1 << 16], err[400];
  const char *at = strstr(text, from);
  if (!at) fail_msg("test text lacks %s", from);
  snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
  MoeConfig c;
  if (parse_text(buf, &c, err, sizeof err) == 0) fail_msg("accepted %s", to);
  if (!strstr(err, field)) fail_msg("error '%s' does not name %s", err, field);
}

static void config_fixture(void **state) {
  (void)state;
  const char *text = read_text("tests/fixtures/lab_gptoss20b_config.json");
  MoeConfig c, p;
  char err[400];
  if (parse_text(text, &c, err, sizeof err)) fail_msg("%s", err);
  moe_config_preset("gptoss20b", &p);
  assert_int_equal(c.arch, MOE_ARCH_GPTOSS);
  assert_true(c.L == 24 && c.D == 2880 && c.F == 2880 && c.H == 64 && c.H_kv == 8 && c.head_dim == 64);
  assert_true(c.E == 32 && c.top_k == 4 && c.V == 201088 && c.rms_eps == 1e-5 && c.rope_theta == 150000.0);
  assert_true(c.sliding_window == 128 && c.n_layer_types == 24 && !c.tie_embeddings && c.norm_topk_prob);
  for (int l = 0; l < 24; l++) assert_int_equal(c.layer_sliding[l], l % 2 == 0);
  assert_true(c.attn_bias && c.attn_sinks && c.router_bias && c.expert_bias && c.act == MOE_ACT_SWIGLU_CLAMP);
  assert_true(c.swiglu_limit == 7.0 && c.swiglu_alpha == 1.702);
  assert_true(c.rope_type == MOE_ROPE_YARN && c.yarn_factor == 32 && c.yarn_beta_fast == 32 && c.yarn_beta_slow == 1);
  assert_true(c.yarn_orig_max_pos == 4096 && !c.yarn_truncate && c.max_pos == 131072);
  assert_true(fabs(c.yarn_attn_factor - 1.3465736) < 1e-7);
  assert_int_equal(c.expert_format, MOE_WF_MXFP4);
  /* the preset is the same model, stored in bf16 */
  c.expert_format = MOE_WF_BF16;
  snprintf(c.name, sizeof c.name, "%s", p.name);
  assert_memory_equal(&c, &p, sizeof c);
  /* what this reader cannot honour is refused with the field named */
  refused(text, "\"full_attention\"", "\"chunked_attention\"", "layer_types[1]");
  refused(text, "\"sliding_attention\",", "", "layer_types");
  refused(text, "\"quant_method\": \"mxfp4\"", "\"quant_method\": \"fp8\"", "quant_method");
  refused(text, "\"truncate\": false", "\"truncate\": false, \"mscale\": 1.0", "mscale");
  refused(text, "\"factor\": 32.0", "\"factor\": 16.0", "factor");
  refused(text, "\"rope_type\": \"yarn\"", "\"rope_type\": \"llama3\"", "rope_type");
  refused(text, "\"intermediate_size\": 2880", "\"intermediate_size\": 2890", "divisible by 32");
  /* GptOssConfig's defaults fill what a config leaves out */
  const char *bare = "{\"architectures\":[\"GptOssForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":64,"
                     "\"num_hidden_layers\":3,\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":16,"
                     "\"num_local_experts\":4,\"experts_per_token\":2,\"vocab_size\":128}";
  if (parse_text(bare, &c, err, sizeof err)) fail_msg("%s", err);
  assert_true(c.top_k == 2 && c.sliding_window == 128 && c.n_layer_types == 3 && c.layer_sliding[2] && !c.layer_sliding[1]);
  assert_true(c.rope_type == MOE_ROPE_YARN && c.yarn_factor == 32 && c.rope_theta == 150000.0 && c.attn_bias);
  /* written and read back: the same config */
  char *dir = tmp_dir(), path[200];
  moe_config_preset("gptoss120b", &p);
  assert_true(p.L == 36 && p.E == 128 && p.top_k == 4);
  p.expert_format = MOE_WF_MXFP4;
  snprintf(path, sizeof path, "%s/config.json", dir);
  assert_int_equal(moe_config_write(path, &p, err, sizeof err), 0);
  if (moe_config_read(path, &c, err, sizeof err)) fail_msg("%s", err);
  snprintf(c.name, sizeof c.name, "%s", p.name);
  assert_memory_equal(&c, &p, sizeof c);
  rm_dir(dir);
}

static void sizes_and_bytes(void **state) {
  (void)state;
  MoeConfig c;
  moe_config_preset("gptoss20b", &c);
  const double total = (double)moe_params_total(&c), active = (double)moe_params_active(&c);
  assert_true(total > 20.9e9 && total < 20.92e9); /* gpt-oss-20b: 20.9B, 3.6B active */
  assert_true(active > 3.6e9 && active < 3.62e9);
  const double bf = moe_step_bytes_fmt(&c, 1, 0, MOE_WF_BF16, MOE_WF_BF16, 2);
  assert_true(fabs(bf - moe_step_bytes(&c, 1, 0, 2, 2)) < 1);
  const double expert_w = (double)c.L * c.top_k * 3.0 * c.F * c.D; /* expert matrices read at batch 1 */
  const double mx = moe_step_bytes_fmt(&c, 1, 0, MOE_WF_MXFP4, MOE_WF_BF16, 2);
  assert_true(fabs((bf - mx) - expert_w * (2 - 4.25 / 8)) < 1);
  const double f8 = moe_step_bytes_fmt(&c, 1, 0, MOE_WF_FP8, MOE_WF_BF16, 2);
  assert_true(fabs((bf - f8) - expert_w) < 1);
  assert_true(moe_weight_bits(MOE_WF_MXFP4) == 4.25);
}

/* Write tiny_gptoss (dense or MXFP4), open it, return the checkpoint. */
static void write_open(MoeWeightFormat fmt, GtlStDtype dt, uint64_t shard, char **dir, MoeCheckpoint *ck) {
  MoeConfig c;
  moe_config_preset("tiny_gptoss", &c);
  c.expert_format = fmt;
  char err[2048];
  *dir = tmp_dir();
  MoeWriteOpts o = {dt, shard, 1};
  if (moe_ckpt_write_synthetic(*dir, &c, 77, &o, err, sizeof err)) fail_msg("write: %s", err);
  if (moe_ckpt_open(*dir, ck, err, sizeof err)) fail_msg("open: %s", err);
  assert_int_equal(ck->n_unused, 0);
  assert_int_equal(ck->lay.cfg.arch, MOE_ARCH_GPTOSS);
  assert_int_equal(ck->lay.cfg.expert_format, fmt);
}

/* Raw element i of file tensor name (as bf16 bits from BF16 storage, or a byte). */
static unsigned raw(const MoeCheckpoint *ck, const char *name, uint64_t i) {
  for (int f = 0; f < ck->n_files; f++) {
    const GtlStTensor *t = gtl_st_find(&ck->st[f], name);
    if (!t) continue;
    const size_t es = gtl_st_dtype_size(t->dtype);
    unsigned char b[2] = {0, 0};
    assert_int_equal(pread(ck->fd[f], b, es, (off_t)(ck->st[f].data_offset + t->begin + i * es)), (ssize_t)es);
    return es == 2 ? (unsigned)(b[0] | (b[1] << 8)) : b[0];
  }
  fail_msg("no tensor %s", name);
  return 0;
}

static void dense_round_trip(void **state) {
  (void)state;
  char *dir;
  MoeCheckpoint ck;
  write_open(MOE_WF_BF16, GTL_ST_BF16, 60000, &dir, &ck);
  assert_true(ck.n_files > 1 && ck.n_strided == ck.lay.cfg.L * ck.lay.cfg.E * 6);
  const MoeLayout *lay = &ck.lay;
  const int D = lay->cfg.D, F = lay->cfg.F;
  uint16_t *got = (uint16_t *)malloc(lay->max_numel * 2), *want = (uint16_t *)malloc(lay->max_numel * 2);
  char err[512];
  for (int t = 0; t < lay->n; t++) { /* every tensor: the synthetic values back */
    moe_synth_tensor(lay, t, 77, want);
    if (moe_ckpt_read_bf16(&ck, t, got, err, sizeof err)) fail_msg("%s", err);
    if (memcmp(got, want, moe_tensor_numel(&lay->t[t]) * 2)) fail_msg("%s differs", lay->t[t].name);
  }
  /* and where they sit in the file: gate f of expert e is gate_up_proj[e][d][2f], up f is
   * [e][d][2f+1], down is down_proj[e][i][h]; the biases interleave the same way */
  const int e = 3, l = 1, f = 5, d = 17;
  moe_synth_tensor(lay, moe_tensor_index(lay, MOE_GATE, l, e), 77, want);
  assert_int_equal(raw(&ck, "model.layers.1.mlp.experts.gate_up_proj", ((uint64_t)e * D + d) * 2 * F + 2 * f), want[f * D + d]);
  moe_synth_tensor(lay, moe_tensor_index(lay, MOE_UP, l, e), 77, want);
  assert_int_equal(raw(&ck, "model.layers.1.mlp.experts.gate_up_proj", ((uint64_t)e * D + d) * 2 * F + 2 * f + 1), want[f * D + d]);
  moe_synth_tensor(lay, moe_tensor_index(lay, MOE_DOWN, l, e), 77, want);
  assert_int_equal(raw(&ck, "model.layers.1.mlp.experts.down_proj", ((uint64_t)e * F + f) * D + d), want[d * F + f]);
  moe_synth_tensor(lay, moe_tensor_index(lay, MOE_UP_BIAS, l, e), 77, want);
  assert_int_equal(raw(&ck, "model.layers.1.mlp.experts.gate_up_proj_bias", (uint64_t)e * 2 * F + 2 * f + 1), want[f]);
  free(got);
  free(want);
  moe_ckpt_close(&ck);
  rm_dir(dir);
}

static void mxfp4_round_trip(void **state) {
  (void)state;
  char *dir;
  MoeCheckpoint ck;
  write_open(MOE_WF_MXFP4, GTL_ST_BF16, 0, &dir, &ck);
  const MoeLayout *lay = &ck.lay;
  const int D = lay->cfg.D, F = lay->cfg.F, G = D / 32, E = lay->cfg.E;
  assert_int_equal(ck.n_mxfp4, lay->cfg.L * E * 3);
  uint16_t *got = (uint16_t *)malloc(lay->max_numel * 2);
  char err[512];
  int nib[16] = {0}, sc[256] = {0};
  for (int l = 0; l < lay->cfg.L; l++)
    for (int e = 0; e < E; e++)
      for (int up = 0; up < 2; up++) { /* gate/up row f is blocks row 2f / 2f+1: decoded here by hand */
        char bn[96], sn[96];
        snprintf(bn, sizeof bn, "model.layers.%d.mlp.experts.gate_up_proj_blocks", l);
        snprintf(sn, sizeof sn, "model.layers.%d.mlp.experts.gate_up_proj_scales", l);
        const int t = moe_tensor_index(lay, up ? MOE_UP : MOE_GATE, l, e);
        if (moe_ckpt_read_bf16(&ck, t, got, err, sizeof err)) fail_msg("%s", err);
        for (int f = 0; f < F; f++)
          for (int i = 0; i < D; i++) {
            const uint64_t row = (uint64_t)e * 2 * F + 2 * f + up;
            const unsigned byte = raw(&ck, bn, (row * G + i / 32) * 16 + (i % 32) / 2), s = raw(&ck, sn, row * G + i / 32);
            const unsigned n = i % 2 ? byte >> 4 : byte & 15;
            nib[n]++;
            sc[s]++;
            const double want = e2m1_def(n, (int)s);
            const float g = gtl_bf16_to_f32(got[f * D + i]);
            if (g != (float)want || !signbit(g) != !signbit(want))
              fail_msg("layer %d expert %d %s[%d][%d]: %g, want %g", l, e, up ? "up" : "gate", f, i, g, want);
          }
      }
  for (int n = 0; n < 16; n++) assert_true(nib[n] > 0); /* every nibble seen */
  int n_sc = 0;
  for (int s = 0; s < 256; s++) n_sc += sc[s] > 0;
  assert_true(n_sc >= 4); /* several scale exponents */
  /* down of the last expert, against the rows of down_proj_blocks */
  const int t = moe_tensor_index(lay, MOE_DOWN, 1, E - 1);
  if (moe_ckpt_read_bf16(&ck, t, got, err, sizeof err)) fail_msg("%s", err);
  const uint64_t row = (uint64_t)(E - 1) * D + 9;
  const unsigned byte = raw(&ck, "model.layers.1.mlp.experts.down_proj_blocks", (row * (F / 32) + 1) * 16 + 3);
  const unsigned s = raw(&ck, "model.layers.1.mlp.experts.down_proj_scales", row * (F / 32) + 1);
  assert_true(gtl_bf16_to_f32(got[9 * F + 32 + 7]) == (float)e2m1_def(byte >> 4, (int)s));
  free(got);
  moe_ckpt_close(&ck);
  rm_dir(dir);
}

/* An MXFP4 checkpoint whose tensor `bad` has its last dim one short (or dtype BF16). */
static void corrupt_scales_named(void **state) {
  (void)state;
  const char *cases[][3] = {
      {"model.layers.0.mlp.experts.gate_up_proj_scales", "expected shape [4, 128, 2]", "found [4, 128, 1]"},
      {"model.layers.1.mlp.experts.down_proj_scales", "expected shape [4, 64, 2]", "found [4, 64, 1]"},
      {"model.layers.1.mlp.experts.down_proj_blocks", "dtype BF16, expected U8", "MXFP4 blocks"}};
  for (int k = 0; k < 3; k++) {
    MoeConfig c;
    moe_config_preset("tiny_gptoss", &c);
    c.expert_format = MOE_WF_MXFP4;
    char *dir = tmp_dir(), p[200], err[2048];
    snprintf(p, sizeof p, "%s/config.json", dir);
    assert_int_equal(moe_config_write(p, &c, err, sizeof err), 0);
    MoeLayout lay;
    MoePlan plan;
    moe_layout_build(&c, &lay);
    moe_plan_build(&lay, 1, &plan);
    GtlStTensor *t = (GtlStTensor *)calloc((size_t)plan.n, sizeof(GtlStTensor));
    const void **data = (const void **)calloc((size_t)plan.n, sizeof(void *));
    static unsigned char zeros[1 << 20];
    for (int i = 0; i < plan.n; i++) {
      t[i].name = plan.ft[i].name;
      t[i].dtype = plan.ft[i].role == MOE_FT_FLOAT ? GTL_ST_BF16 : GTL_ST_U8;
      t[i].ndim = plan.ft[i].ndim;
      for (int d = 0; d < t[i].ndim; d++) t[i].shape[d] = plan.ft[i].shape[d];
      if (!strcmp(plan.ft[i].name, cases[k][0])) {
        if (k == 2) t[i].dtype = GTL_ST_BF16;
        else t[i].shape[t[i].ndim - 1]--;
      }
      data[i] = zeros;
    }
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if (gtl_st_write(p, t, data, (size_t)plan.n, NULL, 0, err, sizeof err)) fail_msg("%s", err);
    MoeCheckpoint ck;
    if (moe_ckpt_open(dir, &ck, err, sizeof err) == 0) fail_msg("%s accepted", cases[k][0]);
    for (int i = 0; i < 3; i++)
      if (!strstr(err, cases[k][i])) fail_msg("error '%s' lacks '%s'", err, cases[k][i]);
    free(t);
    free(data);
    moe_plan_free(&plan);
    moe_layout_free(&lay);
    rm_dir(dir);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(mxfp4_every_nibble_and_scale), cmocka_unit_test(yarn_closed_form),
      cmocka_unit_test(sliding_window_edge),          cmocka_unit_test(config_fixture),
      cmocka_unit_test(sizes_and_bytes),              cmocka_unit_test(dense_round_trip),
      cmocka_unit_test(mxfp4_round_trip),             cmocka_unit_test(corrupt_scales_named),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
