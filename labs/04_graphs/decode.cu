// labs/04_graphs — decode: layer 03's step captured once as a CUDA graph and replayed for
// every timed step (ch12), with RoPE reading positions on the device (launched with
// programmatic dependent launch) and the split-KV attention on a split fixed at setup. The
// stages are in layer.cuh (lab04_ops); labs/moe/engine.cuh runs them: weights, validation
// against the CPU reference, the graph's capture and its bitwise check against an eager
// step, timing, breakdown (instrumented steps run eagerly), report.
//
// Build and run:   make labs && ./labs/04_graphs/decode              (gptoss20b_mixtral, batch 1)
//                  ./labs/04_graphs/decode --preset=mini --batch=5 --prompt=32 --gen=16 --check=32
// Nsight Systems:  nsys profile -t cuda,nvtx ./labs/04_graphs/decode --gen=16   (a timed step: one
//                  cudaGraphLaunch on the host, the step's kernels back to back on the device)
// Book: chapter 12 (CUDA graphs, programmatic dependent launch); the lab's graph layer.
#include "../moe/engine.cuh"
#include "layer.cuh"

int main(int argc, char **argv) {
  const LayerOps ops = lab04_ops();
  return engine_main(argc, argv, &ops);
}
