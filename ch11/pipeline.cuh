// pipeline.cuh — ch11's problem, reference, part timings and driver, shared by baseline.cu
// and optimized.cu so that the two differ only in how one pass is scheduled.
//
// The problem: expert weights offloaded to host memory, streamed to the GPU chunk by
// chunk while a batch of tokens is pushed through each. A chunk is one gpt-oss-20b
// expert's fused gate+up matrix W_c [2F][D] bf16 (D = F = 2880: 33.2 MB),
// 16 chunks per pass, 531 MB in pinned host memory (cudaMallocHost, ch03). For
// each chunk: W_c host→device; h_c = swiglu(x_c · W_c^T) for B tokens routed to that
// expert (overlap.cuh); h_c [B][F] bf16 device→host.
//
// Roofline: per pass the link carries chunks·2F·D·2 B host→device (531 MB) and
// chunks·B·F·2 B device→host (377 MB at B = 4096), two directions that a PCIe link runs at
// the same time; the SMs do chunks·2·B·2F·D FLOP (544 GFLOP at B = 4096). The headline
// GB/s is the host→device bytes over the pass time, against the pinned H2D ceiling. The
// bound of an overlapped pass is max(copy time, compute time), both measured in the same
// run (CHUNK_* part timings): B moves it from the link (small B) to the tensor cores.
//
// Reference: cuBLAS (cublasGemmEx, fp32 compute, fp32 output) for gate+up of every chunk
// on the same bf16 inputs, then the clamped SwiGLU in double on the host: every output
// of every chunk is checked, each chunk on its own against the bf16 tolerance.
#pragma once
#include <cublas_v2.h>  // before gauntlet.h, so that check.h defines GTL_CUBLAS
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/gauntlet.h"
#include "overlap.cuh"

// What each variant defines: one pass over every chunk, enqueued on s (ordered on s as a
// whole), and the number of device slots it uses.
void pipeline_launch(const ChunkPipeline *p, cudaStream_t s);
int pipeline_slots_used(const ChunkPipeline *p);

// Roofline of one pass: bytes host->device (every W_c once), bytes device->host (every
// h_c once), and FLOP (2·B·2F·D per chunk; SwiGLU's few FLOP per output not counted).
static double pipeline_h2d_bytes(const ChunkPipeline *p) {
  return (double)p->chunks * chunk_w_elems(p) * 2;
}
static double pipeline_d2h_bytes(const ChunkPipeline *p) {
  return (double)p->chunks * chunk_h_elems(p) * 2;
}
static double pipeline_flops(const ChunkPipeline *p) {
  return 2.0 * p->chunks * p->B * 2 * p->F * p->D;
}

// Reference for every chunk: ref[c][b][f] (float storage of double SwiGLU values: the
// rounding to float, 6e-8 relative, is far below the bf16 tolerance).
static float *pipeline_reference(const ChunkPipeline *p, __nv_bfloat16 *d_scratch_w,
                                 cudaStream_t s) {
  const int64_t B = p->B, D = p->D, N = 2 * p->F, F = p->F;
  float *ref = (float *)malloc(sizeof(float) * p->chunks * B * F);
  float *gu = (float *)malloc(sizeof(float) * B * N);
  float *d_gu = (float *)gtl_malloc(sizeof(float) * B * N, "reference gate+up [B][2F] fp32");
  if (!ref || !gu) {
    fprintf(stderr, "ch11: host out of memory for the reference (%.1f MiB)\n",
            sizeof(float) * (p->chunks * B * F + B * N) / 1048576.0);
    exit(GTL_EXIT_RUNTIME);
  }
  cublasHandle_t h;
  GTL_CUBLAS(cublasCreate(&h));
  GTL_CUBLAS(cublasSetStream(h, s));
  const float alpha = 1.0f, beta = 0.0f;
  for (int c = 0; c < p->chunks; c++) {
    GTL_CUDA(cudaMemcpyAsync(d_scratch_w, p->h_w + c * chunk_w_elems(p),
                             chunk_w_elems(p) * 2, cudaMemcpyHostToDevice, s));
    // Row-major gu[B][N] = x·W^T is column-major gu^T[N][B] = W·x^T: op(W) = T on the
    // column-major [K][N] view of W, op(x) = N on the column-major [K][B] view of x.
    GTL_CUBLAS(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)B, (int)D, &alpha,
                            d_scratch_w, CUDA_R_16BF, (int)D, p->d_x + c * B * D, CUDA_R_16BF,
                            (int)D, &beta, d_gu, CUDA_R_32F, (int)N, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
    GTL_CUDA(cudaMemcpyAsync(gu, d_gu, sizeof(float) * B * N, cudaMemcpyDeviceToHost, s));
    GTL_CUDA(cudaStreamSynchronize(s));
    float *r = ref + c * B * F;
    for (int64_t i = 0; i < B * F; i++) {  // gate = gu[2f], up = gu[2f+1]
      const double g = fmin((double)gu[2 * i], 7.0);
      const double u = fmin(fmax((double)gu[2 * i + 1], -7.0), 7.0);
      r[i] = (float)((u + 1.0) * g / (1.0 + exp(-1.702 * g)));
    }
  }
  GTL_CUBLAS(cublasDestroy(h));
  GTL_CUDA(cudaFree(d_gu));
  free(gu);
  return ref;
}

// Every chunk's output against its reference; err gets the worst chunk (a failing one
// first, else the largest rel_l2).
static void pipeline_compare(const ChunkPipeline *p, const float *ref, GtlErr *err) {
  const size_t n = chunk_h_elems(p);
  float *out = (float *)malloc(sizeof(float) * n);
  double *refd = (double *)malloc(sizeof(double) * n);
  if (!out || !refd) {
    fprintf(stderr, "ch11: host out of memory for the comparison\n");
    exit(GTL_EXIT_RUNTIME);
  }
  const GtlTol tol = gtl_tol_for(GTL_BF16);
  for (int c = 0; c < p->chunks; c++) {
    const uint16_t *o = (const uint16_t *)(p->h_out + c * n);
    for (size_t i = 0; i < n; i++) {
      out[i] = gtl_bf16_to_f32(o[i]);
      refd[i] = ref[c * n + i];
    }
    GtlErr e;
    gtl_compare(out, refd, n, tol, &e);
    if (c == 0 || (!e.pass && err->pass) || (e.pass == err->pass && e.rel_l2 > err->rel_l2))
      *err = e;
    if (!e.pass) {
      char what[64];
      snprintf(what, sizeof what, "chunk %d of %d", c, p->chunks);
      gtl_err_print(stderr, &e, what);
    }
  }
  free(out);
  free(refd);
}

// gtl_bench callbacks: a pass with only some stages (PartRun), or the variant's whole pass.
typedef struct {
  const ChunkPipeline *p;
  int stages;  // CHUNK_* mask
} PartRun;

static void part_serial(void *u, cudaStream_t s) {
  chunk_serial_launch(((PartRun *)u)->p, ((PartRun *)u)->stages, s);
}
static void part_ring(void *u, cudaStream_t s) {
  chunk_ring_launch(((PartRun *)u)->p, ((PartRun *)u)->stages, s);
}
static void pass_run(void *u, cudaStream_t s) { pipeline_launch((const ChunkPipeline *)u, s); }

// main() of both variants: parse, device, inputs, reference, poison, one validated pass,
// timed passes, the parts timed alone (same run), report.
static int pipeline_main(int argc, char **argv, const char *variant, const char *strategy) {
  int64_t B = INT64_MIN, chunks = INT64_MIN, slots = 3, D = INT64_MIN, F = INT64_MIN;
  GtlOpt opts[] = {
      {"B", GTL_OPT_INT, &B, "tokens per chunk, 1..65536 (default 4096; small 300)"},
      {"chunks", GTL_OPT_INT, &chunks, "chunks per pass, 1..64 (default 16; small 4)"},
      {"slots", GTL_OPT_INT, &slots, "device slots of optimized's ring, 1..4 (default 3)"},
      {"D", GTL_OPT_INT, &D, "hidden size, a multiple of 32 (default 2880; small 1024)"},
      {"F", GTL_OPT_INT, &F, "SwiGLU width, a multiple of 64 (default 2880; small 1024)"}};
  GtlCtx ctx;
  gtl_parse(&ctx, "ch11", variant, argc, argv, opts, 5, 3, 20, GTL_L2_WARM);
  const int small = ctx.args.size == GTL_SIZE_SMALL;
  if (B == INT64_MIN) B = small ? 300 : ctx.args.size == GTL_SIZE_LARGE ? 8192 : 4096;
  if (chunks == INT64_MIN) chunks = small ? 4 : 16;
  if (D == INT64_MIN) D = small ? 1024 : 2880;
  if (F == INT64_MIN) F = small ? 1024 : 2880;
  if (B < 1 || B > 65536 || chunks < 1 || chunks > 64 || slots < 1 ||
      slots > CHUNK_MAX_SLOTS || D < 32 || D % 32 || D > 16384 || F < 64 || F % 64 ||
      F > 16384)
    gtl_usage_fail(&ctx, "need 1 <= B <= 65536, 1 <= chunks <= 64, 1 <= slots <= %d, D a "
                         "multiple of 32 in 32..16384, F a multiple of 64 in 64..16384",
                   CHUNK_MAX_SLOTS);
  gtl_open(&ctx);

  ChunkPipeline p;
  memset(&p, 0, sizeof p);
  p.chunks = (int)chunks, p.slots = (int)slots, p.B = B, p.D = D, p.F = F;
  const size_t nw = chunk_w_elems(&p), nh = chunk_h_elems(&p);
  char workload[128];
  snprintf(workload, sizeof workload, "chunks%lld_B%lld_D%lld_F%lld", (long long)chunks,
           (long long)B, (long long)D, (long long)F);

  gtl_phase_push(GTL_PHASE_SETUP);
  __nv_bfloat16 *h_w = (__nv_bfloat16 *)gtl_malloc_pinned(chunks * nw * 2,
                                                          "host expert chunks [chunks][2F][D]");
  unsigned char *h_out_base = (unsigned char *)gtl_malloc_pinned(
      chunks * nh * 2 + 2 * GTL_GUARD_BYTES, "host outputs [chunks][B][F] + guards");
  p.h_w = h_w;
  p.h_out = (__nv_bfloat16 *)(h_out_base + GTL_GUARD_BYTES);
  __nv_bfloat16 *d_x =
      (__nv_bfloat16 *)gtl_malloc(chunks * B * D * 2, "tokens x [chunks][B][D] bf16");
  p.d_w = (__nv_bfloat16 *)gtl_malloc(slots * nw * 2, "weight slots [slots][2F][D] bf16");
  GtlGuarded g_h;
  p.d_h = (__nv_bfloat16 *)gtl_guarded_alloc(&g_h, slots * nh * 2, "output slots [slots][B][F]");
  p.d_x = d_x;
  // Seeded weights: W in [-1/8, 1/8) puts gate and up near N(0, 2.2^2) at D = 2880, so
  // both sides of the clamps at ±7 are exercised. Filled on the device, brought to the
  // host once (untimed).
  gtl_fill_uniform(d_x, GTL_BF16, chunks * B * D, ctx.args.seed, -1.0f, 1.0f, ctx.stream);
  for (int c = 0; c < p.chunks; c++) {
    gtl_fill_uniform(p.d_w, GTL_BF16, nw, ctx.args.seed + 1 + c, -0.125f, 0.125f, ctx.stream);
    GTL_CUDA(cudaMemcpyAsync(h_w + c * nw, p.d_w, nw * 2, cudaMemcpyDeviceToHost, ctx.stream));
  }
  GTL_CUDA(cudaStreamSynchronize(ctx.stream));
  GTL_CUDA(cudaStreamCreateWithFlags(&p.s_h2d, cudaStreamNonBlocking));
  GTL_CUDA(cudaStreamCreateWithFlags(&p.s_comp, cudaStreamNonBlocking));
  GTL_CUDA(cudaStreamCreateWithFlags(&p.s_d2h, cudaStreamNonBlocking));
  GTL_CUDA(cudaEventCreateWithFlags(&p.ev_fork, cudaEventDisableTiming));
  for (int k = 0; k < CHUNK_MAX_SLOTS; k++) {
    GTL_CUDA(cudaEventCreateWithFlags(&p.ev_h2d[k], cudaEventDisableTiming));
    GTL_CUDA(cudaEventCreateWithFlags(&p.ev_comp[k], cudaEventDisableTiming));
    GTL_CUDA(cudaEventCreateWithFlags(&p.ev_d2h[k], cudaEventDisableTiming));
  }
  gtl_phase_pop();

  char notes[1024];
  snprintf(notes, sizeof notes,
           "schedule: %s; %d device slot(s)\n"
           "per pass: %d chunks; each W_c [%lld][%lld] bf16 (%.1f MB) host->device, "
           "h_c = swiglu(x_c W_c^T) for B=%lld tokens, h_c [%lld][%lld] bf16 (%.1f MB) "
           "device->host; host buffers pinned\n"
           "roofline: %.1f MB H2D + %.1f MB D2H, %.1f GFLOP per pass; bound = max(copy time, "
           "compute time), both timed alone below (rows *_only, copies_both_ways)\n"
           "L2 policy irrelevant: the weights arrive at PCIe speed",
           strategy, pipeline_slots_used(&p), p.chunks, (long long)(2 * F), (long long)D,
           nw * 2 / 1e6, (long long)B, (long long)B, (long long)F, nh * 2 / 1e6,
           pipeline_h2d_bytes(&p) / 1e6, pipeline_d2h_bytes(&p) / 1e6,
           pipeline_flops(&p) / 1e9);
  gtl_report_header(&ctx, workload, notes);

  GtlResult r;
  gtl_result_init(&r, &ctx, "bf16", workload);
  r.bytes = pipeline_h2d_bytes(&p);
  r.flops = pipeline_flops(&p);
  r.bound = GTL_BOUND_H2D;
  r.ref = "cublas_fp32";

  if (ctx.args.verify) {
    gtl_phase_push(GTL_PHASE_REFERENCE);
    float *ref = pipeline_reference(&p, p.d_w, ctx.stream);
    gtl_phase_pop();
    gtl_phase_push(GTL_PHASE_VALIDATE);
    gtl_poison(p.d_w, slots * nw * 2, ctx.stream);  // a chunk never copied in shows as NaN
    gtl_poison(p.d_h, slots * nh * 2, ctx.stream);
    GTL_CUDA(cudaStreamSynchronize(ctx.stream));
    memset(h_out_base, GTL_GUARD_BYTE, GTL_GUARD_BYTES);
    memset(h_out_base + GTL_GUARD_BYTES, 0xFF, chunks * nh * 2);
    memset((unsigned char *)p.h_out + chunks * nh * 2, GTL_GUARD_BYTE, GTL_GUARD_BYTES);
    pipeline_launch(&p, ctx.stream);
    GTL_CUDA(cudaStreamSynchronize(ctx.stream));
    pipeline_compare(&p, ref, &r.err);
    const size_t bad_guard =
        gtl_guarded_check(&g_h) + gtl_guard_count_bad(h_out_base, GTL_GUARD_BYTES) +
        gtl_guard_count_bad((unsigned char *)p.h_out + chunks * nh * 2, GTL_GUARD_BYTES);
    if (bad_guard) {
      fprintf(stderr, "ch11: %zu guard bytes around the outputs were overwritten\n", bad_guard);
      r.err.pass = 0;
    }
    r.validated = 1;
    free(ref);
    gtl_phase_pop();
    if (!r.err.pass) {  // never time a wrong pipeline
      gtl_report_row(&ctx, &r);
      return gtl_report_finish(&ctx, &r);
    }
  }

  gtl_bench(&ctx, pass_run, &p, &r.st);
  gtl_report_row(&ctx, &r);

  // The parts alone, in the same run, under NVTX names of their own ("ch11.<variant>_parts.*")
  // so that a profile of "ch11.<variant>.timed]" holds only the pipeline.
  static char parts_name[32];
  snprintf(parts_name, sizeof parts_name, "%s_parts", variant);
  gtl_nvtx_init("ch11", parts_name);
  const char *part_names[4] = {"h2d_only", "compute_only", "d2h_only", "copies_both_ways"};
  const int part_stages[4] = {CHUNK_H2D, CHUNK_COMPUTE, CHUNK_D2H, CHUNK_H2D | CHUNK_D2H};
  GtlResult part[4];
  for (int i = 0; i < 4; i++) {
    PartRun run = {&p, part_stages[i]};
    gtl_result_init(&part[i], &ctx, "bf16", workload);
    part[i].variant = part_names[i];
    part[i].bytes = (part_stages[i] & CHUNK_H2D ? pipeline_h2d_bytes(&p) : 0) +
                    (part_stages[i] & CHUNK_D2H ? pipeline_d2h_bytes(&p) : 0);
    part[i].flops = part_stages[i] & CHUNK_COMPUTE ? pipeline_flops(&p) : 0;
    part[i].bound = i == 0 ? GTL_BOUND_H2D : i == 1 ? GTL_BOUND_BF16 : i == 2 ? GTL_BOUND_D2H
                                                                              : GTL_BOUND_NONE;
    // Both directions as the ring issues them (its streams and events, no kernels).
    gtl_bench(&ctx, i == 3 ? part_ring : part_serial, &run, &part[i].st);
    gtl_report_row(&ctx, &part[i]);
  }

  const double t = r.st.median, t_h2d = part[0].st.median, t_k = part[1].st.median,
               t_d2h = part[2].st.median, t_copy = part[3].st.median;
  const double serial = t_h2d + t_k + t_d2h, bound = fmax(t_copy, t_k);
  gtl_result_extra(&r, "h2d_ms", t_h2d);
  gtl_result_extra(&r, "compute_ms", t_k);
  gtl_result_extra(&r, "d2h_ms", t_d2h);
  gtl_result_extra(&r, "copy_ms", t_copy);
  gtl_result_extra(&r, "serial_ms", serial);
  gtl_result_extra(&r, "bound_ms", bound);
  gtl_result_extra(&r, "pct_of_bound", 100.0 * bound / t);
  gtl_result_extra(&r, "pct_of_serial_overlapped", 100.0 * (1.0 - t / serial));
  gtl_result_extra(&r, "h2d_gbps_alone", gtl_result_gbps(&part[0]));
  gtl_result_extra(&r, "compute_tflops", gtl_result_tflops(&part[1]));
  gtl_result_extra(&r, "slots", pipeline_slots_used(&p));
  if (!ctx.args.json)
    printf("# parts alone (ms): H2D %.3f, compute %.3f, D2H %.3f, both copies as the ring "
           "issues them %.3f; serialized sum %.3f\n"
           "# bound = max(copy %.3f, compute %.3f) = %.3f ms (%s-bound); this pass %.3f ms = "
           "%.1f%% of the bound; overlap 1 - pass/serialized = %.1f%%\n"
           "# H2D %.1f GB/s over the pass (alone %.1f GB/s; pinned ceiling %.1f GB/s from %s)\n",
           t_h2d, t_k, t_d2h, t_copy, serial, t_copy, t_k, bound,
           t_copy >= t_k ? "link" : "compute", t, 100.0 * bound / t, 100.0 * (1.0 - t / serial),
           gtl_result_gbps(&r), gtl_result_gbps(&part[0]), ctx.ceil.h2d_gbps, ctx.ceil.source);
  const int rc = gtl_report_finish(&ctx, &r);

  GTL_CUDA(cudaStreamDestroy(p.s_h2d));
  GTL_CUDA(cudaStreamDestroy(p.s_comp));
  GTL_CUDA(cudaStreamDestroy(p.s_d2h));
  GTL_CUDA(cudaEventDestroy(p.ev_fork));
  for (int k = 0; k < CHUNK_MAX_SLOTS; k++) {
    GTL_CUDA(cudaEventDestroy(p.ev_h2d[k]));
    GTL_CUDA(cudaEventDestroy(p.ev_comp[k]));
    GTL_CUDA(cudaEventDestroy(p.ev_d2h[k]));
  }
  GTL_CUDA(cudaFree(d_x));
  GTL_CUDA(cudaFree(p.d_w));
  gtl_guarded_free(&g_h);
  GTL_CUDA(cudaFreeHost(h_w));
  GTL_CUDA(cudaFreeHost(h_out_base));
  gtl_end(&ctx);
  return rc;
}
