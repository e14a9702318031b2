// ch03 system tuning — baseline: expert offload through pageable (malloc) host buffers.
//
// What it shows: the first offload most of us write. The layer's expert weights sit in
// malloc'd host memory and move with one cudaMemcpyAsync per expert (49.8 MB each), all
// experts to the GPU, then all back. Pageable memory cannot be read by the GPU's copy
// engines directly: the OS may move or swap those pages at any time, and DMA needs
// physical addresses that stay put. So the driver copies each transfer through its own
// small pinned staging buffers with the CPU (a memcpy per staging block), then DMAs from
// there, and cudaMemcpyAsync returns only when the host side of that work is done: the
// copy is bounded by a CPU memcpy plus the staging hand-offs, not by the PCIe link.
//
// Build and run:   make ch03 && ./ch03/baseline        (pair: scripts/pair.sh ch03)
//                  numactl --cpunodebind=N --membind=N ./ch03/baseline   (N: the GPU's node)
// Nsight Systems:  nsys profile -t cuda,nvtx -o ch03_baseline ./ch03/baseline --iters=3
//   in range ch03.baseline.timed: each Memcpy HtoD/DtoH row says "Pageable"; compare its
//   throughput with the Pinned rows of ch03/optimized, and note the CPU busy in the call.
// Nsight Compute:  nothing to see (no kernel): copies are the whole workload.
// Book: system tuning — pinned (page-locked) host memory, NUMA placement.
#include "offload.cuh"

// Strategy: malloc; the driver stages through its pinned bounce buffers. Limiter: the
// CPU memcpy into staging and its serialization with the DMA.
void *offload_host_alloc(size_t bytes, const char *what) {
  void *p = malloc(bytes);
  if (!p) {
    fprintf(stderr, "error: out of host memory allocating %s: asked %.1f MiB\n", what,
            bytes / 1048576.0);
    exit(GTL_EXIT_RUNTIME);
  }
  return p;
}

void offload_host_free(void *p) { free(p); }

int main(int argc, char **argv) {
  return offload_main(argc, argv, "baseline", "pageable (malloc)");
}
