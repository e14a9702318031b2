/* test_ch19_direct_sim.c — host simulation of ch19's register path, attn_fp8_direct_kernel
 * (ch19/attn_fp8_direct.cuh), for every CTA of one (sequence, KV head) and the split
 * combine: the cp.async tile loads through a shuffled block table (thread → rows and
 * chunks by fp8kv_load_row0, tiles aligned to multiples of the tile size, keys outside
 * [lo, end) zero-filled), ldmatrix / ldmatrix.trans on 64-byte FP8 rows, cvt e4m3x2 →
 * f16x2 of either half, the V byte permutes, mma.m16n8k16 f16 with fp32 accumulate, the
 * K/V scales, the per-warp power-of-two V-scale exponent, online softmax, the 4-warp merge,
 * sinks and the log-sum-exp combine, each emulated lane by lane from the PTX ISA's
 * definitions ("ldmatrix", "Matrix Fragments for mma.m16n8k16", "prmt", "cvt") with the
 * kernel's index expressions transcribed. The index maps are taken from ch19/fp8_kv.h
 * through a table of functions, so the same simulation also runs with deliberately wrong
 * maps and must then fail: the check is able to see a wrong map. Checked against attention
 * in double on the values the kernel reads (codes × scales). Both tile shapes (16 and 32
 * keys per warp), groups of 8 and 16 query heads, windows, ragged lengths, 1 to 5 splits. */
#include "cmocka_all.h"
#include <math.h>
#include <stdlib.h>
#include "convert.h"
#include "../ch19/fp8_kv.h"
#include "ptx_sim.h"
#include "ch19_direct_sim.h" /* Maps, sim_split, sim_attention: the simulated kernel */

/* rel_l2 of the simulated kernel against attention in double on codes × scales. */
static double run_case(const Maps *mp, int G, int kpw, int len, int window, int num_splits, int P, int swap,
                       int coalesced) {
  uint64_t seed = 99991ull + (uint64_t)G * 7 + (uint64_t)len * 131 + (uint64_t)window + (uint64_t)num_splits * 17;
#define RND(lo, hi) ((lo) + ((hi) - (lo)) * (((seed = seed * 6364136223846793005ull + 1442695040888963407ull) >> 33) / 2147483648.0f))
  const int n_pages = (len + P - 1) / P;
  float *q = malloc(sizeof(float) * G * 64), sinks[16], *out = malloc(sizeof(float) * G * 64);
  uint8_t *k8 = malloc((size_t)len * 64), *v8 = malloc((size_t)len * 64);
  uint8_t *kp = malloc((size_t)n_pages * P * 64), *vp = malloc((size_t)n_pages * P * 64);
  uint32_t *scw = malloc(4 * (size_t)len), *sp = malloc(4 * (size_t)n_pages * P);
  int32_t *table = malloc(4 * (size_t)n_pages);
  for (int i = 0; i < G * 64; i++) q[i] = gtl_round_bf16(RND(-2.f, 2.f));
  for (int h = 0; h < G; h++) sinks[h] = gtl_round_bf16(RND(0.f, 12.f));
  for (int j = 0; j < len; j++) {
    float kr[64], vr[64], ak = 0, av = 0;
    const float vmag = j % 37 == 5 ? 300.f : 1.f; /* a few rows with larger V scales: E grows */
    for (int d = 0; d < 64; d++) {
      kr[d] = gtl_round_bf16(RND(-2.f, 2.f)), vr[d] = gtl_round_bf16(vmag * RND(-0.5f, 1.5f));
      ak = fmaxf(ak, fabsf(kr[d])), av = fmaxf(av, fabsf(vr[d]));
    }
    const uint16_t bk = fp8kv_scale_bits(ak), bv = fp8kv_scale_bits(av);
    for (int d = 0; d < 64; d++) {
      k8[j * 64 + d] = gtl_f32_to_fp8e4m3(kr[d] / fp8kv_bf16_bits_to_float(bk));
      v8[j * 64 + d] = gtl_f32_to_fp8e4m3(vr[d] / fp8kv_bf16_bits_to_float(bv));
    }
    scw[j] = fp8kv_scale_pair(bk, bv);
  }
  for (int i = 0; i < n_pages; i++) table[i] = i;
  for (int i = n_pages - 1; i > 0; i--) { /* shuffled physical pages */
    const int k = (int)(RND(0.f, 1.f) * (i + 1)) % (i + 1), x = table[i];
    table[i] = table[k], table[k] = x;
  }
  memset(kp, 0xEE, (size_t)n_pages * P * 64), memset(vp, 0xEE, (size_t)n_pages * P * 64);
  memset(sp, 0xEE, 4 * (size_t)n_pages * P);
  for (int j = 0; j < len; j++) {
    const int64_t slot = (int64_t)table[j / P] * P + j % P;
    memcpy(kp + slot * 64, k8 + j * 64, 64), memcpy(vp + slot * 64, v8 + j * 64, 64);
    sp[slot] = scw[j];
  }
  const Problem pb = {G, kpw, len, window, num_splits, P, swap, coalesced, q, sinks, table, kp, vp, sp};
  loads_ok = 1;
  sim_attention(mp, &pb, out);
  const int lo = window > 0 && len > window ? len - window : 0;
  double num = 0, den = 0, *s = malloc(sizeof(double) * len);
  for (int h = 0; h < G; h++) {
    double m = sinks[h], l = 0, acc[64] = {0};
    for (int j = lo; j < len; j++) {
      const double skj = fp8kv_bf16_bits_to_float((uint16_t)(scw[j] & 0xFFFF));
      double dot = 0;
      for (int d = 0; d < 64; d++) dot += q[h * 64 + d] * (gtl_fp8e4m3_to_f32(k8[j * 64 + d]) * skj);
      s[j] = dot / 8, m = fmax(m, s[j]);
    }
    for (int j = lo; j < len; j++) {
      const double p = exp(s[j] - m), svj = fp8kv_bf16_bits_to_float((uint16_t)(scw[j] >> 16));
      l += p;
      for (int d = 0; d < 64; d++) acc[d] += p * gtl_fp8e4m3_to_f32(v8[j * 64 + d]) * svj;
    }
    l += exp(sinks[h] - m);
    for (int d = 0; d < 64; d++) {
      const double r = acc[d] / l;
      num += (out[h * 64 + d] - r) * (out[h * 64 + d] - r), den += r * r;
    }
  }
  free(q), free(out), free(k8), free(v8), free(kp), free(vp), free(scw), free(sp), free(table), free(s);
  const double rel = sqrt(num / den);
  return rel == rel && loads_ok ? rel : INFINITY; /* NaN, or a stage byte not loaded exactly once */
}

/* fp16 P (2^-11) and fp32 sums give ~5e-4; a scale in the wrong place or a wrong fragment map
 * gives 1e-2 and more (the wrong-map test below measures it). */
#define TOL 2e-3
static int g_coalesced; /* the tile-load map the check() cases use (both are run) */
static void check(int G, int kpw, int len, int window, int ns, int P) {
  for (g_coalesced = 0; g_coalesced < 2; g_coalesced++) {
    const double rel = run_case(&kMaps, G, kpw, len, window, ns, P, 0, g_coalesced);
    print_message("G=%d kpw=%d len=%d window=%d splits=%d page=%d loads %d: rel_l2 %.2e\n", G, kpw, len, window, ns,
                  P, g_coalesced, rel);
    assert_true(rel < TOL);
  }
}
static void kpw32_group8(void **state) {
  (void)state;
  check(8, 32, 700, 0, 1, 16);   /* ragged last tile */
  check(8, 32, 1000, 0, 3, 16);  /* splits, one tile partly past end */
  check(8, 32, 900, 200, 2, 4);  /* window: lo not a multiple of the tile, 4-token pages */
}
static void kpw32_group16(void **state) {
  (void)state;
  check(16, 32, 513, 0, 2, 8);
  check(16, 32, 1031, 128, 1, 16);
}
static void kpw16_both_groups(void **state) {
  (void)state;
  check(8, 16, 333, 0, 1, 16);
  check(16, 16, 777, 100, 5, 4);
}
static void check_swap(int kpw, int len, int window, int ns, int P) {
  for (g_coalesced = 0; g_coalesced < 2; g_coalesced++) {
    const double rel = run_case(&kMaps, 8, kpw, len, window, ns, P, 1, g_coalesced);
    print_message("swapped operands: kpw=%d len=%d window=%d splits=%d page=%d loads %d: rel_l2 %.2e\n", kpw, len,
                  window, ns, P, g_coalesced, rel);
    assert_true(rel < TOL);
  }
}
static void swapped_operands(void **state) {
  (void)state;
  check_swap(32, 700, 0, 1, 16);
  check_swap(32, 1000, 200, 3, 4);
  check_swap(16, 333, 0, 2, 8);
  check_swap(32, 5, 0, 3, 4);
}
static void short_sequences(void **state) {
  (void)state;
  check(8, 32, 1, 0, 1, 4);   /* one key */
  check(8, 32, 5, 0, 3, 4);   /* more splits than tiles: empty CTAs */
  check(16, 32, 130, 3, 1, 16);
}

/* Wrong maps: each must push the result past the tolerance. */
static int bad_k_row(int k, int w, int n, int l) { return fp8kv_k_row(k, w, n, l) ^ 1; }
static int bad_v_row(int k, int w, int kk, int l) { return w * k + 16 * kk + 8 * ((l >> 4) & 1) + (l & 7); }
static int bad_v_chunk(int sg, int l) { return 2 * sg + ((l >> 3) & 1); }
static int bad_qk_dim(int ks, int qc, int hi) { return 16 * ks + 2 * qc + 8 * hi; }
static int bad_pv_dim(int n, int qc, int e) { return 16 * (n >> 1) + 4 * qc + e + 2 * (n & 1); }
static int bad_load_row0(int t, int r) { return ((t >> 2) * (r >> 5) + (t & 3)) % r; }
static int bad_load_row(int t, int i, int r, int c) { return c ? (t >> 5) * (r >> 2) + 8 * i + ((t & 31) >> 3) : 0; }
static int bad_scale_row(int t, int r, int c) { return c && t < r ? t >> 1 : -1; }
static int bad_swap_dim(int ch, int qr, int odd) { return 16 * ch + qr + 8 * odd; }
static uint32_t bad_row_off(int r, int c) { return (uint32_t)(r * 64 + ((c ^ (r & 3)) << 4)); }
static void wrong_maps_fail(void **state) {
  (void)state;
  Maps m[8];
  for (int i = 0; i < 8; i++) m[i] = kMaps;
  m[0].k_row = bad_k_row;
  m[1].v_row = bad_v_row;
  m[2].v_chunk = bad_v_chunk;
  m[3].qk_dim = bad_qk_dim;
  m[4].pv_dim = bad_pv_dim;
  m[5].sel_even = 0x2020u, m[5].sel_odd = 0x3131u; /* the old one-source permute: keys 8..15 lost */
  m[6].sel_even = FP8KV_V_SEL_ODD, m[6].sel_odd = FP8KV_V_SEL_EVEN;
  m[7].row_off = bad_row_off; /* a swizzle the loads and reads agree on: must still pass */
  for (int i = 0; i < 7; i++) {
    const double rel = run_case(&m[i], 8, 32, 300, 0, 1, 16, 0, 0);
    print_message("wrong map %d: rel_l2 %.2e\n", i, rel);
    assert_true(rel > 10 * TOL);
  }
  assert_true(run_case(&m[7], 8, 32, 300, 0, 1, 16, 0, 0) < TOL);
  /* the swapped path reads K with the V pattern and writes Oᵀ through fp8kv_swap_dim */
  Maps w[5];
  for (int i = 0; i < 5; i++) w[i] = kMaps;
  w[0].v_row = bad_v_row;
  w[1].v_chunk = bad_v_chunk;
  w[2].qk_dim = bad_qk_dim;
  w[3].swap_dim = bad_swap_dim;
  w[4].sel_even = FP8KV_V_SEL_ODD, w[4].sel_odd = FP8KV_V_SEL_EVEN;
  for (int i = 0; i < 5; i++) {
    const double rel = run_case(&w[i], 8, 32, 300, 0, 1, 16, 1, 0);
    print_message("wrong map %d, swapped operands: rel_l2 %.2e\n", i, rel);
    assert_true(rel > 10 * TOL);
  }
}
/* The load map must write every byte of a stage exactly once (else run_case gives inf). */
static void wrong_load_map_fails(void **state) {
  (void)state;
  Maps m = kMaps;
  m.load_row0 = bad_load_row0;
  assert_true(run_case(&m, 8, 32, 300, 0, 1, 16, 0, 0) > 10 * TOL);
  m = kMaps;
  m.load_row = bad_load_row; /* rows of one warp overlap */
  assert_true(run_case(&m, 8, 32, 300, 0, 1, 16, 0, 1) > 10 * TOL);
  m = kMaps;
  m.scale_row = bad_scale_row; /* half the scale words loaded twice, half never */
  assert_true(run_case(&m, 8, 32, 300, 0, 1, 16, 0, 1) > 10 * TOL);
}

/* ATTN8D_WARP_SYNC's condition: with the coalesced map, every row and scale word a warp
 * copies is one of its own keys (w·kpw .. w·kpw + kpw − 1), so no other warp reads it. */
static void coalesced_loads_stay_in_the_warp(void **state) {
  (void)state;
  for (int kpw = 16; kpw <= 32; kpw += 16) {
    const int rows = 4 * kpw;
    for (int tid = 0; tid < 128; tid++) {
      for (int i = 0; i < rows / 32; i++) assert_int_equal(fp8kv_load_row(tid, i, rows, 1) / kpw, tid / 32);
      const int r = fp8kv_scale_row(tid, rows, 1);
      if (r >= 0) assert_int_equal(r / kpw, tid / 32);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(kpw32_group8),        cmocka_unit_test(kpw32_group16),
                                     cmocka_unit_test(kpw16_both_groups),   cmocka_unit_test(short_sequences),
                                     cmocka_unit_test(swapped_operands),
                                     cmocka_unit_test(coalesced_loads_stay_in_the_warp),
                                     cmocka_unit_test(wrong_maps_fail),     cmocka_unit_test(wrong_load_map_fails)};
  return cmocka_run_group_tests_name("ch19_direct_sim", tests, NULL, NULL);
}
