// labs/00_baseline — decode: the MoE decode engine built from every chapter's baseline.
//
// What it is: a correct, simple GPU decode step — the map every later layer changes.
//   thread-per-output kernels   every GEMV (q/k/v/o, router, experts, lm_head) gives one
//                               thread one output and loops it over K (ch08's starting point)
//   router on the host          router logits are copied back each layer, softmax + top-k
//                               run on the CPU (ch06's baseline)
//   per-expert loop, host sync  the host walks the experts that got tokens: copy the
//                               expert's token list over and wait, gather its rows, run
//                               gate/up, down, scatter-add (ch07, ch15 baselines)
//   contiguous KV cache         [L][B][H_kv][max_len][head_dim] fp32, reserved at the
//                               maximum length up front (ch16's baseline)
//   eager launches              12 kernels per layer (14 with q/k norm) plus 4 per active
//                               expert (ch12)
//   bf16 weights, fp32 activations and accumulation
// labs/moe/engine.cuh does the rest: weights, validation against the CPU reference,
// timing, the per-stage breakdown, the report.
//
// Build and run:   make labs && ./labs/00_baseline/decode               (gptoss20b, batch 1)
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

typedef struct {
  int *d_tok;                 // [B] input tokens
  float *d_x, *d_xn;          // [B][D] residual stream; its normalized copy
  float *d_q, *d_att;         // [B][H·hd] queries; attention output
  float *d_k, *d_v;           // [B][H_kv·hd] this step's keys and values
  float *d_scores;            // [B][H][max_len] attention probabilities
  float *d_router, *h_router; // [B][E] router logits (device, pinned host)
  int *d_idx, *h_idx;         // [E][B] each expert's token list
  float *d_wt, *h_wt;         // [E][B] each token's weight for that expert
  int *h_cnt;                 // [E] tokens per expert
  float *d_xs, *d_h, *d_ys;   // [B][D] gathered rows, [B][F] expert hidden, [B][D] expert out
} Base;

#define THREADS 128

// Strategy: thread per element. Limiter: launch latency.
__global__ void embed_kernel(const __nv_bfloat16 *__restrict__ emb, const int *tok, float *x, int D) {
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d < D) x[(size_t)blockIdx.y * D + d] = __bfloat162float(emb[(size_t)tok[blockIdx.y] * D + d]);
}

// out[row] = w ⊙ x[row] / sqrt(mean(x[row]²) + eps), rows of n (in place allowed).
// Strategy: block per row, strided loop, shared-memory tree sum. Limiter: latency.
__global__ void rmsnorm_kernel(const float *x, const __nv_bfloat16 *__restrict__ w, float *out, int n, float eps) {
  __shared__ float red[THREADS];
  const float *xr = x + (size_t)blockIdx.x * n;
  float ss = 0.f;
  for (int i = threadIdx.x; i < n; i += THREADS) ss += xr[i] * xr[i];
  red[threadIdx.x] = ss;
  __syncthreads();
  for (int s = THREADS / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  const float inv = rsqrtf(red[0] / n + eps);
  for (int i = threadIdx.x; i < n; i += THREADS)
    out[(size_t)blockIdx.x * n + i] = __bfloat162float(w[i]) * (xr[i] * inv);
}

// out[b][n] (+)= Σ_k W[n][k] · in[b][k]. Strategy: thread per output, serial loop over K
// (adjacent threads read adjacent rows: 32 rows per warp load). Limiter: uncoalesced
// weight reads, and for N of a few thousand too few threads to fill the GPU.
__global__ void gemv_kernel(const __nv_bfloat16 *__restrict__ W, const float *in, float *out, int N, int K,
                            int accumulate) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const __nv_bfloat16 *w = W + (size_t)n * K;
  const float *x = in + (size_t)blockIdx.y * K;
  float acc = 0.f;
  for (int k = 0; k < K; k++) acc += __bfloat162float(w[k]) * x[k];
  float *o = out + (size_t)blockIdx.y * N + n;
  *o = accumulate ? *o + acc : acc;
}

// Rotate-half RoPE of q (in place) and k, then K and V of position pos into the cache.
// Strategy: thread per (row, head, pair i / i + hd/2), angle in double. Limiter: latency.
__global__ void rope_kv_kernel(float *q, const float *k, const float *v, float *kc, float *vc, int H, int H_kv,
                               int hd, int pos, int max_len, double theta) {
  const int half = hd / 2, i = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
  if (i >= (H + H_kv) * half) return;
  const int head = i / half, j = i % half;
  double sn, cs;
  sincos(pos * pow(theta, -2.0 * j / hd), &sn, &cs);
  const float c = (float)cs, s = (float)sn;
  if (head < H) {
    float *h = q + ((size_t)b * H + head) * hd;
    const float x0 = h[j], x1 = h[j + half];
    h[j] = x0 * c - x1 * s;
    h[j + half] = x1 * c + x0 * s;
    return;
  }
  const int kh = head - H;
  const float *kk = k + ((size_t)b * H_kv + kh) * hd, *vv = v + ((size_t)b * H_kv + kh) * hd;
  const size_t at = (((size_t)b * H_kv + kh) * max_len + pos) * hd;
  kc[at + j] = kk[j] * c - kk[j + half] * s;
  kc[at + j + half] = kk[j + half] * c + kk[j] * s;
  vc[at + j] = vv[j];
  vc[at + j + half] = vv[j + half];
}

// scores[b][h][t] = q·K[t] / sqrt(hd), t <= pos. Strategy: thread per score. Limiter: latency.
__global__ void attn_score_kernel(const float *q, const float *kc, float *scores, int H, int H_kv, int hd,
                                  int pos, int max_len) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H;
  if (t > pos) return;
  const float *qq = q + (size_t)bh * hd, *kk = kc + (((size_t)b * H_kv + h / (H / H_kv)) * max_len + t) * hd;
  float s = 0.f;
  for (int d = 0; d < hd; d++) s += qq[d] * kk[d];
  scores[(size_t)bh * max_len + t] = s * rsqrtf((float)hd);
}

// Softmax over t <= pos of each (b, h) row. Strategy: thread per row, three serial passes.
__global__ void softmax_kernel(float *scores, int rows, int n, int max_len) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  float *s = scores + (size_t)r * max_len, mx = -INFINITY, sum = 0.f;
  for (int t = 0; t < n; t++) mx = fmaxf(mx, s[t]);
  for (int t = 0; t < n; t++) sum += (s[t] = __expf(s[t] - mx));
  for (int t = 0; t < n; t++) s[t] /= sum;
}

// att[b][h][d] = Σ_t p[t] · V[t][d]. Strategy: thread per output, serial loop over t.
__global__ void attn_av_kernel(const float *scores, const float *vc, float *att, int H, int H_kv, int hd,
                               int pos, int max_len) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
  if (i >= H * hd) return;
  const int h = i / hd, d = i % hd;
  const float *p = scores + ((size_t)b * H + h) * max_len;
  const float *vv = vc + (((size_t)b * H_kv + h / (H / H_kv)) * max_len) * hd + d;
  float acc = 0.f;
  for (int t = 0; t <= pos; t++) acc += p[t] * vv[(size_t)t * hd];
  att[(size_t)b * H * hd + i] = acc;
}

// xs[i] = xn[idx[i]]. Strategy: thread per element. Limiter: latency.
__global__ void gather_kernel(const float *xn, const int *idx, float *xs, int D) {
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d < D) xs[(size_t)blockIdx.y * D + d] = xn[(size_t)idx[blockIdx.y] * D + d];
}

// h[i][f] = silu(Wg[f]·xs[i]) · (Wu[f]·xs[i]). Strategy: thread per output, two serial dots.
__global__ void swiglu_up_kernel(const __nv_bfloat16 *__restrict__ Wg, const __nv_bfloat16 *__restrict__ Wu,
                                 const float *xs, float *h, int F, int D) {
  const int f = blockIdx.x * blockDim.x + threadIdx.x;
  if (f >= F) return;
  const __nv_bfloat16 *g = Wg + (size_t)f * D, *u = Wu + (size_t)f * D;
  const float *x = xs + (size_t)blockIdx.y * D;
  float a = 0.f, c = 0.f;
  for (int k = 0; k < D; k++) {
    a += __bfloat162float(g[k]) * x[k];
    c += __bfloat162float(u[k]) * x[k];
  }
  h[(size_t)blockIdx.y * F + f] = a / (1.f + __expf(-a)) * c;
}

// x[idx[i]] += wt[i] · ys[i] (a token appears once per expert: no races). Thread per element.
__global__ void combine_kernel(const float *ys, const int *idx, const float *wt, float *x, int D) {
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d < D) x[(size_t)idx[blockIdx.y] * D + d] += wt[blockIdx.y] * ys[(size_t)blockIdx.y * D + d];
}

static dim3 grid_for(int n, int rows) { return dim3((unsigned)((n + THREADS - 1) / THREADS), (unsigned)rows); }

static void gemv(const Engine *e, const __nv_bfloat16 *W, const float *in, float *out, int N, int K, int rows,
                 int accumulate) {
  gemv_kernel<<<grid_for(N, rows), THREADS, 0, e->s>>>(W, in, out, N, K, accumulate);
  GTL_LAUNCH();
}

static void *dev(size_t bytes, const char *what) { return gtl_malloc(bytes, what); }

void layer_setup(Engine *e) {
  const MoeConfig *c = &e->cfg;
  const size_t B = (size_t)e->B, Q = (size_t)c->H * c->head_dim, KV = (size_t)c->H_kv * c->head_dim;
  if (c->E > 4096 || c->top_k > 64) {  // route_host's stack arrays
    fprintf(stderr, "error: labs/00_baseline routes at most 4096 experts, top_k <= 64 (model: %d, %d)\n", c->E, c->top_k);
    exit(GTL_EXIT_RUNTIME);
  }
  Base *p = (Base *)calloc(1, sizeof(Base));
  p->d_tok = (int *)dev(B * 4, "tokens");
  p->d_x = (float *)dev(B * c->D * 4, "x");
  p->d_xn = (float *)dev(B * c->D * 4, "xn");
  p->d_q = (float *)dev(B * Q * 4, "q");
  p->d_att = (float *)dev(B * Q * 4, "attention out");
  p->d_k = (float *)dev(B * KV * 4, "k");
  p->d_v = (float *)dev(B * KV * 4, "v");
  p->d_scores = (float *)dev(B * c->H * e->max_len * 4, "attention scores");
  p->d_router = (float *)dev(B * c->E * 4, "router logits");
  p->h_router = (float *)gtl_malloc_pinned(B * c->E * 4, "router logits (host)");
  p->d_idx = (int *)dev(B * c->E * 4, "expert token lists");
  p->h_idx = (int *)gtl_malloc_pinned(B * c->E * 4, "expert token lists (host)");
  p->d_wt = (float *)dev(B * c->E * 4, "expert weights");
  p->h_wt = (float *)gtl_malloc_pinned(B * c->E * 4, "expert weights (host)");
  p->h_cnt = (int *)calloc((size_t)c->E, sizeof(int));
  p->d_xs = (float *)dev(B * c->D * 4, "gathered rows");
  p->d_h = (float *)dev(B * c->F * 4, "expert hidden");
  p->d_ys = (float *)dev(B * c->D * 4, "expert out");
  e->layer = p;
}

// The router on the host: logits back, softmax + top-k per token, token lists per expert.
static void route_host(Engine *e, Base *p) {
  const MoeConfig *c = &e->cfg;
  GTL_CUDA(cudaMemcpyAsync(p->h_router, p->d_router, sizeof(float) * e->B * c->E, cudaMemcpyDeviceToHost, e->s));
  GTL_CUDA(cudaStreamSynchronize(e->s));
  memset(p->h_cnt, 0, sizeof(int) * c->E);
  double logits[4096], w[64];
  int idx[64];
  for (int b = 0; b < e->B; b++) {
    for (int x = 0; x < c->E; x++) logits[x] = p->h_router[(size_t)b * c->E + x];
    moe_route(logits, c->E, c->top_k, c->norm_topk_prob, idx, w);
    for (int j = 0; j < c->top_k; j++) {
      const int x = idx[j], n = p->h_cnt[x]++;
      p->h_idx[(size_t)x * e->B + n] = b;
      p->h_wt[(size_t)x * e->B + n] = (float)w[j];
    }
  }
}

static void moe_layer(Engine *e, Base *p, int l) {
  const MoeConfig *c = &e->cfg;
  stage_begin(e, ST_MOE_ROUTER);
  rmsnorm_kernel<<<e->B, THREADS, 0, e->s>>>(p->d_x, engine_w(e, MOE_FFN_NORM, l, 0), p->d_xn, c->D, (float)c->rms_eps);
  GTL_LAUNCH();
  gemv(e, engine_w(e, MOE_ROUTER, l, 0), p->d_xn, p->d_router, c->E, c->D, e->B, 0);
  stage_end(e, ST_MOE_ROUTER);
  stage_begin(e, ST_MOE_TOPK);
  route_host(e, p);
  stage_end(e, ST_MOE_TOPK);
  int active = 0;
  for (int x = 0; x < c->E; x++) {
    const int n = p->h_cnt[x];
    if (n == 0) continue;
    active++;
    int *d_idx = p->d_idx + (size_t)x * e->B;
    float *d_wt = p->d_wt + (size_t)x * e->B;
    stage_begin(e, ST_MOE_DISPATCH);
    GTL_CUDA(cudaMemcpyAsync(d_idx, p->h_idx + (size_t)x * e->B, sizeof(int) * n, cudaMemcpyHostToDevice, e->s));
    GTL_CUDA(cudaMemcpyAsync(d_wt, p->h_wt + (size_t)x * e->B, sizeof(float) * n, cudaMemcpyHostToDevice, e->s));
    GTL_CUDA(cudaStreamSynchronize(e->s));  // the per-expert host sync
    gather_kernel<<<grid_for(c->D, n), THREADS, 0, e->s>>>(p->d_xn, d_idx, p->d_xs, c->D);
    GTL_LAUNCH();
    stage_end(e, ST_MOE_DISPATCH);
    stage_begin(e, ST_MOE_EXPERT_UP);
    swiglu_up_kernel<<<grid_for(c->F, n), THREADS, 0, e->s>>>(engine_w(e, MOE_GATE, l, x), engine_w(e, MOE_UP, l, x),
                                                              p->d_xs, p->d_h, c->F, c->D);
    GTL_LAUNCH();
    stage_end(e, ST_MOE_EXPERT_UP);
    stage_begin(e, ST_MOE_EXPERT_DOWN);
    gemv(e, engine_w(e, MOE_DOWN, l, x), p->d_h, p->d_ys, c->D, c->F, n, 0);
    stage_end(e, ST_MOE_EXPERT_DOWN);
    stage_begin(e, ST_MOE_COMBINE);
    combine_kernel<<<grid_for(c->D, n), THREADS, 0, e->s>>>(p->d_ys, d_idx, d_wt, p->d_x, c->D);
    GTL_LAUNCH();
    stage_end(e, ST_MOE_COMBINE);
  }
  e->experts_read += active;
  e->experts_read_n += 1;
}

void layer_step(Engine *e) {
  Base *p = (Base *)e->layer;
  const MoeConfig *c = &e->cfg;
  const int B = e->B, hd = c->head_dim, Q = c->H * hd, KV = c->H_kv * hd, n = e->pos + 1;
  const float eps = (float)c->rms_eps;
  stage_begin(e, ST_ATTN_QKV);  // the step's input: tokens over, embedding rows
  GTL_CUDA(cudaMemcpyAsync(p->d_tok, e->h_tokens, sizeof(int) * B, cudaMemcpyHostToDevice, e->s));
  embed_kernel<<<grid_for(c->D, B), THREADS, 0, e->s>>>(engine_w(e, MOE_EMBED, 0, 0), p->d_tok, p->d_x, c->D);
  GTL_LAUNCH();
  stage_end(e, ST_ATTN_QKV);
  for (int l = 0; l < c->L; l++) {
    gtl_nvtx_push_payload(e->nv_layer, l);
    float *kc = e->d_kc + engine_kv_layer(e, l), *vc = e->d_vc + engine_kv_layer(e, l);
    stage_begin(e, ST_ATTN_QKV);
    rmsnorm_kernel<<<B, THREADS, 0, e->s>>>(p->d_x, engine_w(e, MOE_ATTN_NORM, l, 0), p->d_xn, c->D, eps);
    GTL_LAUNCH();
    gemv(e, engine_w(e, MOE_Q, l, 0), p->d_xn, p->d_q, Q, c->D, B, 0);
    gemv(e, engine_w(e, MOE_K, l, 0), p->d_xn, p->d_k, KV, c->D, B, 0);
    gemv(e, engine_w(e, MOE_V, l, 0), p->d_xn, p->d_v, KV, c->D, B, 0);
    if (c->qk_norm) {  // Qwen3-MoE: each head normalized over head_dim before RoPE
      rmsnorm_kernel<<<B * c->H, THREADS, 0, e->s>>>(p->d_q, engine_w(e, MOE_Q_NORM, l, 0), p->d_q, hd, eps);
      GTL_LAUNCH();
      rmsnorm_kernel<<<B * c->H_kv, THREADS, 0, e->s>>>(p->d_k, engine_w(e, MOE_K_NORM, l, 0), p->d_k, hd, eps);
      GTL_LAUNCH();
    }
    stage_end(e, ST_ATTN_QKV);
    stage_begin(e, ST_ATTN_ROPE);
    rope_kv_kernel<<<grid_for((c->H + c->H_kv) * hd / 2, B), THREADS, 0, e->s>>>(
        p->d_q, p->d_k, p->d_v, kc, vc, c->H, c->H_kv, hd, e->pos, e->max_len, c->rope_theta);
    GTL_LAUNCH();
    stage_end(e, ST_ATTN_ROPE);
    stage_begin(e, ST_ATTN_SCORE);
    attn_score_kernel<<<grid_for(n, B * c->H), THREADS, 0, e->s>>>(p->d_q, kc, p->d_scores, c->H, c->H_kv, hd,
                                                                   e->pos, e->max_len);
    GTL_LAUNCH();
    softmax_kernel<<<(B * c->H + THREADS - 1) / THREADS, THREADS, 0, e->s>>>(p->d_scores, B * c->H, n, e->max_len);
    GTL_LAUNCH();
    attn_av_kernel<<<grid_for(Q, B), THREADS, 0, e->s>>>(p->d_scores, vc, p->d_att, c->H, c->H_kv, hd, e->pos,
                                                         e->max_len);
    GTL_LAUNCH();
    stage_end(e, ST_ATTN_SCORE);
    stage_begin(e, ST_ATTN_OUT);
    gemv(e, engine_w(e, MOE_O, l, 0), p->d_att, p->d_x, c->D, Q, B, 1);  // x += Wo att
    stage_end(e, ST_ATTN_OUT);
    moe_layer(e, p, l);
    gtl_nvtx_pop();
  }
  stage_begin(e, ST_LOGITS);
  rmsnorm_kernel<<<B, THREADS, 0, e->s>>>(p->d_x, engine_w(e, MOE_FINAL_NORM, 0, 0), p->d_xn, c->D, eps);
  GTL_LAUNCH();
  gemv(e, engine_w(e, MOE_LM_HEAD, 0, 0), p->d_xn, e->d_logits, c->V, c->D, B, 0);
  stage_end(e, ST_LOGITS);
}

void layer_teardown(Engine *e) {
  Base *p = (Base *)e->layer;
  void *d[] = {p->d_tok, p->d_x, p->d_xn, p->d_q, p->d_att, p->d_k, p->d_v, p->d_scores, p->d_router,
               p->d_idx, p->d_wt, p->d_xs, p->d_h, p->d_ys};
  for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) GTL_CUDA(cudaFree(d[i]));
  GTL_CUDA(cudaFreeHost(p->h_router));
  GTL_CUDA(cudaFreeHost(p->h_idx));
  GTL_CUDA(cudaFreeHost(p->h_wt));
  free(p->h_cnt);
  free(p);
}

int main(int argc, char **argv) {
  return engine_main(argc, argv, "labs/00_baseline",
                     "adds: every chapter's baseline (thread-per-output GEMVs, host router, per-expert "
                     "host loop with a sync, contiguous fp32 KV, eager launches)");
}
