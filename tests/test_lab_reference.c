/* test_lab_reference.c — the lab's CPU reference decoder and sampler (labs/moe/
 * reference.c, sampler.c).
 *
 * The fixtures tests/fixtures/lab_tiny_*.json hold, for the synthetic tiny_mixtral,
 * tiny_qwen3 and tiny_gptoss models (seeded weights of labs/moe/checkpoint.c), a 16-token sequence and
 * the reference's logits at three positions. They were written once by
 *     tests/bin/test_lab_reference --regenerate        (from the repository root)
 * and checked independently: labs/moe/hf_check.py writes each model as a Hugging Face
 * checkpoint (labs/00_baseline/decode --write-checkpoint), loads it with transformers'
 * MixtralForCausalLM / Qwen3MoeForCausalLM / GptOssForCausalLM in fp32 and compares their logits with the
 * stored ones (labs/00_baseline/README.md records the result). So this test pins the
 * reference to transformers' semantics without needing Python or a GPU here; and
 * tests/test_lab_tiny_independent.py recomputes all three fixtures with a
 * separate plain-Python forward pass of the same checkpoints (no GPU, no torch).
 *
 * With --model=DIR the binary is instead the reference as a decoder, for hf_check.py
 * (which compares it with transformers while the GPU layers lack gpt-oss):
 *     tests/bin/test_lab_reference --model=DIR --prompt-ids=1,2,3 --gen=32 --dump-logits=PATH
 * loads the checkpoint (moe_ckpt_read_bf16: F16/F32 rounded, MXFP4 decoded), writes the
 * teacher-forced logits of the prompt as float32 [P][V] and prints the greedy
 * continuation as "# generated[0]: t1 t2 …", the same flags and lines as the lab's decode;
 *     tests/bin/test_lab_reference --write-checkpoint=DIR --preset=tiny_gptoss --mxfp4
 * writes a synthetic checkpoint (--mxfp4: gpt-oss's experts as MXFP4 blocks and scales). */
#include "cmocka_all.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "reference.h"
#include "rng.h"
#include "sampler.h"

enum { FX_TOKENS = 16, FX_POS = 3 };
static const int fx_positions[FX_POS] = {0, 7, 15};
static const struct { const char *preset; uint64_t seed; } fixtures[] = {
    {"tiny_mixtral", 1234}, {"tiny_qwen3", 4321}, {"tiny_gptoss", 5678}};
enum { N_FIXTURES = (int)(sizeof fixtures / sizeof fixtures[0]) };

typedef struct {
  MoeLayout lay;
  uint16_t *arena;
  MoeArenaFetch fetch;
} Model;

static void model_make(Model *m, const char *preset, uint64_t seed) {
  MoeConfig c;
  if (moe_config_preset(preset, &c)) fail_msg("no preset %s", preset);
  assert_int_equal(moe_layout_build(&c, &m->lay), 0);
  m->arena = moe_synth_arena(&m->lay, seed);
  assert_non_null(m->arena);
  m->fetch.lay = &m->lay;
  m->fetch.arena = m->arena;
}

static void model_free(Model *m) {
  free(m->arena);
  moe_layout_free(&m->lay);
}

static void fixture_tokens(const Model *m, uint64_t seed, int *tok) {
  for (int i = 0; i < FX_TOKENS; i++) tok[i] = (int)gtl_uniform_u32(seed ^ 0xF1C5ull, (uint64_t)i, (uint32_t)m->lay.cfg.V);
}

/* Reference logits of one sequence at the fixture positions: out[FX_POS][V]. */
static void run_reference(Model *m, const int *tok, int threads, double *out) {
  const int V = m->lay.cfg.V;
  MoeRef r;
  assert_int_equal(moe_ref_init(&r, &m->lay, moe_ref_fetch_arena, &m->fetch, 1, FX_TOKENS, threads), 0);
  double *logits = (double *)malloc(sizeof(double) * V);
  for (int p = 0, k = 0; p < FX_TOKENS; p++) {
    moe_ref_step(&r, &tok[p], p, logits);
    if (k < FX_POS && p == fx_positions[k]) memcpy(out + (size_t)V * k++, logits, sizeof(double) * V);
  }
  free(logits);
  moe_ref_free(&r);
}

static void path_of(char *p, size_t n, const char *preset) {
  snprintf(p, n, "tests/fixtures/lab_%s.json", preset);
}

static void reference_matches_fixtures(void **state) {
  (void)state;
  for (int f = 0; f < N_FIXTURES; f++) {
    char path[128], err[256];
    path_of(path, sizeof path, fixtures[f].preset);
    GtlJson *j = gtl_json_parse_file(path, err, sizeof err);
    if (!j) fail_msg("%s (run from the repository root)", err);
    assert_string_equal(gtl_json_str(j, "preset"), fixtures[f].preset);
    assert_true(gtl_json_num(j, "seed", -1) == (double)fixtures[f].seed);
    Model m;
    model_make(&m, fixtures[f].preset, fixtures[f].seed);
    const int V = m.lay.cfg.V;
    int tok[FX_TOKENS];
    fixture_tokens(&m, fixtures[f].seed, tok);
    const GtlJson *jt = gtl_json_get(j, "tokens"), *jl = gtl_json_get(j, "logits");
    assert_true(jt && jt->n == FX_TOKENS && jl && jl->n == FX_POS);
    for (int i = 0; i < FX_TOKENS; i++) assert_true(gtl_json_at(jt, (size_t)i)->num == tok[i]);
    double *got = (double *)malloc(sizeof(double) * V * FX_POS);
    run_reference(&m, tok, 1, got);
    for (int k = 0; k < FX_POS; k++) {
      const GtlJson *row = gtl_json_at(jl, (size_t)k);
      assert_true(row && (int)row->n == V);
      double num = 0, den = 0, want_max = -INFINITY;
      int want_arg = 0;
      for (int v = 0; v < V; v++) {
        const double w = gtl_json_at(row, (size_t)v)->num, g = got[(size_t)k * V + v];
        num += (g - w) * (g - w);
        den += w * w;
        if (w > want_max) want_max = w, want_arg = v;
      }
      /* stored as %.9g: 1e-6 is far above print rounding, far below any semantic change */
      if (!(sqrt(num / den) <= 1e-6))
        fail_msg("%s position %d: rel_l2 %.3g vs the fixture", fixtures[f].preset, fx_positions[k], sqrt(num / den));
      assert_int_equal(moe_argmax_d(got + (size_t)k * V, V), want_arg);
    }
    free(got);
    model_free(&m);
    gtl_json_free(j);
  }
}

/* Rows of a batch are independent, and the thread count does not change a bit. */
static void rows_and_threads_independent(void **state) {
  (void)state;
  Model m;
  model_make(&m, "mini", 7);
  const int V = m.lay.cfg.V, T = 6;
  MoeRef one, two;
  assert_int_equal(moe_ref_init(&one, &m.lay, moe_ref_fetch_arena, &m.fetch, 1, T, 1), 0);
  assert_int_equal(moe_ref_init(&two, &m.lay, moe_ref_fetch_arena, &m.fetch, 2, T, 4), 0);
  two.min_parallel = 0; /* every product split over 4 threads */
  double *a = (double *)malloc(sizeof(double) * V), *b = (double *)malloc(sizeof(double) * 2 * V);
  for (int p = 0; p < T; p++) {
    const int tok1[1] = {(p * 37 + 5) % V}, tok2[2] = {tok1[0], (p * 101 + 9) % V};
    moe_ref_step(&one, tok1, p, a);
    moe_ref_step(&two, tok2, p, b);
    assert_memory_equal(a, b, sizeof(double) * V);
    assert_true(memcmp(b, b + V, sizeof(double) * V) != 0);
  }
  free(a);
  free(b);
  moe_ref_free(&one);
  moe_ref_free(&two);
  model_free(&m);
}

/* A fetch that, like the GPU engine's (labs/moe/weights.cuh, dev_fetch), copies every
 * tensor into ONE buffer: a pointer is valid only until the next fetch. */
typedef struct {
  MoeArenaFetch a;
  uint16_t *buf;
} OneBuffer;
static const uint16_t *fetch_one_buffer(void *user, int tensor, int64_t row0, int64_t n_rows) {
  OneBuffer *o = (OneBuffer *)user;
  const MoeTensor *t = &o->a.lay->t[tensor];
  const size_t n = t->cols ? (size_t)n_rows * (size_t)t->cols : (size_t)t->rows;
  memcpy(o->buf, moe_ref_fetch_arena(&o->a, tensor, row0, n_rows), n * 2);
  return o->buf;
}

/* The reference must not hold two fetched pointers at once: through a one-buffer fetch it
 * gives the arena fetch's logits bit for bit (every architecture; gpt-oss's gate and up
 * biases were once read as two pointers, so the gate got the up bias). */
static void one_buffer_fetch(void **state) {
  (void)state;
  const char *presets[] = {"tiny_mixtral", "tiny_qwen3", "tiny_gptoss"};
  for (int i = 0; i < 3; i++) {
    Model m;
    model_make(&m, presets[i], 99);
    const int V = m.lay.cfg.V, T = 5;
    OneBuffer ob = {m.fetch, (uint16_t *)malloc(m.lay.max_numel * 2)};
    MoeRef ra, rb;
    assert_int_equal(moe_ref_init(&ra, &m.lay, moe_ref_fetch_arena, &m.fetch, 2, T, 1), 0);
    assert_int_equal(moe_ref_init(&rb, &m.lay, fetch_one_buffer, &ob, 2, T, 1), 0);
    double *a = (double *)malloc(sizeof(double) * 2 * V), *b = (double *)malloc(sizeof(double) * 2 * V);
    for (int p = 0; p < T; p++) {
      const int tok[2] = {(p * 37 + 5) % V, (p * 101 + 9) % V};
      moe_ref_step(&ra, tok, p, a);
      moe_ref_step(&rb, tok, p, b);
      if (memcmp(a, b, sizeof(double) * 2 * V)) fail_msg("%s: one-buffer fetch differs at position %d", presets[i], p);
    }
    free(a);
    free(b);
    free(ob.buf);
    moe_ref_free(&ra);
    moe_ref_free(&rb);
    model_free(&m);
  }
}

static void router_topk(void **state) {
  (void)state;
  const double logits[5] = {0.5, 2.0, -1.0, 2.0, 1.0};
  int idx[3];
  double w[3];
  moe_route(logits, 5, 3, 0, idx, w);
  assert_int_equal(idx[0], 1); /* tie between 1 and 3: lower index first */
  assert_int_equal(idx[1], 3);
  assert_int_equal(idx[2], 4);
  double z = 0;
  for (int e = 0; e < 5; e++) z += exp(logits[e]);
  assert_true(fabs(w[0] - exp(2.0) / z) < 1e-15 && fabs(w[2] - exp(1.0) / z) < 1e-15);
  moe_route(logits, 5, 3, 1, idx, w);
  assert_true(fabs(w[0] + w[1] + w[2] - 1.0) < 1e-15);
  assert_true(fabs(w[2] - exp(1.0) / (2 * exp(2.0) + exp(1.0))) < 1e-15);
}

static void sampler(void **state) {
  (void)state;
  const float tie[4] = {1.0f, 3.0f, 3.0f, NAN};
  assert_int_equal(moe_argmax_f(tie, 4), 1);
  const float l[3] = {0.0f, logf(2.0f), logf(4.0f)}; /* p = 1/7, 2/7, 4/7 at T = 1 */
  double scratch[3];
  assert_int_equal(moe_sample(l, 3, 0.0, 1.0, 1, 0, scratch), 2);
  int count[3] = {0, 0, 0}, nucleus[3] = {0, 0, 0};
  const int n = 20000;
  for (int i = 0; i < n; i++) {
    count[moe_sample(l, 3, 1.0, 1.0, 42, (uint64_t)i, scratch)]++;
    nucleus[moe_sample(l, 3, 1.0, 0.6, 42, (uint64_t)i, scratch)]++; /* {2, 1}: mass 6/7 */
    assert_int_equal(moe_sample(l, 3, 1.0, 0.5, 42, (uint64_t)i, scratch), 2); /* 4/7 >= 0.5 */
  }
  assert_true(fabs(count[0] / (double)n - 1 / 7.0) < 0.015 && fabs(count[2] / (double)n - 4 / 7.0) < 0.015);
  assert_int_equal(nucleus[0], 0);
  assert_true(fabs(nucleus[2] / (double)n - 2 / 3.0) < 0.015);
  assert_int_equal(moe_sample(l, 3, 0.7, 0.9, 9, 123, scratch), moe_sample(l, 3, 0.7, 0.9, 9, 123, scratch));
}

static void token_ids(void **state) {
  (void)state;
  int ids[8];
  char err[128];
  assert_int_equal(moe_parse_ids("1,2, 3\n 7", 10, ids, 8, err, sizeof err), 4);
  assert_true(ids[0] == 1 && ids[3] == 7);
  assert_int_equal(moe_parse_ids("1,x", 10, ids, 8, err, sizeof err), -1);
  assert_non_null(strstr(err, "token 1"));
  assert_int_equal(moe_parse_ids("3,10", 10, ids, 8, err, sizeof err), -1);
  assert_non_null(strstr(err, "outside the vocabulary"));
  assert_int_equal(moe_parse_ids(" , ", 10, ids, 8, err, sizeof err), -1);
  assert_int_equal(moe_parse_ids("1 2 3", 10, ids, 2, err, sizeof err), -1);
}

/* --regenerate: write the fixtures from the current reference (then re-check them with
 * labs/moe/hf_check.py against transformers before committing). */
static int regenerate(void) {
  for (int f = 0; f < N_FIXTURES; f++) {
    Model m;
    model_make(&m, fixtures[f].preset, fixtures[f].seed);
    const int V = m.lay.cfg.V;
    int tok[FX_TOKENS];
    fixture_tokens(&m, fixtures[f].seed, tok);
    double *got = (double *)malloc(sizeof(double) * V * FX_POS);
    run_reference(&m, tok, 1, got);
    char path[128];
    path_of(path, sizeof path, fixtures[f].preset);
    FILE *out = fopen(path, "w");
    if (!out) return perror(path), 1;
    fprintf(out, "{\"about\": \"CPU reference logits (labs/moe/reference.c) of the synthetic %s model; "
                 "written by tests/bin/test_lab_reference --regenerate, checked against transformers by "
                 "labs/moe/hf_check.py\",\n \"preset\": \"%s\", \"seed\": %llu,\n \"tokens\": [",
            fixtures[f].preset, fixtures[f].preset, (unsigned long long)fixtures[f].seed);
    for (int i = 0; i < FX_TOKENS; i++) fprintf(out, "%s%d", i ? ", " : "", tok[i]);
    fprintf(out, "],\n \"positions\": [%d, %d, %d],\n \"logits\": [", fx_positions[0], fx_positions[1], fx_positions[2]);
    for (int k = 0; k < FX_POS; k++) {
      fprintf(out, "%s\n  [", k ? "," : "");
      for (int v = 0; v < V; v++) fprintf(out, "%s%.9g", v ? "," : "", got[(size_t)k * V + v]);
      fprintf(out, "]");
    }
    fprintf(out, "]}\n");
    fclose(out);
    printf("wrote %s\n", path);
    free(got);
    model_free(&m);
  }
  return 0;
}

/* --write-checkpoint=DIR --preset=NAME [--seed=N] [--mxfp4] [--shard-bytes=N]: the
 * synthetic writer (gpt-oss with --mxfp4: MXFP4 experts), for hf_check.py. */
static int write_model(const char *dir, const char *preset, uint64_t seed, int mxfp4, uint64_t shard) {
  MoeConfig c;
  char err[1024];
  if (!preset || moe_config_preset(preset, &c)) return fprintf(stderr, "--preset: one of %s\n", moe_config_preset_names()), 2;
  if (mxfp4 && c.arch != MOE_ARCH_GPTOSS) return fprintf(stderr, "--mxfp4: gpt-oss presets only\n"), 2;
  if (mxfp4) c.expert_format = MOE_WF_MXFP4;
  const MoeWriteOpts o = {GTL_ST_BF16, shard, 1};
  if (moe_ckpt_write_synthetic(dir, &c, seed, &o, err, sizeof err)) return fprintf(stderr, "error: %s\n", err), 1;
  printf("wrote %s: %s, seed %llu%s\n", dir, c.name, (unsigned long long)seed, mxfp4 ? ", MXFP4 experts" : "");
  return 0;
}

/* --model=DIR …: the reference as a decoder (see the top of this file). Exit 0, 1 on a
 * load/IO error, 2 on bad flags. */
static int decode_model(int argc, char **argv) {
  const char *dir = NULL, *ids_arg = NULL, *dump = NULL, *wdir = NULL, *preset = NULL;
  int gen = 32, threads = 8, mxfp4 = 0;
  uint64_t seed = 42, shard = 0;
  for (int i = 1; i < argc; i++) {
    if (!strncmp(argv[i], "--write-checkpoint=", 19)) wdir = argv[i] + 19;
    else if (!strncmp(argv[i], "--preset=", 9)) preset = argv[i] + 9;
    else if (!strncmp(argv[i], "--seed=", 7)) seed = strtoull(argv[i] + 7, NULL, 10);
    else if (!strncmp(argv[i], "--shard-bytes=", 14)) shard = strtoull(argv[i] + 14, NULL, 10);
    else if (!strcmp(argv[i], "--mxfp4")) mxfp4 = 1;
    else if (!strncmp(argv[i], "--model=", 8)) dir = argv[i] + 8;
    else if (!strncmp(argv[i], "--prompt-ids=", 13)) ids_arg = argv[i] + 13;
    else if (!strncmp(argv[i], "--dump-logits=", 14)) dump = argv[i] + 14;
    else if (!strncmp(argv[i], "--gen=", 6)) gen = atoi(argv[i] + 6);
    else if (!strncmp(argv[i], "--threads=", 10)) threads = atoi(argv[i] + 10);
    else if (strncmp(argv[i], "--warmup=", 9) && strncmp(argv[i], "--stage-steps=", 14)) { /* decode's, ignored */
      fprintf(stderr, "usage: %s --model=DIR --prompt-ids=1,2,3 [--gen=32] [--dump-logits=PATH] [--threads=8]\n", argv[0]);
      return 2;
    }
  }
  if (wdir) return write_model(wdir, preset, seed, mxfp4, shard);
  MoeCheckpoint ck;
  char err[2048];
  if (!dir || !ids_arg || gen < 1 || threads < 1) {
    fprintf(stderr, "usage: %s --model=DIR --prompt-ids=1,2,3 [--gen=32] [--dump-logits=PATH]\n", argv[0]);
    return 2;
  }
  if (moe_ckpt_open(dir, &ck, err, sizeof err)) return fprintf(stderr, "error: %s\n", err), 1;
  const MoeLayout *lay = &ck.lay;
  const int V = lay->cfg.V;
  int *ids = (int *)malloc(sizeof(int) * 65536);
  const int P = moe_parse_ids(ids_arg, V, ids, 65536 - gen, err, sizeof err);
  if (P < 1) return fprintf(stderr, "--prompt-ids: %s\n", err), 2;
  uint16_t *arena = (uint16_t *)calloc((size_t)lay->numel, 2);
  for (int t = 0; arena && t < lay->n; t++)
    if (moe_ckpt_read_bf16(&ck, t, arena + lay->t[t].offset, err, sizeof err)) return fprintf(stderr, "error: %s\n", err), 1;
  if (!arena) return fprintf(stderr, "error: out of host memory\n"), 1;
  printf("# reference: %s, %s, L=%d D=%d E=%d top_k=%d V=%d; %d bf16 + %d F16 + %d F32 + %d MXFP4 tensors, %d strided\n",
         dir, moe_arch_name(lay->cfg.arch), lay->cfg.L, lay->cfg.D, lay->cfg.E, lay->cfg.top_k, V, ck.n_bf16, ck.n_f16,
         ck.n_f32, ck.n_mxfp4, ck.n_strided);
  MoeArenaFetch fa = {lay, arena};
  MoeRef r;
  if (moe_ref_init(&r, lay, moe_ref_fetch_arena, &fa, 1, P + gen, threads)) return fprintf(stderr, "error: out of memory\n"), 1;
  double *logits = (double *)malloc(sizeof(double) * V);
  float *row = (float *)malloc(sizeof(float) * V);
  FILE *fd = dump ? fopen(dump, "wb") : NULL;
  if (dump && !fd) return perror(dump), 1;
  for (int p = 0; p < P; p++) {
    moe_ref_step(&r, &ids[p], p, logits);
    for (int v = 0; v < V; v++) row[v] = (float)logits[v];
    if (fd && fwrite(row, sizeof(float), (size_t)V, fd) != (size_t)V) return perror(dump), 1;
  }
  if (fd && fclose(fd)) return perror(dump), 1;
  printf("# generated[0]:");
  for (int i = 0; i < gen; i++) {
    const int next = moe_argmax_d(logits, V);
    printf(" %d", next);
    if (i + 1 < gen) moe_ref_step(&r, &next, P + i, logits);
  }
  printf("\n");
  moe_ref_free(&r);
  free(logits);
  free(row);
  free(arena);
  free(ids);
  moe_ckpt_close(&ck);
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--regenerate") == 0) return regenerate();
  if (argc > 1 && strncmp(argv[1], "--", 2) == 0) return decode_model(argc, argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(reference_matches_fixtures), cmocka_unit_test(rows_and_threads_independent),
      cmocka_unit_test(one_buffer_fetch),
      cmocka_unit_test(router_topk),                cmocka_unit_test(sampler),
      cmocka_unit_test(token_ids),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
