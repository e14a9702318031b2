// device.cu — describe the GPU, waive cleanly without one, allocate with a clear
// out-of-memory message (see device.h and bench.h).
#include <stdio.h>
#include <stdlib.h>

#include "gauntlet.h"

// Fill d for `id`; returns 0, or the CUDA error that stopped it.
static cudaError_t device_query(int id, GtlDevice *d) {
  memset(d, 0, sizeof *d);
  d->id = id;
  cudaDeviceProp p;
  cudaError_t e = cudaGetDeviceProperties(&p, id);
  if (e != cudaSuccess) return e;
  snprintf(d->name, sizeof d->name, "%s", p.name);
  d->cc_major = p.major;
  d->cc_minor = p.minor;
  d->sms = p.multiProcessorCount;
  d->l2_bytes = (size_t)p.l2CacheSize;
  d->smem_optin = p.sharedMemPerBlockOptin;
  cudaDeviceGetAttribute(&d->mem_clock_khz, cudaDevAttrMemoryClockRate, id);
  cudaDeviceGetAttribute(&d->bus_width_bits, cudaDevAttrGlobalMemoryBusWidth, id);
  cudaDeviceGetAttribute(&d->sm_clock_khz, cudaDevAttrClockRate, id);
  // HBM transfers on both clock edges: 2 · f · width / 8 bytes per second.
  d->peak_gbps = 2.0 * d->mem_clock_khz * 1e3 * (d->bus_width_bits / 8.0) / 1e9;
  cudaRuntimeGetVersion(&d->runtime_version);
  cudaDriverGetVersion(&d->driver_version);
  gtl_hardware_key(d->name, d->hardware_key, sizeof d->hardware_key);
  return cudaSuccess;
}

static void waive(const GtlCtx *ctx, const char *what) {
  printf("WAIVED: %s/%s %s\n", ctx->target, ctx->variant, what);
  fflush(stdout);
  exit(GTL_EXIT_WAIVED);
}

void gtl_require_cc(const GtlCtx *ctx, int major, int minor, const char *feature) {
  const GtlDevice *d = &ctx->dev;
  if (d->cc_major > major || (d->cc_major == major && d->cc_minor >= minor)) return;
  char msg[320];
  snprintf(msg, sizeof msg, "needs compute capability %d.%d or newer for %s; found %s, CC %d.%d",
           major, minor, feature, d->name, d->cc_major, d->cc_minor);
  waive(ctx, msg);
}

void gtl_require(const GtlCtx *ctx, int ok, const char *what) {
  if (!ok) waive(ctx, what);
}

static void mem_info(size_t *free_b, size_t *total_b) {
  if (cudaMemGetInfo(free_b, total_b) != cudaSuccess) *free_b = *total_b = 0;
}

// Called from gtl_begin: pick the device or waive (77) / usage error (2).
void gtl_device_open(GtlCtx *ctx) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  // Without a driver the runtime answers cudaErrorInsufficientDriver, not
  // cudaErrorNoDevice: both mean "no GPU here".
  if (e != cudaSuccess || count == 0) {
    char msg[256];
    snprintf(msg, sizeof msg, "needs a CUDA GPU; none found (cudaGetDeviceCount: %s)",
             e != cudaSuccess ? cudaGetErrorName(e) : "0 devices");
    waive(ctx, msg);
  }
  if (ctx->args.device >= count) {
    fprintf(stderr, "%s/%s: --device=%d but only %d CUDA device(s) present\n", ctx->target,
            ctx->variant, ctx->args.device, count);
    exit(GTL_EXIT_USAGE);
  }
  GTL_CUDA(cudaSetDevice(ctx->args.device));
  gtl_mem_info_hook = mem_info;  // gtl_die's out-of-memory line
  GTL_CUDA(device_query(ctx->args.device, &ctx->dev));
  GTL_CUDA(cudaMemGetInfo(&ctx->dev.mem_free, &ctx->dev.mem_total));
}

static void die_oom(const char *kind, size_t bytes, const char *what, cudaError_t e) {
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);
  char msg[512];
  fflush(stdout);
  fprintf(stderr, "%s\n",
          gtl_oom_message(msg, sizeof msg, kind, what, bytes, free_b, total_b, cudaGetErrorName(e)));
  exit(GTL_EXIT_RUNTIME);
}

void *gtl_malloc(size_t bytes, const char *what) {
  void *p = NULL;
  cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
  if (e == cudaErrorMemoryAllocation) die_oom("device", bytes, what, e);
  GTL_CUDA(e);
  return p;
}

void *gtl_malloc_pinned(size_t bytes, const char *what) {
  void *p = NULL;
  cudaError_t e = cudaMallocHost(&p, bytes ? bytes : 1);
  if (e == cudaErrorMemoryAllocation) die_oom("pinned host", bytes, what, e);
  GTL_CUDA(e);
  return p;
}
