/* checkpoint.h — where the model's weights live and how they get there.
 *
 *   MoeLayout      every weight tensor of a MoeConfig: kind, layer, expert, shape, its
 *                  Hugging Face name, and its offset in one bf16 arena (the layout the
 *                  GPU engine and the CPU reference both index).
 *   synthetic      seeded weights: tensor i holds gtl_uniform(moe_synth_seed(seed, i), j,
 *                  lo, hi) rounded to bf16 (RNE) — the same bits on the host and on the
 *                  GPU (labs/moe/engine.cuh, synth_fill_kernel). Ranges keep activations
 *                  O(1) and logits spread: linear layers ±sqrt(3/fan_in) (unit variance
 *                  out for unit variance in), norms [0.8, 1.2], embeddings ±1, lm_head
 *                  ±2·sqrt(3/D).
 *   MoePlan        the tensors of a checkpoint file set, by HF name, and which layout
 *                  tensors each holds: one each in the classic per-expert layout
 *                  (Mixtral block_sparse_moe.experts.E.w1/w3/w2, Qwen3
 *                  mlp.experts.E.gate_proj/up_proj/down_proj), or E·2 and E in the fused
 *                  layout transformers v5 uses in memory (mlp.experts.gate_up_proj
 *                  [E][2F][D], gate rows first, and mlp.experts.down_proj [E][D][F]).
 *                  gpt-oss (modeling_gpt_oss.py, GptOssExperts): mlp.experts.gate_up_proj
 *                  [E][D][2F] with gate and up INTERLEAVED (gate = column 2f, up = 2f+1),
 *                  mlp.experts.down_proj [E][F][D] (both transposed against nn.Linear),
 *                  gate_up_proj_bias [E][2F] (interleaved too), down_proj_bias [E][D]; or
 *                  MXFP4 (mxfp4.h) gate_up_proj_blocks [E][2F][D/32][16] + _scales
 *                  [E][2F][D/32] and down_proj_blocks [E][D][F/32][16] + _scales, whose
 *                  rows are output rows (gate_up row 2f is gate f, 2f+1 is up f). A layout
 *                  tensor then lives at a stride inside its file tensor (MoeSource).
 *   MoeCheckpoint  an opened HF folder: config.json + model.safetensors, or shards listed
 *                  by model.safetensors.index.json; every tensor found, shape-checked and
 *                  mapped to its source bytes; BF16, F16 and F32 are read as bf16, MXFP4
 *                  decoded to bf16 (exact).
 *   writer         a synthetic checkpoint in that format (config.json, shards, index).
 *
 * checkpoint.c (layout, synthetic values, loader), ckpt_plan.c (MoePlan), ckpt_writer.c.
 * Pure C11 + POSIX I/O, unit-tested (tests/test_lab_checkpoint.c, test_lab_gptoss.c). */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  MOE_EMBED, MOE_ATTN_NORM, MOE_Q, MOE_K, MOE_V, MOE_O, MOE_Q_NORM, MOE_K_NORM,
  MOE_FFN_NORM, MOE_ROUTER, MOE_GATE, MOE_UP, MOE_DOWN, MOE_FINAL_NORM, MOE_LM_HEAD,
  /* gpt-oss only (config flags attn_bias, attn_sinks, router_bias, expert_bias) */
  MOE_Q_BIAS, MOE_K_BIAS, MOE_V_BIAS, MOE_O_BIAS, MOE_SINKS, MOE_ROUTER_BIAS,
  MOE_GATE_BIAS, MOE_UP_BIAS, MOE_DOWN_BIAS,
  MOE_KIND_COUNT
} MoeKind;

typedef struct {
  MoeKind kind;
  int layer, expert;     /* -1 where not applicable */
  int64_t rows, cols;    /* a matrix [rows][cols] (row-major, y = W x with x of cols); a
                            vector has cols = 0 and rows elements */
  uint64_t offset;       /* bf16 elements from the arena's start; a multiple of 64 */
  char name[96];         /* HF name in the per-expert layout (gpt-oss: the fused tensor
                            and the slice, e.g. "…experts.gate_up_proj[3][:, 0::2]") */
} MoeTensor;

typedef struct {
  MoeConfig cfg;
  int n;                 /* tensors (lm_head absent when tied) */
  MoeTensor *t;
  int per_layer;         /* tensors per layer */
  uint64_t numel;        /* arena size in bf16 elements, alignment padding included */
  uint64_t max_numel;    /* the largest tensor */
} MoeLayout;

/** Build the layout of c (c must pass moe_config_check). Per layer: attn_norm, q, k, v,
 *  o, [q_norm, k_norm], ffn_norm, router, E × (gate, up, down), then gpt-oss's
 *  [q_bias, k_bias, v_bias, o_bias], [sinks], [router_bias], [E × (gate_bias, up_bias,
 *  down_bias)] — so a Mixtral/Qwen3 layout is unchanged. Returns 0, or -1 out of memory. */
int moe_layout_build(const MoeConfig *c, MoeLayout *lay);
void moe_layout_free(MoeLayout *lay);
/** Index of a tensor: layer is ignored for EMBED/FINAL_NORM/LM_HEAD, expert only used for
 *  GATE/UP/DOWN and their biases. LM_HEAD of a tied model is EMBED. A kind the config
 *  lacks (Q_NORM/K_NORM without qk_norm, a bias or sinks outside gpt-oss): -1. */
int moe_tensor_index(const MoeLayout *lay, MoeKind k, int layer, int expert);
uint64_t moe_tensor_numel(const MoeTensor *t);
const char *moe_kind_name(MoeKind k);

/* ---- synthetic weights ----
 * gpt-oss's extra tensors: biases ±0.5, sinks [0, 4] (comparable to the scores, so they
 * take a visible share of the softmax), and gate/up matrices 3× the usual range so that
 * gate > 7 and |up| > 7 happen (the clamps fire). */
uint64_t moe_synth_seed(uint64_t seed, int tensor);
void moe_synth_range(const MoeLayout *lay, int tensor, float *lo, float *hi);
/** out[numel] = tensor's synthetic bf16 bits. */
void moe_synth_tensor(const MoeLayout *lay, int tensor, uint64_t seed, uint16_t *out);
/** A whole host arena (lay->numel bf16, padding zero) of synthetic weights; NULL when out
 *  of memory. free() it. */
uint16_t *moe_synth_arena(const MoeLayout *lay, uint64_t seed);

/* ---- checkpoint file plan ---- */
/* How a layout tensor [rows][cols] sits in its file tensor: element (r, c) is file element
 * elem_off + r·row_stride + c·col_stride (CONTIG: row_stride = cols, col_stride = 1; a
 * vector has c = 0). MXFP4: row r is the file tensor's output row elem_off + r·row_stride,
 * decoded from its blocks and the scales file tensor's same row. */
typedef enum { MOE_CONV_CONTIG = 0, MOE_CONV_STRIDED = 1, MOE_CONV_MXFP4 = 2 } MoeConv;

typedef struct {
  int tensor;            /* layout index */
  uint64_t elem_off;     /* first element (MXFP4: first row) inside the file tensor */
  MoeConv conv;
  int64_t row_stride, col_stride;
} MoePart;

typedef enum { MOE_FT_FLOAT = 0, MOE_FT_MXFP4_BLOCKS = 1, MOE_FT_MXFP4_SCALES = 2 } MoeFtRole;

typedef struct {
  char name[112];
  int ndim;
  uint64_t shape[4];
  int first_part, n_parts;  /* parts[first_part … first_part + n_parts) */
  MoeFtRole role;           /* blocks and scales are U8 */
  int scales;               /* blocks: the index of its scales file tensor */
  int range_tensor;         /* blocks/scales: the layout tensor whose synthetic range sets the
                               scales (writer) */
  uint64_t slab;            /* writer: elements per expert slab when the parts are strided */
} MoeFileTensor;

typedef struct {
  int n, n_parts, fused;
  MoeFileTensor *ft;
  MoePart *parts;
} MoePlan;

/** The file tensors of lay, per-expert (fused = 0) or fused (fused = 1); gpt-oss: always
 *  its fused layout, with MXFP4 experts when lay->cfg.expert_format is MOE_WF_MXFP4.
 *  0, or -1 OOM. */
int moe_plan_build(const MoeLayout *lay, int fused, MoePlan *p);
void moe_plan_free(MoePlan *p);

/* ---- opened checkpoint ---- */
typedef struct {
  int file;                /* index into files */
  const GtlStTensor *st;   /* the file tensor holding it (MXFP4: the blocks) */
  uint64_t elem_off;       /* its first element (MXFP4: row) inside st */
  MoeConv conv;            /* CONTIG: bytes [file offset, + numel·size) are the tensor */
  int64_t row_stride, col_stride;
  int sc_file;             /* MXFP4: the scales tensor and its file */
  const GtlStTensor *sc;
} MoeSource;

typedef struct {
  char dir[1024];
  MoeLayout lay;
  int n_files;
  char **path;             /* [n_files] */
  int *fd;                 /* [n_files], open O_RDONLY */
  GtlSafetensors *st;      /* [n_files] parsed headers */
  MoeSource *src;          /* [lay.n] */
  int fused;               /* experts in the v5 fused layout */
  int n_f32, n_f16, n_bf16;/* layout tensors by stored dtype */
  int n_mxfp4;             /* layout tensors decoded from MXFP4 */
  int n_strided;           /* layout tensors not contiguous in their file (gpt-oss experts):
                              load these through moe_ckpt_read_bf16, not by file offset */
  int n_unused;            /* file tensors the model does not use (ignored) */
} MoeCheckpoint;

/** Open an HF folder: read config.json, the safetensors header(s), and map every layout
 *  tensor to its bytes. Every problem is named: the file and field of a bad config or
 *  header, and each missing or mis-shaped tensor with its name, expected and found shape
 *  (up to 8 listed, then a count). Returns 0, or -1 with the message in err (give it
 *  2 KiB); ck is then empty. */
int moe_ckpt_open(const char *dir, MoeCheckpoint *ck, char *err, size_t errlen);
/** Read layout tensor t as bf16 bits into out[numel] (F16/F32 converted, RNE; strided
 *  slices gathered; MXFP4 decoded). 0 or -1. */
int moe_ckpt_read_bf16(const MoeCheckpoint *ck, int t, uint16_t *out, char *err, size_t errlen);
/** Byte offset of tensor t's first element in its file. Only meaningful when
 *  ck->src[t].conv is MOE_CONV_CONTIG. */
uint64_t moe_ckpt_file_offset(const MoeCheckpoint *ck, int t);
void moe_ckpt_close(MoeCheckpoint *ck);

/* ---- writer ---- */
typedef struct {
  GtlStDtype dtype;        /* GTL_ST_BF16 (default), GTL_ST_F16 or GTL_ST_F32 */
  uint64_t shard_bytes;    /* a new shard starts past this many bytes; 0: one file */
  int fused;               /* write the v5 fused expert layout (gpt-oss: always fused) */
} MoeWriteOpts;

/** May a checkpoint be written into dir? Yes when dir does not exist or is an empty
 *  folder; a folder holding anything (a user's files: nothing is ever overwritten) only
 *  with force. Returns 0, or -1 with the reason in err ("DIR is not empty (N entries):
 *  …", "DIR exists and is not a folder", or the stat/opendir error). */
int moe_ckpt_dir_writable(const char *dir, int force, char *err, size_t errlen);

/** Write config.json and the synthetic weights of c (seed) into dir (created if needed)
 *  as model.safetensors, or model-0000i-of-0000N.safetensors + model.safetensors.index.json
 *  when more than one shard. Streams one tensor (gpt-oss: one expert slab) at a time
 *  (gptoss20b is 41.8 GB). A gpt-oss c with expert_format MOE_WF_MXFP4 gets MXFP4
 *  experts: mxfp4.h's seeded blocks and scales (not the bf16 synthetic values; the file
 *  is the truth) and a quantization_config; every other tensor is the synthetic values
 *  in o->dtype.
 *  Returns 0, or -1 with the path and reason in err. */
int moe_ckpt_write_synthetic(const char *dir, const MoeConfig *c, uint64_t seed,
                             const MoeWriteOpts *o, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
