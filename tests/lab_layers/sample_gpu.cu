// sample_gpu.cu — a test-only lab layer: layer 00 with a device sampler (greedy), so the
// engine's device path runs: the sampled token stays on the GPU as the next step's input,
// positions advance on the GPU, the host reads the tokens back once at the end. Its logits
// are 00's bit for bit and its generated tokens must be 00's (the same argmax rule: the
// lowest index among equal maxima, NaN never wins).
#include "../../labs/moe/engine.cuh"
#include "../../labs/00_baseline/layer.cuh"

constexpr int kArgmaxThreads = 256;

// next[b] = argmax_v logits[b][v]. Strategy: block per row, strided scan, shared-memory
// tree of (value, index) pairs. Limiter: one pass over B·V fp32.
__global__ void __launch_bounds__(kArgmaxThreads)
    sample_argmax_kernel(const float *logits, int V, int32_t *next) {
  __shared__ float sv[kArgmaxThreads];
  __shared__ int si[kArgmaxThreads];
  const float *row = logits + (size_t)blockIdx.x * V;
  float bv = 0.f;
  int bi = -1;
  for (int v = threadIdx.x; v < V; v += kArgmaxThreads)
    if (row[v] == row[v] && (bi < 0 || row[v] > bv)) {
      bv = row[v];
      bi = v;
    }
  sv[threadIdx.x] = bv;
  si[threadIdx.x] = bi;
  __syncthreads();
  for (int s = kArgmaxThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      const float ov = sv[threadIdx.x + s];
      const int oi = si[threadIdx.x + s];
      const int mi = si[threadIdx.x];
      if (oi >= 0 && (mi < 0 || ov > sv[threadIdx.x] || (ov == sv[threadIdx.x] && oi < mi))) {
        sv[threadIdx.x] = ov;
        si[threadIdx.x] = oi;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) next[blockIdx.x] = si[0] < 0 ? 0 : si[0];
}

static void sample_greedy(Engine *e, int) {
  sample_argmax_kernel<<<e->B, kArgmaxThreads, 0, e->s>>>(e->a.d_logits, e->cfg.V, e->a.d_next);
  GTL_LAUNCH();
}

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
  ops.adds = "adds: a greedy device sampler (no host sync at the end of a step)";
  ops.configure = sample_configure;
  ops.sample = sample_greedy;
  return engine_main(argc, argv, &ops);
}
