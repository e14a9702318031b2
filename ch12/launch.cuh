// launch.cuh — ch12's launch helpers: CUDA graph capture of a stream's work and
// programmatic dependent launch (PDL). Helpers only (no driver): ch12/optimized.cu and the
// lab include this file.
//
// PDL (CUDA C++ Programming Guide, "Programmatic Dependent Launch and Synchronization"):
// a kernel launched with cudaLaunchAttributeProgrammaticStreamSerialization may start
// while the previous kernel of the stream is still running; it must call pdl_wait_prior()
// before it reads what that kernel wrote, and the previous kernel may call
// pdl_allow_next() once its remaining work no longer matters to the next one.
#pragma once
#include <cuda_runtime.h>
#include <stdio.h>

#include "../common/check.h"

// The PDL pair. griddepcontrol exists from sm_90; on older targets the stream order alone
// is the dependency, so the calls compile away.
__device__ __forceinline__ void pdl_wait_prior() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cudaGridDependencySynchronize();
#endif
}
__device__ __forceinline__ void pdl_allow_next() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cudaTriggerProgrammaticLaunchCompletion();
#endif
}

// Enqueue kernel(args) on s, with the PDL attribute when pdl != 0 (args[i] points to the
// kernel's i-th argument, as for cudaLaunchKernel). Errors exit 3.
static inline void pdl_launch(const void *kernel, dim3 grid, dim3 block, size_t smem, void **args,
                              cudaStream_t s, int pdl) {
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {grid, block, smem, s, &attr, pdl ? 1u : 0u};
  GTL_CUDA(cudaLaunchKernelExC(&cfg, kernel, args));
}

// Strategy: empty; it only takes part in the PDL probe. Limiter: none.
__global__ void pdl_probe_kernel(void) {
  pdl_wait_prior();
  pdl_allow_next();
}

// 1 when two PDL launches capture, instantiate and run on s; any error is cleared (they
// are not sticky: a rejected attribute leaves the context usable) and reported on stderr.
static inline int pdl_probe(cudaStream_t s) {
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {dim3(1), dim3(32), 0, s, &attr, 1};
  cudaGraph_t g = NULL;
  cudaGraphExec_t x = NULL;
  cudaError_t e = cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
  if (e == cudaSuccess) {
    const cudaError_t e1 = cudaLaunchKernelEx(&cfg, pdl_probe_kernel);
    const cudaError_t e2 = cudaLaunchKernelEx(&cfg, pdl_probe_kernel);
    e = cudaStreamEndCapture(s, &g);  // always end the capture, even after a failure
    if (e == cudaSuccess) e = e1 != cudaSuccess ? e1 : e2;
  }
  if (e == cudaSuccess) e = cudaGraphInstantiate(&x, g, 0);
  if (e == cudaSuccess) e = cudaGraphLaunch(x, s);
  if (e == cudaSuccess) e = cudaStreamSynchronize(s);
  if (x) cudaGraphExecDestroy(x);
  if (g) cudaGraphDestroy(g);
  if (e != cudaSuccess)
    fprintf(stderr, "pdl_probe: programmatic dependent launch rejected (%s); graph without it\n",
            cudaGetErrorName(e));
  cudaGetLastError();
  return e == cudaSuccess;
}

// Record what enqueue(user, s) puts on s (nothing runs) and return it as an executable
// graph, uploaded to the device; replay it with cudaGraphLaunch(exec, stream). The work
// must be capturable: no synchronization and no pageable copies inside. Errors exit 3.
static inline cudaGraphExec_t graph_capture(cudaStream_t s, void (*enqueue)(void *user, cudaStream_t s),
                                            void *user) {
  cudaGraph_t g;
  cudaGraphExec_t exec;
  GTL_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  enqueue(user, s);
  GTL_CUDA(cudaStreamEndCapture(s, &g));
  GTL_CUDA(cudaGraphInstantiate(&exec, g, 0));
  GTL_CUDA(cudaGraphUpload(exec, s));
  GTL_CUDA(cudaGraphDestroy(g));
  return exec;
}
