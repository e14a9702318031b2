// ch03 system tuning — optimized: expert offload through pinned (page-locked) host buffers.
//
// The one change: the host buffers come from cudaMallocHost instead of malloc. Their pages
// are locked in physical memory and mapped for the GPU, so each cudaMemcpyAsync is one DMA
// straight from (or to) the buffer: no CPU memcpy into a staging buffer, no hand-offs, and
// the call returns at once, so all 2·E copies are queued before the first one finishes.
// The copy engines then run at the PCIe link's rate (Gen5 x16: 64 GB/s per direction
// before protocol overhead). Pinned memory is a scarce, unswappable resource: allocate it
// once, reuse it (a staging ring, ch05), and place it on the GPU's NUMA node.
//
// Build and run:   make ch03 && ./ch03/optimized       (pair: scripts/pair.sh ch03)
//                  numactl --cpunodebind=N --membind=N ./ch03/optimized   (N: the GPU's node)
// Nsight Systems:  nsys profile -t cuda,nvtx -o ch03_optimized ./ch03/optimized --iters=3
//   in range ch03.optimized.timed: Memcpy HtoD/DtoH rows say "Pinned", back to back with
//   no gaps, each at the link's throughput; the CPU thread is idle during the copies.
// Nsight Compute:  nothing to see (no kernel): copies are the whole workload.
// Book: system tuning — pinned (page-locked) host memory, NUMA placement.
#include "offload.cuh"

// Strategy: cudaMallocHost; the copy engines DMA from the buffer. Limiter: PCIe.
void *offload_host_alloc(size_t bytes, const char *what) {
  return gtl_malloc_pinned(bytes, what);
}

void offload_host_free(void *p) { GTL_CUDA(cudaFreeHost(p)); }

int main(int argc, char **argv) {
  return offload_main(argc, argv, "optimized", "pinned (cudaMallocHost)");
}
