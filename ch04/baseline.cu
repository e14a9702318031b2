// ch04 multi-GPU communication — baseline: all-reduce staged through the host.
//
// What it shows: the all-reduce a first multi-GPU program writes when the GPUs "can't
// talk": copy every GPU's buffer to the host (pinned memory, all GPUs at once), sum on the
// host's cores (fp32, rank order, up to 16 threads), copy the sum back to every GPU (all at
// once). Every byte crosses PCIe twice and the host's memory three times, while the
// NVLink between the GPUs (NV18: 18 links × 26.6 GB/s = 478 GB/s a direction; a peer copy
// measured 385) sits idle; the GPUs wait for the host in the middle. The method itself
// lives in host_staged.cuh (ar_host_staged) because optimized --sweep times it beside NCCL.
//
// Build and run:   make ch04 && ./ch04/baseline        (pair: scripts/pair.sh ch04)
// Nsight Systems:  nsys profile -t cuda,nvtx ./ch04/baseline --iters=5
//   every ch04.baseline.timed iteration: memcpy DtoH on each GPU, a gap (the host sum),
//   memcpy HtoD on each GPU; the PCIe copies run at the pinned-copy rate (ch03).
// Nsight Compute:  no kernel of its own (scripts/profile.sh ch04 baseline shows none).
// Book: multi-GPU communication — why collectives belong on the GPU interconnect.
#include "allreduce.cuh"

int main(int argc, char **argv) {
  const ArMethod *methods[] = {&ar_host_staged};
  return ar_main(argc, argv, "baseline", methods, 1);
}
