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
// And one edit of the captured graph (LayerOps.graph_edit = lab04_graph_edit, --pdl): every
// edge kernel → PDL-ready kernel becomes a programmatic edge (below, "programmatic edges").
// 03's step already had no host synchronization: device top-k, counting sort, persistent
// expert grids, greedy device sampler. --temperature > 0 keeps the engine's host sampler,
// which synchronizes every step: the engine then runs every step eagerly (one note on
// stderr). Models whose attention falls back to 00's (which takes the host position: head
// dims other than 32, 64, 128) run eagerly too.
#pragma once
#include "../03_tiling/layer.cuh"
#include "../../ch12/launch.cuh"  // pdl_launch, pdl_probe, pdl_wait_prior

constexpr int kLab04PdlMax = 128;   // PDL-ready kernels a layer can register (lab04_pdl_ready)
constexpr int kLab04PdlDefault = 1;  // --pdl when not given (a later layer may set Lab04.pdl_default)

// Layer 03's state (first, so every earlier stage still finds its fields) and the two
// stages' own: the RoPE table, whether PDL is on, the fixed attention split; and the
// kernels the graph edit may give a programmatic edge (lab04_pdl_ready).
typedef struct {
  Lab03 base;
  Lab00Rope rope;   // 00's table (inverse frequencies, YaRN scale), built once at setup
  int pdl;          // 1: the device takes PDL (pdl_probe); RoPE is launched with it
  int n_chunks;     // split-KV chunks per (sequence, KV head), for every step
  int chunk_len;    // keys per chunk (a multiple of the 32-key tile)
  int pdl_default;  // --pdl when not given (kLab04PdlDefault; a later layer's setup may change it)
  int n_ready;      // PDL-ready kernels registered
  const void *ready[kLab04PdlMax];  // their host entry points, as cudaKernelNodeParams.func
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
  pdl_allow_next();
  const int i = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
  if (i >= (H + H_kv) * (hd / 2)) return;
  const int p = pos[b];
  lab00_rope_append_one(q, k, v, kc, vc, H, H_kv, hd, b, i, p, lab00_kv_slot(p, ring), kv_len, rope);
}

// ---- hooks and stages ---------------------------------------------------------------------
static inline void lab04_attend(Engine *e, int l);
static inline void lab04_pdl_register(Engine *e);

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
  p->n_ready = 0;
  p->pdl_default = kLab04PdlDefault;
  lab04_pdl_register(e);
  lab04_attn_split(e->kv.max_len, p->base.max_chunks, &p->n_chunks, &p->chunk_len);
}

// ---- programmatic edges between the step's kernels (--pdl) --------------------------------
// The captured step is a chain of nodes joined by full edges: a kernel starts once the one
// before it has finished and its writes are visible, and the SMs idle through each kernel's
// launch, ramp-up and tail. lab04_graph_edit turns every kernel → kernel edge whose
// downstream kernel is PDL-ready into a programmatic edge (CUDA Runtime API,
// cudaGraphEdgeData; CUDA Programming Guide, "Programmatic Dependent Launch and
// Synchronization"): the kernel is launched while the previous one drains, issues what
// does not depend on it (a GEMV's first weight loads: weights never change inside a step)
// and waits in griddepcontrol.wait (pdl_wait_prior) for the previous kernel's completion
// and memory flush. --pdl=1 (default): the edge fires when every block of the previous
// kernel has called pdl_allow_next() or exited (port Programmatic); 2: once every block
// of it has started (port LaunchCompletion); 0: no edit (only RoPE's own edge, as before).
//
// A kernel is PDL-ready when
//   - every thread calls pdl_wait_prior() before its first read of anything an earlier
//     kernel of the step wrote, and before its first global write (the previous kernel
//     may still read what it would overwrite); before the wait it reads only weights and
//     arguments. So its grid never completes before its predecessor has: waiting on the
//     direct predecessor waits, transitively, on every earlier kernel of the step;
//   - it calls pdl_allow_next() right after the wait (so at most one kernel waits ahead);
//   - it is registered here: lab04_pdl_ready(e, (const void *)kernel<...>) for each
//     template instance, in the layer's setup. Layer 04 registers 03's step
//     (lab04_pdl_register); a later layer registers its own kernels after lab04_setup
//     (layer 05: lab05_setup).
// Every other node keeps full edges: unregistered kernels (cuBLAS's, 00's embedding and
// q/k norm), memcpy and memset nodes. griddepcontrol.wait returns at once in a kernel
// launched without PDL, so eager steps and layers 00–03 run these kernels unchanged.

/** Register kernel fn (its host entry point, as cudaKernelNodeParams.func gives it) as
 *  PDL-ready for lab04_graph_edit; after lab04_setup. Exits 3 past kLab04PdlMax. */
static inline void lab04_pdl_ready(Engine *e, const void *fn) {
  Lab04 *p = (Lab04 *)e->layer;
  if (p->n_ready >= kLab04PdlMax) {
    fprintf(stderr, "error: more than %d PDL-ready kernels (kLab04PdlMax)\n", kLab04PdlMax);
    exit(GTL_EXIT_RUNTIME);
  }
  p->ready[p->n_ready++] = fn;
}

// The kernels of 03's step (every instance its launchers may pick) and 04's RoPE: each
// waits before its first dependent access and triggers its dependent after the wait.
static inline void lab04_pdl_register(Engine *e) {
  const void *k[] = {
      (const void *)lab03_proj_gemv_kernel<1, 1>, (const void *)lab03_proj_gemv_kernel<2, 1>,
      (const void *)lab03_proj_gemv_kernel<3, 1>, (const void *)lab03_proj_gemv_kernel<4, 1>,
      (const void *)lab03_proj_gemv_kernel<1, 4>, (const void *)lab03_proj_gemv_kernel<2, 4>,
      (const void *)lab03_proj_gemv_kernel<3, 4>, (const void *)lab03_proj_gemv_kernel<4, 4>,
      (const void *)lab04_rope_kernel,
      (const void *)lab03_attn_split_kernel<32>, (const void *)lab03_attn_split_kernel<64>,
      (const void *)lab03_attn_split_kernel<128>, (const void *)lab03_attn_combine_kernel<32>,
      (const void *)lab03_attn_combine_kernel<64>, (const void *)lab03_attn_combine_kernel<128>,
      (const void *)router_topk_any_kernel<1>, (const void *)router_topk_any_kernel<2>,
      (const void *)router_topk_any_kernel<4>, (const void *)router_topk_any_kernel<8>,
      (const void *)router_topk_any_kernel<16>, (const void *)router_topk_any_kernel<32>,
      (const void *)moe_dispatch_sort_kernel,
      (const void *)lab03_grouped_gemv_kernel<1, true>, (const void *)lab03_grouped_gemv_kernel<2, true>,
      (const void *)lab03_grouped_gemv_kernel<4, true>, (const void *)lab03_grouped_gemv_kernel<8, true>,
      (const void *)lab03_grouped_gemv_kernel<1, false>, (const void *)lab03_grouped_gemv_kernel<2, false>,
      (const void *)lab03_grouped_gemv_kernel<4, false>, (const void *)lab03_grouped_gemv_kernel<8, false>,
      (const void *)lab03_grouped_mma_kernel<16, true>, (const void *)lab03_grouped_mma_kernel<32, true>,
      (const void *)lab03_grouped_mma_kernel<64, true>, (const void *)lab03_grouped_mma_kernel<16, false>,
      (const void *)lab03_grouped_mma_kernel<32, false>, (const void *)lab03_grouped_mma_kernel<64, false>,
      (const void *)lab03_combine_kernel,
      (const void *)lab02_rmsnorm_split_kernel, (const void *)lab02_split_kernel,
      (const void *)lab02_sum_split_kernel,
      (const void *)gemv_warprow_kernel<2, GEMV_ILP>, (const void *)gemv_warprow_kernel<4, GEMV_ILP>,
      (const void *)gemv_warprow_kernel<6, GEMV_ILP>, (const void *)gemv_warprow_kernel<8, GEMV_ILP>};
  for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) lab04_pdl_ready(e, k[i]);
}

// 1 when the kernel named `name` contains one of the comma-separated substrings of skip
// (LAB04_PDL_SKIP, a measurement aid: those kernels keep full incoming edges).
static inline int lab04_pdl_skipped(const char *name, const char *skip) {
  char part[128];
  for (const char *s = skip; s && *s;) {
    const char *c = strchr(s, ',');
    const size_t n = c ? (size_t)(c - s) : strlen(s);
    if (n > 0 && n < sizeof part) {
      memcpy(part, s, n);
      part[n] = 0;
      if (strstr(name, part)) return 1;
    }
    s = c ? c + 1 : s + n;
  }
  return 0;
}

// 1 when node n is a kernel node; with ready = 1, a registered one (its function pointer
// in the table); ready = 2, the same by name (cudaFuncGetName), should a runtime give the
// node's kernel as a cudaKernel_t rather than its host entry point. Kernels named in
// LAB04_PDL_SKIP are never ready.
static inline int lab04_node_is(const Lab04 *p, cudaGraphNode_t n, int ready) {
  cudaGraphNodeType t;
  GTL_CUDA(cudaGraphNodeGetType(n, &t));
  if (t != cudaGraphNodeTypeKernel) return 0;
  if (!ready) return 1;
  cudaKernelNodeParams kp;
  const char *name = NULL, *r, *skip = getenv("LAB04_PDL_SKIP");
  if (cudaGraphKernelNodeGetParams(n, &kp) != cudaSuccess ||  // not a runtime kernel: not ours
      ((ready == 2 || skip) && cudaFuncGetName(&name, kp.func) != cudaSuccess)) {
    cudaGetLastError();
    return 0;
  }
  if (skip && lab04_pdl_skipped(name, skip)) return 0;
  for (int i = 0; i < p->n_ready; i++)
    if (p->ready[i] == kp.func || (name && cudaFuncGetName(&r, p->ready[i]) == cudaSuccess && !strcmp(r, name)))
      return 1;
  return 0;
}

/** LayerOps.graph_edit of layer 04: every edge kernel → PDL-ready kernel of the captured
 *  step g becomes programmatic (--pdl=1: port Programmatic, 2: LaunchCompletion; 0 or a
 *  device without PDL: no edit). Returns the programmatic edges g then has (RoPE's from
 *  its launch included). Errors exit 3. */
static inline int lab04_graph_edit(Engine *e, cudaGraph_t g) {
  const Lab04 *p = (const Lab04 *)e->layer;
  if (e->pdl < 0) e->pdl = p->pdl_default;  // --pdl not given
  if (!e->pdl || !p->pdl) return 0;
  size_t n = 0;
  GTL_CUDA(cudaGraphGetEdges(g, NULL, NULL, NULL, &n));
  if (!n) return 0;
  cudaGraphNode_t *from = (cudaGraphNode_t *)malloc(sizeof(cudaGraphNode_t) * 2 * n), *to = from + n;
  cudaGraphEdgeData *d = (cudaGraphEdgeData *)malloc(sizeof(cudaGraphEdgeData) * 2 * n), *nd = d + n;
  if (!from || !d) {
    fprintf(stderr, "error: out of host memory (graph edges)\n");
    exit(GTL_EXIT_RUNTIME);
  }
  GTL_CUDA(cudaGraphGetEdges(g, from, to, d, &n));
  const unsigned char port = e->pdl == 2 ? cudaGraphKernelNodePortLaunchCompletion : cudaGraphKernelNodePortProgrammatic;
  size_t k = 0, kept = 0;  // edges to change (compacted to the front), programmatic edges left as they are
  for (int by = 1; by <= 2 && k <= 1; by++) {  // by pointer; by name if at most RoPE's own edge matched
    k = kept = 0;
    for (size_t i = 0; i < n; i++) {
      if (d[i].type == cudaGraphDependencyTypeProgrammatic && d[i].from_port == port) {
        kept++;
        continue;
      }
      if (!lab04_node_is(p, from[i], 0) || !lab04_node_is(p, to[i], by)) continue;
      cudaGraphNode_t f = from[i], t = to[i];
      const cudaGraphEdgeData di = d[i];
      from[i] = from[k], to[i] = to[k], d[i] = d[k];  // swap into the front: the rest stay scannable
      from[k] = f, to[k] = t, d[k] = di;
      memset(&nd[k], 0, sizeof nd[k]);
      nd[k].type = cudaGraphDependencyTypeProgrammatic;
      nd[k].from_port = port;
      k++;
    }
  }
  if (k) {
    GTL_CUDA(cudaGraphRemoveDependencies(g, from, to, d, k));
    GTL_CUDA(cudaGraphAddDependencies(g, from, to, nd, k));
  } else if (!kept) {
    fprintf(stderr, "note: %s: no kernel of the captured step matched the PDL-ready table\n", e->ops.target);
  }
  free(from);
  free(d);
  return (int)(k + kept);
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
 *  run's batch and replays it for every timed step), graph_edit = lab04_graph_edit (the
 *  programmatic edges, --pdl), rope reading positions on the device (PDL-launched),
 *  attend on a split fixed at setup, and configure/setup extended for them; every other
 *  stage is 03's. Teardown is 03's (it frees the grown state). */
static inline LayerOps lab04_ops(void) {
  LayerOps o = lab03_ops();  // start from the previous layer's table
  o.target = "labs/04_graphs";
  o.adds = "adds: the whole decode step as one CUDA graph, captured once and replayed (ch12), RoPE reading "
           "positions on the device, programmatic edges between the step's dependent kernels (--pdl), the attention split "
           "fixed at setup";
  o.graph = 1;
  o.configure = lab04_configure;
  o.setup = lab04_setup;
  o.rope = lab04_rope;
  o.attend = lab04_attend;
  o.graph_edit = lab04_graph_edit;
  return o;
}
