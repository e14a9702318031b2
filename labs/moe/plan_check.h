// plan_check.h — the CHECK macro of the lab layers' host tests (labs/NN_*/plan_test.cpp).
// CHECK(cond, fmt, ...): when cond is false, count a failure in `fails`, print
// "FAILED: <fmt ...>  (cond, line N)" and return from the calling (void) test function.
// A test's main ends with `return fails ? 1 : 0;`.
// plan_routing: a seeded routing as a top-k gives it, for the plan tests of layers 01 and 02.
#pragma once
#include <stdint.h>
#include <stdio.h>

static int fails = 0;
#define CHECK(cond, ...)                            \
  do {                                              \
    if (!(cond)) {                                  \
      fails++;                                      \
      printf("FAILED: " __VA_ARGS__);               \
      printf("  (%s, line %d)\n", #cond, __LINE__); \
      return;                                       \
    }                                               \
  } while (0)

/** splitmix64 step on *state, then modulo n (the bias is irrelevant to these tests). */
static inline uint32_t plan_rng_next(uint64_t *state, uint32_t n) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return (uint32_t)((z ^ (z >> 31)) % n);
}

/** idx[B][top_k]: top_k distinct experts in [0, E) per token; w[B][top_k]: weights in
 *  [0.01, 1.01). Seeded: the same seed gives the same routing. Requires top_k <= E. */
static inline void plan_routing(int32_t *idx, float *w, int B, int top_k, int E, uint64_t seed) {
  uint64_t state = seed;
  for (int b = 0; b < B; b++)
    for (int j = 0; j < top_k; j++) {
      int x, dup;
      do {  // distinct experts per token
        x = (int)plan_rng_next(&state, (uint32_t)E);
        dup = 0;
        for (int i = 0; i < j; i++) dup |= idx[b * top_k + i] == x;
      } while (dup);
      idx[b * top_k + j] = x;
      w[b * top_k + j] = 0.01f + (float)plan_rng_next(&state, 1000) / 1000.f;
    }
}
