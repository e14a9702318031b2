// layer.cuh — layer 03 of the lab: layer 02's stage table (lab02_ops()) with the
// attention, the expert stages and the sampler replaced. decode.cu runs it; a later layer
// starts from lab03_ops() the same way.
//
// What it replaces (everything else is 02's: ch08's GEMVs for q/k/v/o, router and lm_head,
// the fused RMSNorm + split; 01's GPU top-k, arena and cuBLAS; 00's embed):
//   KV cache            bf16, contiguous [L][B][H_kv][max_len][64] (kv_alloc) where 00's
//                       engine default is fp32: half the bytes per cached key and value
//   attn.rope           lab03_rope_append_kernel: 00's rotate-half RoPE (same angles, in
//                       double), q written as bf16 for ch18's kernel, K and V of the step
//                       appended to the bf16 cache, and each sequence's key count
//   attn.score          ch18's attn_splitkv_launch (ch18/decode_attn.cuh): one CTA per
//                       (sequence, KV head, chunk of keys) reads its K/V tiles once through
//                       a cp.async pipeline and serves all H / H_kv query heads of the group
//                       with tensor-core MMAs and an online softmax; the chunks merged by
//                       their log-sum-exp. The cache is read through an identity block
//                       table (table[b] = b, one "page" of 2^ceil(log2 max_len) positions).
//                       The bf16 output is widened to a.d_att (fp32) for 02's attn.out.
//   moe.dispatch        ch15's counting sort on the device (moe_dispatch_launch): the
//                       B·top_k (token, expert) pairs ordered by expert, offsets by prefix
//                       sum, the work-item table; replaces 01's one-block plan and 02's
//                       permute (the rows are gathered by token inside the up kernel)
//   moe.expert_up/down  ONE launch per projection over every routed expert (grouped.cuh):
//                       a GEMV-style grouped kernel while an expert gets at most 8 tokens,
//                       ch15's persistent mma.sync kernel above; SwiGLU in the up epilogue
//   moe.combine         each token gathers its top_k fp32 expert rows (ch15's combine)
//   sample              greedy argmax on the device: tokens and positions stay on the GPU
//                       (the engine's device path), nothing is read back inside the run
// No host synchronization is left inside a step: the expert counts stay on the device (the
// persistent grids do not depend on them) and the host reads the sampled tokens after the
// run. --temperature > 0 keeps the engine's host sampler (configure).
// ch18's kernel takes head_dim 64 and at most 16 query heads per KV head. For other
// models (the mini and tiny presets have head_dim 32 or 16) configure keeps 02's
// attention and 00's fp32 cache: lab03_splitkv_fits() decides, and the report's KV line
// says which cache ran. gpt-oss semantics stay refused (00's configure, through 01's).
// Precision: q, K, V, the softmax weights in P·V and the attention output are bf16
// (ch18's contract), scores, softmax and sums fp32; the experts keep 02's split bf16
// activations (hi + lo) and fp32 accumulation (grouped.cuh says why).
#pragma once
#include "../02_memory/layer.cuh"
#include "../../ch18/decode_attn.cuh"
#include "grouped.cuh"  // ch15's counting sort and work items; the grouped expert kernels

// ---- the layer's state: 01's, plus the attention's buffers ------------------------------
// Lab01 first: every stage of 01 and 02 finds its state through ((Lab01 *)e->layer).
typedef struct {
  Lab01 base;
  int splitkv;               // 1: ch18's attention over the bf16 cache (lab03_splitkv_fits)
  int slots;                 // resident CTAs of ch18's kernel on the device (SMs × per SM)
  int max_splits;            // the workspace is sized for this many chunks
  __nv_bfloat16 *qb, *ob;    // [B][H][64] rotated queries, attention output (bf16)
  int32_t *seq_lens;         // [B] keys cached per sequence (written by the append)
  int32_t *table;            // [B] identity block table: table[b] = b
  float *ws;                 // attn_splitkv_workspace_floats(B, H, max_splits)
  // the experts (ch15's tables, P = B·top_k sorted rows)
  Lab03ExpertPlan xp;        // GEMV or MMA kernel, rows per work item, grids
  int64_t expert_stride;     // elements from one expert's gate (up, down) to the next's
  void *xarena;              // one allocation for the five buffers below
  int32_t *offsets, *tile_start;        // [E + 1] each (moe_dispatch_launch)
  int32_t *sorted_token, *pair_pos;     // [P] each
  __nv_bfloat16 *hs;         // [P][2F] SwiGLU rows, split (hi | lo)
  float *ys;                 // [P][D] expert outputs, fp32
} Lab03;

/** 1 when ch18's kernel can run model c: head_dim == ATTN_HEAD_DIM (64) and H a multiple
 *  of H_kv with H / H_kv <= ATTN_MAX_GROUP (16). Host-tested in plan_test.cpp. */
static inline int lab03_splitkv_fits(const MoeConfig *c) {
  return c->head_dim == ATTN_HEAD_DIM && c->H_kv > 0 && c->H % c->H_kv == 0 && c->H / c->H_kv <= ATTN_MAX_GROUP;
}

/** log2 of the smallest power of two >= max_len (>= 1): the identity table's page, so that
 *  position j of sequence b is row j of page b. Host-tested in plan_test.cpp. */
static inline int lab03_page_shift(int max_len) {
  int s = 0;
  while ((1LL << s) < (long long)max_len) s++;
  return s;
}

/** ch18's view of layer l of the contiguous bf16 cache [L][B][H_kv][max_len][64]
 *  (elements): page b = sequence b, page_stride H_kv·max_len·64, head_stride max_len·64,
 *  token_stride 64. Host-tested in plan_test.cpp against the append's index. */
static inline AttnKvView lab03_kv_view(const void *k, const void *v, const int32_t *table, int L_index, int B,
                                       int H_kv, int max_len) {
  AttnKvView w;
  const int64_t page = (int64_t)H_kv * max_len * ATTN_HEAD_DIM, layer = (int64_t)B * page * L_index;
  w.k = (const __nv_bfloat16 *)k + layer;
  w.v = (const __nv_bfloat16 *)v + layer;
  w.block_table = table;
  w.table_stride = 1;
  w.page_shift = lab03_page_shift(max_len);
  w.page_stride = page;
  w.head_stride = (int64_t)max_len * ATTN_HEAD_DIM;
  w.token_stride = ATTN_HEAD_DIM;
  return w;
}

// ---- kernels ----------------------------------------------------------------------------
// Rotate-half RoPE at each sequence's position pos = d_pos[b] (00's rope_kv_append_kernel's
// angles and arithmetic; 00 takes the host's e->pos, the same value, as an argument):
// q [B][H][hd] fp32 → qb bf16 (rotated); k, v [B][H_kv][hd] fp32 → row pos of the bf16
// cache kc, vc ([B][H_kv][max_len][hd], this layer's slice); seq_lens[b] = pos + 1.
// Strategy: thread per (row, head, pair i / i + hd/2), grid (pairs / threads, B).
// Limiter: latency (a few KB per step).
__global__ void lab03_rope_append_kernel(const float *q, const float *k, const float *v, __nv_bfloat16 *qb,
                                         __nv_bfloat16 *kc, __nv_bfloat16 *vc, int32_t *seq_lens,
                                         const int32_t *d_pos, int H, int H_kv, int hd, int max_len, double theta) {
  const int half = hd / 2, i = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y, pos = d_pos[b];
  if (i == 0) seq_lens[b] = pos + 1;
  if (i >= (H + H_kv) * half) return;
  const int head = i / half, j = i % half;
  double sn, cs;
  sincos(pos * pow(theta, -2.0 * j / hd), &sn, &cs);
  const float c = (float)cs, s = (float)sn;
  if (head < H) {
    const size_t at = ((size_t)b * H + head) * hd;
    const float x0 = q[at + j], x1 = q[at + j + half];
    qb[at + j] = __float2bfloat16_rn(x0 * c - x1 * s);
    qb[at + j + half] = __float2bfloat16_rn(x1 * c + x0 * s);
    return;
  }
  const int kh = head - H;
  const float *kk = k + ((size_t)b * H_kv + kh) * hd, *vv = v + ((size_t)b * H_kv + kh) * hd;
  const size_t at = (((size_t)b * H_kv + kh) * max_len + pos) * hd;
  kc[at + j] = __float2bfloat16_rn(kk[j] * c - kk[j + half] * s);
  kc[at + j + half] = __float2bfloat16_rn(kk[j + half] * c + kk[j] * s);
  vc[at + j] = __float2bfloat16_rn(vv[j]);
  vc[at + j + half] = __float2bfloat16_rn(vv[j + half]);
}

// out[i] = float(in[i]), n elements. Strategy: thread per element. Limiter: latency.
__global__ void lab03_widen_kernel(const __nv_bfloat16 *in, float *out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __bfloat162float(in[i]);
}

// x[t][d] += Σ_j w[t][j] · y[pair_pos[t·top_k + j]][d]: each token gathers its top_k rows
// of the expert-sorted y [P][D] fp32 (ch15's combine, in fp32 and accumulating into the
// residual; the routing order, so the same sums every step). Strategy: thread per 4
// elements (float4), grid (D/4 / threads, T). Limiter: latency at decode sizes.
__global__ void lab03_combine_kernel(const float *y, const int32_t *pair_pos, const float *w, float *x, int D,
                                     int top_k) {
  const int d4 = blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y;
  if (d4 >= D / 4) return;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int j = 0; j < top_k; j++) {
    const float4 v = ((const float4 *)(y + (size_t)pair_pos[(size_t)t * top_k + j] * D))[d4];
    const float wj = w[(size_t)t * top_k + j];
    acc.x += wj * v.x, acc.y += wj * v.y, acc.z += wj * v.z, acc.w += wj * v.w;
  }
  float4 *xo = (float4 *)(x + (size_t)t * D) + d4;
  float4 o = *xo;
  o.x += acc.x, o.y += acc.y, o.z += acc.z, o.w += acc.w;
  *xo = o;
}

// next[b] = argmax_v logits[b][v], the host sampler's greedy rule (moe_argmax_f): the lowest
// index among equal maxima, NaN never wins (0 if the row is all NaN). Strategy: block per
// row, strided scan, shared-memory tree of (value, index). Limiter: one pass over B·V fp32.
__global__ void __launch_bounds__(kLab00Threads) lab03_argmax_kernel(const float *logits, int V, int32_t *next) {
  __shared__ float sv[kLab00Threads];
  __shared__ int si[kLab00Threads];
  const float *row = logits + (size_t)blockIdx.x * V;
  float bv = 0.f;
  int bi = -1;
  for (int v = threadIdx.x; v < V; v += kLab00Threads)
    if (row[v] == row[v] && (bi < 0 || row[v] > bv)) bv = row[v], bi = v;
  sv[threadIdx.x] = bv;
  si[threadIdx.x] = bi;
  __syncthreads();
  for (int s = kLab00Threads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      const float ov = sv[threadIdx.x + s];
      const int oi = si[threadIdx.x + s], mi = si[threadIdx.x];
      if (oi >= 0 && (mi < 0 || ov > sv[threadIdx.x] || (ov == sv[threadIdx.x] && oi < mi))) {
        sv[threadIdx.x] = ov;
        si[threadIdx.x] = oi;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) next[blockIdx.x] = si[0] < 0 ? 0 : si[0];
}

// ---- hooks and stages --------------------------------------------------------------------
// 02's configure (what 00 and 01 refuse), then the attention variant: ch18's over the
// bf16 cache when the model fits it, else 02's (00's kernels over the fp32 cache).
// Greedy decoding samples on the device; --temperature > 0 keeps the engine's host sampler
// (moe_sample's nucleus draw has no device version here).
static inline int lab03_configure(Engine *e, char *err, size_t n) {
  if (lab01_configure(e, err, n)) return -1;
  if (!lab03_splitkv_fits(&e->cfg)) {
    e->ops.rope = lab00_rope;
    e->ops.attend = lab00_attend;
  }
  if (e->temperature > 0) e->ops.sample = NULL;
  return 0;
}

// bf16 K and V, [L][B][H_kv][max_len][64] each; for a model ch18's kernel cannot take,
// the engine's default layout in fp32 (00's attention reads it).
static inline void lab03_kv_alloc(Engine *e) {
  const MoeConfig *c = &e->cfg;
  const size_t n = (size_t)c->L * e->B * c->H_kv * e->kv.max_len * c->head_dim;
  const int bf = lab03_splitkv_fits(c);
  e->kv.dtype = bf ? KV_BF16 : KV_F32;
  e->kv.paged = 0;
  e->kv.block = 0;
  e->kv.n_blocks = 0;
  e->kv.d_block_table = NULL;
  e->kv.k = gtl_malloc(n * (bf ? 2 : 4), bf ? "K cache (bf16, max length)" : "K cache (fp32, max length)");
  e->kv.v = gtl_malloc(n * (bf ? 2 : 4), bf ? "V cache (bf16, max length)" : "V cache (fp32, max length)");
  e->kv.bytes = n * (bf ? 4 : 8);
}

// The experts' plan (lab03_expert_plan), their stride (checked uniform: one pitch for
// every expert's gate, up and down in every layer, as ch15's kernels take), and one
// allocation for the sort's tables, h and y.
static inline void lab03_expert_setup(Engine *e, Lab03 *p, int sms) {
  const MoeConfig *c = &e->cfg;
  const size_t P = (size_t)e->B * c->top_k;
  p->xp = lab03_expert_plan(e->B, c->top_k, c->E, sms);
  p->expert_stride = c->E > 1 ? engine_w(e, MOE_GATE, 0, 1) - engine_w(e, MOE_GATE, 0, 0) : 0;
  for (int l = 0; l < c->L; l++)
    for (int x = 0; x < c->E; x++) {
      const int64_t at = (int64_t)x * p->expert_stride;
      if (engine_w(e, MOE_GATE, l, x) != engine_w(e, MOE_GATE, l, 0) + at ||
          engine_w(e, MOE_UP, l, x) != engine_w(e, MOE_UP, l, 0) + at ||
          engine_w(e, MOE_DOWN, l, x) != engine_w(e, MOE_DOWN, l, 0) + at) {
        fprintf(stderr, "error: layer 03 needs the experts at one pitch (layer %d, expert %d is not)\n", l, x);
        exit(GTL_EXIT_RUNTIME);
      }
    }
  const size_t sz[6] = {(size_t)(c->E + 1) * 4, (size_t)(c->E + 1) * 4, P * 4, P * 4, P * 2 * c->F * 2, P * c->D * 4};
  size_t off[6], at = 0;
  for (int i = 0; i < 6; i++) {
    off[i] = at;
    at += (sz[i] + 255) / 256 * 256;
  }
  char *a = (char *)gtl_malloc(at, "layer 03 experts (sort tables, h, y)");
  p->xarena = a;
  p->offsets = (int32_t *)(a + off[0]);
  p->tile_start = (int32_t *)(a + off[1]);
  p->sorted_token = (int32_t *)(a + off[2]);
  p->pair_pos = (int32_t *)(a + off[3]);
  p->hs = (__nv_bfloat16 *)(a + off[4]);
  p->ys = (float *)(a + off[5]);
}

// 02's setup; then 01's state grows into Lab03 (Lab01 is its first member, so every
// earlier stage still finds its fields) with the attention's buffers.
static inline void lab03_setup(Engine *e) {
  lab02_setup(e);
  Lab03 *p = (Lab03 *)realloc(e->layer, sizeof(Lab03));
  if (!p) {
    fprintf(stderr, "error: out of host memory (layer 03 state)\n");
    exit(GTL_EXIT_RUNTIME);
  }
  e->layer = p;
  memset((char *)p + sizeof(Lab01), 0, sizeof(Lab03) - sizeof(Lab01));
  const MoeConfig *c = &e->cfg;
  const int B = e->B, tiles = (e->kv.max_len + ATTN_TILE - 1) / ATTN_TILE;
  int dev, sms;
  GTL_CUDA(cudaGetDevice(&dev));
  GTL_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  lab03_expert_setup(e, p, sms);
  p->splitkv = e->kv.dtype == KV_BF16;
  if (!p->splitkv) return;
  p->slots = sms * attn_splitkv_ctas_per_sm();
  p->max_splits = tiles < 256 ? tiles : 256;  // attn_splitkv_num_splits never picks more
  const size_t q = (size_t)B * c->H * ATTN_HEAD_DIM;
  p->qb = (__nv_bfloat16 *)gtl_malloc(q * 2, "queries (bf16)");
  p->ob = (__nv_bfloat16 *)gtl_malloc(q * 2, "attention output (bf16)");
  p->seq_lens = (int32_t *)gtl_malloc((size_t)B * 4, "keys per sequence");
  p->table = (int32_t *)gtl_malloc((size_t)B * 4, "identity block table");
  const size_t wf = attn_splitkv_workspace_floats(B, c->H, p->max_splits);
  if (wf) p->ws = (float *)gtl_malloc(wf * 4, "split-KV partials");
  int32_t *h = (int32_t *)malloc((size_t)B * 4);
  for (int b = 0; b < B; b++) h[b] = b;
  GTL_CUDA(cudaMemcpy(p->table, h, (size_t)B * 4, cudaMemcpyHostToDevice));
  free(h);
}

static inline void lab03_teardown(Engine *e) {
  Lab03 *p = (Lab03 *)e->layer;
  void *d[] = {p->qb, p->ob, p->seq_lens, p->table, p->ws, p->xarena};
  for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
    if (d[i]) GTL_CUDA(cudaFree(d[i]));
  lab01_teardown(e);  // frees the arena, the cuBLAS handle and the state itself
}

// RoPE, q to bf16, K and V of each sequence's position (a.d_pos) appended to the bf16 cache.
static inline void lab03_rope(Engine *e, int l) {
  const MoeConfig *c = &e->cfg;
  Lab03 *p = (Lab03 *)e->layer;
  const size_t at = engine_kv_layer(e, l);  // the same element offset as 00's fp32 layout
  lab03_rope_append_kernel<<<lab00_grid((c->H + c->H_kv) * c->head_dim / 2, e->B), kLab00Threads, 0, e->s>>>(
      e->a.d_q, e->a.d_k, e->a.d_v, p->qb, (__nv_bfloat16 *)e->kv.k + at, (__nv_bfloat16 *)e->kv.v + at,
      p->seq_lens, e->a.d_pos, c->H, c->H_kv, c->head_dim, e->kv.max_len, c->rope_theta);
  GTL_LAUNCH();
}

// ch18's split-KV attention over each sequence's seq_lens[b] keys (written by the append),
// chunked by attn_splitkv_num_splits for the host's e->pos + 1 keys (all sequences alike), then
// its bf16 output widened into a.d_att for 02's attn.out.
static inline void lab03_attend(Engine *e, int l) {
  const MoeConfig *c = &e->cfg;
  Lab03 *p = (Lab03 *)e->layer;
  AttnDecodeArgs a;
  memset(&a, 0, sizeof a);
  a.q = p->qb;
  a.out = p->ob;
  a.kv = lab03_kv_view(e->kv.k, e->kv.v, p->table, l, e->B, c->H_kv, e->kv.max_len);
  a.seq_lens = p->seq_lens;
  a.sinks = NULL;  // gpt-oss's sinks and window: refused by configure for now
  a.B = e->B;
  a.H = c->H;
  a.H_kv = c->H_kv;
  a.window = 0;
  a.scale = 1.0f / sqrtf((float)ATTN_HEAD_DIM);
  int splits = attn_splitkv_num_splits(e->B, c->H_kv, e->pos + 1, p->slots);
  if (splits > p->max_splits) splits = p->max_splits;
  if (attn_splitkv_launch(&a, splits, splits > 1 ? p->ws : NULL, e->s)) exit(GTL_EXIT_RUNTIME);
  const int n = e->B * c->H * ATTN_HEAD_DIM;
  lab03_widen_kernel<<<(n + kLab00Threads - 1) / kLab00Threads, kLab00Threads, 0, e->s>>>(p->ob, e->a.d_att, n);
  GTL_LAUNCH();
}

// ch15's counting sort on the device: the B·top_k (token, expert) pairs ordered by expert,
// each expert's first row (prefix sum), its work items, each pair's row. No host sync.
static inline void lab03_dispatch(Engine *e, int, int) {
  const MoeConfig *c = &e->cfg;
  Lab03 *p = (Lab03 *)e->layer;
  moe_dispatch_launch(e->a.d_topk_idx, e->B, c->top_k, c->E, p->xp.bm, p->offsets, p->tile_start, p->sorted_token,
                      p->pair_pos, e->s);
}

// gate, up and SwiGLU of every routed expert in one launch; the rows are the router's
// split rows (02's xb, [B][hi | lo]) gathered by token on the way in.
static inline void lab03_expert_up(Engine *e, int l, int) {
  const MoeConfig *c = &e->cfg;
  Lab03 *p = (Lab03 *)e->layer;
  lab03_expert_up_launch(&p->xp, p->base.xb, p->sorted_token, engine_w(e, MOE_GATE, l, 0), engine_w(e, MOE_UP, l, 0),
                         p->expert_stride, p->offsets, p->tile_start, c->E, c->D, c->F, p->hs, e->s);
}

static inline void lab03_expert_down(Engine *e, int l, int) {
  const MoeConfig *c = &e->cfg;
  Lab03 *p = (Lab03 *)e->layer;
  lab03_expert_down_launch(&p->xp, p->hs, engine_w(e, MOE_DOWN, l, 0), p->expert_stride, p->offsets, p->tile_start,
                           c->E, c->F, c->D, p->ys, e->s);
}

static inline void lab03_combine(Engine *e, int, int) {
  const MoeConfig *c = &e->cfg;
  Lab03 *p = (Lab03 *)e->layer;
  lab03_combine_kernel<<<lab00_grid(c->D / 4, e->B), kLab00Threads, 0, e->s>>>(p->ys, p->pair_pos, e->a.d_topk_w,
                                                                              e->a.d_x, c->D, c->top_k);
  GTL_LAUNCH();
}

// Greedy next tokens on the device (a.d_next); the engine advances tokens and positions
// on the device and reads the tokens back once, after the run.
static inline void lab03_sample(Engine *e, int) {
  lab03_argmax_kernel<<<e->B, kLab00Threads, 0, e->s>>>(e->a.d_logits, e->cfg.V, e->a.d_next);
  GTL_LAUNCH();
}

/** Layer 03's table: lab02_ops() with the KV cache (bf16, kv_alloc), rope and attend
 *  replaced (ch18's split-KV flash decoding), the expert stages replaced (ch15's device
 *  counting sort, one grouped kernel per projection, an fp32 combine; no expert plan),
 *  a greedy device sampler, and configure/setup/teardown extended for them; qkv, out,
 *  router, topk, logits and embed are 02's (and through it 01's and 00's). */
static inline LayerOps lab03_ops(void) {
  LayerOps o = lab02_ops();  // start from the previous layer's table
  o.target = "labs/03_tiling";
  o.adds = "adds: ch18's split-KV flash-decoding attention over a bf16 KV cache, ch15's device counting-sort "
           "dispatch with one grouped expert kernel per projection (GEMV-style at batch <= 8, mma.sync tiles "
           "above), a greedy device sampler (no host sync in a step)";
  o.configure = lab03_configure;
  o.kv_alloc = lab03_kv_alloc;
  o.setup = lab03_setup;
  o.teardown = lab03_teardown;
  o.rope = lab03_rope;
  o.attend = lab03_attend;
  o.experts_plan = NULL;  // one group: the grouped kernels take every routed expert
  o.dispatch = lab03_dispatch;
  o.expert_up = lab03_expert_up;
  o.expert_down = lab03_expert_down;
  o.combine = lab03_combine;
  o.sample = lab03_sample;
  return o;
}
