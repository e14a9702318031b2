// offload.cuh — ch03's problem, roofline and driver, shared by baseline.cu and
// optimized.cu so that the two files differ only in how the host buffers are allocated.
//
// The problem: expert-weight offload. A MoE layer's experts live in host memory and
// stream to the GPU when needed, and back when evicted. gptoss20b shapes: one expert is
// gate_up [2F][D] + down [D][F] in bf16 = 3·D·F·2 B = 49.8 MB at D = F = 2880, and a
// layer's E = 32 experts are 1.59 GB. One iteration copies the whole layer host→device,
// one cudaMemcpyAsync per expert, then device→host into a second host buffer, also per
// expert, all on one stream.
//
// Roofline: bytes = 2 · E · expert_bytes (each byte crosses the PCIe link once each way),
// flops = 0; bound by the pinned host↔device ceiling (h2d_gbps / d2h_gbps from
// ch02/ceilings, datasheet PCIe Gen5 x16 ≈ 64 GB/s per direction otherwise). The L2 policy
// is irrelevant: 1.6 GB per direction streams through a 60 MB L2 at PCIe speed, ~80×
// slower than HBM, so there is nothing to keep warm or flush; the default is --l2=warm.
//
// Timing: gtl_bench's event pair around each round trip is the headline; the copy
// function also records an event between the two directions, so H2D and D2H are
// reported separately (h2d_gbps, d2h_gbps in the JSON line).
#pragma once
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "../common/gauntlet.h"

// Each variant defines these two: where the host-side expert weights live.
void *offload_host_alloc(size_t bytes, const char *what);
void offload_host_free(void *p);

typedef struct {
  int64_t E;              // experts in the layer: the number of chunks
  size_t expert_bytes;    // one expert's weights: one cudaMemcpyAsync
  unsigned char *h_src;   // [E][expert_bytes] host weights (seeded bf16)
  unsigned char *h_back;  // [E][expert_bytes] host buffer the D2H copies fill
  unsigned char *d_w;     // [E][expert_bytes] device weights
  cudaEvent_t *ev;        // [n_calls][3]: start, H2D done, D2H done of every call
  int n_calls, call;
} OffloadProblem;

static double offload_bytes(const OffloadProblem *p) {
  return 2.0 * (double)p->E * (double)p->expert_bytes;
}

// One round trip on s: every expert H2D, then every expert D2H. No synchronization.
static void offload_roundtrip(void *user, cudaStream_t s) {
  OffloadProblem *p = (OffloadProblem *)user;
  cudaEvent_t *e = &p->ev[3 * (p->call++ % p->n_calls)];
  GTL_CUDA(cudaEventRecord(e[0], s));
  for (int64_t x = 0; x < p->E; x++)
    GTL_CUDA(cudaMemcpyAsync(p->d_w + x * p->expert_bytes, p->h_src + x * p->expert_bytes,
                             p->expert_bytes, cudaMemcpyHostToDevice, s));
  GTL_CUDA(cudaEventRecord(e[1], s));
  for (int64_t x = 0; x < p->E; x++)
    GTL_CUDA(cudaMemcpyAsync(p->h_back + x * p->expert_bytes, p->d_w + x * p->expert_bytes,
                             p->expert_bytes, cudaMemcpyDeviceToHost, s));
  GTL_CUDA(cudaEventRecord(e[2], s));
}

// Bitwise check of n bf16 values: n_bad counts elements whose bits differ; rel_l2 and
// max_abs are over their values (NaN where the poison 0xFFFF survived).
static void offload_compare(const uint16_t *out, const uint16_t *ref, size_t n, GtlErr *e) {
  double d2 = 0, r2 = 0;
  memset(e, 0, sizeof *e);
  for (size_t i = 0; i < n; i++) {
    double r = gtl_bf16_to_f32(ref[i]);
    r2 += r * r;
    if (out[i] == ref[i]) continue;
    double o = gtl_bf16_to_f32(out[i]), d = o - r;
    if (!e->n_bad) {
      e->worst = i;
      e->worst_out = o;
      e->worst_ref = r;
    }
    e->n_bad++;
    e->n_nan += o != o;
    d2 += d * d;
    if (d != d) e->max_abs = NAN;  // poison (NaN) survived: stays NaN
    else if (fabs(d) > e->max_abs) e->max_abs = fabs(d);
  }
  e->rel_l2 = r2 > 0 ? sqrt(d2 / r2) : (d2 > 0 ? INFINITY : 0);
  e->tol_rel_l2 = 0;
  e->pass = e->n_bad == 0;
}

// NUMA facts for the header: the GPU's node (sysfs, from its PCI bus id), the CPU this
// thread runs on and its node, and the memlock limit. "?" where the kernel does not say.
static void offload_numa_note(int device, char *out, size_t n) {
  char bus[32] = "?", path[160];
  int gpu_node = -2, cpu = sched_getcpu(), cpu_node = -2;
  if (cudaDeviceGetPCIBusId(bus, sizeof bus, device) == cudaSuccess) {
    for (char *c = bus; *c; c++) *c = (char)(*c >= 'A' && *c <= 'F' ? *c + 32 : *c);
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/numa_node", bus);
    FILE *f = fopen(path, "r");
    if (f) {
      if (fscanf(f, "%d", &gpu_node) != 1) gpu_node = -2;
      fclose(f);
    }
  }
  for (int node = 0; node < 64 && cpu >= 0 && cpu_node < -1; node++) {
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/node%d", cpu, node);
    FILE *f = fopen(path, "r");  // the node link exists only for the CPU's own node
    if (f) {
      cpu_node = node;
      fclose(f);
    }
  }
  struct rlimit rl;
  char lim[32] = "?";
  if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
    if (rl.rlim_cur == RLIM_INFINITY) snprintf(lim, sizeof lim, "unlimited");
    else snprintf(lim, sizeof lim, "%llu KiB", (unsigned long long)rl.rlim_cur / 1024);
  }
  snprintf(out, n,
           "numa: GPU at PCI %s on node %d (-1: one node or not reported); this thread on "
           "CPU %d, node %d; ulimit -l %s",
           bus, gpu_node, cpu, cpu_node, lim);
}

// main() of both variants: parse, device, seeded weights, poison, one validated round
// trip (bitwise), timed round trips, report.
static int offload_main(int argc, char **argv, const char *variant, const char *host_kind) {
  int64_t E = INT64_MIN, D = 2880, F = 2880;  // E: INT64_MIN = from --size
  GtlOpt opts[] = {{"E", GTL_OPT_INT, &E, "experts moved per direction (default 32: 1.6 GB)"},
                   {"D", GTL_OPT_INT, &D, "hidden size (default 2880)"},
                   {"F", GTL_OPT_INT, &F, "expert FFN size (default 2880)"}};
  GtlCtx ctx;
  gtl_begin(&ctx, "ch03", variant, argc, argv, opts, 3, 2, 20, GTL_L2_WARM);
  if (E == INT64_MIN)
    E = ctx.args.size == GTL_SIZE_SMALL ? 4 : ctx.args.size == GTL_SIZE_LARGE ? 64 : 32;
  if (E < 1 || E > 4096 || D < 1 || F < 1 || D > 65536 || F > 65536) {
    fprintf(stderr, "ch03: need 1 <= E <= 4096 and 1 <= D, F <= 65536\n");
    return GTL_EXIT_USAGE;
  }
  char workload[128];
  snprintf(workload, sizeof workload, "E%lld_D%lld_F%lld_bf16", (long long)E, (long long)D,
           (long long)F);

  OffloadProblem p;
  memset(&p, 0, sizeof p);
  p.E = E;
  p.expert_bytes = (size_t)3 * D * F * 2;
  const size_t bytes = (size_t)E * p.expert_bytes, n_el = bytes / 2;
  gtl_phase_push(GTL_PHASE_SETUP);
  GtlGuarded g_w;
  p.d_w = (unsigned char *)gtl_guarded_alloc(&g_w, bytes, "expert weights [E][3*D*F] bf16");
  p.h_src = (unsigned char *)offload_host_alloc(bytes, "host expert weights");
  // h_back gets host guard bands: a D2H that wrote past either end would show there.
  unsigned char *h_back_base =
      (unsigned char *)offload_host_alloc(bytes + 2 * GTL_GUARD_BYTES, "host copy-back buffer");
  p.h_back = h_back_base + GTL_GUARD_BYTES;
  // Seeded bf16 weights: filled on the device, brought to the host once (untimed).
  gtl_fill_uniform(p.d_w, GTL_BF16, n_el, ctx.args.seed, -1.0f, 1.0f, ctx.stream);
  GTL_CUDA(cudaMemcpyAsync(p.h_src, p.d_w, bytes, cudaMemcpyDeviceToHost, ctx.stream));
  GTL_CUDA(cudaStreamSynchronize(ctx.stream));
  p.n_calls = 1 + ctx.args.warmup + ctx.args.iters;
  p.ev = (cudaEvent_t *)malloc(sizeof(cudaEvent_t) * 3 * p.n_calls);
  for (int i = 0; i < 3 * p.n_calls; i++) GTL_CUDA(cudaEventCreate(&p.ev[i]));
  gtl_phase_pop();

  char numa[320], notes[1024];
  offload_numa_note(ctx.args.device, numa, sizeof numa);
  snprintf(notes, sizeof notes,
           "host buffers: %s\n"
           "per iteration: %lld experts x %.1f MB H2D, then the same D2H (one cudaMemcpyAsync "
           "per expert, one stream)\n"
           "roofline: %.2f GB per iteration (%.2f GB each way), 0 flops; bound by pinned "
           "H2D/D2H (PCIe)\n"
           "L2 policy irrelevant: 1.6 GB streams through L2 at PCIe speed\n%s",
           host_kind, (long long)E, p.expert_bytes / 1e6, offload_bytes(&p) / 1e9, bytes / 1e9,
           numa);
  gtl_report_header(&ctx, workload, notes);

  GtlResult r;
  gtl_result_init(&r, &ctx, "bf16", workload);
  r.bytes = offload_bytes(&p);
  r.flops = 0;
  r.bound = GTL_BOUND_H2D;
  r.ref = "host_bitwise";

  if (ctx.args.verify) {
    gtl_phase_push(GTL_PHASE_REFERENCE);
    // The input itself: sampled elements equal the host's recomputation of the fill.
    size_t in_bad = 0;
    const uint16_t *src = (const uint16_t *)p.h_src;
    for (size_t k = 0; k < 65536; k++) {
      size_t i = (size_t)(gtl_splitmix64(k) % n_el);
      in_bad += src[i] != gtl_f32_to_bf16(gtl_uniform(ctx.args.seed, i, -1.0f, 1.0f));
    }
    gtl_phase_pop();

    gtl_phase_push(GTL_PHASE_VALIDATE);
    gtl_poison(p.d_w, bytes, ctx.stream);
    memset(h_back_base, GTL_GUARD_BYTE, GTL_GUARD_BYTES);
    memset(p.h_back, 0xFF, bytes);
    memset(p.h_back + bytes, GTL_GUARD_BYTE, GTL_GUARD_BYTES);
    offload_roundtrip(&p, ctx.stream);
    GTL_CUDA(cudaStreamSynchronize(ctx.stream));
    offload_compare((const uint16_t *)p.h_back, src, n_el, &r.err);
    size_t bad_guard = gtl_guarded_check(&g_w) +
                       gtl_guard_count_bad(h_back_base, GTL_GUARD_BYTES) +
                       gtl_guard_count_bad(p.h_back + bytes, GTL_GUARD_BYTES);
    if (in_bad) fprintf(stderr, "ch03: %zu of 65536 sampled inputs differ from the seed\n", in_bad);
    if (bad_guard) fprintf(stderr, "ch03: %zu guard bytes were overwritten\n", bad_guard);
    if (in_bad || bad_guard) r.err.pass = 0;
    r.validated = 1;
    gtl_phase_pop();
    if (!r.err.pass) {
      gtl_report_row(&ctx, &r);
      return gtl_report_finish(&ctx, &r);  // never time a wrong copy
    }
  }

  gtl_bench(&ctx, offload_roundtrip, &p, &r.st);
  // The last `iters` calls were the timed ones: split each at its middle event.
  const int it = ctx.args.iters;
  float *h2d = (float *)malloc(sizeof(float) * it), *d2h = (float *)malloc(sizeof(float) * it);
  for (int i = 0; i < it; i++) {
    cudaEvent_t *e = &p.ev[3 * ((p.call - it + i) % p.n_calls)];
    GTL_CUDA(cudaEventElapsedTime(&h2d[i], e[0], e[1]));
    GTL_CUDA(cudaEventElapsedTime(&d2h[i], e[1], e[2]));
  }
  GtlStats s_h2d, s_d2h;
  if (gtl_stats_compute(h2d, it, &s_h2d) != 0 || gtl_stats_compute(d2h, it, &s_d2h) != 0) {
    fprintf(stderr, "ch03: a copy timing was not finite\n");
    return GTL_EXIT_RUNTIME;
  }
  gtl_result_extra(&r, "h2d_gbps", bytes / (s_h2d.median * 1e-3) / 1e9);
  gtl_result_extra(&r, "d2h_gbps", bytes / (s_d2h.median * 1e-3) / 1e9);
  gtl_result_extra(&r, "h2d_median_ms", s_h2d.median);
  gtl_result_extra(&r, "d2h_median_ms", s_d2h.median);
  if (!ctx.args.json)
    printf("# H2D %.1f GB/s (median %.2f ms), D2H %.1f GB/s (median %.2f ms); pinned "
           "ceilings from %s: H2D %.1f, D2H %.1f GB/s\n",
           bytes / (s_h2d.median * 1e-3) / 1e9, s_h2d.median,
           bytes / (s_d2h.median * 1e-3) / 1e9, s_d2h.median, ctx.ceil.source,
           ctx.ceil.h2d_gbps, ctx.ceil.d2h_gbps);
  gtl_report_row(&ctx, &r);
  int rc = gtl_report_finish(&ctx, &r);

  free(h2d);
  free(d2h);
  for (int i = 0; i < 3 * p.n_calls; i++) GTL_CUDA(cudaEventDestroy(p.ev[i]));
  free(p.ev);
  offload_host_free(p.h_src);
  offload_host_free(h_back_base);
  gtl_guarded_free(&g_w);
  gtl_end(&ctx);
  return rc;
}
