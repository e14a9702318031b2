// ch12 CUDA graphs, device-side orchestration — baseline: eager launches of a decode step.
//
// What it shows: one decode step of the mini MoE model (model.cuh) as an eager framework
// runs it: 56 small kernels, each enqueued by its own cudaLaunchKernel (what <<<>>>
// compiles to). Every kernel does a few microseconds of work or less, so the step costs
// what the launches cost: the host pays a few µs per cudaLaunchKernel, and on the GPU
// each kernel waits for the previous one to drain and for its own blocks to be
// scheduled before it can load anything. The router's top-k already runs on the device,
// so no step waits for the host; what is left is launch overhead.
//
// Build and run:   make ch12 && ./ch12/baseline        (pair: scripts/pair.sh ch12)
// Nsight Systems:  nsys profile -t cuda,nvtx ./ch12/baseline --iters=20
//   the CUDA API row is a wall of cudaLaunchKernel; the kernel row shows a gap before
//   each kernel as long as, or longer than, the kernel itself.
// Nsight Compute:  scripts/profile.sh ch12 baseline
//   gpu__time_duration.sum per kernel: 2-3.5 µs each (attention 7.5) with ncu's cache
//   flush; launch__grid_size (1 to 256 blocks on 132 SMs) shows how little each one uses.
// Book: CUDA graphs and device-side orchestration — launch overhead, stream capture.
#include "step.cuh"

void step_kernel_launch(const void *kernel, dim3 grid, dim3 block, size_t smem, void **args,
                        cudaStream_t s) {
  GTL_CUDA(cudaLaunchKernel(kernel, grid, block, args, smem, s));
}

int step_prepare(StepProblem *p, cudaStream_t s) {
  (void)p;
  (void)s;
  return 0;  // nothing to build: every step is launched afresh
}

void step_run(void *user, cudaStream_t s) { step_enqueue((const StepProblem *)user, s); }

void step_release(void) {}

int main(int argc, char **argv) {
  return step_main(argc, argv, "baseline", "eager, one cudaLaunchKernel per op",
                   "eager launches (second run)", NULL, 0);
}
