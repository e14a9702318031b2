/* validate.c — NaN-safe comparison and the tolerance table (see validate.h). */
#include "validate.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

GtlTol gtl_tol_for(GtlDtype d) {
  GtlTol t;
  switch (d) {
    case GTL_FP32: t.rel_l2 = 1e-6; t.rtol = 1e-5; t.atol = 1e-5; break;
    case GTL_TF32: t.rel_l2 = 1e-3; t.rtol = 1e-2; t.atol = 1e-2; break;
    case GTL_FP16: t.rel_l2 = 1e-3; t.rtol = 4e-3; t.atol = 4e-3; break;
    case GTL_BF16: t.rel_l2 = 5e-3; t.rtol = 3.2e-2; t.atol = 3.2e-2; break;
    case GTL_FP8E4M3: t.rel_l2 = 2e-2; t.rtol = 2.5e-1; t.atol = 2.5e-1; break;
    default: t.rel_l2 = 0; t.rtol = 0; t.atol = 0; break;
  }
  return t;
}

GtlTol gtl_tol_for_sum(GtlDtype d, int64_t K) {
  GtlTol t = gtl_tol_for(d);
  if (d == GTL_INT32 || K < 1) return t;
  const double acc = 2.0 * sqrt((double)K) * 0x1p-24;
  if (t.rel_l2 < acc) t.rel_l2 = acc;
  if (t.rtol < 2 * acc) t.rtol = 2 * acc;
  if (t.atol < 10 * acc) t.atol = 10 * acc;
  return t;
}

const char *gtl_dtype_name(GtlDtype d) {
  static const char *names[] = {"fp32", "tf32", "fp16", "bf16", "fp8e4m3", "int32"};
  return (unsigned)d < 6 ? names[d] : "unknown";
}

int gtl_compare(const float *out, const double *ref, size_t n, GtlTol tol, GtlErr *e) {
  memset(e, 0, sizeof *e);
  e->tol_rel_l2 = tol.rel_l2;
  double num = 0, den = 0, worst_excess = -INFINITY;
  for (size_t i = 0; i < n; i++) den += ref[i] * ref[i];
  double atol = n ? tol.atol * sqrt(den / (double)n) : 0;
  for (size_t i = 0; i < n; i++) {
    double o = out[i], r = ref[i], d = fabs(o - r), bound = atol + tol.rtol * fabs(r);
    if (!isfinite(o)) e->n_nan++;
    num += (o - r) * (o - r);
    if (!isnan(e->max_abs) && (isnan(d) || d > e->max_abs)) e->max_abs = d; /* NaN sticks */
    int ok = d <= bound; /* false for NaN */
    if (!ok) e->n_bad++;
    double excess = ok ? d - bound : INFINITY;
    if (i == 0 || excess > worst_excess) {
      worst_excess = excess;
      e->worst = i;
      e->worst_out = o;
      e->worst_ref = r;
    }
  }
  if (e->n_nan) num = NAN;
  e->rel_l2 = den > 0 ? sqrt(num / den) : (num > 0 ? INFINITY : (num == 0 ? 0 : NAN));
  e->pass = n > 0 && e->n_bad == 0 && e->rel_l2 <= tol.rel_l2;
  return e->pass;
}

int gtl_compare_i32(const int32_t *out, const int32_t *ref, size_t n, GtlErr *e) {
  memset(e, 0, sizeof *e);
  for (size_t i = 0; i < n; i++) {
    if (out[i] != ref[i]) {
      if (e->n_bad == 0) {
        e->worst = i;
        e->worst_out = out[i];
        e->worst_ref = ref[i];
      }
      e->n_bad++;
      double d = fabs((double)out[i] - (double)ref[i]);
      if (d > e->max_abs) e->max_abs = d;
    }
  }
  e->rel_l2 = n ? (double)e->n_bad / (double)n : 0; /* fraction of mismatches */
  e->pass = n > 0 && e->n_bad == 0;
  return e->pass;
}

void gtl_err_print(FILE *f, const GtlErr *e, const char *what) {
  fprintf(f, "# validate %s: rel_l2=%.3e (tol %.1e) max_abs=%.3e worst[%zu]=%.6g vs ref %.6g "
         "bad=%zu nan=%zu -> %s\n",
         what, e->rel_l2, e->tol_rel_l2, e->max_abs, e->worst, e->worst_out, e->worst_ref,
         e->n_bad, e->n_nan, e->pass ? "PASS" : "FAIL");
}

size_t gtl_guard_count_bad(const unsigned char *band, size_t n) {
  size_t bad = 0;
  for (size_t i = 0; i < n; i++) bad += band[i] != GTL_GUARD_BYTE;
  return bad;
}
