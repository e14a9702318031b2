// ch11 streams and inter-kernel pipelining — optimized: three streams, events, a ring.
//
// The one change: the same copies and kernels go to three streams — host→device copies,
// kernels, device→host copies — over a ring of 3 device slots (chunk c uses slot c % 3),
// with events carrying only the real dependences: a chunk's kernel waits for its weights
// to land, a slot is refilled only after the kernel that read it is done, and its output
// is overwritten only after the copy that took it away. The GPU's copy engines (one per
// direction) and its SMs then work on three different chunks at once: chunk c+1 crosses
// the link while chunk c computes and chunk c-1's result goes home. A pass costs the
// slowest part, max(copy time, compute time), plus the fill and drain of one chunk.
//
// Build and run:   make ch11 && ./ch11/optimized         (pair: scripts/pair.sh ch11)
//                  ./ch11/optimized --B=1024             (the link bounds; --B=8192: compute)
// Nsight Systems:  nsys profile -t cuda,nvtx -o ch11_optimized ./ch11/optimized --iters=3
//   in range ch11.optimized.timed: three stream rows; each kernel sits under the next
//   chunk's Memcpy HtoD and the previous chunk's Memcpy DtoH.
// Nsight Compute:  scripts/profile.sh ch11 optimized — the same kernel as the baseline's
//   (ncu serializes kernels and cannot show the overlap).
// Book: streams and inter-kernel pipelining (concurrent copy and execute).
#include "pipeline.cuh"

// Strategy: chunk_ring_launch (ch11/overlap.cuh, written for the lab). Limiter: the
// slower of the link and the tensor cores.
void pipeline_launch(const ChunkPipeline *p, cudaStream_t s) {
  chunk_ring_launch(p, CHUNK_ALL, s);
}
int pipeline_slots_used(const ChunkPipeline *p) { return p->slots; }

int main(int argc, char **argv) {
  return pipeline_main(argc, argv, "optimized",
                       "three streams (H2D, kernel, D2H) with events over a ring of slots");
}
