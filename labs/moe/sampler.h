/* sampler.h — next-token choice and prompts as token ids.
 *   greedy:       argmax, the lowest index among equal maxima (NaN never wins)
 *   temperature:  p_i ∝ exp((l_i − max l) / T), drawn with gtl_uniform(seed, draw)
 *   top-p:        only the smallest set of most likely tokens whose mass reaches top_p
 *                 (Holtzman et al., "The Curious Case of Neural Text Degeneration", ICLR
 *                 2020; HF TopPLogitsWarper keeps the same set up to ties), found by
 *                 bisection on a probability threshold: O(V) per step, no sort.
 * Pure C11, unit-tested (tests/test_lab_reference.c). */
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

int moe_argmax_f(const float *x, int n);
int moe_argmax_d(const double *x, int n);

/** A token from logits[V]: greedy when temperature <= 0, else a draw at that temperature
 *  from the top_p nucleus (top_p >= 1: all tokens). `draw` numbers the draw within the
 *  seed's stream (e.g. step · batch + row). scratch holds V doubles. */
int moe_sample(const float *logits, int V, double temperature, double top_p, uint64_t seed,
               uint64_t draw, double *scratch);

/** Parse token ids separated by commas and/or white space ("1,2, 3"). Each must be an
 *  integer in [0, V). Returns the count (1..max_ids), or -1 with the reason in err. */
int moe_parse_ids(const char *s, int V, int *ids, int max_ids, char *err, size_t errlen);
/** moe_parse_ids on a file's contents. */
int moe_read_ids_file(const char *path, int V, int *ids, int max_ids, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
