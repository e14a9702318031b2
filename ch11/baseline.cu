// ch11 streams and inter-kernel pipelining — baseline: one stream, one device slot.
//
// What it shows: expert weights offloaded to pinned host memory and streamed to the GPU
// the way a competent first version does it. For each of 16 chunks (one gpt-oss-20b
// expert's gate+up matrix, 33.2 MB bf16) one stream gets, in order: cudaMemcpyAsync of
// the chunk host→device (pinned: a DMA at the link's rate, ch03), the chunk's GEMM +
// SwiGLU for a batch of B tokens (expert_gate_up_swiglu_kernel, ch11/overlap.cuh), and
// cudaMemcpyAsync of the result device→host. A stream runs its work in issue order, so
// each step waits for the one before: while the kernel runs, the copy engines idle;
// while a chunk crosses PCIe, the SMs idle. A pass costs the sum of its parts.
//
// Build and run:   make ch11 && ./ch11/baseline          (pair: scripts/pair.sh ch11)
// Nsight Systems:  nsys profile -t cuda,nvtx -o ch11_baseline ./ch11/baseline --iters=3
//   in range ch11.baseline.timed: one stream row; Memcpy HtoD, the kernel, Memcpy DtoH
//   back to back, never two at the same time.
// Nsight Compute:  scripts/profile.sh ch11 baseline — the kernel alone (ncu runs kernels
//   one at a time, so it cannot show overlap: read the timeline in Nsight Systems).
// Book: streams and inter-kernel pipelining (concurrent copy and execute).
#include "pipeline.cuh"

// Strategy: H2D, kernel, D2H of chunk c, then of chunk c+1, all on s. Limiter: the sum
// of copy and compute times (nothing overlaps).
void pipeline_launch(const ChunkPipeline *p, cudaStream_t s) {
  chunk_serial_launch(p, CHUNK_ALL, s);
}
int pipeline_slots_used(const ChunkPipeline *p) { (void)p; return 1; }

int main(int argc, char **argv) {
  return pipeline_main(argc, argv, "baseline", "one stream: H2D, kernel, D2H per chunk in order");
}
