// ch07 memory access patterns — optimized: warp-per-token, 16-byte coalesced scatter; on
// Hopper, the same scatter handed to the copy engine.
//
// The one change (kernel "warp", every GPU): a warp (not a thread) owns a token row, and
// each lane moves 16 bytes (8 bf16) per access. Lane i touches bytes [16i, 16i+16) of the
// row, so one warp instruction covers 512 contiguous bytes — 16 full sectors, every byte
// useful, where the baseline needed 32 sectors for 64 useful bytes. The warp loads a chunk
// of the row (12 × 16 B per lane, all loads in flight before the first use) and stores it
// to each of the token's top_k slots: the row crosses L2 → SM once, not top_k times.
// (Measured on an H200: a warp-per-row gather of the same permutation, reading each x row
// top_k times, tops out near 76% of the copy ceiling because the L2 → SM traffic is then
// 188 MB instead of 118 MB; see README.) Stores are streaming (st.global.cs): the output
// is not read again, so it should not push x out of L2.
// Rows are D·2 bytes, a multiple of 16 when D % 8 == 0 (checked by the driver), and
// cudaMalloc'd bases are 256-byte aligned, so every uint4 access is aligned.
//
// Kernel "bulk" (CC 9.0+, the default there): the same scatter, with the moving done by
// the SM's bulk copy engine (the TMA unit; PTX cp.async.bulk, 1-D, no tensor map). One
// thread per token asks for its row in shared memory, waits on an mbarrier for the
// bytes, and asks for top_k stores of it. 1 + top_k instructions per row instead of
// 12 × (1 + top_k) per lane, and no registers holding data. On an H200 it measured
// 31.4 µs against the warp kernel's 32.6 µs at the default size (README).
//
// Build and run:   make ch07 && ./ch07/optimized       (pair: scripts/pair.sh ch07)
//                  ./ch07/optimized --variant=warp    (only the portable kernel)
// Nsight Compute:  scripts/profile.sh ch07 optimized
//   warp: every sector a load request moves is used (l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum
//   / l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum: 16 sectors for 512 useful bytes); bulk: smsp__inst_executed.sum falls
//   5x (2.45 M → 0.49 M warp instructions).
// The kernels are in permute.cuh (the lab includes them); this file points the driver at them.
// Book: memory access patterns — coalescing, vectorized access.
#include "permute.cuh"  // the kernels and launchers (the lab includes them)
#include "permute_driver.cuh"

static void permute_warp_launch(const PermuteProblem *p, cudaStream_t s) {
  permute_warptoken_launch(p->d_x, p->d_dst, p->d_out, p->T, p->top_k, p->D, s);
}
static void permute_bulk_run(const PermuteProblem *p, cudaStream_t s) {
  permute_bulk_launch(p->d_x, p->d_dst, p->d_out, p->T, p->top_k, p->D, s);
}

// Every kernel this GPU can run gets a row; the first is the JSON line.
static const PermuteVariant variants[] = {
    {"bulk", "thread per token, copy engine: row to shared memory once (cp.async.bulk), "
             "top_k bulk stores",
     90, permute_bulk_run},
    {"warp", "warp per token, 16-byte lanes, row read once and stored to its top_k slots", 0,
     permute_warp_launch}};

int main(int argc, char **argv) { return permute_main(argc, argv, "optimized", variants, 2); }
