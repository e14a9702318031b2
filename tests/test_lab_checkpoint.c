/* test_lab_checkpoint.c — the lab's checkpoint layer (labs/moe/checkpoint.c): the layout
 * tiles its arena; the synthetic writer → HF loader round trip is bit-exact for one file
 * and for shards with an index, for BF16/F16/F32 storage and for the fused v5 expert
 * layout; corrupt or incomplete checkpoints are refused with the file, field or tensor
 * named (a missing tensor by name, a mis-shaped one with expected and found shapes). */
#include "cmocka_all.h"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "convert.h"

#include "tmpdir.h"

static char *tmp_dir(void) { return tmp_dir_named("test_lab_ckpt"); }

static void layout_tiles_the_arena(void **state) {
  (void)state;
  const char *names[] = {"mini", "tiny_mixtral", "tiny_qwen3"};
  for (int p = 0; p < 3; p++) {
    MoeConfig c;
    MoeLayout lay;
    moe_config_preset(names[p], &c);
    assert_int_equal(moe_layout_build(&c, &lay), 0);
    uint64_t params = 0;
    for (int i = 0; i < lay.n; i++) {
      const MoeTensor *t = &lay.t[i];
      assert_int_equal(t->offset % 64, 0);
      if (i + 1 < lay.n) assert_true(t->offset + moe_tensor_numel(t) <= lay.t[i + 1].offset);
      params += moe_tensor_numel(t);
    }
    assert_true(params == moe_params_total(&c));
    assert_true(lay.t[lay.n - 1].offset + moe_tensor_numel(&lay.t[lay.n - 1]) <= lay.numel);
    /* every (kind, layer, expert) finds the tensor that says so */
    for (int l = 0; l < c.L; l++)
      for (int e = 0; e < c.E; e++) {
        const MoeTensor *t = &lay.t[moe_tensor_index(&lay, MOE_UP, l, e)];
        assert_true(t->kind == MOE_UP && t->layer == l && t->expert == e);
      }
    const int lm = moe_tensor_index(&lay, MOE_LM_HEAD, 0, 0);
    assert_int_equal(lm == 0, c.tie_embeddings);
    assert_int_equal(moe_tensor_index(&lay, MOE_Q_NORM, 1, 0) >= 0, c.qk_norm);
    moe_layout_free(&lay);
  }
}

/* Every layout tensor read back equals expect(synthetic value). */
static void check_values(const MoeCheckpoint *ck, uint64_t seed, GtlStDtype stored) {
  uint16_t *got = (uint16_t *)malloc(ck->lay.max_numel * 2), *want = (uint16_t *)malloc(ck->lay.max_numel * 2);
  char err[512];
  for (int t = 0; t < ck->lay.n; t++) {
    const uint64_t n = moe_tensor_numel(&ck->lay.t[t]);
    moe_synth_tensor(&ck->lay, t, seed, want);
    if (stored == GTL_ST_F16) /* what F16 storage can hold, read back as bf16 */
      for (uint64_t i = 0; i < n; i++)
        want[i] = gtl_f32_to_bf16(gtl_fp16_to_f32(gtl_f32_to_fp16(gtl_bf16_to_f32(want[i]))));
    if (moe_ckpt_read_bf16(ck, t, got, err, sizeof err)) fail_msg("%s", err);
    if (memcmp(got, want, n * 2)) fail_msg("tensor %s differs", ck->lay.t[t].name);
  }
  free(got);
  free(want);
}

static void round_trip(const char *preset, GtlStDtype dt, uint64_t shard, int fused, int want_files) {
  MoeConfig c;
  moe_config_preset(preset, &c);
  char *dir = tmp_dir(), err[2048];
  MoeWriteOpts o = {dt, shard, fused};
  if (moe_ckpt_write_synthetic(dir, &c, 99, &o, err, sizeof err)) fail_msg("write: %s", err);
  MoeCheckpoint ck;
  if (moe_ckpt_open(dir, &ck, err, sizeof err)) fail_msg("open: %s", err);
  assert_int_equal(ck.n_files, want_files);
  assert_int_equal(ck.fused, fused);
  assert_int_equal(ck.n_unused, 0);
  assert_int_equal(ck.lay.cfg.L, c.L);
  assert_int_equal(ck.lay.cfg.tie_embeddings, c.tie_embeddings);
  check_values(&ck, 99, dt);
  moe_ckpt_close(&ck);
  rm_dir(dir);
}

static void round_trip_single_bf16(void **s) { (void)s; round_trip("tiny_mixtral", GTL_ST_BF16, 0, 0, 1); }
static void round_trip_sharded(void **s) { (void)s; round_trip("tiny_qwen3", GTL_ST_BF16, 150000, 0, 3); }
static void round_trip_f32(void **s) { (void)s; round_trip("tiny_qwen3", GTL_ST_F32, 0, 0, 1); }
static void round_trip_f16(void **s) { (void)s; round_trip("tiny_mixtral", GTL_ST_F16, 0, 0, 1); }
static void round_trip_fused_v5(void **s) {
  (void)s;
  round_trip("tiny_mixtral", GTL_ST_BF16, 0, 1, 1);
  round_trip("tiny_qwen3", GTL_ST_F32, 200000, 1, 5);
}

/* A one-file checkpoint of preset's plan with tensor `skip` left out and tensor `reshape`
 * given one column less (or dtype I32 when bad_dtype); zero data. */
static char *write_broken(const char *preset, const char *skip, const char *reshape, int bad_dtype) {
  MoeConfig c;
  moe_config_preset(preset, &c);
  char *dir = tmp_dir(), p[200], err[512];
  snprintf(p, sizeof p, "%s/config.json", dir);
  assert_int_equal(moe_config_write(p, &c, err, sizeof err), 0);
  MoeLayout lay;
  MoePlan plan;
  moe_layout_build(&c, &lay);
  moe_plan_build(&lay, 0, &plan);
  GtlStTensor *t = (GtlStTensor *)calloc((size_t)plan.n, sizeof(GtlStTensor));
  const void **data = (const void **)calloc((size_t)plan.n, sizeof(void *));
  static unsigned char zeros[1 << 20];
  size_t n = 0;
  for (int i = 0; i < plan.n; i++) {
    if (skip && !strcmp(plan.ft[i].name, skip)) continue;
    t[n].name = plan.ft[i].name;
    t[n].dtype = GTL_ST_BF16;
    t[n].ndim = plan.ft[i].ndim;
    for (int d = 0; d < t[n].ndim; d++) t[n].shape[d] = plan.ft[i].shape[d];
    if (reshape && !strcmp(plan.ft[i].name, reshape)) {
      if (bad_dtype) t[n].dtype = GTL_ST_I32;
      else t[n].shape[t[n].ndim - 1]--;
    }
    data[n++] = zeros;
  }
  snprintf(p, sizeof p, "%s/model.safetensors", dir);
  if (gtl_st_write(p, t, data, n, NULL, 0, err, sizeof err)) fail_msg("%s", err);
  free(t);
  free(data);
  moe_plan_free(&plan);
  moe_layout_free(&lay);
  return dir;
}

static void expect_refused(const char *dir, const char *const *needles, int n) {
  MoeCheckpoint ck;
  char err[2048];
  if (moe_ckpt_open(dir, &ck, err, sizeof err) == 0) fail_msg("%s accepted", dir);
  for (int i = 0; i < n; i++)
    if (!strstr(err, needles[i])) fail_msg("error '%s' lacks '%s'", err, needles[i]);
}

static void missing_tensor_named(void **state) {
  (void)state;
  char *dir = write_broken("tiny_mixtral", "model.layers.1.block_sparse_moe.experts.2.w3.weight", NULL, 0);
  const char *n[] = {"missing tensor model.layers.1.block_sparse_moe.experts.2.w3.weight",
                     "expected shape [96, 64]"};
  expect_refused(dir, n, 2);
  rm_dir(dir);
  dir = write_broken("tiny_mixtral", "lm_head.weight", NULL, 0);
  const char *n2[] = {"missing tensor lm_head.weight"};
  expect_refused(dir, n2, 1);
  rm_dir(dir);
}

static void misshaped_tensor_named(void **state) {
  (void)state;
  char *dir = write_broken("tiny_qwen3", NULL, "model.layers.0.self_attn.k_proj.weight", 0);
  const char *n[] = {"model.layers.0.self_attn.k_proj.weight", "expected shape [32, 64]",
                     "found [32, 63]"};
  expect_refused(dir, n, 3);
  rm_dir(dir);
  dir = write_broken("tiny_qwen3", NULL, "model.norm.weight", 1);
  const char *n2[] = {"model.norm.weight", "dtype I32"};
  expect_refused(dir, n2, 2);
  rm_dir(dir);
}

static void write_text(const char *dir, const char *name, const char *text) {
  char p[200];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  FILE *f = fopen(p, "w");
  fputs(text, f);
  fclose(f);
}

static void corrupt_files_named(void **state) {
  (void)state;
  MoeConfig c;
  moe_config_preset("tiny_mixtral", &c);
  char *dir = tmp_dir(), p[200], err[2048];
  MoeWriteOpts o = {GTL_ST_BF16, 100000, 0};
  assert_int_equal(moe_ckpt_write_synthetic(dir, &c, 5, &o, err, sizeof err), 0);
  /* a shard cut short: its header still parses, its tensors no longer fit */
  snprintf(p, sizeof p, "%s/model-00002-of-00004.safetensors", dir);
  assert_int_equal(truncate(p, 4000), 0);
  const char *n1[] = {"model-00002-of-00004.safetensors"};
  expect_refused(dir, n1, 1);
  /* a shard gone */
  unlink(p);
  expect_refused(dir, n1, 1);
  /* an index without weight_map */
  write_text(dir, "model.safetensors.index.json", "{\"metadata\": {}}");
  const char *n2[] = {"model.safetensors.index.json", "weight_map"};
  expect_refused(dir, n2, 2);
  /* no weights at all */
  snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
  unlink(p);
  const char *n3[] = {"no model.safetensors"};
  expect_refused(dir, n3, 1);
  /* config.json: malformed, and an unsupported setting */
  write_text(dir, "config.json", "{\"hidden_size\": 64,");
  const char *n4[] = {"config.json", "offset"};
  expect_refused(dir, n4, 2);
  write_text(dir, "config.json",
             "{\"architectures\":[\"Qwen3MoeForCausalLM\"],\"hidden_size\":64,\"num_hidden_layers\":2,"
             "\"num_attention_heads\":4,\"moe_intermediate_size\":48,\"num_experts\":8,"
             "\"num_experts_per_tok\":2,\"vocab_size\":128,\"decoder_sparse_step\":2}");
  const char *n5[] = {"decoder_sparse_step"};
  expect_refused(dir, n5, 1);
  rm_dir(dir);
  /* a single file whose header is garbage */
  dir = tmp_dir();
  snprintf(p, sizeof p, "%s/config.json", dir);
  moe_config_write(p, &c, err, sizeof err);
  write_text(dir, "model.safetensors", "\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": [1, 2}   ");
  const char *n6[] = {"model.safetensors"};
  expect_refused(dir, n6, 1);
  rm_dir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(layout_tiles_the_arena), cmocka_unit_test(round_trip_single_bf16),
      cmocka_unit_test(round_trip_sharded),     cmocka_unit_test(round_trip_f32),
      cmocka_unit_test(round_trip_f16),         cmocka_unit_test(round_trip_fused_v5),
      cmocka_unit_test(missing_tensor_named),   cmocka_unit_test(misshaped_tensor_named),
      cmocka_unit_test(corrupt_files_named),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
