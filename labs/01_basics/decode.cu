// labs/01_basics — decode: layer 00 with the stages chapters 01–06 improve replaced
// (cuBLAS tensor-core projections, ch06's GPU router, batched expert GEMMs planned on the
// device, one device arena). The stages are in layer.cuh (lab01_ops); labs/moe/engine.cuh
// runs them: weights, validation against the CPU reference, timing, breakdown, report.
//
// Build and run:   make labs && ./labs/01_basics/decode              (gptoss20b_mixtral, batch 1)
//                  ./labs/01_basics/decode --preset=mini --check=64   (seconds)
//                  ./labs/01_basics/decode --batch=64 --prompt=32 --gen=8
// Nsight Systems:  nsys profile -t cuda,nvtx ./labs/01_basics/decode --preset=mini --gen=8
//   per layer: no device-to-host copy and no synchronize between decode.step's first
//   kernel and the sampler's logits copy; moe.dispatch is two small kernels.
// Book: chapters 1–6; the lab's first layer of improvements.
#include "../moe/engine.cuh"
#include "layer.cuh"

int main(int argc, char **argv) {
  const LayerOps ops = lab01_ops();
  return engine_main(argc, argv, &ops);
}
