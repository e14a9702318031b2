/* test_stats.c — percentiles and summary statistics (common/stats.c). */
#include "cmocka_all.h"
#include <math.h>
#include "stats.h"

/* numpy.percentile([1,2,3,4], [50,95,99]) = 2.5, 3.85, 3.97 (linear, type 7) */
static void percentiles_match_numpy(void **state) {
  (void)state;
  double x[] = {1, 2, 3, 4};
  assert_true(fabs(gtl_percentile_sorted(x, 4, 50) - 2.5) < 1e-12);
  assert_true(fabs(gtl_percentile_sorted(x, 4, 95) - 3.85) < 1e-12);
  assert_true(fabs(gtl_percentile_sorted(x, 4, 99) - 3.97) < 1e-12);
  assert_true(gtl_percentile_sorted(x, 4, 0) == 1);
  assert_true(gtl_percentile_sorted(x, 4, 100) == 4);
}

static void stats_of_unsorted_samples(void **state) {
  (void)state;
  float x[] = {5, 1, 4, 2, 3};
  GtlStats s;
  assert_int_equal(gtl_stats_compute(x, 5, &s), 0);
  assert_int_equal(s.n, 5);
  assert_true(s.median == 3 && s.min == 1 && s.max == 5 && s.mean == 3);
  assert_true(fabs(s.stddev - sqrt(2.5)) < 1e-12); /* sample stddev, n-1 */
  assert_true(fabs(s.p95 - 4.8) < 1e-9);
  assert_true(x[0] == 5); /* input untouched */
}

static void one_sample_has_zero_spread(void **state) {
  (void)state;
  float x[] = {0.25f};
  GtlStats s;
  assert_int_equal(gtl_stats_compute(x, 1, &s), 0);
  assert_true(s.median == 0.25 && s.p99 == 0.25 && s.stddev == 0);
}

static void rejects_empty_and_nonfinite(void **state) {
  (void)state;
  float x[] = {1, NAN, 2};
  GtlStats s;
  assert_int_equal(gtl_stats_compute(x, 0, &s), -1);
  assert_int_equal(gtl_stats_compute(x, 3, &s), -1);
  assert_int_equal(s.n, 0);
}

static void p99_of_100_samples_sits_near_the_top(void **state) {
  (void)state;
  float x[100];
  for (int i = 0; i < 100; i++) x[i] = (float)(100 - i); /* 100..1 */
  GtlStats s;
  assert_int_equal(gtl_stats_compute(x, 100, &s), 0);
  assert_true(fabs(s.median - 50.5) < 1e-9);
  assert_true(fabs(s.p99 - 99.01) < 1e-9); /* 1 + 0.99*99 */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(percentiles_match_numpy), cmocka_unit_test(stats_of_unsorted_samples),
      cmocka_unit_test(one_sample_has_zero_spread), cmocka_unit_test(rejects_empty_and_nonfinite),
      cmocka_unit_test(p99_of_100_samples_sits_near_the_top)};
  return cmocka_run_group_tests_name("stats", tests, NULL, NULL);
}
