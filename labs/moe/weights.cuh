// weights.cuh — the engine's weights on the GPU: seeded fill (bit for bit the host
// writer's), the Hugging Face checkpoint through ch05's pinned ring loader, the
// device-against-host check, and the fetch the CPU reference reads them through.
// Part of the engine (engine.cuh includes it); a layer never needs it.
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../ch05/ring_loader.cuh"
#include "frame.cuh"

// ---- weights ---------------------------------------------------------------------------
// Element i of tensor t is gtl_uniform(seed_t, i, lo_t, hi_t) rounded to bf16 — bit for
// bit what moe_synth_tensor (labs/moe/checkpoint.c) writes on the host (common/rng.h rounds
// the affine step explicitly on the device, so no FMA contraction separates the two).
static inline void weights_synthetic(Engine *e, uint64_t seed) {
  for (int i = 0; i < e->lay.n; i++) {
    float lo, hi;
    moe_synth_range(&e->lay, i, &lo, &hi);
    const size_t n = moe_tensor_numel(&e->lay.t[i]);
    gtl_fill_uniform(e->d_w + e->lay.t[i].offset, GTL_BF16, n, moe_synth_seed(seed, i), lo, hi, e->s);
  }
  GTL_CUDA(cudaStreamSynchronize(e->s));
}

// Strategy: thread per element. Used only for F16/F32 checkpoints.
__global__ void engine_to_bf16_kernel(const void *in, int f32, __nv_bfloat16 *out, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    out[i] = __float2bfloat16_rn(f32 ? ((const float *)in)[i] : __half2float(((const __half *)in)[i]));
}

static inline int seg_by_offset(const void *a, const void *b) {
  const RingSegment *x = (const RingSegment *)a, *y = (const RingSegment *)b;
  return x->file_off < y->file_off ? -1 : x->file_off > y->file_off;
}

// BF16 tensors go straight from the file to their place in the arena through the ring;
// F16/F32 ones through a device staging buffer and a conversion kernel (RNE, as on the host).
// Tensors that are not one contiguous byte range of their file (gpt-oss's experts: slices
// of the fused, interleaved gate_up_proj and of down_proj, or MXFP4 blocks + scales) are
// read and decoded on the host by moe_ckpt_read_bf16 (exact) and copied over.
static inline void weights_load(Engine *e, const MoeCheckpoint *ck) {
  RingLoader ring;
  ring_loader_init(&ring, 8, (size_t)16 << 20, 2, e->ctx.args.device);
  RingSegment *seg = (RingSegment *)malloc(sizeof(RingSegment) * (size_t)e->lay.n);
  char err[320];
  size_t stage_bytes = 0;
  for (int t = 0; t < e->lay.n; t++)
    if (ck->src[t].conv == MOE_CONV_CONTIG && ck->src[t].st->dtype != GTL_ST_BF16) {
      const size_t b = moe_tensor_numel(&e->lay.t[t]) * gtl_st_dtype_size(ck->src[t].st->dtype);
      stage_bytes = b > stage_bytes ? b : stage_bytes;
    }
  void *d_stage = stage_bytes ? gtl_malloc(stage_bytes, "F16/F32 tensor staging") : NULL;
  uint16_t *h_dec = NULL;  // pinned: one host-decoded tensor at a time
  for (int t = 0; t < e->lay.n; t++) {
    if (ck->src[t].conv == MOE_CONV_CONTIG) continue;
    if (!h_dec) h_dec = (uint16_t *)gtl_malloc_pinned(e->lay.max_numel * 2, "host-decoded tensor (bf16)");
    GTL_CUDA(cudaStreamSynchronize(e->s));  // the previous copy out of h_dec is done
    if (moe_ckpt_read_bf16(ck, t, h_dec, err, sizeof err)) {
      fprintf(stderr, "error: %s\n", err);
      exit(GTL_EXIT_RUNTIME);
    }
    GTL_CUDA(cudaMemcpyAsync(e->d_w + e->lay.t[t].offset, h_dec, moe_tensor_numel(&e->lay.t[t]) * 2,
                             cudaMemcpyHostToDevice, e->s));
  }
  for (int f = 0; f < ck->n_files; f++) {
    size_t n = 0;
    for (int t = 0; t < e->lay.n; t++) {
      const MoeSource *s = &ck->src[t];
      const size_t numel = moe_tensor_numel(&e->lay.t[t]);
      if (s->file != f || s->conv != MOE_CONV_CONTIG) continue;
      RingSegment g = {moe_ckpt_file_offset(ck, t), numel * gtl_st_dtype_size(s->st->dtype),
                       e->d_w + e->lay.t[t].offset};
      if (s->st->dtype == GTL_ST_BF16) {
        seg[n++] = g;
        continue;
      }
      g.d_dst = d_stage;
      if (ring_loader_load(&ring, ck->fd[f], &g, 1, e->s, err, sizeof err)) {
        fprintf(stderr, "error: %s: %s\n", ck->path[f], err);
        exit(GTL_EXIT_RUNTIME);
      }
      engine_to_bf16_kernel<<<1024, 256, 0, e->s>>>(d_stage, s->st->dtype == GTL_ST_F32,
                                              e->d_w + e->lay.t[t].offset, numel);
      GTL_LAUNCH();
    }
    qsort(seg, n, sizeof *seg, seg_by_offset);  // file order: the ring merges neighbours
    if (n && ring_loader_load(&ring, ck->fd[f], seg, n, e->s, err, sizeof err)) {
      fprintf(stderr, "error: %s: %s\n", ck->path[f], err);
      exit(GTL_EXIT_RUNTIME);
    }
  }
  GTL_CUDA(cudaStreamSynchronize(e->s));
  if (d_stage) GTL_CUDA(cudaFree(d_stage));
  if (h_dec) GTL_CUDA(cudaFreeHost(h_dec));
  free(seg);
  ring_loader_destroy(&ring);
}

// Device weights bit for bit against the host's own copy (the seeded generator, or the
// checkpoint read on the host): every tensor of a small model, a sample of a big one.
static inline size_t weights_check(const Engine *e, const MoeCheckpoint *ck, uint64_t seed) {
  const MoeLayout *lay = &e->lay;
  const int L = e->cfg.L, E = e->cfg.E, all = lay->numel <= ((uint64_t)64 << 20);
  const int pick[] = {moe_tensor_index(lay, MOE_Q, 0, 0), moe_tensor_index(lay, MOE_K, 0, 0),
                      moe_tensor_index(lay, MOE_GATE, 0, 0), moe_tensor_index(lay, MOE_UP, 0, E - 1),
                      moe_tensor_index(lay, MOE_DOWN, L - 1, E - 1), moe_tensor_index(lay, MOE_ROUTER, L - 1, 0),
                      moe_tensor_index(lay, MOE_ATTN_NORM, L - 1, 0), moe_tensor_index(lay, MOE_FINAL_NORM, 0, 0),
                      // gpt-oss only (-1, skipped, elsewhere)
                      moe_tensor_index(lay, MOE_Q_BIAS, 0, 0), moe_tensor_index(lay, MOE_SINKS, L - 1, 0),
                      moe_tensor_index(lay, MOE_ROUTER_BIAS, 0, 0), moe_tensor_index(lay, MOE_UP_BIAS, L - 1, E - 1),
                      moe_tensor_index(lay, MOE_DOWN_BIAS, 0, 0)};
  const int n = all ? lay->n : (int)(sizeof pick / sizeof pick[0]);
  uint16_t *want = (uint16_t *)malloc(lay->max_numel * 2), *got = (uint16_t *)malloc(lay->max_numel * 2);
  size_t bad = 0;
  char err[320];
  for (int i = 0; i < n; i++) {
    const int t = all ? i : pick[i];
    if (t < 0) continue;
    const size_t numel = moe_tensor_numel(&lay->t[t]);
    if (ck) {
      if (moe_ckpt_read_bf16(ck, t, want, err, sizeof err)) {
        fprintf(stderr, "error: %s\n", err);
        exit(GTL_EXIT_RUNTIME);
      }
    } else {
      moe_synth_tensor(lay, t, seed, want);
    }
    GTL_CUDA(cudaMemcpy(got, e->d_w + lay->t[t].offset, numel * 2, cudaMemcpyDeviceToHost));
    if (memcmp(want, got, numel * 2)) {
      fprintf(stderr, "weights check: %s differs on the device\n", lay->t[t].name);
      bad++;
    }
  }
  free(want);
  free(got);
  return bad;
}

// ---- the CPU reference reads the device's weights, one tensor at a time -------------
typedef struct {
  const Engine *e;
  uint16_t *h_buf;  // pinned, lay.max_numel bf16
} DevFetch;

static inline const uint16_t *dev_fetch(void *user, int tensor, int64_t row0, int64_t n_rows) {
  DevFetch *f = (DevFetch *)user;
  if (f->e->ops.ref_weights) return f->e->ops.ref_weights(f->e, tensor, row0, n_rows, f->h_buf);
  const MoeTensor *t = &f->e->lay.t[tensor];
  const size_t off = t->cols ? (size_t)row0 * t->cols : 0, n = t->cols ? (size_t)n_rows * t->cols : (size_t)t->rows;
  GTL_CUDA(cudaMemcpy(f->h_buf, f->e->d_w + t->offset + off, n * 2, cudaMemcpyDeviceToHost));
  return f->h_buf;
}

