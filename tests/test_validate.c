/* test_validate.c — NaN-safe comparison, tolerance edges, guard bands (common/validate.c). */
#include "cmocka_all.h"
#include <math.h>
#include <string.h>
#include "validate.h"

static void identical_outputs_pass(void **state) {
  (void)state;
  float out[] = {1, -2, 3.5f};
  double ref[] = {1, -2, 3.5};
  GtlErr e;
  assert_true(gtl_compare(out, ref, 3, gtl_tol_for(GTL_FP32), &e));
  assert_true(e.rel_l2 == 0 && e.max_abs == 0 && e.n_bad == 0);
}

static void a_nan_fails_even_with_huge_tolerance(void **state) {
  (void)state;
  float out[] = {1, NAN, 3};
  double ref[] = {1, 2, 3};
  GtlTol loose = {1e30, 1e30, 1e30};
  GtlErr e;
  assert_false(gtl_compare(out, ref, 3, loose, &e));
  assert_int_equal(e.n_nan, 1);
  assert_int_equal(e.n_bad, 1);
  assert_int_equal(e.worst, 1);
  assert_true(isnan(e.max_abs));
}

static void poisoned_bf16_reads_as_nan_and_fails(void **state) {
  (void)state;
  /* 0xFFFF as bf16 is a NaN: an element the kernel never wrote */
  uint32_t bits = 0xFFFF0000u;
  float poison;
  memcpy(&poison, &bits, 4);
  float out[] = {0.5f, poison};
  double ref[] = {0.5, 0.25};
  GtlErr e;
  assert_false(gtl_compare(out, ref, 2, gtl_tol_for(GTL_BF16), &e));
}

static void rel_l2_edge_is_inclusive(void **state) {
  (void)state;
  /* out = ref·(1+1e-3): rel_l2 = 1e-3 exactly at the fp16 bound (elements within 4e-3) */
  float out[4];
  double ref[4] = {1, 2, 4, 8};
  for (int i = 0; i < 4; i++) out[i] = (float)(ref[i] * 1.00099);
  GtlErr e;
  assert_true(gtl_compare(out, ref, 4, gtl_tol_for(GTL_FP16), &e));
  for (int i = 0; i < 4; i++) out[i] = (float)(ref[i] * 1.0011);
  assert_false(gtl_compare(out, ref, 4, gtl_tol_for(GTL_FP16), &e));
  assert_true(e.rel_l2 > 1e-3 && e.n_bad == 0); /* fails on rel_l2 alone */
}

static void one_outlier_fails_the_element_check(void **state) {
  (void)state;
  enum { N = 1000 };
  float out[N];
  double ref[N];
  for (int i = 0; i < N; i++) ref[i] = out[i] = (float)(i % 7) - 3.0f;
  out[500] += 0.5f; /* rel_l2 ~ 0.5/sqrt(4000) = 7.9e-3 alone would fail bf16; check element */
  GtlErr e;
  GtlTol t = {1.0, 1e-2, 1e-2};
  assert_false(gtl_compare(out, ref, N, t, &e));
  assert_int_equal(e.n_bad, 1);
  assert_int_equal(e.worst, 500);
}

static void tolerance_table_is_ordered_by_precision(void **state) {
  (void)state;
  /* Formats from most to least precise, with their explicit mantissa bits (IEEE 754
   * binary32 23, TF32 10, binary16 10, bfloat16 7, FP8 E4M3 3): a format with fewer
   * mantissa bits must never get a tighter tolerance, and strictly fewer bits must get a
   * strictly looser one. */
  const struct { GtlDtype d; int mantissa_bits; } f[] = {
      {GTL_FP32, 23}, {GTL_TF32, 10}, {GTL_FP16, 10}, {GTL_BF16, 7}, {GTL_FP8E4M3, 3}};
  for (size_t i = 1; i < sizeof f / sizeof f[0]; i++) {
    const double prev = gtl_tol_for(f[i - 1].d).rel_l2, cur = gtl_tol_for(f[i].d).rel_l2;
    assert_true(cur >= prev);
    if (f[i].mantissa_bits < f[i - 1].mantissa_bits) assert_true(cur > prev);
  }
  /* and the starting values themselves (the program contract's table) */
  assert_true(gtl_tol_for(GTL_FP32).rel_l2 == 1e-6);
  assert_true(gtl_tol_for(GTL_TF32).rel_l2 == 1e-3);
  assert_true(gtl_tol_for(GTL_FP16).rel_l2 == 1e-3);
  assert_true(gtl_tol_for(GTL_BF16).rel_l2 == 5e-3);
  assert_true(gtl_tol_for(GTL_FP8E4M3).rel_l2 == 2e-2);
  assert_string_equal(gtl_dtype_name(GTL_BF16), "bf16");
}

static void sum_tolerance_grows_with_sqrt_k_only_for_fp32(void **state) {
  (void)state;
  GtlTol t = gtl_tol_for_sum(GTL_FP32, 2880); /* 2·sqrt(2880)·2^-24 = 6.40e-6 */
  assert_true(fabs(t.rel_l2 - 6.3966e-6) < 1e-9);
  assert_true(gtl_tol_for_sum(GTL_FP32, 16).rel_l2 == 1e-6); /* the table value wins */
  assert_true(gtl_tol_for_sum(GTL_BF16, 2880).rel_l2 == 5e-3);
  assert_true(gtl_tol_for_sum(GTL_INT32, 2880).rel_l2 == 0);
}

static void integer_compare_is_exact(void **state) {
  (void)state;
  int32_t ref[] = {3, 1, 4, 1, 5};
  int32_t out[] = {3, 1, 4, 1, 5};
  GtlErr e;
  assert_true(gtl_compare_i32(out, ref, 5, &e));
  out[3] = 2;
  assert_false(gtl_compare_i32(out, ref, 5, &e));
  assert_int_equal(e.worst, 3);
  assert_int_equal(e.n_bad, 1);
}

static void guard_band_counts_changed_bytes(void **state) {
  (void)state;
  unsigned char band[GTL_GUARD_BYTES];
  memset(band, GTL_GUARD_BYTE, sizeof band);
  assert_int_equal(gtl_guard_count_bad(band, sizeof band), 0);
  band[0] = 0;
  band[GTL_GUARD_BYTES - 1] = 0xFF;
  assert_int_equal(gtl_guard_count_bad(band, sizeof band), 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(identical_outputs_pass), cmocka_unit_test(a_nan_fails_even_with_huge_tolerance),
      cmocka_unit_test(poisoned_bf16_reads_as_nan_and_fails), cmocka_unit_test(rel_l2_edge_is_inclusive),
      cmocka_unit_test(one_outlier_fails_the_element_check),
      cmocka_unit_test(tolerance_table_is_ordered_by_precision),
      cmocka_unit_test(sum_tolerance_grows_with_sqrt_k_only_for_fp32),
      cmocka_unit_test(integer_compare_is_exact), cmocka_unit_test(guard_band_counts_changed_bytes)};
  return cmocka_run_group_tests_name("validate", tests, NULL, NULL);
}
