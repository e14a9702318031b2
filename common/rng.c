/* rng.c — host fill with the counter-based generator of rng.h. */
#include "rng.h"

void gtl_fill_uniform_host(float *out, size_t n, uint64_t seed, float lo, float hi) {
  for (size_t i = 0; i < n; i++) out[i] = gtl_uniform(seed, i, lo, hi);
}
