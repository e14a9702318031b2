/* stats.c — order statistics (see stats.h). */
#include "stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double gtl_percentile_sorted(const double *s, int n, double p) {
  if (n <= 0) return NAN;
  if (p <= 0) return s[0];
  if (p >= 100) return s[n - 1];
  double h = (n - 1) * (p / 100.0);
  int lo = (int)floor(h);
  int hi = lo + 1 < n ? lo + 1 : n - 1;
  return s[lo] + (h - lo) * (s[hi] - s[lo]);
}

int gtl_stats_compute(const float *x, int n, GtlStats *out) {
  memset(out, 0, sizeof *out);
  if (n < 1) return -1;
  double *s = (double *)malloc(sizeof(double) * (size_t)n);
  if (!s) return -1;
  double sum = 0;
  for (int i = 0; i < n; i++) {
    if (!isfinite(x[i])) {
      free(s);
      return -1;
    }
    s[i] = x[i];
    sum += x[i];
  }
  qsort(s, (size_t)n, sizeof(double), cmp_double);
  double mean = sum / n, ss = 0;
  for (int i = 0; i < n; i++) ss += (s[i] - mean) * (s[i] - mean);
  out->n = n;
  out->min = s[0];
  out->max = s[n - 1];
  out->mean = mean;
  out->stddev = n > 1 ? sqrt(ss / (n - 1)) : 0.0;
  out->median = gtl_percentile_sorted(s, n, 50);
  out->p95 = gtl_percentile_sorted(s, n, 95);
  out->p99 = gtl_percentile_sorted(s, n, 99);
  free(s);
  return 0;
}
