// expert_gemv.cuh — ch08's problem, reference, read-ceiling probe and driver, shared by
// baseline.cu and optimized.cu so that the two differ only in their kernel and its launch.
//
// The problem: the expert matrices of one gpt-oss-20b MoE layer at decode. E = 32 experts,
// each with gate+up W1 [2F][D] and down W2 [D][F] in bf16 (D = F = 2880); the router picked
// top_k = 4 experts, and in this chapter all B tokens picked the same 4, so the work is a
// pure GEMV over 2·top_k matrices (one launch):
//     gate+up of expert e:  u_e[b][n] = sum_d W1_e[n][d] · x[b][d]      (N = 5760, K = 2880)
//     down of expert e:     z_e[b][n] = sum_f W2_e[n][f] · h_e[b][f]    (N = 2880, K = 2880)
// h_e stands in for SwiGLU(u_e) (seeded here: the lab chains the two). x, h bf16; y fp32.
//
// Roofline: every weight must cross DRAM once (4 · (5760 + 2880) · 2880 · 2 B = 199 MB);
// x, h and y add B · 37 KB. That is 200 MB for 2·B·99.5 MFLOP: 1 FLOP/B at B = 1, far
// below the H200's ~200 FLOP/B balance point, so the bound is read bandwidth. The weights
// are 3.3x the 60 MB L2 and the L2 is flushed before every timed launch anyway.
// Two figures (common/bench.h): the metric is --l2=cold, one launch alone between two
// events after an L2 flush; beside it, at B = 1, the --l2=rotate figure: launches back to
// back, each on the next of N copies of the inputs (weights of the top_k experts, x, h;
// N × bytes >= 4 × L2), as the GEMV runs inside a decode step. --l2=rotate makes the
// rotated figure the metric of every row; --l2=warm times neither copies nor flushes.
// The read ceiling: expectations/<gpu>.json "read_gbps" when present, else the datasheet;
// this program also times a read-only streaming kernel (read_stream_kernel) on the whole
// 1.6 GB expert buffer and on the same 199 MB, and reports the GEMV against both.
#pragma once
#include <cuda_bf16.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/gauntlet.h"
#include "gemv.cuh"

// Launcher each variant defines: enqueue one batched GEMV (all matrices of g) on stream s.
void gemv_launch(const GemvBatch *g, cudaStream_t s);

typedef struct {
  int64_t E, top_k, D, F;  // experts, experts used, hidden size, expert FFN size
  int32_t experts[GEMV_MAX_MATS / 2];
  const __nv_bfloat16 *d_w;  // E × {W1 [2F][D], W2 [D][F]} back to back
  const __nv_bfloat16 *d_x;  // [GEMV_MAX_BATCH][D] tokens
  const __nv_bfloat16 *d_h;  // [top_k][GEMV_MAX_BATCH][F] down-projection inputs
  float *d_y;                // [top_k] × {u [B][2F], z [B][D]} back to back
} ExpertGemv;

static int64_t expert_elems(const ExpertGemv *p) { return 3 * p->F * p->D; }
static int64_t expert_rows(const ExpertGemv *p) { return p->top_k * (2 * p->F + p->D); }

// Bytes one launch must move at batch B: weights once, x once, each h_e, every y (fp32).
static double expert_gemv_bytes(const ExpertGemv *p, int B) {
  return (double)p->top_k * expert_elems(p) * 2 + (double)B * p->D * 2 +
         (double)p->top_k * B * p->F * 2 + (double)expert_rows(p) * B * 4;
}
static double expert_gemv_flops(const ExpertGemv *p, int B) {
  return 2.0 * B * p->top_k * expert_elems(p);
}

// The launch description for batch B: matrix 2i is expert i's gate+up, 2i+1 its down;
// outputs back to back in d_y, each [B][N].
static GemvBatch expert_gemv_batch(const ExpertGemv *p, int B) {
  GemvBatch g;
  memset(&g, 0, sizeof g);
  g.B = B;
  float *y = p->d_y;
  for (int64_t i = 0; i < p->top_k; i++) {
    const __nv_bfloat16 *w1 = p->d_w + p->experts[i] * expert_elems(p);
    const __nv_bfloat16 *w2 = w1 + 2 * p->F * p->D;
    const __nv_bfloat16 *h = p->d_h + i * GEMV_MAX_BATCH * p->F;
    if (gemv_batch_add(&g, w1, p->d_x, y, 2 * p->F, p->D) != 0) exit(GTL_EXIT_RUNTIME);
    y += B * 2 * p->F;
    if (gemv_batch_add(&g, w2, h, y, p->D, p->F) != 0) exit(GTL_EXIT_RUNTIME);
    y += B * p->D;
  }
  return g;
}

// Routing: top_k distinct experts drawn from the seed (as ch07 draws them per token).
static void experts_select(int64_t E, int64_t top_k, uint64_t seed, int32_t *out) {
  uint64_t draw = 0;
  for (int64_t j = 0; j < top_k; j++) {
    int dup;
    do {
      out[j] = (int32_t)gtl_uniform_u32(seed ^ 0xE8E8ull, draw++, (uint32_t)E);
      dup = 0;
      for (int64_t i = 0; i < j; i++) dup |= out[i] == out[j];
    } while (dup);
  }
}

// Reference in double from the same bf16 values, for all GEMV_MAX_BATCH tokens:
// ref[(row)·GEMV_MAX_BATCH + b] with rows numbered as in expert_gemv_batch.
static double *expert_gemv_cpu(const ExpertGemv *p) {
  const int BM = GEMV_MAX_BATCH;
  const int64_t D = p->D, F = p->F, n_exp = expert_elems(p);
  uint16_t *h_w = (uint16_t *)malloc(n_exp * 2), *h_x = (uint16_t *)malloc(BM * D * 2),
           *h_h = (uint16_t *)malloc(p->top_k * BM * F * 2);
  double *xd = (double *)malloc(sizeof(double) * BM * (D > F ? D : F));
  double *wrow = (double *)malloc(sizeof(double) * (D > F ? D : F));
  double *ref = (double *)malloc(sizeof(double) * expert_rows(p) * BM);
  if (!h_w || !h_x || !h_h || !xd || !wrow || !ref) {
    fprintf(stderr, "ch08: host out of memory for the reference\n");
    exit(GTL_EXIT_RUNTIME);
  }
  GTL_CUDA(cudaMemcpy(h_x, p->d_x, BM * D * 2, cudaMemcpyDeviceToHost));
  GTL_CUDA(cudaMemcpy(h_h, p->d_h, p->top_k * BM * F * 2, cudaMemcpyDeviceToHost));
  int64_t row = 0;
  for (int64_t i = 0; i < p->top_k; i++) {
    GTL_CUDA(cudaMemcpy(h_w, p->d_w + p->experts[i] * n_exp, n_exp * 2,
                        cudaMemcpyDeviceToHost));
    for (int mat = 0; mat < 2; mat++) {  // gate+up [2F][D] on x, then down [D][F] on h_i
      const int64_t N = mat ? D : 2 * F, K = mat ? F : D;
      const uint16_t *w = h_w + (mat ? 2 * F * D : 0), *in = mat ? h_h + i * BM * F : h_x;
      for (int b = 0; b < BM; b++)  // xd[k][b]: the 8 tokens' sums advance together
        for (int64_t k = 0; k < K; k++) xd[k * BM + b] = gtl_bf16_to_f32(in[b * K + k]);
      for (int64_t n = 0; n < N; n++, row++) {
        double acc[GEMV_MAX_BATCH] = {0};
        for (int64_t k = 0; k < K; k++) wrow[k] = gtl_bf16_to_f32(w[n * K + k]);
        for (int64_t k = 0; k < K; k++)
          for (int b = 0; b < BM; b++) acc[b] += wrow[k] * xd[k * BM + b];
        for (int b = 0; b < BM; b++) ref[row * BM + b] = acc[b];
      }
    }
  }
  free(h_w);
  free(h_x);
  free(h_h);
  free(xd);
  free(wrow);
  return ref;
}

// Run batch B once and compare every output with the reference (fp32 tolerance: the
// products are exact, only the fp32 sums round — the reduction trees keep it near 1e-7).
static void expert_gemv_validate(const ExpertGemv *p, int B, const double *ref,
                                 GtlGuarded *g_y, cudaStream_t s, GtlErr *err) {
  const int64_t rows = expert_rows(p);
  const size_t n = (size_t)rows * B;
  GemvBatch g = expert_gemv_batch(p, B);
  gtl_poison(p->d_y, g_y->bytes, s);
  gemv_launch(&g, s);
  GTL_CUDA(cudaStreamSynchronize(s));
  float *out = (float *)malloc(n * 4), *outr = (float *)malloc(n * 4);
  double *refb = (double *)malloc(n * sizeof(double));
  GTL_CUDA(cudaMemcpy(out, p->d_y, n * 4, cudaMemcpyDeviceToHost));
  size_t i = 0, off = 0;
  int64_t row0 = 0;
  for (int m = 0; m < g.n_mats; m++) {  // y_m is [B][N_m]; the reference is [row][b]
    for (int b = 0; b < B; b++)
      for (int64_t r = 0; r < g.N[m]; r++, i++) {
        outr[i] = out[off + (size_t)b * g.N[m] + r];
        refb[i] = ref[(row0 + r) * GEMV_MAX_BATCH + b];
      }
    off += (size_t)B * g.N[m];
    row0 += g.N[m];
  }
  gtl_compare(outr, refb, n, gtl_tol_for(GTL_FP32), err);
  size_t bad_guard = gtl_guarded_check(g_y);
  if (bad_guard) {
    fprintf(stderr, "ch08: %zu guard bytes around y were overwritten (B=%d)\n", bad_guard, B);
    err->pass = 0;
  }
  free(out);
  free(outr);
  free(refb);
}

// Strategy: grid-stride read of a buffer, 4 independent 16-byte loads per thread, nothing
// written. Limiter: DRAM read bandwidth — this is the ceiling the GEMV is held to.
__global__ void read_stream_kernel(const uint4 *__restrict__ p, int64_t n16, unsigned *sink) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  unsigned acc = 0;
  for (; i + 3 * stride < n16; i += 4 * stride) {
    const uint4 a = p[i], b = p[i + stride], c = p[i + 2 * stride], d = p[i + 3 * stride];
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^
           d.z ^ d.w;
  }
  for (; i < n16; i += stride) acc ^= p[i].x ^ p[i].y ^ p[i].z ^ p[i].w;
  if (acc == 0x9E3779B9u) *sink = acc;  // a use of the loads the compiler cannot drop
}

typedef struct {
  const uint4 *p;
  int64_t n16;
  unsigned *sink;
  int blocks;
} ReadStream;

static void read_stream_run(void *user, cudaStream_t s) {
  const ReadStream *r = (const ReadStream *)user;
  read_stream_kernel<<<r->blocks, 256, 0, s>>>(r->p, r->n16, r->sink);
  GTL_LAUNCH();
}

typedef struct {
  GemvBatch g;
} GemvRun;

static void gemv_run(void *user, cudaStream_t s) { gemv_launch(&((GemvRun *)user)->g, s); }

// --l2=rotate: n copies of the step's read-only inputs, copy i one region holding the
// top_k chosen experts' weights (as experts 0..top_k-1), x and h; outputs are shared.
typedef struct {
  int n;              // copies: gtl_rotate_copies_for(bytes of one region)
  size_t stride;      // bytes of one region, a multiple of 256
  void *base;         // n regions back to back
  ExpertGemv *p;      // [n] problems, p[i] reading region i
  GemvBatch *g;       // [n] launch descriptions at the batch being timed
} GemvRotate;

static void expert_rotate_setup(GtlCtx *ctx, const ExpertGemv *p, GemvRotate *rot) {
  const size_t w_bytes = (size_t)p->top_k * expert_elems(p) * 2,
               x_bytes = (size_t)GEMV_MAX_BATCH * p->D * 2,
               h_bytes = (size_t)p->top_k * GEMV_MAX_BATCH * p->F * 2;
  rot->stride = (w_bytes + x_bytes + h_bytes + 255) / 256 * 256;
  rot->n = gtl_rotate_copies_for(ctx, rot->stride);
  rot->base = gtl_malloc(rot->stride * rot->n, "--l2=rotate input copies (>= 4x L2)");
  rot->p = (ExpertGemv *)malloc(sizeof(ExpertGemv) * rot->n);
  rot->g = (GemvBatch *)malloc(sizeof(GemvBatch) * rot->n);
  if (!rot->p || !rot->g) {
    fprintf(stderr, "ch08: host out of memory for %d input copies\n", rot->n);
    exit(GTL_EXIT_RUNTIME);
  }
  for (int c = 0; c < rot->n; c++) {
    char *r = (char *)rot->base + rot->stride * c;
    ExpertGemv *q = &rot->p[c];
    *q = *p;
    for (int64_t i = 0; i < p->top_k; i++) {
      const __nv_bfloat16 *w = p->d_w + p->experts[i] * expert_elems(p);
      GTL_CUDA(cudaMemcpyAsync(r + i * expert_elems(p) * 2, w, expert_elems(p) * 2,
                               cudaMemcpyDeviceToDevice, ctx->stream));
      q->experts[i] = (int32_t)i;
    }
    GTL_CUDA(cudaMemcpyAsync(r + w_bytes, p->d_x, x_bytes, cudaMemcpyDeviceToDevice, ctx->stream));
    GTL_CUDA(cudaMemcpyAsync(r + w_bytes + x_bytes, p->d_h, h_bytes, cudaMemcpyDeviceToDevice,
                             ctx->stream));
    q->d_w = (const __nv_bfloat16 *)r;
    q->d_x = (const __nv_bfloat16 *)(r + w_bytes);
    q->d_h = (const __nv_bfloat16 *)(r + w_bytes + x_bytes);
  }
  GTL_CUDA(cudaStreamSynchronize(ctx->stream));
}

static void expert_rotate_batch(GemvRotate *rot, int B) {
  for (int c = 0; c < rot->n; c++) rot->g[c] = expert_gemv_batch(&rot->p[c], B);
}

static void gemv_rotate_run(void *user, int copy, cudaStream_t s) {
  gemv_launch(&((GemvRotate *)user)->g[copy], s);
}

static void expert_rotate_free(GemvRotate *rot) {
  if (rot->base) GTL_CUDA(cudaFree(rot->base));
  free(rot->p);
  free(rot->g);
  memset(rot, 0, sizeof *rot);
}

// main() of both variants: parse, device, inputs, reference, poison, validated runs (every
// batch size), timed runs, read ceiling, report (rows B = 1, 2, 4, 8; the JSON line is B = 1).
static int expert_gemv_main(int argc, char **argv, const char *variant, const char *strategy) {
  int64_t E = 32, top_k = 4, D = 2880, F = 2880;
  GtlOpt opts[] = {{"E", GTL_OPT_INT, &E, "experts (default 32)"},
                   {"top_k", GTL_OPT_INT, &top_k, "experts used, 1..8 (default 4)"},
                   {"D", GTL_OPT_INT, &D, "hidden size, a multiple of 8 (default 2880)"},
                   {"F", GTL_OPT_INT, &F, "expert FFN size, a multiple of 8 (default 2880)"}};
  GtlCtx ctx;
  gtl_allow_rotate();  // this driver keeps input copies (GemvRotate)
  gtl_parse(&ctx, "ch08", variant, argc, argv, opts, 4, 10, 100, GTL_L2_COLD);
  if (ctx.args.size == GTL_SIZE_SMALL) E = 8, D = 1024, F = 1024;
  if (ctx.args.size == GTL_SIZE_LARGE) top_k = 8;
  if (top_k < 1 || 2 * top_k > GEMV_MAX_MATS || E < top_k || E > 1024 || D < 8 || D % 8 ||
      F < 8 || F % 8 || D > 65536 || F > 32768)
    gtl_usage_fail(&ctx, "need 1 <= top_k <= 8, top_k <= E <= 1024, D and F multiples of 8 "
                         "(8 <= D <= 65536, 8 <= F <= 32768)");
  gtl_open(&ctx);
  const int batches[] = {1, 2, 4, 8}, n_batches = 4;
  ExpertGemv p;
  memset(&p, 0, sizeof p);
  p.E = E, p.top_k = top_k, p.D = D, p.F = F;
  char workload[128];
  snprintf(workload, sizeof workload, "E%lld_k%lld_D%lld_F%lld_B1", (long long)E,
           (long long)top_k, (long long)D, (long long)F);

  gtl_phase_push(GTL_PHASE_SETUP);
  const size_t n_w = (size_t)E * expert_elems(&p), rows = (size_t)expert_rows(&p);
  __nv_bfloat16 *d_w = (__nv_bfloat16 *)gtl_malloc(n_w * 2, "expert weights [E][3FD] bf16");
  __nv_bfloat16 *d_x =
      (__nv_bfloat16 *)gtl_malloc(GEMV_MAX_BATCH * D * 2, "x [8][D] bf16");
  __nv_bfloat16 *d_h =
      (__nv_bfloat16 *)gtl_malloc(top_k * GEMV_MAX_BATCH * F * 2, "h [top_k][8][F] bf16");
  unsigned *d_sink = (unsigned *)gtl_malloc(4, "read sink");
  GtlGuarded g_y;
  p.d_y = (float *)gtl_guarded_alloc(&g_y, rows * GEMV_MAX_BATCH * 4, "y [rows][8] fp32");
  gtl_fill_uniform(d_w, GTL_BF16, n_w, ctx.args.seed, -1.0f, 1.0f, ctx.stream);
  gtl_fill_uniform(d_x, GTL_BF16, GEMV_MAX_BATCH * D, ctx.args.seed + 1, -1.0f, 1.0f,
                   ctx.stream);
  gtl_fill_uniform(d_h, GTL_BF16, top_k * GEMV_MAX_BATCH * F, ctx.args.seed + 2, -1.0f, 1.0f,
                   ctx.stream);
  GTL_CUDA(cudaStreamSynchronize(ctx.stream));
  p.d_w = d_w, p.d_x = d_x, p.d_h = d_h;
  experts_select(E, top_k, ctx.args.seed, p.experts);
  gtl_phase_pop();

  char notes[1024], chosen[128] = "";
  for (int64_t i = 0; i < top_k; i++)
    snprintf(chosen + strlen(chosen), sizeof chosen - strlen(chosen), " %d", p.experts[i]);
  snprintf(notes, sizeof notes,
           "strategy: %s\n"
           "experts used:%s of %lld; %lld matrices: gate+up [%lld][%lld] and down [%lld][%lld] "
           "bf16; x, h bf16; y fp32; fp32 accumulate\n"
           "roofline: %.1f MB per launch at B=1 (weights once + x + h + y), %.1f MFLOP; bound "
           "by read bandwidth; rows below for B = 1, 2, 4, 8, JSON line for B = 1",
           strategy, chosen, (long long)E, (long long)(2 * top_k), (long long)(2 * F),
           (long long)D, (long long)D, (long long)F, expert_gemv_bytes(&p, 1) / 1e6,
           expert_gemv_flops(&p, 1) / 1e6);
  gtl_report_header(&ctx, workload, notes);

  GtlResult r[4];
  char names[4][32], loads[4][128];
  for (int i = 0; i < n_batches; i++) {
    snprintf(loads[i], sizeof loads[i], "E%lld_k%lld_D%lld_F%lld_B%d", (long long)E,
             (long long)top_k, (long long)D, (long long)F, batches[i]);
    gtl_result_init(&r[i], &ctx, "bf16", loads[i]);
    snprintf(names[i], sizeof names[i], "%s_B%d", variant, batches[i]);
    r[i].variant = names[i];
    r[i].bytes = expert_gemv_bytes(&p, batches[i]);
    r[i].flops = expert_gemv_flops(&p, batches[i]);
    r[i].bound = GTL_BOUND_READ;
    r[i].ref = "cpu_double";
  }

  // Input copies for the rotated figure: B = 1 beside the cold metric, every row as the
  // metric under --l2=rotate; none under --l2=warm.
  const int rotate_all = ctx.args.l2 == GTL_L2_ROTATE, rotate_b1 = ctx.args.l2 == GTL_L2_COLD;
  GemvRotate rot;
  memset(&rot, 0, sizeof rot);
  if (rotate_all || rotate_b1) {
    gtl_phase_push(GTL_PHASE_SETUP);
    expert_rotate_setup(&ctx, &p, &rot);
    gtl_phase_pop();
  }

  if (ctx.args.verify) {
    gtl_phase_push(GTL_PHASE_REFERENCE);
    double *ref = expert_gemv_cpu(&p);
    gtl_phase_pop();
    gtl_phase_push(GTL_PHASE_VALIDATE);
    for (int i = 0; i < n_batches; i++) {
      expert_gemv_validate(&p, batches[i], ref, &g_y, ctx.stream, &r[i].err);
      // The last input copy must give the same outputs (same values, other addresses).
      if (r[i].err.pass && rot.n && (rotate_all || i == 0))
        expert_gemv_validate(&rot.p[rot.n - 1], batches[i], ref, &g_y, ctx.stream, &r[i].err);
      r[i].validated = 1;
      if (!r[i].err.pass) {  // never time a wrong kernel
        gtl_phase_pop();
        free(ref);
        gtl_report_row(&ctx, &r[i]);
        r[i].variant = variant;
        return gtl_report_finish(&ctx, &r[i]);
      }
    }
    gtl_phase_pop();
    free(ref);
  }

  for (int i = 0; i < n_batches; i++) {
    if (rotate_all) {
      expert_rotate_batch(&rot, batches[i]);
      gtl_bench_rotate(&ctx, gemv_rotate_run, &rot, rot.n, &r[i].st);
    } else {
      GemvRun run = {expert_gemv_batch(&p, batches[i])};
      gtl_bench(&ctx, gemv_run, &run, &r[i].st);
    }
    gtl_report_row(&ctx, &r[i]);
  }
  GtlResult r_rot = r[0];  // B = 1 rotated, beside the cold metric
  char rot_name[48];
  if (rotate_b1) {
    snprintf(rot_name, sizeof rot_name, "%s_B1_rotate", variant);
    r_rot.variant = rot_name;
    expert_rotate_batch(&rot, 1);
    gtl_bench_rotate(&ctx, gemv_rotate_run, &rot, rot.n, &r_rot.st);
    gtl_report_row(&ctx, &r_rot);
  }

  // The read ceiling, measured here: the whole expert buffer, then the GEMV's byte count.
  const double gemv_w_bytes = (double)top_k * expert_elems(&p) * 2;
  ReadStream rs_all = {(const uint4 *)d_w, (int64_t)(n_w * 2 / 16), d_sink, ctx.dev.sms * 8};
  ReadStream rs_same = {(const uint4 *)d_w, (int64_t)(gemv_w_bytes / 16), d_sink,
                        ctx.dev.sms * 8};
  GtlResult rd[2];
  char rd_names[2][32], rd_loads[2][64];
  const ReadStream *rs[2] = {&rs_all, &rs_same};
  for (int i = 0; i < 2; i++) {
    snprintf(rd_names[i], sizeof rd_names[i], "read_stream_%.0fMB", rs[i]->n16 * 16 / 1e6);
    snprintf(rd_loads[i], sizeof rd_loads[i], "read_%lldB", (long long)(rs[i]->n16 * 16));
    gtl_result_init(&rd[i], &ctx, "bf16", rd_loads[i]);
    rd[i].variant = rd_names[i];
    rd[i].bytes = (double)rs[i]->n16 * 16;
    rd[i].flops = 0;
    rd[i].bound = GTL_BOUND_READ;
    gtl_bench(&ctx, read_stream_run, (void *)rs[i], &rd[i].st);
    gtl_report_row(&ctx, &rd[i]);
  }

  const double read_all = gtl_result_gbps(&rd[0]), read_same = gtl_result_gbps(&rd[1]);
  GtlResult *head = &r[0];
  head->variant = variant;
  gtl_result_extra(head, "read_gbps_measured", read_all);
  gtl_result_extra(head, "pct_of_measured_read", 100.0 * gtl_result_gbps(head) / read_all);
  gtl_result_extra(head, "read_gbps_same_bytes", read_same);
  gtl_result_extra(head, "median_ms_b2", r[1].st.median);
  gtl_result_extra(head, "median_ms_b4", r[2].st.median);
  gtl_result_extra(head, "median_ms_b8", r[3].st.median);
  gtl_result_extra(head, "gbps_b8", gtl_result_gbps(&r[3]));
  if (rotate_b1) {
    gtl_result_extra(head, "rotate_median_ms", r_rot.st.median);
    gtl_result_extra(head, "rotate_p95_ms", r_rot.st.p95);
    gtl_result_extra(head, "pct_of_ceiling_rotate", gtl_result_pct(&r_rot, &ctx.ceil));
    gtl_result_extra(head, "pct_of_measured_read_rotate",
                     100.0 * gtl_result_gbps(&r_rot) / read_all);
  }
  if (!ctx.args.json)
    for (int i = 0; i < n_batches; i++)
      printf("# B=%d: %.1f GB/s = %.1f%% of the measured read ceiling (%.1f GB/s over %.0f MB),"
             " %.1f%% of the same-size read (%.1f GB/s)\n",
             batches[i], gtl_result_gbps(&r[i]), 100.0 * gtl_result_gbps(&r[i]) / read_all,
             read_all, rd[0].bytes / 1e6, 100.0 * gtl_result_gbps(&r[i]) / read_same,
             read_same);
  // The chapter's goal: 88% of the measured read ceiling at B = 1, in the rotated figure.
  if (!ctx.args.json && (rotate_b1 || rotate_all)) {
    const double pct = 100.0 * gtl_result_gbps(rotate_b1 ? &r_rot : &r[0]) / read_all;
    printf("# goal, B=1 rotated (%d input copies, %d launches per event pair): %.1f%% of the "
           "measured read ceiling (%.1f GB/s), goal >= 88%%: %s\n",
           rot.n, gtl_rotate_k(rot.n), pct, read_all, pct >= 88.0 ? "met" : "not met");
  }
  int rc = gtl_report_finish(&ctx, head);

  GTL_CUDA(cudaFree(d_w));
  GTL_CUDA(cudaFree(d_x));
  GTL_CUDA(cudaFree(d_h));
  GTL_CUDA(cudaFree(d_sink));
  gtl_guarded_free(&g_y);
  expert_rotate_free(&rot);
  gtl_end(&ctx);
  return rc;
}
