// reference.cuh — ch17's CPU double reference: decode steps and prefill tokens through the
// L layers of model.cuh from the same bf16 weights (read back from the device), and the
// check of the sequential run against it (the tolerances are explained in model.cuh).
#pragma once
#include "model.cuh"

// ---- CPU double reference ------------------------------------------------------------------
typedef struct {
  const PdWork *w;
  uint16_t *qkv[PD_MAX_LAYERS], *o[PD_MAX_LAYERS], *gu[PD_MAX_LAYERS][PD_E],
      *down[PD_MAX_LAYERS][PD_E];
  float g1[PD_MAX_LAYERS][PD_D], g2[PD_MAX_LAYERS][PD_D];
} PdHostW;

// A weight matrix on the host, copied from the device the first time it is needed.
static const uint16_t *ref_w(uint16_t **slot, const __nv_bfloat16 *d, size_t n) {
  if (!*slot) {
    *slot = (uint16_t *)malloc(n * 2);
    if (!*slot) {
      fprintf(stderr, "error: host out of memory for %zu reference weights\n", n);
      exit(GTL_EXIT_RUNTIME);
    }
    GTL_CUDA(cudaMemcpy(*slot, d, n * 2, cudaMemcpyDeviceToHost));
  }
  return *slot;
}
static inline double ref_bf(uint16_t v) {  // a bf16 is the top half of an fp32
  const uint32_t u = (uint32_t)v << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static inline double ref_round(double v, int bf16) { return bf16 ? gtl_round_bf16((float)v) : v; }
// out[n] = W[n]·x for a [N][K] bf16 matrix, rounded to bf16 where the GPU stores bf16.
static void ref_gemv(const uint16_t *W, const double *x, double *out, int N, int K, int bf16) {
  for (int n = 0; n < N; n++) {
    const uint16_t *r = W + (size_t)n * K;
    double s = 0;
    for (int k = 0; k < K; k++) s += ref_bf(r[k]) * x[k];
    out[n] = ref_round(s, bf16);
  }
}
static void ref_rmsnorm(const double *x, const float *g, double *out, int bf16) {
  double ss = 0;
  for (int d = 0; d < PD_D; d++) ss += x[d] * x[d];
  const double inv = 1.0 / sqrt(ss / PD_D + (double)PD_EPS);
  for (int d = 0; d < PD_D; d++) out[d] = ref_round(x[d] * inv * g[d], bf16);
}

// One token through the L layers, in place on x[D]. Decode (bf16 = 0) passes its experts
// per layer; prefill (bf16 = 1) passes chunk and token and gets them from pd_slot.
static void ref_token(PdHostW *h, double *x, int bf16, int step, int chunk, int t) {
  const PdWork *w = h->w;
  double *xn = (double *)malloc(sizeof(double) * PD_D);
  double *qkv = (double *)malloc(sizeof(double) * PD_QKV);
  double *a = (double *)malloc(sizeof(double) * PD_Q), *y = (double *)malloc(sizeof(double) * PD_D);
  double *hh = (double *)malloc(sizeof(double) * 2 * PD_F);
  double *act = (double *)malloc(sizeof(double) * PD_F);
  for (int l = 0; l < w->L; l++) {
    const PdLayer *ly = &w->layer[l];
    const uint16_t *Wqkv = ref_w(&h->qkv[l], ly->qkv, (size_t)PD_QKV * PD_D);
    const uint16_t *Wo = ref_w(&h->o[l], ly->o, (size_t)PD_D * PD_Q);
    ref_rmsnorm(x, h->g1[l], xn, bf16);
    ref_gemv(Wqkv, xn, qkv, PD_QKV, PD_D, bf16);
    for (int q = 0; q < PD_Q; q++)
      a[q] = qkv[PD_Q + PD_KV + (q / PD_HEAD_DIM / (PD_HEADS / PD_KV_HEADS)) * PD_HEAD_DIM +
                 q % PD_HEAD_DIM];
    ref_gemv(Wo, a, y, PD_D, PD_Q, bf16);
    for (int d = 0; d < PD_D; d++) x[d] += y[d];
    ref_rmsnorm(x, h->g2[l], xn, bf16);
    int e[PD_TOP_K];
    float wt[PD_TOP_K];
    if (bf16) {
      const int off = pd_prefill_offset(w, chunk, l);
      for (int j = 0; j < PD_TOP_K; j++) e[j] = (t * PD_TOP_K + j + off) % PD_E;
      pd_route_weights(w->seed ^ PD_SEED_PRE_WEIGHT, pd_prefill_wbase(w, chunk, l) + t, wt);
    } else {
      pd_decode_route(w, step, l, e, wt);
    }
    double *sum = (double *)calloc(PD_D, sizeof(double));
    for (int j = 0; j < PD_TOP_K; j++) {
      const uint16_t *Wgu = ref_w(&h->gu[l][e[j]], ly->gu + (size_t)e[j] * 2 * PD_F * PD_D,
                                  (size_t)2 * PD_F * PD_D);
      const uint16_t *Wd = ref_w(&h->down[l][e[j]], ly->down + (size_t)e[j] * PD_D * PD_F,
                                 (size_t)PD_D * PD_F);
      ref_gemv(Wgu, xn, hh, 2 * PD_F, PD_D, bf16);
      for (int f = 0; f < PD_F; f++)
        act[f] = ref_round(hh[f] / (1.0 + exp(-hh[f])) * hh[PD_F + f], bf16);
      ref_gemv(Wd, act, y, PD_D, PD_F, bf16);
      for (int d = 0; d < PD_D; d++) sum[d] += (double)wt[j] * y[d];
    }
    for (int d = 0; d < PD_D; d++) x[d] += sum[d];
    free(sum);
  }
  free(xn), free(qkv), free(a), free(y), free(hh), free(act);
}

// Validate the sequential run's outputs (already on the host): decode steps 0..1 and tokens
// {0, T/2, T−1} of the first and last chunk. Returns pass of both; errors in e_dec, e_pre.
static int pd_validate(const PdWork *w, const float *h_dec, const float *h_pre, GtlErr *e_dec,
                       GtlErr *e_pre) {
  PdHostW *h = (PdHostW *)calloc(1, sizeof(PdHostW));
  h->w = w;
  for (int l = 0; l < w->L; l++) {
    GTL_CUDA(cudaMemcpy(h->g1[l], w->layer[l].attn_norm, PD_D * 4, cudaMemcpyDeviceToHost));
    GTL_CUDA(cudaMemcpy(h->g2[l], w->layer[l].ffn_norm, PD_D * 4, cudaMemcpyDeviceToHost));
  }
  const int V = w->S < 2 ? w->S : 2;
  double *x = (double *)malloc(sizeof(double) * PD_D);
  double *ref = (double *)malloc(sizeof(double) * PD_D * 6);
  float *out = (float *)malloc(sizeof(float) * PD_D * 6);
  float *x0 = (float *)malloc(sizeof(float) * PD_D);
  GTL_CUDA(cudaMemcpy(x0, w->dec_x0, PD_D * 4, cudaMemcpyDeviceToHost));
  for (int d = 0; d < PD_D; d++) x[d] = x0[d];
  for (int i = 0; i < V; i++) {  // the chain: step 1 starts from the reference's step 0
    ref_token(h, x, 0, i, 0, 0);
    memcpy(ref + (size_t)i * PD_D, x, sizeof(double) * PD_D);
    memcpy(out + (size_t)i * PD_D, h_dec + (size_t)i * PD_D, sizeof(float) * PD_D);
  }
  const GtlTol tol_dec = {1e-4, 1e-3, 1e-3};  // fp32 summation only (header comment)
  gtl_compare(out, ref, (size_t)V * PD_D, tol_dec, e_dec);
  const int chunks[2] = {0, w->C - 1}, toks[3] = {0, w->T / 2, w->T - 1};
  uint16_t *xin = (uint16_t *)malloc(2 * PD_D);
  int n = 0;
  for (int ci = 0; ci < 2; ci++)
    for (int ti = 0; ti < 3; ti++) {
      const int c = chunks[ci], t = toks[ti];
      if (ci == 1 && c == chunks[0]) continue;  // one chunk only
      const size_t row = ((size_t)c * w->T + t) * PD_D;
      GTL_CUDA(cudaMemcpy(xin, w->pre_in + row, 2 * PD_D, cudaMemcpyDeviceToHost));
      for (int d = 0; d < PD_D; d++) x[d] = ref_bf(xin[d]);
      ref_token(h, x, 1, 0, c, t);
      memcpy(ref + (size_t)n * PD_D, x, sizeof(double) * PD_D);
      memcpy(out + (size_t)n * PD_D, h_pre + row, sizeof(float) * PD_D);
      n++;
    }
  gtl_compare(out, ref, (size_t)n * PD_D, gtl_tol_for(GTL_BF16), e_pre);
  for (int l = 0; l < PD_MAX_LAYERS; l++) {
    free(h->qkv[l]), free(h->o[l]);
    for (int e = 0; e < PD_E; e++) free(h->gu[l][e]), free(h->down[l][e]);
  }
  free(h), free(x), free(ref), free(out), free(x0), free(xin);
  return e_dec->pass && e_pre->pass;
}

