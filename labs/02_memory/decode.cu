// labs/02_memory — decode: layer 01 with the stages chapters 07–08 improve replaced
// (ch08's bandwidth-bound GEMV for every projection and the experts at batch <= 4, ch07's
// coalesced dispatch permute and a float4 combine, fused RMSNorm + split). The stages are
// in layer.cuh (lab02_ops); labs/moe/engine.cuh runs them: weights, validation against the
// CPU reference, timing, breakdown, report.
//
// Build and run:   make labs && ./labs/02_memory/decode              (gptoss20b_mixtral, batch 1)
//                  ./labs/02_memory/decode --preset=mini --check=64   (seconds)
//                  ./labs/02_memory/decode --batch=64 --prompt=32 --gen=8   (cuBLAS path)
// Nsight Compute:  ncu --nvtx --nvtx-include "gauntlet@labs_02_memory.decode.timed]" -c 40
//                      ./labs/02_memory/decode --gen=8          (one line)
//   the GEMV kernels' dram__throughput at batch 1 (gemv_warprow_kernel for q/k/v, o,
//   router, lm_head; lab02_expert_gemv_kernel for the experts).
// Book: chapters 7–8; the lab's memory layer.
#include "../moe/engine.cuh"
#include "layer.cuh"

int main(int argc, char **argv) {
  const LayerOps ops = lab02_ops();
  return engine_main(argc, argv, &ops);
}
