/* sampler.c — greedy, temperature and top-p sampling; token id lists (see sampler.h). */
#include "sampler.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

int moe_argmax_f(const float *x, int n) {
  int best = -1;
  for (int i = 0; i < n; i++)
    if (x[i] == x[i] && (best < 0 || x[i] > x[best])) best = i;
  return best < 0 ? 0 : best;
}

int moe_argmax_d(const double *x, int n) {
  int best = -1;
  for (int i = 0; i < n; i++)
    if (x[i] == x[i] && (best < 0 || x[i] > x[best])) best = i;
  return best < 0 ? 0 : best;
}

/* Mass of the tokens with p_i >= tau. */
static double mass_above(const double *p, int V, double tau) {
  double s = 0;
  for (int i = 0; i < V; i++) s += p[i] >= tau ? p[i] : 0;
  return s;
}

int moe_sample(const float *logits, int V, double temperature, double top_p, uint64_t seed,
               uint64_t draw, double *p) {
  const int best = moe_argmax_f(logits, V);
  if (!(temperature > 0)) return best;
  const double mx = logits[best];
  double sum = 0;
  for (int i = 0; i < V; i++) sum += (p[i] = logits[i] == logits[i] ? exp((logits[i] - mx) / temperature) : 0);
  for (int i = 0; i < V; i++) p[i] /= sum;
  /* The nucleus {p_i >= tau}: the largest tau whose mass still reaches top_p. */
  double tau = 0;
  if (top_p < 1) {
    double lo = 0, hi = p[best];
    if (mass_above(p, V, hi) >= top_p) lo = hi;
    for (int it = 0; it < 64 && lo < hi; it++) {
      const double mid = 0.5 * (lo + hi);
      if (mid <= lo || mid >= hi) break;
      if (mass_above(p, V, mid) >= top_p) lo = mid;
      else hi = mid;
    }
    tau = lo;
  }
  const double u = gtl_uniform(seed, draw, 0.0f, 1.0f) * mass_above(p, V, tau);
  double acc = 0;
  int last = best;
  for (int i = 0; i < V; i++) {
    if (p[i] < tau || p[i] <= 0) continue;
    acc += p[i];
    last = i;
    if (u < acc) return i;
  }
  return last;
}

int moe_parse_ids(const char *s, int V, int *ids, int max_ids, char *err, size_t errlen) {
  int n = 0;
  while (*s) {
    while (*s == ',' || *s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
    if (!*s) break;
    char *end;
    errno = 0;
    const long v = strtol(s, &end, 10);
    if (end == s || errno || (*end && !strchr(", \t\r\n", *end))) {
      snprintf(err, errlen, "token %d: not an integer near '%.12s'", n, s);
      return -1;
    }
    if (v < 0 || v >= V) {
      snprintf(err, errlen, "token %d: id %ld is outside the vocabulary [0, %d)", n, v, V);
      return -1;
    }
    if (n >= max_ids) {
      snprintf(err, errlen, "more than %d token ids", max_ids);
      return -1;
    }
    ids[n++] = (int)v;
    s = end;
  }
  if (n == 0) snprintf(err, errlen, "no token ids");
  return n ? n : -1;
}

int moe_read_ids_file(const char *path, int V, int *ids, int max_ids, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  const size_t cap = (size_t)max_ids * 12 + 64;
  char *buf = (char *)malloc(cap + 1);
  const size_t got = buf ? fread(buf, 1, cap, f) : 0;
  fclose(f);
  if (!buf) {
    snprintf(err, errlen, "out of host memory");
    return -1;
  }
  buf[got] = '\0';
  const int n = moe_parse_ids(buf, V, ids, max_ids, err, errlen);
  free(buf);
  return n;
}
