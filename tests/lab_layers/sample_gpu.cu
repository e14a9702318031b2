// sample_gpu.cu — a test-only lab layer: layer 00 with layer 03's device sampler (greedy,
// lab03_sample), so the engine's device path runs on 00's stages alone: the sampled token
// stays on the GPU as the next step's input, positions advance on the GPU, the host reads
// the tokens back once at the end. Its logits are 00's bit for bit and its generated tokens
// must be 00's (the same argmax rule: the lowest index among equal maxima, NaN never wins).
#include "../../labs/moe/engine.cuh"
#include "../../labs/03_tiling/layer.cuh"

static int sample_configure(Engine *e, char *err, size_t n) {
  if (e->temperature > 0) {
    snprintf(err, n, "greedy only: drop --temperature");
    return -1;
  }
  return lab00_configure(e, err, n);
}

int main(int argc, char **argv) {
  LayerOps ops = lab00_ops();
  ops.target = "tests/lab_layers/sample_gpu";
  ops.adds = "adds: layer 03's greedy device sampler (no host sync at the end of a step)";
  ops.configure = sample_configure;
  ops.sample = lab03_sample;  // 03's stage on 00's table
  return engine_main(argc, argv, &ops);
}
