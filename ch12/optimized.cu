// ch12 CUDA graphs, device-side orchestration — optimized: one captured graph per step,
// replayed, with programmatic dependent launch (PDL).
//
// The one change: the same 56 launches are captured once into a CUDA graph (stream
// capture) and each step is a single cudaGraphLaunch. The host cost drops from 56
// launches to one; the GPU gets the whole chain up front and walks it without the
// per-launch work of the eager path. On top, each kernel is launched with
// cudaLaunchAttributeProgrammaticStreamSerialization (captured as programmatic graph
// edges): kernel N+1 may start as soon as every block of kernel N has called
// cudaTriggerProgrammaticLaunchCompletion, so its blocks are resident and have loaded
// their weights (the prologue in step.cuh) when cudaGridDependencySynchronize releases
// them. The kernels are the baseline's, byte for byte; launched without the attribute
// their two PDL calls return at once. PDL is probed first (a throwaway capture of two
// dependent launches); where it is rejected (before sm_90, old drivers) the graph is
// captured with ordinary edges and the program says so. --no-pdl does the same on purpose.
//
// Build and run:   make ch12 && ./ch12/optimized       (pair: scripts/pair.sh ch12)
// Nsight Systems:  nsys profile -t cuda,nvtx --cuda-graph-trace=node ./ch12/optimized --iters=20
//   one cudaGraphLaunch per step on the API row; on the kernel row the gaps between kernels
//   close and, with PDL, neighbouring kernels overlap.
// Nsight Compute:  scripts/profile.sh ch12 optimized
//   the same kernels with the same gpu__time_duration.sum as baseline: nothing inside a
//   kernel changed, so the win is invisible per kernel (ncu also serializes them, so PDL
//   overlap does not show there).
// Book: CUDA graphs and device-side orchestration — stream capture, graph replay, PDL.
#include "step.cuh"

static int g_no_pdl;  // --no-pdl (a GTL_OPT_FLAG writes an int)
static int g_pdl;         // attribute in use
static cudaGraphExec_t g_exec;

void step_kernel_launch(const void *kernel, dim3 grid, dim3 block, size_t smem, void **args,
                        cudaStream_t s) {
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {grid, block, smem, s, &attr, g_pdl ? 1u : 0u};
  GTL_CUDA(cudaLaunchKernelExC(&cfg, kernel, args));
}

// Strategy: empty; it only takes part in the PDL probe. Limiter: none.
__global__ void pdl_probe_kernel(void) {
  step_wait_prior();
  step_allow_next();
}

// 1 when two PDL launches capture, instantiate and run; any error is cleared (they are
// not sticky: a rejected attribute leaves the context usable).
static int pdl_probe(cudaStream_t s) {
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
    fprintf(stderr, "ch12: programmatic dependent launch rejected (%s); graph without it\n",
            cudaGetErrorName(e));
  cudaGetLastError();
  return e == cudaSuccess;
}

int step_prepare(StepProblem *p, cudaStream_t s) {
  g_pdl = !g_no_pdl && pdl_probe(s);
  cudaGraph_t g;
  GTL_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  step_enqueue(p, s);  // recorded, not run
  GTL_CUDA(cudaStreamEndCapture(s, &g));
  GTL_CUDA(cudaGraphInstantiate(&g_exec, g, 0));
  GTL_CUDA(cudaGraphUpload(g_exec, s));
  GTL_CUDA(cudaGraphDestroy(g));
  return g_pdl;
}

void step_run(void *user, cudaStream_t s) {
  (void)user;
  GTL_CUDA(cudaGraphLaunch(g_exec, s));
}

void step_release(void) { GTL_CUDA(cudaGraphExecDestroy(g_exec)); }

int main(int argc, char **argv) {
  const GtlOpt opts[] = {{"no-pdl", GTL_OPT_FLAG, &g_no_pdl, "graph replay without PDL"}};
  return step_main(argc, argv, "optimized", "one CUDA graph per step, replayed",
                   "graph replay", opts, 1);
}
