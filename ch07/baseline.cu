// ch07 memory access patterns — baseline: thread-per-row MoE dispatch gather.
//
// What it shows: the first gather most of us write. One thread owns one permuted row
// and copies its D bf16 values in a loop. Each thread's own accesses are contiguous,
// but a warp's 32 threads touch 32 different rows at once: every load instruction
// needs 32 separate 32-byte sectors to deliver 64 useful bytes (2 per thread), so the
// memory system moves far more than it delivers and only rows/32 warps exist to hide
// latency (512 warps at the default size for 132 SMs).
//
// Build and run:   make ch07 && ./ch07/baseline        (pair: scripts/pair.sh ch07)
// Nsight Compute:  scripts/profile.sh ch07 baseline
//   l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum / l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum
//   (sectors per request: 32 here for 64 useful bytes; 16 for a 512-byte coalesced warp load),
//   dram__throughput.avg.pct_of_peak_sustained_elapsed
// Book: memory access patterns — coalescing, vectorized access.
#include "permute_driver.cuh"

// Strategy: thread per row, 2-byte copies. Limiter: uncoalesced sectors, few warps.
__global__ void permute_rowthread_kernel(const __nv_bfloat16 *__restrict__ x,
                                         const int32_t *__restrict__ src,
                                         __nv_bfloat16 *__restrict__ out, int64_t rows,
                                         int64_t D) {
  int64_t row = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (row >= rows) return;
  const __nv_bfloat16 *in = x + (int64_t)src[row] * D;
  __nv_bfloat16 *o = out + row * D;
  for (int64_t d = 0; d < D; d++) o[d] = in[d];
}

static void permute_rowthread_launch(const PermuteProblem *p, cudaStream_t s) {
  const int64_t rows = p->T * p->top_k;
  const int threads = 128;
  permute_rowthread_kernel<<<(unsigned)((rows + threads - 1) / threads), threads, 0, s>>>(
      p->d_x, p->d_src, p->d_out, rows, p->D);
  GTL_LAUNCH();
}

static const PermuteVariant variants[] = {
    {"rowthread", "thread per row, 2-byte element copies", 0, permute_rowthread_launch}};

int main(int argc, char **argv) { return permute_main(argc, argv, "baseline", variants, 1); }
