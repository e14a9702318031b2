// ch06 CUDA fundamentals, occupancy — baseline: the MoE router on the host.
//
// What it shows: the router as many first MoE engines wrote it. The router GEMM's
// logits [T][128] are copied back to the host (cudaMemcpyAsync D2H into a pinned staging
// buffer), the host waits for them (cudaStreamSynchronize: the step cannot go on without
// its routing), computes softmax + top-8 on one CPU core in fp32 (one pass for max, one
// for the sum of exp, an insertion list of the 8 best), and copies indices and weights
// over (two cudaMemcpyAsync H2D) for the expert kernels. The timed region is that whole
// round trip: events on the stream around the copies, with the host's work between them.
// Every step pays two transfer latencies, a host wake-up and the CPU's arithmetic, while
// the GPU idles; the data itself is tiny (32 KB of logits at T=64).
//
// Build and run:   make ch06 && ./ch06/baseline          (pair: scripts/pair.sh ch06)
//                  ./ch06/baseline --T=64                (one row)
// Nsight Systems:  nsys profile -t cuda,nvtx -o ch06_baseline ./ch06/baseline --T=64
//   in range ch06.baseline.timed: memcpy DtoH, a gap with the GPU idle (host softmax and
//   top-k), two small memcpy HtoD — per step, no kernel at all.
// Nsight Compute:  nothing to see (no kernel); compare scripts/profile.sh ch06 optimized.
// Book: CUDA fundamentals — host/device split, the cost of a synchronize.
#include "router.cuh"

// Strategy: host, per token: max, Σ exp, insertion top-k; fp32. Limiter: the round trip
// (D2H + synchronize + CPU work + H2D latency), not bytes.
static void router_host(const float *x, int64_t T, int64_t E, int64_t k, int norm,
                        int32_t *idx, float *w) {
  for (int64_t t = 0; t < T; t++) {
    const float *row = x + t * E;
    float m = row[0], sum = 0.0f, bv[32], p[32], top = 0.0f;
    int32_t bi[32];
    int64_t n = 0;
    for (int64_t e = 1; e < E; e++) m = fmaxf(m, row[e]);
    for (int64_t e = 0; e < E; e++) sum += expf(row[e] - m);
    for (int64_t e = 0; e < E; e++) {  // keep the k best, sorted; strict '>': ties → lower e
      const float v = row[e];
      if (n == k && !(v > bv[k - 1])) continue;
      int64_t pos = n < k ? n++ : k - 1;
      for (; pos > 0 && v > bv[pos - 1]; pos--) {
        bv[pos] = bv[pos - 1];
        bi[pos] = bi[pos - 1];
      }
      bv[pos] = v;
      bi[pos] = (int32_t)e;
    }
    for (int64_t j = 0; j < k; j++) {
      p[j] = expf(bv[j] - m) / sum;
      top += p[j];
    }
    for (int64_t j = 0; j < k; j++) {
      idx[t * k + j] = bi[j];
      w[t * k + j] = norm ? p[j] / top : p[j];
    }
  }
}

void router_launch(const RouterProblem *p, cudaStream_t s) {
  const size_t n_in = (size_t)(p->T * p->E), n_out = (size_t)(p->T * p->top_k);
  GTL_CUDA(cudaMemcpyAsync(p->h_logits, p->d_logits, n_in * 4, cudaMemcpyDeviceToHost, s));
  GTL_CUDA(cudaStreamSynchronize(s));  // the host needs the logits before it can route
  router_host(p->h_logits, p->T, p->E, p->top_k, p->norm_topk_prob, p->h_idx, p->h_w);
  GTL_CUDA(cudaMemcpyAsync(p->d_idx, p->h_idx, n_out * 4, cudaMemcpyHostToDevice, s));
  GTL_CUDA(cudaMemcpyAsync(p->d_w, p->h_w, n_out * 4, cudaMemcpyHostToDevice, s));
}

void router_explain(char *buf, size_t n) {
  snprintf(buf, n, "host router: D2H logits into pinned staging, cudaStreamSynchronize, "
                   "softmax + top-k on one CPU core (fp32), H2D indices and weights; no kernel");
}

int main(int argc, char **argv) {
  return router_main(argc, argv, "baseline", "router on the host, one round trip per step");
}
