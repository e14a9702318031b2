// labs/03_tiling — decode: layer 02 with the attention, the experts and the sampler
// replaced: split-KV flash decoding in fp32 over the engine's fp32 KV cache (a CTA per
// sequence, KV head and chunk of keys, chunks merged by log-sum-exp), ch15's device
// counting-sort dispatch and one grouped expert kernel per projection, a greedy device
// sampler (no host sync inside a step). The stages are in layer.cuh (lab03_ops);
// labs/moe/engine.cuh runs them: weights, validation against the CPU reference, timing,
// breakdown, report.
//
// Build and run:   make labs && ./labs/03_tiling/decode              (gptoss20b_mixtral, batch 1)
//                  ./labs/03_tiling/decode --batch=2 --prompt=32 --gen=8 --check=16 --check-rows=2
// Nsight Compute:  ncu --nvtx --nvtx-include "gauntlet@labs_03_tiling.decode.timed]" -k regex:lab03_
//                      -c 48 ./labs/03_tiling/decode --gen=8
//   dram__throughput.avg.pct_of_peak_sustained_elapsed of lab03_attn_split_kernel and the
//   grouped expert kernels at batch 1.
// Book: chapters 15 (grouped experts) and 18 (attention for decode); the lab's tiling layer.
#include "../moe/engine.cuh"
#include "layer.cuh"

int main(int argc, char **argv) {
  const LayerOps ops = lab03_ops();
  return engine_main(argc, argv, &ops);
}
