// ch17 disaggregated prefill/decode, SM partitioning — baseline: prefill chunks and decode
// steps time-sliced on one stream.
//
// What it shows: the competent single-stream serving loop. Work goes to one stream in
// arrival order: every N decode steps a prefill chunk arrives (a few thousand tokens of
// compute-bound GEMMs, ~2 ms at the default size) and runs with the whole GPU, so the decode
// step behind it waits for all of it. Median TPOT stays the decode step's own time (the
// HBM-bound GEMV chain, all SMs, no contention); every N-th token is late by a whole chunk,
// and that is the p95/p99 TPOT a user of the decode feels. Stages, kernels, cuBLASLt
// algorithms and order of arrival are shared with optimized.cu (colocate.cuh); only where
// the two stages run differs. The program also times the sequential reference (each stage
// alone with the whole GPU) and checks both runs against a CPU double reference.
//
// Build and run:   make ch17 && ./ch17/baseline          (pair: scripts/pair.sh ch17)
//                  ./ch17/baseline --every=4 --chunk=4096 (more prefill pressure)
// Nsight Systems:  nsys profile -t cuda,nvtx -o ch17_baseline ./ch17/baseline --iters=2
//   one stream; the NVTX range prefill.chunk (payload = chunk) precedes every 8th
//   decode.step, and that step's kernels start only after the chunk's last GEMM.
// Nsight Compute:  scripts/profile.sh ch17 baseline --iters=1 --steps=8
//   gemv_warprow_f32_kernel: dram__throughput.avg.pct_of_peak_sustained_elapsed (HBM-bound decode);
//   the cuBLASLt GEMMs (nvjet_sm90_*): sm__throughput.avg.pct_of_peak_sustained_elapsed and
//   launch__grid_size (132: persistent, one CTA per SM).
// Book: disaggregated prefill/decode, SM partitioning (chunked prefill, TPOT tails).
#include "colocate.cuh"

int main(int argc, char **argv) {
  return pd_main(argc, argv, "baseline",
                 "one stream, arrival order: a decode step behind a prefill chunk waits for it",
                 NULL, NULL);
}
