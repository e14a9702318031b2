/* test_lab_config.c — the lab's model config (labs/moe/config.c): preset sizes against
 * the published model sizes, the distinct-expert formula, Hugging
 * Face config.json for both architectures (v4 and v5 spellings), each unsupported
 * setting refused with its field named, config.json write → read round trips, and the
 * keys a sliding-window layer reads (moe_kv_positions) in the step bytes. */
#include "cmocka_all.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static void presets_match_the_design(void **state) {
  (void)state;
  MoeConfig c;
  assert_int_equal(moe_config_preset("gptoss20b", &c), 0);
  /* gpt-oss-20b: ≈20.9B params (41.8 GB bf16), 3.6B active: 596 tok/s at 4.3 TB/s */
  const double total = (double)moe_params_total(&c), active = (double)moe_params_active(&c);
  assert_true(total > 20.85e9 && total < 20.95e9);
  assert_true(total * 2 > 41.7e9 && total * 2 < 41.9e9);
  assert_true(active > 3.55e9 && active < 3.65e9);
  const double tok_s = 4.3e12 / moe_step_bytes(&c, 1, 0, 2, 2);
  assert_true(tok_s > 590 && tok_s < 600);
  assert_int_equal(c.E, 32);
  assert_int_equal(c.top_k, 4);
  assert_int_equal(c.V, 201088);
  assert_int_equal(moe_config_preset("qwen3moe", &c), 0);
  assert_true(c.qk_norm && c.norm_topk_prob && c.E == 128 && c.top_k == 8 && c.F == 768);
  const double q_total = (double)moe_params_total(&c); /* Qwen3-30B-A3B: 30.5B */
  assert_true(q_total > 30.0e9 && q_total < 31.0e9);
  assert_int_equal(moe_config_preset("mini", &c), 0);
  assert_true(c.L == 4 && c.D == 256 && c.E == 8 && c.top_k == 2 && c.F == 512 && c.V == 2048);
  assert_int_equal(moe_config_preset("gpt-oss", &c), -1);
  char err[256];
  const char *names[] = {"gptoss20b", "gptoss120b", "gptoss20b_mixtral", "qwen3moe", "mini", "tiny_mixtral",
                         "tiny_qwen3", "tiny_gptoss"};
  for (int i = 0; i < 8; i++) {
    assert_int_equal(moe_config_preset(names[i], &c), 0);
    assert_int_equal(moe_config_check(&c, err, sizeof err), 0);
    assert_non_null(strstr(moe_config_preset_names(), names[i]));
  }
  /* gpt-oss-20b's shapes with Mixtral semantics: no gpt-oss extras, 3 F·D per expert */
  assert_int_equal(moe_config_preset("gptoss20b_mixtral", &c), 0);
  assert_true(c.arch == MOE_ARCH_MIXTRAL && !c.attn_bias && !c.attn_sinks && !c.router_bias && !c.expert_bias);
  assert_true(c.sliding_window == 0 && c.rope_type == MOE_ROPE_DEFAULT && c.act == MOE_ACT_SILU);
  assert_true(moe_params_expert(&c) == 3ull * 2880 * 2880);
  assert_int_equal(moe_config_preset("gptoss20b", &c), 0);
  assert_true(c.arch == MOE_ARCH_GPTOSS && moe_params_expert(&c) == 3ull * 2880 * 2880 + 3 * 2880);
  assert_int_equal(moe_config_preset("gptoss120b", &c), 0); /* gpt-oss-120b: 116.8B total, 5.1B active */
  assert_true(c.L == 36 && c.E == 128 && c.top_k == 4);
  assert_true(moe_params_total(&c) > 116.5e9 && moe_params_total(&c) < 117.2e9);
  assert_true(moe_params_active(&c) > 5.0e9 && moe_params_active(&c) < 5.2e9);
}

static void distinct_experts(void **state) {
  (void)state;
  assert_true(moe_expected_experts(32, 4, 1) == 4.0);
  assert_true(moe_expected_experts(128, 8, 1) > 8 - 1e-9 && moe_expected_experts(128, 8, 1) < 8 + 1e-9);
  const double e64 = moe_expected_experts(32, 4, 64); /* 32·(1 − 0.875^64) */
  assert_true(e64 > 31.99 && e64 < 32.0);
  const double q64 = moe_expected_experts(128, 8, 64); /* 128·(1 − (15/16)^64) ≈ 125.6 */
  assert_true(q64 > 125 && q64 < 126);
  MoeConfig c;
  moe_config_preset("gptoss20b", &c);
  /* batch 64 reads every expert: about 8x the weight bytes of batch 1, plus KV */
  const double b1 = moe_step_bytes(&c, 1, 0, 2, 2), b64 = moe_step_bytes(&c, 64, 0, 2, 2);
  assert_true(b64 / b1 > 5.5 && b64 / b1 < 6.5);
  assert_true(moe_step_bytes(&c, 1, 1000, 2, 2) > b1);
}

/* Sliding-window layers read only the window's keys: moe_kv_positions against a count
 * from the definition (layer l of gpt-oss-20b slides iff l is even; key k is read at
 * query position pos iff k <= pos and, on a sliding layer, pos − 128 < k), and the step
 * bytes lower by exactly those keys' K/V rows. Models without a window: ctx + 1 per layer. */
static void window_keys(void **state) {
  (void)state;
  MoeConfig c, full;
  assert_int_equal(moe_config_preset("gptoss20b", &c), 0);
  assert_true(c.L == 24 && c.sliding_window == 128 && c.H_kv == 8 && c.head_dim == 64);
  full = c;
  full.sliding_window = 0; /* the same model charged the full context on every layer */
  const int ctxs[] = {0, 1, 126, 127, 128, 129, 130, 255, 512, 543, 4095};
  for (size_t i = 0; i < sizeof ctxs / sizeof ctxs[0]; i++) {
    const int pos = ctxs[i]; /* ctx cached keys: the query sits at position ctx */
    long keys = 0;
    for (int l = 0; l < 24; l++)
      for (int k = 0; k <= pos; k++) keys += l % 2 == 1 || k > pos - 128;
    assert_true(moe_kv_positions(&c, pos) == (double)keys);
    assert_true(moe_kv_positions(&full, pos) == 24.0 * (pos + 1));
    /* bytes: 2 (K and V) · H_kv · head_dim · kv_bytes per key, B sequences */
    for (int B = 1; B <= 64; B *= 64) {
      const double saved = (double)B * 2 * 8 * 64 * 2 * (24.0 * (pos + 1) - keys);
      assert_true(fabs(moe_step_bytes(&full, B, pos, 2, 2) - moe_step_bytes(&c, B, pos, 2, 2) - saved) < 1);
      assert_true(fabs(moe_step_bytes_fmt(&full, B, pos, MOE_WF_MXFP4, MOE_WF_BF16, 2) -
                       moe_step_bytes_fmt(&c, B, pos, MOE_WF_MXFP4, MOE_WF_BF16, 2) - saved) < 1);
    }
    if (pos <= 127) assert_true(keys == 24L * (pos + 1)); /* inside the window: nothing saved */
  }
  /* batch 1, a 512-token prompt: the 12 sliding layers read 128 keys instead of 513 */
  const double mx = moe_step_bytes_fmt(&c, 1, 512, MOE_WF_MXFP4, MOE_WF_BF16, 2);
  const double mx_full = moe_step_bytes_fmt(&full, 1, 512, MOE_WF_MXFP4, MOE_WF_BF16, 2);
  assert_true(fabs(mx_full - mx - 12.0 * 385 * 2 * 8 * 64 * 2) < 1);
  printf("gptoss20b B1 ctx 512, MXFP4 experts: window saves %.0f bytes per step (%.2f%% of %.0f)\n", mx_full - mx,
         100 * (mx_full - mx) / mx, mx);
  /* Mixtral semantics and Qwen3: no window, every layer ctx + 1 */
  const char *none[] = {"gptoss20b_mixtral", "qwen3moe", "mini"};
  for (int m = 0; m < 3; m++) {
    assert_int_equal(moe_config_preset(none[m], &c), 0);
    assert_true(c.sliding_window == 0);
    assert_true(moe_kv_positions(&c, 1000) == c.L * 1001.0);
    assert_true(moe_kv_positions(&c, 10.5) == c.L * 11.5);
  }
}

/* Parse a JSON text as config.json. */
static int parse(const char *text, MoeConfig *c, char *err, size_t n) {
  char e2[200];
  GtlJson *j = gtl_json_parse(text, strlen(text), e2, sizeof e2);
  if (!j) fail_msg("bad test JSON: %s", e2);
  const int rc = moe_config_from_hf(j, c, err, n);
  gtl_json_free(j);
  return rc;
}

static const char *mixtral_json =
    "{\"architectures\":[\"MixtralForCausalLM\"],\"model_type\":\"mixtral\",\"hidden_size\":64,"
    "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
    "\"intermediate_size\":96,\"num_local_experts\":4,\"num_experts_per_tok\":2,\"vocab_size\":128,"
    "\"rms_norm_eps\":1e-05,\"rope_theta\":10000.0,\"hidden_act\":\"silu\",\"sliding_window\":null,"
    "\"tie_word_embeddings\":false,\"head_dim\":null}";

static void hf_mixtral(void **state) {
  (void)state;
  MoeConfig c;
  char err[256];
  assert_int_equal(parse(mixtral_json, &c, err, sizeof err), 0);
  assert_int_equal(c.arch, MOE_ARCH_MIXTRAL);
  assert_true(c.D == 64 && c.L == 2 && c.H == 4 && c.H_kv == 2 && c.F == 96 && c.E == 4);
  assert_int_equal(c.head_dim, 16); /* null head_dim: hidden_size / heads */
  assert_true(c.norm_topk_prob && !c.qk_norm && !c.tie_embeddings && c.sliding_window == 0);
  assert_true(c.rope_theta == 10000.0 && c.rms_eps == 1e-5);
  /* transformers v5: rope_theta inside rope_parameters */
  const char *v5 =
      "{\"model_type\":\"mixtral\",\"hidden_size\":64,\"num_hidden_layers\":2,"
      "\"num_attention_heads\":4,\"intermediate_size\":96,\"num_local_experts\":4,"
      "\"num_experts_per_tok\":2,\"vocab_size\":128,\"head_dim\":32,"
      "\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":500000.0}}";
  assert_int_equal(parse(v5, &c, err, sizeof err), 0);
  assert_true(c.rope_theta == 500000.0 && c.head_dim == 32 && c.H_kv == 4);
}

static void hf_qwen3(void **state) {
  (void)state;
  MoeConfig c;
  char err[256];
  const char *q =
      "{\"architectures\":[\"Qwen3MoeForCausalLM\"],\"hidden_size\":64,\"num_hidden_layers\":3,"
      "\"num_attention_heads\":4,\"num_key_value_heads\":1,\"head_dim\":32,\"intermediate_size\":999,"
      "\"moe_intermediate_size\":48,\"num_experts\":8,\"num_experts_per_tok\":3,\"vocab_size\":128,"
      "\"decoder_sparse_step\":1,\"mlp_only_layers\":[],\"rope_theta\":1000000.0,"
      "\"tie_word_embeddings\":true,\"use_sliding_window\":false,\"sliding_window\":4096}";
  assert_int_equal(parse(q, &c, err, sizeof err), 0);
  assert_int_equal(c.arch, MOE_ARCH_QWEN3);
  assert_true(c.qk_norm && !c.norm_topk_prob && c.tie_embeddings);
  assert_true(c.F == 48 && c.E == 8 && c.top_k == 3 && c.head_dim == 32 && c.L == 3);
  assert_true(c.rms_eps == 1e-6); /* Qwen3MoeConfig's default */
  /* transformers 5.17 saves Qwen3-MoE's expert count as num_local_experts */
  const char *v5 =
      "{\"architectures\":[\"Qwen3MoeForCausalLM\"],\"hidden_size\":64,\"num_hidden_layers\":2,"
      "\"num_attention_heads\":4,\"moe_intermediate_size\":48,\"num_local_experts\":16,"
      "\"num_experts_per_tok\":2,\"vocab_size\":128,\"rope_parameters\":{\"rope_theta\":10000.0,"
      "\"rope_type\":\"default\"}}";
  assert_int_equal(parse(v5, &c, err, sizeof err), 0);
  assert_true(c.E == 16 && c.rope_theta == 10000.0);
}

/* text with `from` replaced by `to` must be refused naming `field` */
static void refused(const char *base, const char *from, const char *to, const char *field) {
  char text[2048], err[256];
  const char *p = strstr(base, from);
  if (!p) fail_msg("'%s' not in base", from);
  snprintf(text, sizeof text, "%.*s%s%s", (int)(p - base), base, to, p + strlen(from));
  MoeConfig c;
  if (parse(text, &c, err, sizeof err) == 0) fail_msg("accepted %s", to);
  if (!strstr(err, field)) fail_msg("error '%s' does not name %s", err, field);
}

static void hf_unsupported_named(void **state) {
  (void)state;
  const char *q =
      "{\"architectures\":[\"Qwen3MoeForCausalLM\"],\"hidden_size\":64,\"num_hidden_layers\":2,"
      "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"moe_intermediate_size\":48,"
      "\"num_experts\":8,\"num_experts_per_tok\":2,\"vocab_size\":128,\"decoder_sparse_step\":1,"
      "\"mlp_only_layers\":[],\"hidden_act\":\"silu\",\"rope_scaling\":null,\"attention_bias\":false,"
      "\"use_sliding_window\":false}";
  refused(q, "\"decoder_sparse_step\":1", "\"decoder_sparse_step\":2", "decoder_sparse_step");
  refused(q, "\"mlp_only_layers\":[]", "\"mlp_only_layers\":[0]", "mlp_only_layers");
  refused(q, "\"hidden_act\":\"silu\"", "\"hidden_act\":\"gelu\"", "hidden_act");
  refused(q, "\"rope_scaling\":null", "\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4}", "rope_type");
  refused(q, "\"attention_bias\":false", "\"attention_bias\":true", "attention_bias");
  refused(q, "\"use_sliding_window\":false", "\"use_sliding_window\":true", "use_sliding_window");
  refused(q, "\"hidden_size\":64,", "", "hidden_size");
  refused(q, "\"num_experts_per_tok\":2", "\"num_experts_per_tok\":9", "num_experts_per_tok");
  refused(q, "\"num_key_value_heads\":2", "\"num_key_value_heads\":3", "num_key_value_heads");
  refused(q, "\"num_experts\":8", "\"num_experts\":\"eight\"", "num_experts");
  refused(q, "\"num_experts\":8,", "", "num_experts");
  refused(q, "Qwen3MoeForCausalLM", "LlamaForCausalLM", "architectures");
  refused(mixtral_json, "\"num_local_experts\":4,", "", "num_local_experts");
}

static void write_read_round_trip(void **state) {
  (void)state;
  const char *names[] = {"gptoss20b", "qwen3moe", "mini", "tiny_mixtral", "tiny_qwen3"};
  char path[] = "/tmp/test_lab_config_XXXXXX", err[256];
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  for (int i = 0; i < 5; i++) {
    MoeConfig a, b;
    moe_config_preset(names[i], &a);
    assert_int_equal(moe_config_write(path, &a, err, sizeof err), 0);
    if (moe_config_read(path, &b, err, sizeof err)) fail_msg("%s: %s", names[i], err);
    assert_true(a.arch == b.arch && a.L == b.L && a.D == b.D && a.H == b.H && a.H_kv == b.H_kv);
    assert_true(a.head_dim == b.head_dim && a.E == b.E && a.top_k == b.top_k && a.F == b.F);
    assert_true(a.V == b.V && a.qk_norm == b.qk_norm && a.norm_topk_prob == b.norm_topk_prob);
    assert_true(a.tie_embeddings == b.tie_embeddings && a.rms_eps == b.rms_eps &&
                a.rope_theta == b.rope_theta);
  }
  unlink(path);
  MoeConfig c;
  assert_int_equal(moe_config_read("/nonexistent/config.json", &c, err, sizeof err), -1);
  assert_non_null(strstr(err, "/nonexistent/config.json"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(presets_match_the_design), cmocka_unit_test(distinct_experts),
      cmocka_unit_test(hf_mixtral),               cmocka_unit_test(hf_qwen3),
      cmocka_unit_test(hf_unsupported_named),     cmocka_unit_test(write_read_round_trip),
      cmocka_unit_test(window_keys),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
