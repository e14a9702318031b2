// layer.cuh — layer 04 of the lab: layer 03's stage table (lab03_ops()) with the whole
// decode step captured once as a CUDA graph and replayed (LayerOps.graph = 1; the engine
// captures, checks and replays, labs/moe/engine_main.cuh). decode.cu runs it; a later
// layer starts from lab04_ops() the same way.
//
// A graph freezes every kernel argument at capture, so a replayed step may not take
// anything from the host that changes between steps. Layer 03's step had two such
// arguments, and this layer replaces exactly those two stages (everything else is 03's):
//   attn.rope    00's kernel took the step's position as an argument; lab04_rope_kernel
//                reads each sequence's position from a.d_pos (the engine advances it on
//                the device). Launched with programmatic dependent launch (ch12) when the
//                device takes it: it may start while the q/k/v projection drains and waits
//                in griddepcontrol.wait before touching memory.
//   attn.score   03 chose the split-KV chunk count from the host's position; here the
//                split is fixed at setup for the longest context (max_len), and the kernel
//                reads the real key count from a.d_pos, so chunks past the last key are
//                empty (the combine kernel gives them weight 0). Eager and replayed steps
//                use this same split, so their logits agree bit for bit (the engine checks).
//                A sliding-window layer (gpt-oss) reads at most its window of keys from
//                the first key the kernel derives from a.d_pos: the same split covers it,
//                most of its chunks empty; its K/V row is the ring slot (03's kernel).
// 03's step already had no host synchronization: device top-k, counting sort, persistent
// expert grids, greedy device sampler. --temperature > 0 keeps the engine's host sampler,
// which synchronizes every step: the engine then runs every step eagerly (one note on
// stderr). Models whose attention falls back to 00's (which takes the host position: head
// dims other than 32, 64, 128) run eagerly too.
#pragma once
#include "../03_tiling/layer.cuh"
#include "../../ch12/launch.cuh"  // pdl_launch, pdl_probe, pdl_wait_prior

// Layer 03's state (first, so every earlier stage still finds its fields) and the two
// stages' own: the RoPE table, whether PDL is on, the fixed attention split.
typedef struct {
  Lab03 base;
  Lab00Rope rope;   // 00's table (inverse frequencies, YaRN scale), built once at setup
  int pdl;          // 1: the RoPE kernel is launched with programmatic dependent launch
  int n_chunks;     // split-KV chunks per (sequence, KV head), for every step
  int chunk_len;    // keys per chunk (a multiple of the 32-key tile)
} Lab04;

/** The fixed split of layer 04's attention: chunk_len = lab03_attn_chunk_len(max_len,
 *  max_chunks) keys per chunk and n_chunks = ceil(max_len / chunk_len) <= max_chunks
 *  chunks, so every position below max_len is covered by the same grid. Host-tested. */
static inline void lab04_attn_split(int max_len, int max_chunks, int *n_chunks, int *chunk_len) {
  *chunk_len = lab03_attn_chunk_len(max_len, max_chunks);
  *n_chunks = (max_len + *chunk_len - 1) / *chunk_len;
}

// ---- kernel -------------------------------------------------------------------------------
// 00's rotate-half RoPE and K/V append (rope_kv_append_kernel), position pos[b] read on
// the device: q rotated in place, k rotated into the cache row lab00_kv_slot(pos[b], ring)
// (the position, or on a sliding-window layer its ring slot), v copied. Angle
// pos·inv_freq[j] in double, cos and sin times rope.scale (00's table: YaRN's for gpt-oss).
// q [B][H][hd], k, v [B][H_kv][hd], caches [B][H_kv][kv_len][hd], fp32. Strategy: thread
// per (row, head, pair j / j + hd/2); PDL wait before the first access. Limiter: launch
// latency.
__global__ void lab04_rope_kernel(float *q, const float *k, const float *v, float *kc, float *vc, int H, int H_kv,
                                  int hd, const int32_t *pos, int kv_len, int ring, Lab00Rope rope) {
  pdl_wait_prior();  // q, k, v come from the previous kernel
  const int i = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
  if (i >= (H + H_kv) * (hd / 2)) return;
  const int p = pos[b];
  lab00_rope_append_one(q, k, v, kc, vc, H, H_kv, hd, b, i, p, lab00_kv_slot(p, ring), kv_len, rope);
}

// ---- hooks and stages ---------------------------------------------------------------------
static inline void lab04_attend(Engine *e, int l);

// 03's configure (what 00–03 refuse, 00's attention for head dims it lacks, the host
// sampler for --temperature > 0); then no graph where 00's attention came back (setup
// says so, once a GPU is found).
static inline int lab04_configure(Engine *e, char *err, size_t n) {
  if (lab03_configure(e, err, n)) return -1;
  if (e->ops.attend != lab04_attend) e->ops.graph = 0;
  return 0;
}

// 03's setup; then its state grows into Lab04 with the RoPE table, the PDL probe (ch12:
// capture, instantiate and run two PDL launches on this stream) and the fixed split.
static inline void lab04_setup(Engine *e) {
  lab03_setup(e);
  Lab04 *p = (Lab04 *)realloc(e->layer, sizeof(Lab04));
  if (!p) {
    fprintf(stderr, "error: out of host memory (layer 04 state)\n");
    exit(GTL_EXIT_RUNTIME);
  }
  e->layer = p;
  if (e->ops.attend != lab04_attend)
    fprintf(stderr, "note: %s: head_dim %d takes 00's attention (host position): every step runs eagerly\n",
            e->ops.target, e->cfg.head_dim);
  p->rope = lab00_rope_table(&e->cfg);
  p->pdl = pdl_probe(e->s);
  lab04_attn_split(e->kv.max_len, p->base.max_chunks, &p->n_chunks, &p->chunk_len);
}

static inline void lab04_rope(Engine *e, int l) {
  const MoeConfig *c = &e->cfg;
  Lab04 *p = (Lab04 *)e->layer;
  float *q = e->a.d_q, *kc = (float *)e->kv.k + engine_kv_layer(e, l), *vc = (float *)e->kv.v + engine_kv_layer(e, l);
  const float *k = e->a.d_k, *v = e->a.d_v;
  const int32_t *pos = e->a.d_pos;
  int H = c->H, H_kv = c->H_kv, hd = c->head_dim, kv_len = engine_kv_len(e, l), ring = lab00_kv_ring(e, l);
  void *args[] = {&q, &k, &v, &kc, &vc, &H, &H_kv, &hd, &pos, &kv_len, &ring, &p->rope};
  pdl_launch((const void *)lab04_rope_kernel, lab00_grid((H + H_kv) * hd / 2, e->B), dim3(kLab00Threads), 0, args, e->s,
             p->pdl);
}

// 03's split-KV kernels over the fixed split: the same grid at every position.
static inline void lab04_attend(Engine *e, int l) {
  const Lab04 *p = (const Lab04 *)e->layer;
  switch (e->cfg.head_dim) {
    case 32: lab03_attend_hd<32>(e, l, p->n_chunks, p->chunk_len); break;
    case 64: lab03_attend_hd<64>(e, l, p->n_chunks, p->chunk_len); break;
    default: lab03_attend_hd<128>(e, l, p->n_chunks, p->chunk_len); break;  // lab03_attn_fits: 128
  }
}

/** Layer 04's table: lab03_ops() with graph = 1 (the engine captures the step once per
 *  run's batch and replays it for every timed step), rope reading positions on the device
 *  (PDL-launched), attend on a split fixed at setup, and configure/setup extended for
 *  them; every other stage is 03's. Teardown is 03's (it frees the grown state). */
static inline LayerOps lab04_ops(void) {
  LayerOps o = lab03_ops();  // start from the previous layer's table
  o.target = "labs/04_graphs";
  o.adds = "adds: the whole decode step as one CUDA graph, captured once and replayed (ch12), RoPE reading "
           "positions on the device with programmatic dependent launch, the attention split fixed at setup";
  o.graph = 1;
  o.configure = lab04_configure;
  o.setup = lab04_setup;
  o.rope = lab04_rope;
  o.attend = lab04_attend;
  return o;
}
