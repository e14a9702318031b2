// labs/05_precision — decode: layer 04's step (one CUDA graph per step, PDL RoPE, split-KV
// attention, device sort and sampler) with every weight matrix in FP8 E4M3, one fp32 scale
// per output row, quantized on the GPU at setup from the bf16 weights of the preset or the
// checkpoint (weights8.cuh); the dense projections read them through one fp8 GEMV with the
// RMSNorm in its prologue and the residual add in its epilogue (layer.cuh), the experts
// through grouped8.cuh's fp8 grouped kernels. --weights=bf16 runs layer 04's table as it
// is. labs/moe/engine.cuh runs it: weights, validation against the CPU reference (fp8
// tolerances: rel_l2 < 6e-2, top-1 >= 95%), graph, timing, breakdown, report with the
// roofline counted at one byte per weight.
//
// Build and run:   make labs && ./labs/05_precision/decode               (gptoss20b_mixtral, batch 1, fp8)
//                  ./labs/05_precision/decode --preset=mini --batch=3 --check=64
//                  ./labs/05_precision/decode --weights=bf16              (layer 04, for comparison)
// Nsight Compute:  ncu --nvtx --nvtx-include "gauntlet@labs_05_precision.decode.timed/" -k regex:"lab05_" ./labs/05_precision/decode --gen=8
// Book: chapters 13 (FP8 E4M3 scaling) and 14 (fused residual + RMSNorm); the lab's precision layer.
#include "../moe/engine.cuh"
#include "layer.cuh"

int main(int argc, char **argv) {
  const LayerOps ops = lab05_ops();
  return engine_main(argc, argv, &ops);
}
