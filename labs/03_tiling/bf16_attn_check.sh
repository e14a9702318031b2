#!/usr/bin/env bash
# bf16_attn_check.sh — what layer 03's bf16 attention costs against the engine's check (host
# only, no GPU). Builds the CPU reference (labs/moe/reference.c) twice from one patched copy
# in a scratch folder: exact (ROUND=0: the reference's arithmetic), and with the attention
# rounded where ch18's kernel rounds (ROUND=1): q after RoPE, every cached K and V row, the
# softmax weights exp(s − m) entering P·V (the denominator stays exact) and the output, to
# bf16 (round to nearest even). Both log every top-k routing decision. On the engine's
# validation sequence (seed 42, teacher forced, 64 positions) it prints rel_l2 and top-1
# agreement of the rounded logits against the exact ones, and how many of the routing
# decisions (positions × layers) differ. The engine passes rel_l2 < 1e-2, top-1 >= 99%.
# Models, rows 0-15 each: "mini_hd64", mini with head_dim 64 and 8 query heads on 1 KV
# head (gpt-oss-20b's 8:1 grouping; the shape ch18's kernel takes), and mini (head_dim 32:
# layer 03 runs it with 02's fp32 attention, so its rows say what bf16 would cost there).
# --gptoss adds "gptoss_2layer": gptoss20b_mixtral cut to 2 layers (the whole preset does
# not fit a host reference in 23 GB), rows 0 and 1, 12 positions (about 100 s on 2 cores).
# Needs make labs (build/libmoe_host.a, build/libcommon_host.a).
# --terms rounds one term at a time (q; K and V; P; the output; all) on mini_hd64 and prints
# one summary line each: every single term already changes routing decisions.
#   labs/03_tiling/bf16_attn_check.sh [--gptoss | --terms]
set -eu
cd "$(dirname "$0")/../.."
root=$PWD
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$root/labs/moe/reference.c" "$tmp/ref.c" <<'PY'
import sys
s = open(sys.argv[1]).read()
def sub(old, new):
    global s
    assert s.count(old) == 1, 'reference.c changed: update bf16_attn_check.sh (%r)' % old
    s = s.replace(old, new)
# q and k after RoPE (k is cached right after), v as cached
sub('    for (int h = 0; h < c->H_kv; h++) rope(k + h * hd, hd, pos, r->inv_freq, r->rope_scale);\n',
    '    for (int h = 0; h < c->H_kv; h++) rope(k + h * hd, hd, pos, r->inv_freq, r->rope_scale);\n'
    '    for (int i = 0; i < Q; i++) q[i] = (ROUND & 1) ? ref_round(q[i]) : q[i];\n'
    '    for (int i = 0; i < KV; i++) if (ROUND & 2) k[i] = ref_round(k[i]), v[i] = ref_round(v[i]);\n')
# P in P·V rounded (unnormalized, <= 1), the sum exact; the output rounded
sub('        for (int d = 0; d < hd; d++) o[d] += r->scores[t] / sum * V[(size_t)t * hd + d];\n',
    '        for (int d = 0; d < hd; d++) o[d] += ((ROUND & 4) ? ref_round(r->scores[t]) : r->scores[t]) / sum * V[(size_t)t * hd + d];\n'
    '      for (int d = 0; d < hd; d++) o[d] = (ROUND & 8) ? ref_round(o[d]) : o[d];\n')
# every routing decision logged as a bitmask of the chosen experts (E <= 64)
sub('  for (int b = 0; b < R; b++)\n'
    '    moe_route(r->router + (size_t)b * c->E, c->E, k, c->norm_topk_prob, r->topk + b * k, r->topw + b * k);\n',
    '  for (int b = 0; b < R; b++) {\n'
    '    moe_route(r->router + (size_t)b * c->E, c->E, k, c->norm_topk_prob, r->topk + b * k, r->topw + b * k);\n'
    '    unsigned long long m = 0;\n'
    '    for (int j = 0; j < k; j++) m |= 1ull << r->topk[b * k + j];\n'
    '    if (ROUTE_N < (1 << 20)) ROUTE_LOG[ROUTE_N++] = m;\n'
    '  }\n')
at = s.index('static void attention(')
s = s[:at] + r'''extern unsigned long long ROUTE_LOG[];
extern int ROUTE_N;
static inline double ref_round(double d) { /* ROUND != 0: to bf16, nearest even */
#if ROUND
  union { uint32_t u; float f; } v;
  v.f = (float)d;
  v.u = (v.u + 0x7fffu + ((v.u >> 16) & 1u)) & 0xffff0000u;
  return (double)v.f;
#else
  return d;
#endif
}
''' + s[at:]
open(sys.argv[2], 'w').write(s)
PY
cat > "$tmp/main.c" <<'C'
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "reference.h"
#include "rng.h"
unsigned long long ex_log[1 << 20], bf_log[1 << 20];
int ex_n, bf_n;
int ex_init(MoeRef *r, const MoeLayout *lay, MoeFetchFn fetch, void *user, int rows, int max_len, int threads);
void ex_step(MoeRef *r, const int *tokens, int pos, double *logits);
int bf_init(MoeRef *r, const MoeLayout *lay, MoeFetchFn fetch, void *user, int rows, int max_len, int threads);
void bf_step(MoeRef *r, const int *tokens, int pos, double *logits);
int main(int argc, char **argv) {
  const char *preset = argv[1];
  const int row = atoi(argv[2]), P = argc > 3 ? atoi(argv[3]) : 64;
  const uint64_t seed = 42;  /* the engine's default --seed */
  MoeConfig c;
  MoeLayout lay;
  const int hd64 = !strcmp(preset, "mini_hd64"), oss2 = !strcmp(preset, "gptoss_2layer");
  if (moe_config_preset(hd64 ? "mini" : oss2 ? "gptoss20b_mixtral" : preset, &c)) return 2;
  if (hd64) c.head_dim = 64, c.H_kv = 1;
  if (oss2) c.L = 2;
  if (c.E > 64 || moe_layout_build(&c, &lay)) return 2;
  uint16_t *arena = moe_synth_arena(&lay, seed);
  MoeArenaFetch fa = {&lay, arena};
  MoeRef a, b;
  if (ex_init(&a, &lay, moe_ref_fetch_arena, &fa, 1, P, 2) || bf_init(&b, &lay, moe_ref_fetch_arena, &fa, 1, P, 2)) return 3;
  double *la = malloc(sizeof(double) * c.V), *lb = malloc(sizeof(double) * c.V), num = 0, den = 0;
  int agree = 0;
  for (int p = 0; p < P; p++) {  /* the engine's validation tokens of batch row `row` */
    const int tok = (int)gtl_uniform_u32(seed ^ 0xC4ECull, (uint64_t)row * 65536 + p, (uint32_t)c.V);
    ex_step(&a, &tok, p, la);
    bf_step(&b, &tok, p, lb);
    int ia = 0, ib = 0;
    for (int v = 0; v < c.V; v++) {
      num += (la[v] - lb[v]) * (la[v] - lb[v]);
      den += la[v] * la[v];
      ia = la[v] > la[ia] ? v : ia;
      ib = lb[v] > lb[ib] ? v : ib;
    }
    agree += ia == ib;
  }
  int differ = 0;
  for (int i = 0; i < ex_n && i < bf_n; i++) differ += ex_log[i] != bf_log[i];
  printf("%-13s row %2d (L %d, head_dim %d, H %d, H_kv %d): rel_l2 %.2e, top-1 %2d/%d, routing differs %d/%d\n",
         preset, row, c.L, c.head_dim, c.H, c.H_kv, sqrt(num / den), agree, P, differ, ex_n);
  return 0;
}
C
# build MASK: the checker with ROUND = MASK (bit 0 q, 1 K and V, 2 P, 3 the output) in $tmp/check
build() {
  local r pre ren
  for r in 0 "$1"; do
    pre=$([ "$r" = 0 ] && echo ex || echo bf)
    ren="-DROUND=$r -DROUTE_LOG=${pre}_log -DROUTE_N=${pre}_n -Dmoe_ref_init=${pre}_init -Dmoe_ref_step=${pre}_step"
    ren="$ren -Dmoe_ref_free=${pre}_free -Dmoe_route=${pre}_route -Dmoe_ref_fetch_arena=${pre}_fetch"
    # shellcheck disable=SC2086
    cc -O2 -std=c11 -D_GNU_SOURCE $ren -Ilabs/moe -Icommon -c "$tmp/ref.c" -o "$tmp/ref_$pre.o"
  done
  cc -O2 -std=c11 -D_GNU_SOURCE -Ilabs/moe -Icommon "$tmp/main.c" "$tmp/ref_ex.o" "$tmp/ref_bf.o" build/libmoe_host.a \
    build/libcommon_host.a -lm -lpthread -o "$tmp/check"
}
if [ "${1:-}" = --terms ]; then
  # one rounding at a time, mini_hd64 rows 0-15 x 64 positions: rel_l2 of the rows whose
  # routing did not change (the rounding itself), and the routing decisions that did
  for mask in 1 2 4 8 15; do
    build "$mask"
    for row in $(seq 0 15); do "$tmp/check" mini_hd64 "$row"; done | python3 -c "
import re, sys
rows = [re.search(r'rel_l2 (\S+), top-1 (\d+)/(\d+), routing differs (\d+)/(\d+)', l).groups() for l in sys.stdin]
clean = sorted(float(r[0]) for r in rows if r[3] == '0')
name = {1: 'q', 2: 'K and V', 4: 'P', 8: 'output', 15: 'all'}[$mask]
print('%-8s rows without a routing change: %2d/16, rel_l2 median %.1e; routing decisions changed %d/%d; '
      'top-1 %d/%d; worst row rel_l2 %.1e' % (name, len(clean), clean[len(clean) // 2] if clean else float('nan'),
      sum(int(r[3]) for r in rows), sum(int(r[4]) for r in rows), sum(int(r[1]) for r in rows),
      sum(int(r[2]) for r in rows), max(float(r[0]) for r in rows)))"
  done
  exit 0
fi
build 15
echo "attention in bf16 where ch18's kernel rounds (q, K, V, P, out), against the exact reference:"
for model in mini_hd64 mini; do
  for row in $(seq 0 15); do "$tmp/check" "$model" "$row"; done
done
if [ "${1:-}" = --gptoss ]; then
  "$tmp/check" gptoss_2layer 0 12
  "$tmp/check" gptoss_2layer 1 12
fi
