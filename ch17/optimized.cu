// ch17 disaggregated prefill/decode, SM partitioning — optimized: prefill and decode
// concurrent in two green contexts, each with its own share of the SMs.
//
// The one change: the two stages leave the shared stream. Prefill goes to a green context of
// P% of the SMs, decode to one of the other D% (partition.cuh: cuDevSmResourceSplitByCount,
// cuGreenCtxCreate, cuGreenCtxStreamCreate; one process, no MPS). A decode step no longer
// queues behind a chunk and no longer waits for SMs that GEMM blocks hold: its SMs are its
// own, and it competes only for what green contexts do not split (HBM bandwidth, L2). The
// price: each stage has fewer SMs even while the other idles. The program rounds P:D to the
// GPU's partition step (8 SMs on Hopper) and prints the SM counts it got; cuBLASLt is told
// the prefill partition's size (CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET; --sm_target=0 to not).
// For comparison, by flag: --mode=sequential (each stage alone, all SMs: the "100-100"
// reference), --mode=streams (two ordinary streams, no partition), --mode=graph (one CUDA
// graph per step and per chunk, replayed on two streams), --mode=split --split=P:D (the
// default, 70:30), --sweep (all of them, the splits 50:50, 70:30 and 30:70, one table,
// and the best configuration for decode p99 and for prefill throughput). --check-sm logs
// %smid for every block of every kernel of ours and checks that each stage stayed on its
// partition. Green contexts missing (driver < 12.5, GPU): --mode=split waives (77); the
// other modes run, and --sweep shows the splits as waived.
//
// Build and run:   make ch17 && ./ch17/optimized        (pair: scripts/pair.sh ch17)
//                  ./ch17/optimized --sweep --check-sm
// Nsight Systems:  nsys profile -t cuda,nvtx -o ch17_split ./ch17/optimized --iters=2
//   two streams; decode.step ranges run straight through the prefill.chunk ranges, and the
//   decode kernels overlap the GEMMs instead of queueing behind them.
// Nsight Compute:  scripts/profile.sh ch17 optimized --iters=1 --steps=8
//   ncu serializes kernels, so it shows each kernel, not the overlap. The cuBLASLt GEMMs
//   (nvjet_sm90_*) are persistent: launch__grid_size 132, one CTA per SM — why a partition
//   needs CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET; sm__throughput.avg.pct_of_peak_sustained_elapsed
//   79-91% for them; gemv_warprow_f32_kernel: dram__throughput.avg.pct_of_peak_sustained_elapsed.
// Book: disaggregated prefill/decode, SM partitioning (green contexts, MPS, goodput).
#include "colocate.cuh"
#include "partition.cuh"

static SmPartition g_part;

// Streams and graph: two ordinary streams. Split: the prefill in the aligned group (cuBLAS's
// Hopper GEMMs launch thread-block clusters, which need co-scheduled SMs), decode in the rest.
static int place(const GtlCtx *ctx, const PdMode *m, PdPlacement *pl, char *why, size_t n) {
  if (m->kind == PD_STREAMS || m->kind == PD_GRAPH) {
    if (!pl) return 0;
    GTL_CUDA(cudaStreamCreateWithFlags(&pl->dec, cudaStreamNonBlocking));
    GTL_CUDA(cudaStreamCreateWithFlags(&pl->pre, cudaStreamNonBlocking));
    pl->graphs = m->kind == PD_GRAPH;
    return 0;
  }
  SmPartitionInfo info;
  if (sm_partition_query(ctx->dev.id, &info, why, n) != 0) return GTL_EXIT_WAIVED;
  if (!pl) return 0;
  int sms_pre, sms_dec;
  sm_partition_plan(&info, m->split_p, &sms_pre, &sms_dec);
  if (sm_partition_create(ctx->dev.id, sms_pre, &g_part, why, n) != 0) return GTL_EXIT_WAIVED;
  pl->pre = g_part.stream[0];
  pl->dec = g_part.stream[1];
  pl->sms_pre = g_part.sms[0];
  pl->sms_dec = g_part.sms[1];
  pl->cublas_sms = m->sm_target ? pl->sms_pre : 0;
  if (!ctx->args.json)
    printf("# %s: asked %d%%:%d%% of %d SMs (partitions of >= %d SMs in steps of %d); got %d SMs "
           "for prefill, %d for decode; cuBLASLt SM target %d\n",
           m->name, m->split_p, 100 - m->split_p, info.total_sms, info.min_sms, info.align_sms,
           pl->sms_pre, pl->sms_dec, pl->cublas_sms);
  return 0;
}

static void unplace(PdPlacement *pl) {
  if (pl->sms_pre) {
    sm_partition_destroy(&g_part);
  } else {
    GTL_CUDA(cudaStreamDestroy(pl->dec));
    GTL_CUDA(cudaStreamDestroy(pl->pre));
  }
}

int main(int argc, char **argv) {
  return pd_main(argc, argv, "optimized",
                 "prefill and decode on two green-context partitions of the SMs, concurrent",
                 place, unplace);
}
