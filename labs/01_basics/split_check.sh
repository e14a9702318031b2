#!/usr/bin/env bash
# split_check.sh — why layer 01 splits its GEMM inputs into bf16 hi + lo (host only, no GPU).
# Runs the CPU reference (labs/moe/reference.c, a patched copy in a scratch folder) with
# every matrix product's input rounded first to bf16 ("bf16"), then to bf16 hi + lo
# ("split"), on the engine's validation sequence (seed 42, teacher forced, 64 positions),
# and prints rel_l2 and top-1 agreement against the unpatched reference. Needs make labs
# (build/libmoe_host.a, build/libcommon_host.a).
#   labs/01_basics/split_check.sh
set -eu
cd "$(dirname "$0")/../.."
root=$PWD
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$root/labs/moe/reference.c" "$tmp/ref_in.c" <<'PY'
import sys
s = open(sys.argv[1]).read()
dot = '      for (int64_t k = 0; k < j->K; k++) s += w[k] * x[k];'
assert s.count(dot) == 1, 'reference.c changed: update split_check.sh'
s = s.replace(dot, dot.replace('* x[k]', '* ref_in(x[k])'))
at = s.index('/* ---- y[r][n]')
s = s[:at] + r'''static inline double ref_bf16(double d) { /* round to nearest even */
  union { uint32_t u; float f; } v;
  v.f = (float)d;
  v.u = (v.u + 0x7fffu + ((v.u >> 16) & 1u)) & 0xffff0000u;
  return (double)v.f;
}
static inline double ref_in(double d) {
#if SPLIT
  const double hi = ref_bf16(d);
  return hi + ref_bf16(d - hi);
#else
  return ref_bf16(d);
#endif
}
''' + s[at:]
open(sys.argv[2], 'w').write(s)
PY
cat > "$tmp/main.c" <<'C'
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "reference.h"
#include "rng.h"
int in_init(MoeRef *r, const MoeLayout *lay, MoeFetchFn fetch, void *user, int rows, int max_len, int threads);
void in_step(MoeRef *r, const int *tokens, int pos, double *logits);
int main(int argc, char **argv) {
  const char *preset = argv[1];
  const int row = atoi(argv[2]), P = 64;
  const uint64_t seed = 42;  /* the engine's default --seed */
  MoeConfig c;
  MoeLayout lay;
  if (moe_config_preset(preset, &c) || moe_layout_build(&c, &lay)) return 2;
  uint16_t *arena = moe_synth_arena(&lay, seed);
  MoeArenaFetch fa = {&lay, arena};
  MoeRef a, b;
  if (moe_ref_init(&a, &lay, moe_ref_fetch_arena, &fa, 1, P, 8) || in_init(&b, &lay, moe_ref_fetch_arena, &fa, 1, P, 8)) return 3;
  double *la = malloc(sizeof(double) * c.V), *lb = malloc(sizeof(double) * c.V), num = 0, den = 0;
  int agree = 0;
  for (int p = 0; p < P; p++) {  /* the engine's validation tokens of batch row `row` */
    const int tok = (int)gtl_uniform_u32(seed ^ 0xC4ECull, (uint64_t)row * 65536 + p, (uint32_t)c.V);
    moe_ref_step(&a, &tok, p, la);
    in_step(&b, &tok, p, lb);
    int ia = 0, ib = 0;
    for (int v = 0; v < c.V; v++) {
      num += (la[v] - lb[v]) * (la[v] - lb[v]);
      den += la[v] * la[v];
      ia = la[v] > la[ia] ? v : ia;
      ib = lb[v] > lb[ib] ? v : ib;
    }
    agree += ia == ib;
  }
  printf("%-12s row %2d: rel_l2 %.2e, top-1 agreement %d/%d\n", preset, row, sqrt(num / den), agree, P);
  return 0;
}
C
for split in 0 1; do
  ren="-Dmoe_ref_init=in_init -Dmoe_ref_step=in_step -Dmoe_ref_free=in_free -Dmoe_route=in_route -Dmoe_ref_fetch_arena=in_fetch"
  # shellcheck disable=SC2086
  cc -O2 -std=c11 -D_GNU_SOURCE -DSPLIT=$split $ren -Ilabs/moe -Icommon -c "$tmp/ref_in.c" -o "$tmp/ref_in.o"
  cc -O2 -std=c11 -D_GNU_SOURCE -Ilabs/moe -Icommon "$tmp/main.c" "$tmp/ref_in.o" build/libmoe_host.a \
    build/libcommon_host.a -lm -lpthread -o "$tmp/check"
  [ "$split" = 0 ] && echo "GEMM inputs rounded to bf16:" || echo "GEMM inputs as bf16 hi + lo:"
  for args in "mini 0" "mini 63" "tiny_mixtral 0" "tiny_qwen3 0"; do
    # shellcheck disable=SC2086
    "$tmp/check" $args
  done
done
