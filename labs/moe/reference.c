/* reference.c — the CPU reference decoder (see reference.h). */
#include "reference.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static inline double bf(uint16_t h) {
  union { uint32_t u; float f; } v;
  v.u = (uint32_t)h << 16;
  return (double)v.f;
}

/* ---- y[r][n] (+)= Σ_k W[n][k] · x[r][k] for rows r with use[r] (NULL: all) ---------- */
typedef struct {
  const uint16_t *W;
  const double *x;
  double *y;
  const int *use;
  int64_t N, K, n0, n1;
  int R, accumulate;
  const double *scale; /* per row factor for accumulate (expert weights), NULL: 1 */
} MatJob;

static void *mat_worker(void *arg) {
  MatJob *j = (MatJob *)arg;
  double *w = (double *)malloc(sizeof(double) * (size_t)j->K);
  for (int64_t n = j->n0; n < j->n1; n++) {
    const uint16_t *row = j->W + n * j->K;
    for (int64_t k = 0; k < j->K; k++) w[k] = bf(row[k]);
    for (int r = 0; r < j->R; r++) {
      if (j->use && !j->use[r]) continue;
      const double *x = j->x + (int64_t)r * j->K;
      double s = 0;
      for (int64_t k = 0; k < j->K; k++) s += w[k] * x[k];
      if (j->accumulate) j->y[(int64_t)r * j->N + n] += (j->scale ? j->scale[r] : 1.0) * s;
      else j->y[(int64_t)r * j->N + n] = s;
    }
  }
  free(w);
  return NULL;
}

static void matmul(const MoeRef *r, const uint16_t *W, int64_t N, int64_t K, const double *x,
                   double *y, const int *use, int accumulate, const double *scale) {
  enum { MAX_T = 64 };
  int T = r->threads < MAX_T ? r->threads : MAX_T;
  if ((double)N * K * r->rows < r->min_parallel) T = 1; /* not worth a thread start */
  if (T > N) T = (int)N;
  MatJob job[MAX_T];
  pthread_t th[MAX_T];
  for (int t = 0; t < T; t++) {
    MatJob j = {W, x, y, use, N, K, N * t / T, N * (t + 1) / T, r->rows, accumulate, scale};
    job[t] = j;
  }
  int started = 0;
  for (int t = 1; t < T; t++)
    if (pthread_create(&th[t], NULL, mat_worker, &job[t]) == 0) started = t;
    else break;
  for (int t = started + 1; t < T; t++) mat_worker(&job[t]); /* threads that did not start */
  mat_worker(&job[0]);
  for (int t = 1; t <= started; t++) pthread_join(th[t], NULL);
}

/* ---- small pieces --------------------------------------------------------------------- */
static void rmsnorm(const double *x, const uint16_t *w, int n, double eps, double *out) {
  double ss = 0;
  for (int i = 0; i < n; i++) ss += x[i] * x[i];
  const double inv = 1.0 / sqrt(ss / n + eps);
  for (int i = 0; i < n; i++) out[i] = bf(w[i]) * (x[i] * inv);
}

/* rotate-half RoPE of one head at position pos: pairs (i, i + hd/2), angle pos·inv_freq[i]
 * (θ^(−2i/hd), or YaRN's), cos and sin times ms (YaRN's attention factor; else 1). */
static void rope(double *h, int hd, int pos, const double *inv_freq, double ms) {
  const int half = hd / 2;
  for (int i = 0; i < half; i++) {
    const double ang = pos * inv_freq[i], c = ms * cos(ang), s = ms * sin(ang);
    const double a = h[i], b = h[i + half];
    h[i] = a * c - b * s;
    h[i + half] = b * c + a * s;
  }
}

void moe_route(const double *logits, int E, int top_k, int renorm, int *idx, double *w) {
  double mx = logits[0], sum = 0;
  for (int e = 1; e < E; e++) mx = logits[e] > mx ? logits[e] : mx;
  for (int e = 0; e < E; e++) sum += exp(logits[e] - mx);
  for (int j = 0; j < top_k; j++) {
    int best = -1;
    for (int e = 0; e < E; e++) {
      int taken = 0;
      for (int i = 0; i < j; i++) taken |= idx[i] == e;
      if (!taken && (best < 0 || logits[e] > logits[best])) best = e;
    }
    idx[j] = best;
    w[j] = exp(logits[best] - mx) / sum;
  }
  if (renorm) {
    double s = 0;
    for (int j = 0; j < top_k; j++) s += w[j];
    for (int j = 0; j < top_k; j++) w[j] /= s;
  }
}

const uint16_t *moe_ref_fetch_arena(void *user, int tensor, int64_t row0, int64_t n_rows) {
  (void)n_rows;
  const MoeArenaFetch *a = (const MoeArenaFetch *)user;
  const MoeTensor *t = &a->lay->t[tensor];
  return a->arena + t->offset + (uint64_t)row0 * (uint64_t)(t->cols ? t->cols : 0);
}

/* ---- the decoder -------------------------------------------------------------------- */
int moe_ref_init(MoeRef *r, const MoeLayout *lay, MoeFetchFn fetch, void *user, int rows,
                 int max_len, int threads) {
  memset(r, 0, sizeof *r);
  const MoeConfig *c = &lay->cfg;
  r->lay = lay;
  r->fetch = fetch;
  r->user = user;
  r->rows = rows;
  r->max_len = max_len;
  r->threads = threads < 1 ? 1 : threads;
  r->min_parallel = 4e6;
  const size_t R = (size_t)rows, Q = (size_t)c->H * c->head_dim, KV = (size_t)c->H_kv * c->head_dim;
  const size_t kv = R * c->L * KV * (size_t)max_len;
  r->kc = (double *)calloc(kv, sizeof(double));
  r->vc = (double *)calloc(kv, sizeof(double));
  r->x = (double *)calloc(R * c->D, sizeof(double));
  r->xn = (double *)calloc(R * c->D, sizeof(double));
  r->q = (double *)calloc(R * Q, sizeof(double));
  r->k = (double *)calloc(R * KV, sizeof(double));
  r->v = (double *)calloc(R * KV, sizeof(double));
  r->att = (double *)calloc(R * Q, sizeof(double));
  r->hg = (double *)calloc(R * c->F, sizeof(double));
  r->hu = (double *)calloc(R * c->F, sizeof(double));
  r->y = (double *)calloc(R * c->D, sizeof(double));
  r->router = (double *)calloc(R * c->E, sizeof(double));
  r->scores = (double *)calloc((size_t)max_len, sizeof(double));
  r->topk = (int *)calloc(R * c->top_k, sizeof(int));
  r->topw = (double *)calloc(R * c->top_k, sizeof(double));
  r->inv_freq = (double *)calloc((size_t)c->head_dim / 2 + 1, sizeof(double));
  if (r->inv_freq) r->rope_scale = moe_rope_inv_freq(c, r->inv_freq, NULL, NULL);
  if (!r->inv_freq || !r->kc || !r->vc || !r->x || !r->xn || !r->q || !r->k || !r->v || !r->att ||
      !r->hg || !r->hu || !r->y || !r->router || !r->scores || !r->topk || !r->topw) {
    moe_ref_free(r);
    return -1;
  }
  return 0;
}

void moe_ref_free(MoeRef *r) {
  double *d[] = {r->kc, r->vc, r->x, r->xn, r->q, r->k, r->v, r->att, r->hg, r->hu,
                 r->y, r->router, r->scores, r->topw, r->inv_freq};
  for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) free(d[i]);
  free(r->topk);
  memset(r, 0, sizeof *r);
}

#define W(kind, l, e) r->fetch(r->user, moe_tensor_index(lay, kind, l, e), 0, lay->t[moe_tensor_index(lay, kind, l, e)].rows)

static void attention(MoeRef *r, int l, int pos) {
  const MoeLayout *lay = r->lay;
  const MoeConfig *c = &lay->cfg;
  const int hd = c->head_dim, group = c->H / c->H_kv, Q = c->H * hd, KV = c->H_kv * hd;
  const double scale = 1.0 / sqrt((double)hd);
  for (int b = 0; b < r->rows; b++) {
    double *q = r->q + (size_t)b * Q, *k = r->k + (size_t)b * KV, *v = r->v + (size_t)b * KV;
    if (c->qk_norm) { /* Qwen3: per-head RMSNorm over head_dim, before RoPE */
      const uint16_t *qn = W(MOE_Q_NORM, l, 0);
      for (int h = 0; h < c->H; h++) rmsnorm(q + h * hd, qn, hd, c->rms_eps, q + h * hd);
      const uint16_t *kn = W(MOE_K_NORM, l, 0);
      for (int h = 0; h < c->H_kv; h++) rmsnorm(k + h * hd, kn, hd, c->rms_eps, k + h * hd);
    }
    for (int h = 0; h < c->H; h++) rope(q + h * hd, hd, pos, r->inv_freq, r->rope_scale);
    for (int h = 0; h < c->H_kv; h++) rope(k + h * hd, hd, pos, r->inv_freq, r->rope_scale);
    const size_t row = ((size_t)b * c->L + l) * c->H_kv;
    for (int h = 0; h < c->H_kv; h++) {
      memcpy(r->kc + ((row + h) * r->max_len + pos) * hd, k + h * hd, sizeof(double) * hd);
      memcpy(r->vc + ((row + h) * r->max_len + pos) * hd, v + h * hd, sizeof(double) * hd);
    }
    /* keys t0..pos: all of them, or the window's last w (pos − w < t <= pos) */
    const int64_t w = moe_layer_window(c, l);
    const int t0 = w > 0 && pos - w + 1 > 0 ? (int)(pos - w + 1) : 0;
    const uint16_t *sinks = c->attn_sinks ? W(MOE_SINKS, l, 0) : NULL;
    for (int h = 0; h < c->H; h++) {
      const double *K = r->kc + (row + h / group) * r->max_len * hd;
      const double *V = r->vc + (row + h / group) * r->max_len * hd;
      double mx = -INFINITY, sum = 0;
      for (int t = t0; t <= pos; t++) {
        double s = 0;
        for (int d = 0; d < hd; d++) s += q[h * hd + d] * K[(size_t)t * hd + d];
        r->scores[t] = s * scale;
        mx = r->scores[t] > mx ? r->scores[t] : mx;
      }
      /* gpt-oss: the sink is one more logit (not scaled) in the softmax, with no value */
      const double sink = sinks ? bf(sinks[h]) : -INFINITY;
      mx = sink > mx ? sink : mx;
      for (int t = t0; t <= pos; t++) sum += (r->scores[t] = exp(r->scores[t] - mx));
      if (sinks) sum += exp(sink - mx);
      double *o = r->att + (size_t)b * Q + h * hd;
      for (int d = 0; d < hd; d++) o[d] = 0;
      for (int t = t0; t <= pos; t++)
        for (int d = 0; d < hd; d++) o[d] += r->scores[t] / sum * V[(size_t)t * hd + d];
    }
  }
}

/* y[rows][n] += bias[n] (gpt-oss's Linear biases). */
static void add_bias(double *y, int rows, int n, const uint16_t *bias) {
  for (int b = 0; b < rows; b++)
    for (int i = 0; i < n; i++) y[(size_t)b * n + i] += bf(bias[i]);
}

static void moe(MoeRef *r, int l) {
  const MoeLayout *lay = r->lay;
  const MoeConfig *c = &lay->cfg;
  const int R = r->rows, k = c->top_k;
  matmul(r, W(MOE_ROUTER, l, 0), c->E, c->D, r->xn, r->router, NULL, 0, NULL);
  if (c->router_bias) add_bias(r->router, R, c->E, W(MOE_ROUTER_BIAS, l, 0));
  for (int b = 0; b < R; b++)
    moe_route(r->router + (size_t)b * c->E, c->E, k, c->norm_topk_prob, r->topk + b * k, r->topw + b * k);
  int *use = (int *)calloc((size_t)R, sizeof(int));
  double *wt = (double *)calloc((size_t)R, sizeof(double));
  double *bgu = c->expert_bias ? (double *)malloc(sizeof(double) * 2 * (size_t)c->F) : NULL; /* gate, up biases */
  for (int e = 0; e < c->E; e++) {
    int any = 0;
    for (int b = 0; b < R; b++) {
      use[b] = 0;
      for (int j = 0; j < k; j++)
        if (r->topk[b * k + j] == e) {
          use[b] = 1;
          wt[b] = r->topw[b * k + j];
        }
      any |= use[b];
    }
    if (!any) continue;
    matmul(r, W(MOE_GATE, l, e), c->F, c->D, r->xn, r->hg, use, 0, NULL);
    matmul(r, W(MOE_UP, l, e), c->F, c->D, r->xn, r->hu, use, 0, NULL);
    /* Copied out one at a time: a fetch's pointer is only valid until the next fetch (the
     * GPU engine's fetch reuses one buffer), so two biases cannot be held as pointers. */
    const double *bg = NULL, *bu = NULL;
    if (bgu) {
      const uint16_t *p = W(MOE_GATE_BIAS, l, e);
      for (int f = 0; f < c->F; f++) bgu[f] = bf(p[f]);
      p = W(MOE_UP_BIAS, l, e);
      for (int f = 0; f < c->F; f++) bgu[c->F + f] = bf(p[f]);
      bg = bgu;
      bu = bgu + c->F;
    }
    const double lim = c->swiglu_limit, alpha = c->swiglu_alpha;
    for (int b = 0; b < R; b++)
      for (int f = 0; use[b] && f < c->F; f++) {
        double g = r->hg[(size_t)b * c->F + f], u = r->hu[(size_t)b * c->F + f];
        if (bg) {
          g += bg[f];
          u += bu[f];
        }
        if (c->act == MOE_ACT_SWIGLU_CLAMP) { /* gpt-oss: (clamp(u) + 1) · g·sigmoid(α g), g <= lim */
          g = g < lim ? g : lim;
          u = u < -lim ? -lim : u > lim ? lim : u;
          r->hg[(size_t)b * c->F + f] = (u + 1.0) * g / (1.0 + exp(-alpha * g));
        } else {
          r->hg[(size_t)b * c->F + f] = g / (1.0 + exp(-g)) * u; /* silu(g)·u */
        }
      }
    /* x += w_e · (Wd_e act + bd_e): accumulate straight into the residual stream */
    matmul(r, W(MOE_DOWN, l, e), c->D, c->F, r->hg, r->x, use, 1, wt);
    if (c->expert_bias) {
      const uint16_t *bd = W(MOE_DOWN_BIAS, l, e);
      for (int b = 0; b < R; b++)
        for (int d = 0; use[b] && d < c->D; d++) r->x[(size_t)b * c->D + d] += wt[b] * bf(bd[d]);
    }
  }
  free(use);
  free(wt);
  free(bgu);
}

void moe_ref_step(MoeRef *r, const int *tokens, int pos, double *logits) {
  const MoeLayout *lay = r->lay;
  const MoeConfig *c = &lay->cfg;
  const int R = r->rows, D = c->D, Q = c->H * c->head_dim, KV = c->H_kv * c->head_dim;
  for (int b = 0; b < R; b++) {
    const uint16_t *e = r->fetch(r->user, moe_tensor_index(lay, MOE_EMBED, 0, 0), tokens[b], 1);
    for (int d = 0; d < D; d++) r->x[(size_t)b * D + d] = bf(e[d]);
  }
  for (int l = 0; l < c->L; l++) {
    const uint16_t *w = W(MOE_ATTN_NORM, l, 0);
    for (int b = 0; b < R; b++) rmsnorm(r->x + (size_t)b * D, w, D, c->rms_eps, r->xn + (size_t)b * D);
    matmul(r, W(MOE_Q, l, 0), Q, D, r->xn, r->q, NULL, 0, NULL);
    matmul(r, W(MOE_K, l, 0), KV, D, r->xn, r->k, NULL, 0, NULL);
    matmul(r, W(MOE_V, l, 0), KV, D, r->xn, r->v, NULL, 0, NULL);
    if (c->attn_bias) {
      add_bias(r->q, R, Q, W(MOE_Q_BIAS, l, 0));
      add_bias(r->k, R, KV, W(MOE_K_BIAS, l, 0));
      add_bias(r->v, R, KV, W(MOE_V_BIAS, l, 0));
    }
    attention(r, l, pos);
    matmul(r, W(MOE_O, l, 0), D, Q, r->att, r->x, NULL, 1, NULL); /* x += Wo att (+ bo) */
    if (c->attn_bias) add_bias(r->x, R, D, W(MOE_O_BIAS, l, 0));
    w = W(MOE_FFN_NORM, l, 0);
    for (int b = 0; b < R; b++) rmsnorm(r->x + (size_t)b * D, w, D, c->rms_eps, r->xn + (size_t)b * D);
    moe(r, l);
  }
  const uint16_t *w = W(MOE_FINAL_NORM, 0, 0);
  for (int b = 0; b < R; b++) rmsnorm(r->x + (size_t)b * D, w, D, c->rms_eps, r->xn + (size_t)b * D);
  matmul(r, W(MOE_LM_HEAD, 0, 0), c->V, D, r->xn, logits, NULL, 0, NULL);
}
