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
// their weights (the prologue in kernels.cuh) when cudaGridDependencySynchronize releases
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
#include "launch.cuh"  // graph capture and PDL (the lab includes it)
#include "step.cuh"

static int g_no_pdl;  // --no-pdl (a GTL_OPT_FLAG writes an int)
static int g_pdl;         // attribute in use
static cudaGraphExec_t g_exec;

void step_kernel_launch(const void *kernel, dim3 grid, dim3 block, size_t smem, void **args,
                        cudaStream_t s) {
  pdl_launch(kernel, grid, block, smem, args, s, g_pdl);
}

static void step_enqueue_cb(void *user, cudaStream_t s) { step_enqueue((const StepProblem *)user, s); }

int step_prepare(StepProblem *p, cudaStream_t s) {
  g_pdl = !g_no_pdl && pdl_probe(s);
  g_exec = graph_capture(s, step_enqueue_cb, p);  // every launch of the step recorded, not run
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
