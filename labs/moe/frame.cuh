// frame.cuh — the lab's data and its stage table: what a layer header (labs/NN_*/layer.cuh)
// includes. The engine (engine.cuh) owns the device activations, the KV cache and the
// decode step; a layer is a LayerOps table of stage functions that the engine calls in
// this order for every decode step:
//
//   embed                                  tokens (a.d_tok) → a.d_x
//   per layer l:  qkv → rope → attend → out           attention, K/V of the step appended
//                 router → topk                        a.d_router, then a.d_topk_idx/_w
//                 g = experts_plan(l); for each of the g groups:
//                     dispatch → expert_up → expert_down → combine
//   logits                                 a.d_x → a.d_logits [B][V] fp32
//   sample                                 NULL: the engine samples on the host;
//                                          else the layer writes a.d_next [B] on the device
//
// The engine marks every stage call (an NVTX range always, a CUDA event pair in
// instrumented steps) and prints time, bytes and GB/s per stage. A later layer starts
// from the previous layer's table (its constructor) and replaces what its chapters
// improve; labs/README.md shows how.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

#include "../../common/gauntlet.h"
#include "config.h"
#include "checkpoint.h"

typedef enum {
  ST_EMBED, ST_ATTN_QKV, ST_ATTN_ROPE, ST_ATTN_SCORE, ST_ATTN_OUT, ST_MOE_ROUTER, ST_MOE_TOPK,
  ST_MOE_DISPATCH, ST_MOE_EXPERT_UP, ST_MOE_EXPERT_DOWN, ST_MOE_COMBINE, ST_LOGITS, ST_SAMPLE,
  ST_COUNT
} Stage;

// The engine's device activations of one step, fp32 unless said. Allocated by the engine
// before LayerOps.setup; a layer that keeps another dtype allocates its own in setup.
typedef struct {
  int32_t *d_tok;        // [B] this step's input token of every sequence
  int32_t *d_pos;        // [B] this step's position of every sequence (d_tok + B)
  int32_t *h_tok;        // [2B] host, pageable: tokens, then positions (the engine uploads
                         // them; a pageable copy has read them when cudaMemcpyAsync returns)
  int32_t *d_next;       // [B] the device sampler's output (LayerOps.sample != NULL)
  void *d_sample_ws;     // [B][kEngineSampleWs] bytes, zero at setup: a device sampler's scratch
  float *d_x;            // [B][D] residual stream
  float *d_xn;           // [B][D] normalized rows (input of qkv, router, experts, logits)
  float *d_q;            // [B][H·hd] queries
  float *d_k, *d_v;      // [B][H_kv·hd] this step's keys and values
  float *d_att;          // [B][H·hd] attention output
  float *d_router;       // [B][E] router logits
  int32_t *d_topk_idx;   // [B][top_k] experts of each token (ch06/topk.cuh's contract)
  float *d_topk_w;       // [B][top_k] their weights
  int32_t *h_topk_idx;   // [B][top_k] pinned: the same, for a layer that routes on the host
  float *h_topk_w;
  float *d_logits;       // [B][V] (guarded allocation: validation checks the guards)
  float *h_logits;       // [B][V] pinned
} EngineActs;

// Bytes of a.d_sample_ws per sequence (layer 03's argmax keeps 64 partials and a ticket).
constexpr int kEngineSampleWs = 1024;

typedef enum { KV_F32 = 0, KV_BF16 = 1, KV_FP8_E4M3 = 2 } KvDtype;

// The KV cache. The engine's default (LayerOps.kv_alloc NULL): fp32, contiguous, layer
// after layer, each [B][H_kv][len_l][head_dim] for k and for v, len_l = max_len positions
// per sequence (engine_kv_len), or window_len on a sliding-window layer when a layer's
// configure sets it (a ring: key t in slot t mod window_len; layer 00). A layer with
// another layout sets every field in its kv_alloc (memory from cudaMalloc: the engine
// frees k, v and d_block_table at the end).
typedef struct {
  KvDtype dtype;
  int paged;                // 0: contiguous; 1: blocks of `block` positions from a pool
  int block;                // positions per block (paged)
  int max_len;              // positions a sequence may reach (set by the engine)
  int window_len;           // positions kept on a sliding-window layer (a ring); 0: max_len
                            // on every layer (the default; a kv_alloc without rings sets 0)
  int64_t n_blocks;         // paged: blocks in the pool
  void *k, *v;              // the storage (layout: above, or the layer's own)
  int32_t *d_block_table;   // paged: [B][ceil(max_len / block)] block ids, else NULL
  size_t bytes;             // K + V bytes allocated (for the report)
} EngineKV;

typedef struct Engine Engine;
typedef void (*StageFn)(Engine *e, int l);          // l: layer (embed/logits/sample: -1)
typedef void (*GroupFn)(Engine *e, int l, int g);   // g: expert group of layer l

// A layer: its stage functions, what it stores, how it is validated. Every pointer may
// be NULL except the stages the step needs (embed … logits, and dispatch … combine for
// each group the plan returns); NULL hooks are skipped.
typedef struct {
  const char *target;          // program name in the report, "labs/00_baseline"
  const char *adds;            // one line: what this layer adds over the previous one
  const char *default_preset;  // --preset when none is given
  const char *dtype;           // JSON dtype of the layer's weights, "bf16"
  double tol_rel_l2, tol_top1; // pass: rel_l2 < tol_rel_l2 and top-1 agreement >= tol_top1
  MoeWeightFormat expert_fmt, dense_fmt;  // weight storage for the roofline bytes
  int kv_bytes;                // bytes per KV element for the roofline bytes
  int graph;                   // 1: timed steps replay one captured CUDA graph of the step
  const char *weight_fmts;     // --weights values the layer takes ("bf16|fp8"); NULL: none
  // After the config is known, before any allocation: refuse a model the layer cannot
  // run (return non-zero with the reason in err) or pick stage variants from it.
  int (*configure)(Engine *e, char *err, size_t n);
  void (*setup)(Engine *e);     // the layer's own buffers (after weights, KV, activations)
  void (*teardown)(Engine *e);
  void (*kv_alloc)(Engine *e);  // NULL: fp32 contiguous max-length (see EngineKV)
  // The weights the CPU reference computes with: rows [row0, row0 + n_rows) of layout
  // tensor `tensor` (a vector: all of it) as bf16 bits in buf (lay.max_numel, pinned),
  // returned. NULL: the engine's bf16 arena. A layer that computes with other weights
  // (layer 05: FP8) gives their exact values, so the check compares the same function.
  const uint16_t *(*ref_weights)(const Engine *e, int tensor, int64_t row0, int64_t n_rows, uint16_t *buf);
  StageFn embed, qkv, rope, attend, out, router, topk;
  int (*experts_plan)(Engine *e, int l);  // groups of experts to run (NULL: 1)
  GroupFn dispatch, expert_up, expert_down, combine;
  StageFn logits, sample;
  // A graph layer's edit of the captured step before it is instantiated (NULL: none);
  // returns a count for the report's graph line (layer 04: the graph's programmatic
  // edges, --pdl). Errors exit 3.
  int (*graph_edit)(Engine *e, cudaGraph_t g);
} LayerOps;

struct Engine {
  GtlCtx ctx;
  MoeConfig cfg;
  MoeLayout lay;
  LayerOps ops;
  cudaStream_t s;
  __nv_bfloat16 *d_w;      // every weight, lay.numel bf16 (tensor i at lay.t[i].offset)
  int B, pos;              // sequences; this step's position (all sequences alike today)
  double temperature, top_p;  // --temperature, --top-p (for a device sampler)
  const char *weights;        // --weights (NULL: the layer's default); the layer's configure reads it
  int pdl;                    // --pdl, -1 when not given: LayerOps.graph_edit stores the value it used
  EngineActs a;
  EngineKV kv;
  GtlGuarded g_logits;
  // stage marks: NVTX names, event pairs of instrumented steps, totals in ms
  const void *nv_stage[ST_COUNT], *nv_step, *nv_layer;
  int profile, n_ev, cap_ev;
  cudaEvent_t *ev;
  int *ev_stage;
  double stage_ms[ST_COUNT];
  double experts_read, experts_read_n;  // distinct experts per layer, counted by the layer
  void *layer;                          // the layer's own state
};

// Tensor of kind k (layer, expert) in the weight arena, bf16.
static inline const __nv_bfloat16 *engine_w(const Engine *e, MoeKind k, int layer, int expert) {
  return e->d_w + e->lay.t[moe_tensor_index(&e->lay, k, layer, expert)].offset;
}
// Positions per sequence layer l keeps in the engine's default KV cache: kv.window_len on
// a sliding-window layer (moe_layer_window > 0) when set, else max_len.
static inline int engine_kv_len(const Engine *e, int l) {
  return e->kv.window_len > 0 && moe_layer_window(&e->cfg, l) > 0 ? e->kv.window_len : e->kv.max_len;
}
// Element offset of layer l in the engine's default contiguous KV cache (l = L: its size).
static inline size_t engine_kv_layer(const Engine *e, int l) {
  if (!e->kv.window_len) return (size_t)l * e->B * e->cfg.H_kv * e->kv.max_len * e->cfg.head_dim;
  size_t n = 0;
  for (int i = 0; i < l; i++) n += (size_t)engine_kv_len(e, i);
  return n * e->B * e->cfg.H_kv * e->cfg.head_dim;
}
