// partition.cuh — split one GPU's SMs between two streams with CUDA green contexts, inside
// one process: no MPS daemon, no change to the GPU's compute mode. ch17/optimized.cu runs
// prefill on one partition and decode on the other; the lab's serving layer
// (labs/06_serving) includes this file for the same co-location.
//
// The recipe (CUDA Driver API reference, "Green Contexts"; driver 12.4+, streams 12.5+):
//   cuDeviceGetDevResource(dev, &all, CU_DEV_RESOURCE_TYPE_SM)  every SM, with the minimum
//       partition (sm.minSmPartitionSize) and the step (sm.smCoscheduledAlignment)
//   cuDevSmResourceSplitByCount(&group, &n = 1, &all, &rest, 0, first_sms)
//       one group of first_sms (rounded up to the step) and the remainder
//   cuDevResourceGenerateDesc(&desc, &group, 1)          one descriptor per partition
//   cuGreenCtxCreate(&gctx, desc, dev, CU_GREEN_CTX_DEFAULT_STREAM)
//   cuGreenCtxStreamCreate(&stream, gctx, CU_STREAM_NON_BLOCKING, 0)
// Work enqueued on such a stream (runtime <<<>>> launches, cuBLASLt, events: ch17 checks
// with %smid) runs on that partition's SMs only; graphs captured across two partition
// streams are expected to keep each kernel on its partition (not measured here). Both partitions share the
// rest of the GPU: HBM bandwidth, the L2, the copy engines — green contexts split SMs only.
//
// The group is aligned to the GPU's co-scheduling step (8 SMs on Hopper: 132 = 96 + 36);
// the remainder is whatever is left and carries no co-scheduling promise (thread-block
// clusters may not fit it), so put the stage that uses clusters (cuBLAS's Hopper GEMMs) in
// the group.
//
// No -lcuda (the project links only the runtime): every cu* function comes through
// cudaGetDriverEntryPointByVersion, so the program starts on machines without a driver;
// <cuda.h> is included for its types only.
#pragma once
#include <cuda.h>
#include <cuda_runtime.h>
#include <stdio.h>

#include "../common/gauntlet.h"

typedef CUresult(CUDAAPI *SmpDeviceGet)(CUdevice *, int);
typedef CUresult(CUDAAPI *SmpGetErrorName)(CUresult, const char **);
typedef CUresult(CUDAAPI *SmpDeviceGetDevResource)(CUdevice, CUdevResource *, CUdevResourceType);
typedef CUresult(CUDAAPI *SmpDevSmResourceSplitByCount)(CUdevResource *, unsigned int *,
                                                        const CUdevResource *, CUdevResource *,
                                                        unsigned int, unsigned int);
typedef CUresult(CUDAAPI *SmpDevResourceGenerateDesc)(CUdevResourceDesc *, CUdevResource *,
                                                      unsigned int);
typedef CUresult(CUDAAPI *SmpGreenCtxCreate)(CUgreenCtx *, CUdevResourceDesc, CUdevice,
                                             unsigned int);
typedef CUresult(CUDAAPI *SmpGreenCtxDestroy)(CUgreenCtx);
typedef CUresult(CUDAAPI *SmpGreenCtxStreamCreate)(CUstream *, CUgreenCtx, unsigned int, int);
typedef CUresult(CUDAAPI *SmpStreamDestroy)(CUstream);

typedef struct {
  SmpDeviceGet device_get;
  SmpGetErrorName get_error_name;
  SmpDeviceGetDevResource device_get_dev_resource;
  SmpDevSmResourceSplitByCount split_by_count;
  SmpDevResourceGenerateDesc generate_desc;
  SmpGreenCtxCreate green_ctx_create;
  SmpGreenCtxDestroy green_ctx_destroy;
  SmpGreenCtxStreamCreate green_ctx_stream_create;
  SmpStreamDestroy stream_destroy;
} SmPartitionApi;

// What the device offers: SMs in all, the smallest partition, the step of partition sizes.
typedef struct {
  int total_sms, min_sms, align_sms;
} SmPartitionInfo;

// Two partitions: [0] the aligned group, [1] the remainder, each with its own stream.
typedef struct {
  CUgreenCtx gctx[2];
  cudaStream_t stream[2];
  int sms[2];
} SmPartition;

static SmPartitionApi smp_api;
static int smp_api_state;  // 0 not tried, 1 loaded, -1 unavailable

// One driver entry point of ABI version `ver` (e.g. 12040 = CUDA 12.4). Returns 1 when found.
static inline int smp_sym(const char *name, void **fn, unsigned int ver) {
  cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
  *fn = NULL;
#if CUDART_VERSION >= 12050
  cudaError_t e = cudaGetDriverEntryPointByVersion(name, fn, ver, cudaEnableDefault, &q);
#else
  (void)ver;
  cudaError_t e = cudaGetDriverEntryPoint(name, fn, cudaEnableDefault, &q);
#endif
  if (e != cudaSuccess) (void)cudaGetLastError();  // not sticky; keep the error state clean
  return e == cudaSuccess && q == cudaDriverEntryPointSuccess && *fn != NULL;
}

// Load the entry points once. Returns 0, or -1 with why (driver too old, symbol missing).
static inline int smp_load(char *why, size_t n) {
  static char reason[256];
  if (smp_api_state == 0) {
    int drv = 0;
    cudaDriverGetVersion(&drv);
    SmPartitionApi *a = &smp_api;
    smp_api_state = -1;
    if (drv < 12050)
      snprintf(reason, sizeof reason,
               "needs a CUDA 12.5+ driver for green contexts with their own streams "
               "(cuGreenCtxStreamCreate); found driver %d.%d",
               drv / 1000, (drv % 1000) / 10);
    else if (!smp_sym("cuDeviceGet", (void **)&a->device_get, 12040) ||
             !smp_sym("cuGetErrorName", (void **)&a->get_error_name, 12040) ||
             !smp_sym("cuDeviceGetDevResource", (void **)&a->device_get_dev_resource, 12040) ||
             !smp_sym("cuDevSmResourceSplitByCount", (void **)&a->split_by_count, 12040) ||
             !smp_sym("cuDevResourceGenerateDesc", (void **)&a->generate_desc, 12040) ||
             !smp_sym("cuGreenCtxCreate", (void **)&a->green_ctx_create, 12040) ||
             !smp_sym("cuGreenCtxDestroy", (void **)&a->green_ctx_destroy, 12040) ||
             !smp_sym("cuGreenCtxStreamCreate", (void **)&a->green_ctx_stream_create, 12050) ||
             !smp_sym("cuStreamDestroy", (void **)&a->stream_destroy, 12040))
      snprintf(reason, sizeof reason,
               "needs the green-context entry points of the CUDA driver; driver %d.%d does "
               "not export them all",
               drv / 1000, (drv % 1000) / 10);
    else
      smp_api_state = 1;
  }
  if (smp_api_state == 1) return 0;
  snprintf(why, n, "%s", reason);
  return -1;
}

static inline const char *smp_err_name(CUresult r) {
  const char *s = NULL;
  if (smp_api.get_error_name && smp_api.get_error_name(r, &s) == CUDA_SUCCESS && s) return s;
  return "unknown CUresult";
}

// What `device` offers to green contexts. Returns 0, or -1 with why (the caller waives).
static inline int sm_partition_query(int device, SmPartitionInfo *info, char *why, size_t n) {
  if (smp_load(why, n) != 0) return -1;
  CUdevice dev;
  CUdevResource all;
  CUresult r = smp_api.device_get(&dev, device);
  if (r == CUDA_SUCCESS) r = smp_api.device_get_dev_resource(dev, &all, CU_DEV_RESOURCE_TYPE_SM);
  if (r != CUDA_SUCCESS) {
    snprintf(why, n, "needs green contexts; cuDeviceGetDevResource(SM) returned %s (%d)",
             smp_err_name(r), (int)r);
    return -1;
  }
  info->total_sms = (int)all.sm.smCount;
  info->min_sms = (int)all.sm.minSmPartitionSize;
  info->align_sms = all.sm.smCoscheduledAlignment ? (int)all.sm.smCoscheduledAlignment : 1;
  if (info->min_sms < info->align_sms) info->min_sms = info->align_sms;
  if (info->total_sms < 2 * info->min_sms) {
    snprintf(why, n, "needs at least %d SMs for two partitions of %d; the device offers %d",
             2 * info->min_sms, info->min_sms, info->total_sms);
    return -1;
  }
  return 0;
}

// SMs for a first partition of pct_first percent: pct_first·total/100 rounded to the
// nearest multiple of the step, kept within [min, total − min] so both sides exist.
static inline void sm_partition_plan(const SmPartitionInfo *info, int pct_first, int *first,
                                     int *second) {
  const int g = info->align_sms;
  int want = (int)((double)pct_first * info->total_sms / 100.0 / g + 0.5) * g;
  if (want < info->min_sms) want = info->min_sms;
  const int hi = (info->total_sms - info->min_sms) / g * g;
  if (want > hi) want = hi;
  *first = want;
  *second = info->total_sms - want;
}

// Create the two partitions: an aligned group of first_sms SMs ([0]) and the remainder ([1]),
// a green context and a non-blocking stream for each. Returns 0, or -1 with why (nothing
// is left allocated then). The SM counts got are in p->sms.
static inline int sm_partition_create(int device, int first_sms, SmPartition *p, char *why,
                                      size_t n) {
  memset(p, 0, sizeof *p);
  if (smp_load(why, n) != 0) return -1;
  CUdevice dev;
  CUdevResource all, res[2];
  CUdevResourceDesc desc[2];
  unsigned int groups = 1;
  const char *step = "cuDeviceGet";
  CUresult r = smp_api.device_get(&dev, device);
  if (r == CUDA_SUCCESS) {
    step = "cuDeviceGetDevResource";
    r = smp_api.device_get_dev_resource(dev, &all, CU_DEV_RESOURCE_TYPE_SM);
  }
  if (r == CUDA_SUCCESS) {
    step = "cuDevSmResourceSplitByCount";
    r = smp_api.split_by_count(&res[0], &groups, &all, &res[1], 0, (unsigned int)first_sms);
  }
  if (r == CUDA_SUCCESS && (groups != 1 || res[1].sm.smCount == 0)) {
    snprintf(why, n, "cuDevSmResourceSplitByCount(%d of %u SMs) left no remainder", first_sms,
             all.sm.smCount);
    return -1;
  }
  for (int i = 0; i < 2 && r == CUDA_SUCCESS; i++) {
    step = "cuDevResourceGenerateDesc";
    r = smp_api.generate_desc(&desc[i], &res[i], 1);
    if (r == CUDA_SUCCESS) {
      step = "cuGreenCtxCreate";
      r = smp_api.green_ctx_create(&p->gctx[i], desc[i], dev, CU_GREEN_CTX_DEFAULT_STREAM);
    }
    if (r == CUDA_SUCCESS) {
      step = "cuGreenCtxStreamCreate";
      CUstream s = NULL;
      r = smp_api.green_ctx_stream_create(&s, p->gctx[i], CU_STREAM_NON_BLOCKING, 0);
      p->stream[i] = (cudaStream_t)s;
    }
    p->sms[i] = (int)res[i].sm.smCount;
  }
  if (r != CUDA_SUCCESS) {
    snprintf(why, n, "green contexts unavailable: %s returned %s (%d)", step, smp_err_name(r),
             (int)r);
    for (int i = 0; i < 2; i++) {
      if (p->stream[i]) smp_api.stream_destroy((CUstream)p->stream[i]);
      if (p->gctx[i]) smp_api.green_ctx_destroy(p->gctx[i]);
    }
    memset(p, 0, sizeof *p);
    return -1;
  }
  return 0;
}

// Wait for both streams, then release streams and green contexts.
static inline void sm_partition_destroy(SmPartition *p) {
  for (int i = 0; i < 2; i++)
    if (p->stream[i]) GTL_CUDA(cudaStreamSynchronize(p->stream[i]));
  for (int i = 0; i < 2; i++) {
    if (p->stream[i]) GTL_CU(smp_api.stream_destroy((CUstream)p->stream[i]));
    if (p->gctx[i]) GTL_CU(smp_api.green_ctx_destroy(p->gctx[i]));
  }
  memset(p, 0, sizeof *p);
}
