// labs/00_baseline — decode: the MoE decode engine built from every chapter's baseline.
// The stages and kernels are in layer.cuh (lab00_ops); labs/moe/engine.cuh runs them:
// weights, validation against the CPU reference, timing, per-stage breakdown, report.
//
// Build and run:   make labs && ./labs/00_baseline/decode               (gptoss20b_mixtral, batch 1)
//                  ./labs/00_baseline/decode --preset=mini              (seconds)
//                  ./labs/00_baseline/decode --batch=64 --prompt=32 --gen=8
//                  ./labs/00_baseline/decode --model=DIR --prompt-ids=1,2,3 --gen=32
// Nsight Systems:  nsys profile -t cuda,nvtx ./labs/00_baseline/decode --preset=mini --gen=8
//   per layer: the moe.topk range holds a D2H copy and a host gap; each expert adds an
//   H2D copy, a synchronize and four small kernels.
// Nsight Compute:  ncu --nvtx --nvtx-include "gauntlet@labs_00_baseline.decode.timed]"
//                  --clock-control none -k regex:gemv -c 20 ./labs/00_baseline/decode --gen=8
//   dram__throughput.avg.pct_of_peak_sustained_elapsed, launch__grid_size (for 132 SMs:
//   32 blocks of 128 threads for q, 23 for o and the experts, 4 for k and v),
//   l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum per request (a warp's threads read 32
//   different weight rows: many sectors per request, where a coalesced load needs 4).
// Book: every chapter's baseline; the lab finale.
#include "../moe/engine.cuh"
#include "layer.cuh"

int main(int argc, char **argv) {
  const LayerOps ops = lab00_ops();
  return engine_main(argc, argv, &ops);
}
