// kvcache.cuh — ch19's problem and driver (reference: kvref.cuh), shared by baseline.cu (ch18's kernel
// on a bf16 cache) and optimized.cu (ch19/decode_attn_fp8.cuh on an FP8 cache).
//
// The problem is ch18's decode step of gpt-oss-20b attention (64 query heads, 8 KV heads,
// head_dim 64, scale 1/8, sinks) for B sequences of S cached keys, with one difference in
// the data: V is U[-0.5, 1.5) (a non-zero channel mean, as value vectors have) instead of
// U[-1, 1). With zero-mean iid V the output is itself a small noise average and E4M3's
// per-element rounding shows through almost unattenuated: against bf16 K/V no kernel can
// reach the rel_l2 <= 2e-2 this driver requires; with the mean it is an order of magnitude
// below (tests/test_ch19_fp8.c computes both on the host). Three rows, validated and timed:
//   full    contiguous cache, S keys each (JSON line): optimized reads it all FP8
//   paged   16-token pages in shuffled pools, ragged lengths S − (379·b mod (S/2+1));
//           optimized: pages written FP8 once the pool is --pressure % full (mixed)
//   window  contiguous, sliding window 128: optimized reads FP8
// Roofline: per visible (key, KV head) a bf16 page sends K + V = 256 B, an FP8 page
// 64 + 64 B codes + 4 B scale word = 132 B; plus q and out.
// Timing: the metric is --l2=cold (L2 flushed before each timed step). Beside it the full
// row is also timed as inside a decode step (common/bench.h, --l2=rotate: back-to-back
// steps, each on the next of N copies of what the step reads, N × bytes >= 4 × L2); with
// --l2=rotate every row is timed that way. The window row's copies hold only the keys the
// step reads (the last `window` of each sequence, as a cache of that many keys), so that
// N of them leave the L2 behind; the full and paged rows copy their cache or pools whole.
#pragma once
#include <cuda_bf16.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/gauntlet.h"
#include "decode_attn_fp8.cuh"

#define KV_H 64     // gpt-oss-20b query heads
#define KV_PAGE 16  // tokens per page of the paged row

// One row's arguments in both forms: bf (ch18's kernel, bf16 pages only) and f8.
typedef struct {
  AttnDecodeArgs bf;
  Attn8DecodeArgs f8;
} KvRowArgs;
typedef struct {
  int num_splits;
  float *workspace;
  char what[160];
} KvPlan;
// Each variant defines these (the driver plans, launches and frees through them).
void kv_plan(const GtlCtx *ctx, const KvRowArgs *a, int max_keys, KvPlan *p);
void kv_launch(const KvRowArgs *a, const KvPlan *p, cudaStream_t s);
void kv_plan_free(KvPlan *p);

#include "kvref.cuh"  // KvDtypes; kv_bytes, kv_flops (roofline); kv_cpu, kv_quant_mismatches (references)

// Copy rows of row_bytes (a multiple of 16) from the contiguous [B][H_kv][S] layout into a
// pool [pages][H_kv][P] of the pages whose table entry has the FP8 flag == want_fp8; tokens
// at or past lens[b] have no page. One thread per 16 bytes (row_bytes 4: one per row).
__global__ void kv19_page_scatter_kernel(const uint8_t *__restrict__ src, uint8_t *__restrict__ pool,
                                         const int32_t *__restrict__ table, const int32_t *__restrict__ lens,
                                         int B, int H_kv, int S, int P, int n_pages, int row_bytes,
                                         int want_fp8) {
  const int per_row = row_bytes >= 16 ? row_bytes / 16 : 1, width = row_bytes >= 16 ? 16 : row_bytes;
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (int64_t)B * H_kv * S * per_row) return;
  const int c = (int)(i % per_row);
  const int64_t row = i / per_row;
  const int t = (int)(row % S), g = (int)(row / S % H_kv), b = (int)(row / S / H_kv);
  if (t >= lens[b]) return;
  const int32_t e = table[(int64_t)b * n_pages + t / P];
  if (((e & FP8KV_PAGE_FP8) != 0) != (want_fp8 != 0)) return;
  const int64_t dst = (((int64_t)(e & FP8KV_PAGE_MASK) * H_kv + g) * P + t % P) * row_bytes + c * width;
  for (int k = 0; k < width; k += 4)
    *reinterpret_cast<uint32_t *>(pool + dst + k) = *reinterpret_cast<const uint32_t *>(src + row * row_bytes + c * width + k);
}
static void kv_scatter(const void *src, void *pool, const int32_t *table, const int32_t *lens, int B,
                       int H_kv, int S, int P, int n_pages, int row_bytes, int want_fp8, cudaStream_t s) {
  const int64_t n = (int64_t)B * H_kv * S * (row_bytes >= 16 ? row_bytes / 16 : 1);
  kv19_page_scatter_kernel<<<(unsigned)((n + 255) / 256), 256, 0, s>>>(
      (const uint8_t *)src, (uint8_t *)pool, table, lens, B, H_kv, S, P, n_pages, row_bytes, want_fp8);
  GTL_LAUNCH();
}

typedef struct {
  const KvRowArgs *a;
  const KvPlan *p;
} KvRun;
static void kv_run(void *user, cudaStream_t s) {
  const KvRun *r = (const KvRun *)user;
  kv_launch(r->a, r->p, s);
}

#include "kvrot.cuh"  // KvRot: the --l2=rotate input copies of a row

// Poison out, one launch of a's step, compare with ref (bf16 tolerance) into err and, with
// ref_u, with the unquantized reference (E4M3 tolerance: rel_l2 into *rel_l2_u; enforced
// when every sequence sees at least KV_FORMAT_MIN_KEYS keys, min_keys), check the guard
// bytes. Returns 0, or 1 on FAIL.
// The format bar (rel_l2 <= 2e-2 against bf16 K/V) needs the output to average the
// rounding of enough keys: on the host, with this chapter's data, 8 query heads reach
// 3.4e-2 at 3 keys, 1.8e-2 at 16 and 1.6e-2 at 32 (tests/test_ch19_fp8.c asserts 32).
// Below, the error is printed and the kernel is still held to its exact reference.
#define KV_FORMAT_MIN_KEYS 32

static int kv_check(GtlCtx *ctx, const KvRowArgs *a, const KvPlan *plan, const double *ref,
                    const double *ref_u, int min_keys, GtlGuarded *g_out, const char *label, GtlErr *err,
                    double *rel_l2_u) {
  const size_t n_out = (size_t)a->bf.B * a->bf.H * ATTN_HEAD_DIM;
  gtl_poison(a->bf.out, n_out * 2, ctx->stream);
  kv_launch(a, plan, ctx->stream);
  GTL_CUDA(cudaStreamSynchronize(ctx->stream));
  uint16_t *raw = (uint16_t *)malloc(n_out * 2);
  float *out = (float *)malloc(n_out * 4);
  GTL_CUDA(cudaMemcpy(raw, a->bf.out, n_out * 2, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < n_out; i++) out[i] = gtl_bf16_to_f32(raw[i]);
  gtl_compare(out, ref, n_out, gtl_tol_for(GTL_BF16), err);
  if (ref_u) {
    GtlErr eu;
    gtl_compare(out, ref_u, n_out, gtl_tol_for(GTL_FP8E4M3), &eu);
    *rel_l2_u = eu.rel_l2;
    if (!eu.pass && min_keys < KV_FORMAT_MIN_KEYS) {
      printf("# note: %s: rel_l2 %.2e against unquantized bf16 K/V, reported, not checked: the E4M3 "
             "bar holds from %d visible keys per sequence (this row has %d; tests/test_ch19_fp8.c)\n",
             label, eu.rel_l2, KV_FORMAT_MIN_KEYS, min_keys);
    } else if (!eu.pass) {
      gtl_err_print(stderr, &eu, "against unquantized bf16 K/V");
      err->pass = 0;
    }
  }
  const size_t bad_guard = gtl_guarded_check(g_out);
  if (bad_guard) {
    fprintf(stderr, "ch19: %zu guard bytes around out were overwritten (%s)\n", bad_guard, label);
    err->pass = 0;
  }
  free(raw);
  free(out);
  return err->pass ? 0 : 1;
}

// One row: plan, poison, validated run against ref (the values the kernel reads, bf16
// tolerance) and ref_u (unquantized bf16 K/V, E4M3 tolerance: rel_l2 <= 2e-2), time. With
// rot (its input copies), the last copy is validated too, and the step is timed rotating
// through them: as the metric when rotate_metric (--l2=rotate), else beside it in a row
// "<name> rotate" with its stats in *rot_st. Returns 0, or 1 on FAIL (never times a wrong
// kernel).
static int kv_row(GtlCtx *ctx, const KvRowArgs *a, const int32_t *h_lens, const KvDtypes *t, int S,
                  const double *ref, const double *ref_u, GtlGuarded *g_out, const char *label,
                  const char *name, GtlResult *r, double *rel_l2_u, const KvRot *rot, int rotate_metric,
                  GtlStats *rot_st) {
  const int B = a->bf.B, H = a->bf.H, window = a->bf.window;
  int max_keys = 0, min_keys = INT_MAX;
  for (int b = 0; b < B; b++) {
    const int n = h_lens[b] - attn_first_key(h_lens[b], window);
    max_keys = n > max_keys ? n : max_keys;
    min_keys = n < min_keys ? n : min_keys;
  }
  KvPlan plan;
  memset(&plan, 0, sizeof plan);
  kv_plan(ctx, a, max_keys, &plan);
  char workload[96];
  snprintf(workload, sizeof workload, "B%d_S%d_H%d_Hkv%d_d64_%s", B, S, H, a->bf.H_kv, label);
  gtl_result_init(r, ctx, gtl_dtype_name(t->fp8 ? GTL_FP8E4M3 : GTL_BF16), workload);
  r->variant = name;
  r->bytes = kv_bytes(h_lens, t, B, H, a->bf.H_kv, window);
  r->flops = kv_flops(h_lens, B, H, window);
  r->bound = GTL_BOUND_READ;
  r->ref = "cpu_double";
  *rel_l2_u = NAN;
  int rc = 0;
  if (ctx->args.verify) {
    gtl_phase_push(GTL_PHASE_VALIDATE);
    rc = kv_check(ctx, a, &plan, ref, ref_u, min_keys, g_out, label, &r->err, rel_l2_u);
    if (rc == 0 && rot && rot->n) {  // the last input copy: same values, other addresses
      double dummy;
      rc = kv_check(ctx, &rot->a[rot->n - 1], &plan, ref, NULL, min_keys, g_out, label, &r->err, &dummy);
    }
    r->validated = 1;
    if (rc) {
      gtl_err_print(stderr, &r->err, label);
      rc = GTL_EXIT_FAIL;
    }
    gtl_phase_pop();
  }
  if (rc == 0) {
    KvRun run = {a, &plan};
    KvRotRun rrun = {rot, &plan};
    if (rotate_metric && rot && rot->n)
      gtl_bench_rotate(ctx, kv_rotate_run, &rrun, rot->n, &r->st);
    else
      gtl_bench(ctx, kv_run, &run, &r->st);
  }
  gtl_report_row(ctx, r);
  if (rc == 0 && !rotate_metric && rot && rot->n) {  // the step as inside a decode step
    KvRotRun rrun = {rot, &plan};
    GtlResult rr = *r;
    char rname[192];
    snprintf(rname, sizeof rname, "%s rotate", name);
    rr.variant = rname;
    gtl_bench_rotate(ctx, kv_rotate_run, &rrun, rot->n, &rr.st);
    gtl_report_row(ctx, &rr);
    *rot_st = rr.st;
  }
  if (!ctx->args.json) {
    printf("#   %s: %s; rel_l2 vs bf16 K/V %.2e", label, plan.what, *rel_l2_u);
    if (rot && rot->n) printf("; %s %d input copies of %.1f MB", rotate_metric ? "timed on" : "rotate row:", rot->n, rot->stride / 1e6);
    printf("\n");
  }
  kv_plan_free(&plan);
  return rc;
}

// main() of both variants; reads_fp8 0: every page bf16 (baseline), 1: FP8 rows.
static int kv_main(int argc, char **argv, const char *variant, const char *strategy, int reads_fp8) {
  int64_t B = 16, S = 8192, H_kv = 8, window = 128, pressure = 50;
  GtlOpt opts[] = {{"B", GTL_OPT_INT, &B, "sequences, 1..1024 (default 16)"},
                   {"S", GTL_OPT_INT, &S, "cached keys per sequence, 1..1048576 (default 8192)"},
                   {"H_kv", GTL_OPT_INT, &H_kv, "KV heads, 64 / H_kv query heads each: 4, 8, 16, 32 or 64 (default 8)"},
                   {"window", GTL_OPT_INT, &window, "sliding window of the window row in keys, 1..1048576 (default 128)"},
                   {"pressure", GTL_OPT_INT, &pressure,
                    "paged row: pool fill in percent, 0..100, from which new pages are written FP8 (default 50; the baseline stays bf16)"}};
  GtlCtx ctx;
  gtl_allow_rotate();  // this driver keeps input copies (KvRot)
  gtl_parse(&ctx, "ch19", variant, argc, argv, opts, 5, 10, 100, GTL_L2_COLD);
  if (ctx.args.size == GTL_SIZE_SMALL) B = 3, S = 1000;
  if (ctx.args.size == GTL_SIZE_LARGE) B = 64, S = 8192;
  if (B < 1 || B > 1024 || S < 1 || S > (1 << 20))
    gtl_usage_fail(&ctx, "need 1 <= B <= 1024 and 1 <= S <= 1048576");
  if (H_kv != 4 && H_kv != 8 && H_kv != 16 && H_kv != 32 && H_kv != 64)
    gtl_usage_fail(&ctx, "--H_kv needs 4, 8, 16, 32 or 64 (64 query heads), got %lld", (long long)H_kv);
  if (window < 1 || window > (1 << 20))
    gtl_usage_fail(&ctx, "--window needs 1..1048576, got %lld", (long long)window);
  if (pressure < 0 || pressure > 100)
    gtl_usage_fail(&ctx, "--pressure needs a percentage 0..100, got %lld", (long long)pressure);
  gtl_open(&ctx);
  const int H = KV_H, D = ATTN_HEAD_DIM, Bi = (int)B, Si = (int)S, Hk = (int)H_kv, P = KV_PAGE;
  const int pshift = 4, n_pages = (Si + P - 1) / P;
  int cs = 0;  // contiguous rows: one page of 1 << cs >= S tokens per sequence
  while ((1ll << cs) < Si) cs++;

  // ---- inputs: q, K U[-2,2), V U[-0.5,1.5) bf16; sinks U[0,12); the FP8 copy of K/V
  gtl_phase_push(GTL_PHASE_SETUP);
  const size_t n_q = (size_t)Bi * H * D, n_rows = (size_t)Bi * Hk * Si, n_kv = n_rows * D;
  __nv_bfloat16 *d_q = (__nv_bfloat16 *)gtl_malloc(n_q * 2, "q [B][H][64] bf16");
  __nv_bfloat16 *d_k = (__nv_bfloat16 *)gtl_malloc(n_kv * 2, "K cache [B][H_kv][S][64] bf16");
  __nv_bfloat16 *d_v = (__nv_bfloat16 *)gtl_malloc(n_kv * 2, "V cache [B][H_kv][S][64] bf16");
  uint8_t *d_k8 = (uint8_t *)gtl_malloc(n_kv, "K cache [B][H_kv][S][64] fp8 e4m3");
  uint8_t *d_v8 = (uint8_t *)gtl_malloc(n_kv, "V cache [B][H_kv][S][64] fp8 e4m3");
  uint32_t *d_sc = (uint32_t *)gtl_malloc(n_rows * 4, "K/V scales [B][H_kv][S]");
  gtl_fill_uniform(d_q, GTL_BF16, n_q, ctx.args.seed, -2.0f, 2.0f, ctx.stream);
  gtl_fill_uniform(d_k, GTL_BF16, n_kv, ctx.args.seed + 1, -2.0f, 2.0f, ctx.stream);
  gtl_fill_uniform(d_v, GTL_BF16, n_kv, ctx.args.seed + 2, -0.5f, 1.5f, ctx.stream);
  attn_fp8_quantize(d_k, d_v, d_k8, d_v8, d_sc, (int64_t)n_rows, ctx.stream);

  // Paged row: pages allocated in time order (page j of every sequence before page j + 1),
  // FP8 from `pressure` % of the pool on (optimized), each pool's slots shuffled.
  int32_t *h_lens = (int32_t *)malloc(Bi * 4), *h_lens_r = (int32_t *)malloc(Bi * 4);
  int32_t *h_table = (int32_t *)calloc((size_t)Bi * n_pages, 4), *h_ident = (int32_t *)malloc(Bi * 4);
  uint8_t *h_pf8 = (uint8_t *)calloc((size_t)Bi * n_pages, 1), *h_all8 = (uint8_t *)malloc(Bi);
  int64_t pool = 0, n16 = 0, n8 = 0;
  for (int b = 0; b < Bi; b++) {
    h_lens[b] = Si;
    h_lens_r[b] = Si - (int)((379ll * b) % (Si / 2 + 1));
    pool += (h_lens_r[b] + P - 1) / P;
    h_ident[b] = b | (reads_fp8 ? FP8KV_PAGE_FP8 : 0);
    h_all8[b] = (uint8_t)reads_fp8;
  }
  for (int j = 0, allocated = 0; j < n_pages; j++)
    for (int b = 0; b < Bi; b++) {
      if (j * P >= h_lens_r[b]) continue;
      const int f8 = reads_fp8 && fp8kv_page_is_fp8(allocated, pool, (int)pressure);
      allocated++;
      h_pf8[(int64_t)b * n_pages + j] = (uint8_t)f8;
      h_table[(int64_t)b * n_pages + j] = f8 ? (int32_t)(n8++) | FP8KV_PAGE_FP8 : (int32_t)n16++;
    }
  for (int pass = 0; pass < 2; pass++) {  // Fisher-Yates over each pool's slot numbers
    const int64_t n = pass ? n8 : n16;
    int32_t *perm = (int32_t *)malloc((n ? n : 1) * 4);
    for (int64_t i = 0; i < n; i++) perm[i] = (int32_t)i;
    for (int64_t i = n - 1; i > 0; i--) {
      const int64_t j = gtl_uniform_u32(ctx.args.seed ^ (0x19ull + pass), (uint64_t)i, (uint32_t)(i + 1));
      const int32_t x = perm[i];
      perm[i] = perm[j], perm[j] = x;
    }
    for (int64_t i = 0; i < (int64_t)Bi * n_pages; i++)
      if (h_pf8[i] == pass && (i % n_pages) * P < h_lens_r[i / n_pages])
        h_table[i] = perm[h_table[i] & FP8KV_PAGE_MASK] | (pass ? FP8KV_PAGE_FP8 : 0);
    free(perm);
  }
  const size_t pg = (size_t)Hk * P * D;  // elements per page
  __nv_bfloat16 *d_kp = (__nv_bfloat16 *)gtl_malloc((n16 ? n16 : 1) * pg * 2, "paged K pool bf16");
  __nv_bfloat16 *d_vp = (__nv_bfloat16 *)gtl_malloc((n16 ? n16 : 1) * pg * 2, "paged V pool bf16");
  uint8_t *d_kp8 = (uint8_t *)gtl_malloc((n8 ? n8 : 1) * pg, "paged K pool fp8");
  uint8_t *d_vp8 = (uint8_t *)gtl_malloc((n8 ? n8 : 1) * pg, "paged V pool fp8");
  uint32_t *d_scp = (uint32_t *)gtl_malloc((n8 ? n8 : 1) * Hk * P * 4, "paged scale pool");
  int32_t *d_table = (int32_t *)gtl_malloc((size_t)Bi * n_pages * 4, "block table");
  int32_t *d_ident = (int32_t *)gtl_malloc((size_t)Bi * 4, "identity table");
  int32_t *d_lens = (int32_t *)gtl_malloc((size_t)Bi * 4, "seq_lens (full)");
  int32_t *d_lens_r = (int32_t *)gtl_malloc((size_t)Bi * 4, "seq_lens (ragged)");
  float *d_sinks = (float *)gtl_malloc(H * 4, "sinks [H] fp32");
  GtlGuarded g_out;
  __nv_bfloat16 *d_out = (__nv_bfloat16 *)gtl_guarded_alloc(&g_out, n_q * 2, "out [B][H][64] bf16");
  float h_sinks[KV_H];
  for (int h = 0; h < H; h++) h_sinks[h] = gtl_round_bf16(gtl_uniform(ctx.args.seed + 3, (uint64_t)h, 0.0f, 12.0f));
  GTL_CUDA(cudaMemcpy(d_table, h_table, (size_t)Bi * n_pages * 4, cudaMemcpyHostToDevice));
  GTL_CUDA(cudaMemcpy(d_ident, h_ident, Bi * 4, cudaMemcpyHostToDevice));
  GTL_CUDA(cudaMemcpy(d_lens, h_lens, Bi * 4, cudaMemcpyHostToDevice));
  GTL_CUDA(cudaMemcpy(d_lens_r, h_lens_r, Bi * 4, cudaMemcpyHostToDevice));
  GTL_CUDA(cudaMemcpy(d_sinks, h_sinks, H * 4, cudaMemcpyHostToDevice));
  void *pools[5] = {d_kp, d_vp, d_kp8, d_vp8, d_scp};
  const size_t pool_bytes[5] = {(n16 ? n16 : 1) * pg * 2, (n16 ? n16 : 1) * pg * 2, (n8 ? n8 : 1) * pg,
                                (n8 ? n8 : 1) * pg, (size_t)(n8 ? n8 : 1) * Hk * P * 4};
  for (int i = 0; i < 5; i++) gtl_poison(pools[i], pool_bytes[i], ctx.stream);  // unread slots stay poisoned
  kv_scatter(d_k, d_kp, d_table, d_lens_r, Bi, Hk, Si, P, n_pages, 128, 0, ctx.stream);
  kv_scatter(d_v, d_vp, d_table, d_lens_r, Bi, Hk, Si, P, n_pages, 128, 0, ctx.stream);
  kv_scatter(d_k8, d_kp8, d_table, d_lens_r, Bi, Hk, Si, P, n_pages, 64, 1, ctx.stream);
  kv_scatter(d_v8, d_vp8, d_table, d_lens_r, Bi, Hk, Si, P, n_pages, 64, 1, ctx.stream);
  kv_scatter(d_sc, d_scp, d_table, d_lens_r, Bi, Hk, Si, P, n_pages, 4, 1, ctx.stream);
  GTL_CUDA(cudaStreamSynchronize(ctx.stream));
  gtl_phase_pop();

  // ---- the three rows
  KvRowArgs rows[3];
  memset(rows, 0, sizeof rows);
  for (int i = 0; i < 3; i++) {
    AttnDecodeArgs *a = &rows[i].bf;
    Attn8DecodeArgs *f = &rows[i].f8;
    a->q = f->q = d_q, a->out = f->out = d_out, a->sinks = f->sinks = d_sinks;
    a->B = f->B = Bi, a->H = f->H = H, a->H_kv = f->H_kv = Hk, a->scale = f->scale = 1.0f / sqrtf((float)D);
    a->seq_lens = f->seq_lens = i == 1 ? d_lens_r : d_lens;
    a->window = f->window = i == 2 ? (int)window : 0;
    if (i == 1) {  // pools [pages][H_kv][16][64]
      a->kv.k = d_kp, a->kv.v = d_vp, a->kv.block_table = d_table, a->kv.table_stride = n_pages;
      a->kv.page_shift = pshift, a->kv.page_stride = (int64_t)pg, a->kv.head_stride = (int64_t)P * D;
      a->kv.token_stride = D;
      f->kv.k16 = d_kp, f->kv.v16 = d_vp, f->kv.k8 = d_kp8, f->kv.v8 = d_vp8, f->kv.scales = d_scp;
      f->kv.block_table = d_table, f->kv.table_stride = n_pages, f->kv.page_shift = pshift;
      f->kv.page_stride = (int64_t)pg, f->kv.head_stride = (int64_t)P * D;
      f->kv.scale_page_stride = (int64_t)Hk * P, f->kv.scale_head_stride = P;
      f->kv.all_fp8 = reads_fp8 && n16 == 0;  // --pressure=0: every page FP8
    } else {  // contiguous [B][H_kv][S][64], identity table (FP8-flagged for the optimized)
      a->kv.k = d_k, a->kv.v = d_v, a->kv.block_table = d_ident, a->kv.table_stride = 1;
      a->kv.page_shift = cs, a->kv.page_stride = (int64_t)Hk * Si * D, a->kv.head_stride = (int64_t)Si * D;
      a->kv.token_stride = D;
      f->kv.k16 = d_k, f->kv.v16 = d_v, f->kv.k8 = d_k8, f->kv.v8 = d_v8, f->kv.scales = d_sc;
      f->kv.block_table = d_ident, f->kv.table_stride = 1, f->kv.page_shift = cs;
      f->kv.page_stride = (int64_t)Hk * Si * D, f->kv.head_stride = (int64_t)Si * D;
      f->kv.scale_page_stride = (int64_t)Hk * Si, f->kv.scale_head_stride = Si;
      f->kv.all_fp8 = reads_fp8;
    }
  }
  const KvDtypes t_all = {reads_fp8 ? h_all8 : NULL, cs, 1}, t_paged = {reads_fp8 ? h_pf8 : NULL, pshift, n_pages};
  const KvDtypes t_none = {NULL, 0, 1};
  const KvDtypes *row_t[3] = {&t_all, &t_paged, &t_all};
  const int32_t *row_lens[3] = {h_lens, h_lens_r, h_lens};
  int64_t fp8_pages = 0;
  for (int64_t i = 0; i < (int64_t)Bi * n_pages; i++) fp8_pages += h_pf8[i];
  char labels[3][32], names[3][160];
  snprintf(labels[0], 32, "full");
  snprintf(labels[1], 32, "paged%d_p%lld", P, (long long)pressure);
  snprintf(labels[2], 32, "window%lld", (long long)window);
  for (int i = 0; i < 3; i++) snprintf(names[i], sizeof names[i], "%s %s", variant, labels[i]);

  char workload[96], notes[1536];
  snprintf(workload, sizeof workload, "B%d_S%d_H%d_Hkv%d_d64_full", Bi, Si, H, Hk);
  snprintf(notes, sizeof notes,
           "strategy: %s\n"
           "q [%d][%d][64] U[-2,2), K U[-2,2), V U[-0.5,1.5) [%d][%d][%d][64] bf16; %s; out bf16; "
           "scale 1/8; sinks U[0,12)\n"
           "rows: full (contiguous, JSON line); %s (shuffled pools of %d-token pages, lengths "
           "S - (379 b mod (S/2+1)), %lld of %lld pages FP8); %s (contiguous, last %lld keys)\n"
           "roofline (full): %.1f MB per step, %.2f GFLOP; bound by read bandwidth; %.1f us at the read ceiling",
           strategy, Bi, H, Bi, Hk, Si,
           reads_fp8 ? "kernel reads FP8 E4M3 K/V + one bf16 scale per (token, KV head)" : "kernel reads bf16 K/V",
           labels[1], P, (long long)fp8_pages, (long long)pool, labels[2], (long long)window,
           kv_bytes(h_lens, &t_all, Bi, H, Hk, 0) / 1e6, kv_flops(h_lens, Bi, H, 0) / 1e9,
           kv_bytes(h_lens, &t_all, Bi, H, Hk, 0) / (ctx.ceil.read_gbps * 1e3));
  gtl_report_header(&ctx, workload, notes);

  // ---- host copies, the quantizer's check, references, rows
  uint16_t *h_q = (uint16_t *)malloc(n_q * 2), *h_k = (uint16_t *)malloc(n_kv * 2), *h_v = (uint16_t *)malloc(n_kv * 2);
  uint8_t *h_k8 = (uint8_t *)malloc(n_kv), *h_v8 = (uint8_t *)malloc(n_kv);
  uint32_t *h_sc = (uint32_t *)malloc(n_rows * 4);
  double *ref = (double *)malloc(sizeof(double) * n_q), *ref_u = (double *)malloc(sizeof(double) * n_q);
  if (!h_q || !h_k || !h_v || !h_k8 || !h_v8 || !h_sc || !ref || !ref_u) {
    fprintf(stderr, "ch19: host out of memory for the reference (%.1f MB)\n", n_kv * 6 / 1e6);
    exit(GTL_EXIT_RUNTIME);
  }
  int rc = 0;
  if (ctx.args.verify) {
    GTL_CUDA(cudaMemcpy(h_q, d_q, n_q * 2, cudaMemcpyDeviceToHost));
    GTL_CUDA(cudaMemcpy(h_k, d_k, n_kv * 2, cudaMemcpyDeviceToHost));
    GTL_CUDA(cudaMemcpy(h_v, d_v, n_kv * 2, cudaMemcpyDeviceToHost));
    GTL_CUDA(cudaMemcpy(h_k8, d_k8, n_kv, cudaMemcpyDeviceToHost));
    GTL_CUDA(cudaMemcpy(h_v8, d_v8, n_kv, cudaMemcpyDeviceToHost));
    GTL_CUDA(cudaMemcpy(h_sc, d_sc, n_rows * 4, cudaMemcpyDeviceToHost));
    const int64_t bad = reads_fp8 ? kv_quant_mismatches(h_k, h_v, h_k8, h_v8, h_sc, (int64_t)n_rows) : 0;
    if (bad) {
      fprintf(stderr, "FAIL ch19: %lld FP8 codes or scale words of attn_fp8_quantize_kernel differ from the host's rule\n",
              (long long)bad);
      rc = GTL_EXIT_FAIL;
    }
  }
  // Input copies for the rotated figure: the full row beside the cold metric; every row
  // as the metric under --l2=rotate; none under --l2=warm.
  const int rotate_all = ctx.args.l2 == GTL_L2_ROTATE;
  KvRot rots[3];
  memset(rots, 0, sizeof rots);
  GtlStats rot_st;
  memset(&rot_st, 0, sizeof rot_st);
  GtlResult r[3];
  double rel_u[3] = {NAN, NAN, NAN};
  int done = 0;
  for (int i = 0; i < 3 && rc == 0; i++, done++) {
    if (ctx.args.verify) {
      gtl_phase_push(GTL_PHASE_REFERENCE);
      kv_cpu(h_q, h_k, h_v, h_k8, h_v8, h_sc, row_t[i], row_lens[i], h_sinks, Bi, H, Hk, Si, rows[i].bf.window, ref);
      if (reads_fp8)
        kv_cpu(h_q, h_k, h_v, h_k8, h_v8, h_sc, &t_none, row_lens[i], h_sinks, Bi, H, Hk, Si, rows[i].bf.window, ref_u);
      else
        memcpy(ref_u, ref, sizeof(double) * n_q);
      gtl_phase_pop();
    }
    if (rotate_all || (i == 0 && ctx.args.l2 == GTL_L2_COLD)) {
      gtl_phase_push(GTL_PHASE_SETUP);
      kv_rot_setup(&ctx, &rots[i], i, &rows[i], reads_fp8, Si, n16, n8);
      gtl_phase_pop();
    }
    rc = kv_row(&ctx, &rows[i], row_lens[i], row_t[i], Si, ref, ref_u, &g_out, labels[i], names[i], &r[i], &rel_u[i],
                &rots[i], rotate_all, &rot_st);
    kv_rot_free(&rots[i]);
  }
  GtlResult *head = done ? (rc ? &r[done - 1] : &r[0]) : NULL;
  if (!head) {  // the quantizer check failed before any row: report a failed full row
    gtl_result_init(&r[0], &ctx, gtl_dtype_name(reads_fp8 ? GTL_FP8E4M3 : GTL_BF16), workload);
    r[0].err.pass = 0;
    r[0].validated = 1;
    head = &r[0];
  }
  head->variant = variant;
  if (rc == 0) {
    gtl_result_extra(head, "us_full", r[0].st.median * 1e3);
    gtl_result_extra(head, "us_paged", r[1].st.median * 1e3);
    gtl_result_extra(head, "us_window", r[2].st.median * 1e3);
    gtl_result_extra(head, "bytes_per_key_head", reads_fp8 ? 132 : 256);
    gtl_result_extra(head, "pct_of_ceiling_paged", gtl_result_pct(&r[1], &ctx.ceil));
    gtl_result_extra(head, "fp8_page_fraction_paged", pool ? (double)fp8_pages / pool : 0);
    gtl_result_extra(head, "rel_l2_vs_bf16_kv", rel_u[0]);
    gtl_result_extra(head, "rel_l2_vs_bf16_kv_paged", rel_u[1]);
    gtl_result_extra(head, "rel_l2_vs_bf16_kv_window", rel_u[2]);
    if (!rotate_all && ctx.args.l2 == GTL_L2_COLD) {
      GtlResult rr = r[0];
      rr.st = rot_st;
      gtl_result_extra(head, "rotate_median_ms", rot_st.median);
      gtl_result_extra(head, "rotate_p95_ms", rot_st.p95);
      gtl_result_extra(head, "pct_of_ceiling_rotate", gtl_result_pct(&rr, &ctx.ceil));
    }
  }
  rc = gtl_report_finish(&ctx, head);

  free(h_q), free(h_k), free(h_v), free(h_k8), free(h_v8), free(h_sc), free(ref), free(ref_u);
  free(h_lens), free(h_lens_r), free(h_table), free(h_ident), free(h_pf8), free(h_all8);
  void *bufs[] = {d_q, d_k, d_v, d_k8, d_v8, d_sc, d_kp, d_vp, d_kp8, d_vp8, d_scp, d_table, d_ident, d_lens, d_lens_r, d_sinks};
  for (int i = 0; i < 16; i++) GTL_CUDA(cudaFree(bufs[i]));
  gtl_guarded_free(&g_out);
  gtl_end(&ctx);
  return rc;
}
