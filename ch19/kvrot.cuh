// kvrot.cuh — the --l2=rotate input copies of ch19's driver (kvcache.cuh includes it after
// KvRowArgs, KvPlan and kv_launch): what one row's step reads, copied N times so that
// back-to-back steps, each on the next copy, find none of it in the L2 (common/bench.h:
// N × bytes >= 4 × L2). The full row copies q and the whole contiguous cache, the paged row
// q and its pools; the window row copies q and only the last `window` keys of each
// (sequence, KV head), as a contiguous cache of that many keys read without a window:
// the same keys and values, so the same output, in a copy small enough that N of them
// rotate through the L2 (whole-cache copies would stay resident for a 2 MB step).
#pragma once

// --l2=rotate: n copies of what one row's step reads, copy c one region of `stride` bytes
// at base + c · stride, a[c] the row's arguments pointing into it.
typedef struct {
  int n;
  size_t stride;
  char *base;
  KvRowArgs *a;
  int32_t *d_lens;  // window copies: the visible-key count of each sequence
} KvRot;
typedef struct {
  const KvRot *rot;
  const KvPlan *p;
} KvRotRun;
static void kv_rotate_run(void *user, int copy, cudaStream_t s) {
  const KvRotRun *r = (const KvRotRun *)user;
  kv_launch(&r->rot->a[copy], r->p, s);
}
// One block of a region: `rows` rows of `width` bytes, src rows `pitch` apart (width ==
// pitch: one contiguous block), packed at offset `off` of the region (256-byte aligned).
typedef struct {
  const void *src;
  size_t width, pitch, rows, off;
} KvRotBlock;
static size_t kv_rot_layout(KvRotBlock *blk, int n) {
  size_t off = 0;
  for (int i = 0; i < n; i++) {
    blk[i].off = off;
    off += (blk[i].width * blk[i].rows + 255) / 256 * 256;
  }
  return off;
}
// Allocate the copies and fill them (exit 3 when out of memory, like every allocation).
static void kv_rot_fill(GtlCtx *ctx, KvRot *rot, const KvRotBlock *blk, int n_blk, size_t stride) {
  rot->stride = stride;
  rot->n = gtl_rotate_copies_for(ctx, stride);
  rot->base = (char *)gtl_malloc(stride * rot->n, "--l2=rotate copies of the step's inputs (>= 4x L2)");
  rot->a = (KvRowArgs *)calloc(rot->n, sizeof(KvRowArgs));
  if (!rot->a) {
    fprintf(stderr, "ch19: host out of memory for %d input copies\n", rot->n);
    exit(GTL_EXIT_RUNTIME);
  }
  for (int c = 0; c < rot->n; c++)
    for (int i = 0; i < n_blk; i++)
      GTL_CUDA(cudaMemcpy2DAsync(rot->base + stride * c + blk[i].off, blk[i].width, blk[i].src, blk[i].pitch,
                                 blk[i].width, blk[i].rows, cudaMemcpyDeviceToDevice, ctx->stream));
  GTL_CUDA(cudaStreamSynchronize(ctx->stream));
}
static void kv_rot_free(KvRot *rot) {
  if (rot->base) GTL_CUDA(cudaFree(rot->base));
  if (rot->d_lens) GTL_CUDA(cudaFree(rot->d_lens));
  free(rot->a);
  memset(rot, 0, sizeof *rot);
}
// Copies of row `row` (0 full, 1 paged, 2 window) of kv_main: q and the cache, pools or
// window the variant reads (reads_fp8: FP8 codes and scale words; else bf16). n_kv: elements
// of a contiguous K (or V) cache [B][H_kv][S][64]; n16/n8 pages in the bf16/FP8 pools.
static void kv_rot_setup(GtlCtx *ctx, KvRot *rot, int row, const KvRowArgs *a, int reads_fp8, int S,
                         int64_t n16, int64_t n8) {
  memset(rot, 0, sizeof *rot);
  const int B = a->bf.B, Hk = a->bf.H_kv, D = ATTN_HEAD_DIM;
  const size_t n_q = (size_t)B * a->bf.H * D, pg = (size_t)Hk * KV_PAGE * D;
  KvRotBlock blk[6];
  int n = 0;
  blk[n++] = {a->bf.q, n_q * 2, n_q * 2, 1, 0};
  const int W = row == 2 ? (S < a->bf.window ? S : a->bf.window) : S, lo = S - W;  // window: keys lo..S-1
  if (row == 1) {  // the pools as they are
    if (n16) blk[n++] = {a->f8.kv.k16, (size_t)n16 * pg * 2, (size_t)n16 * pg * 2, 1, 0};
    if (n16) blk[n++] = {a->f8.kv.v16, (size_t)n16 * pg * 2, (size_t)n16 * pg * 2, 1, 0};
    if (n8) blk[n++] = {a->f8.kv.k8, (size_t)n8 * pg, (size_t)n8 * pg, 1, 0};
    if (n8) blk[n++] = {a->f8.kv.v8, (size_t)n8 * pg, (size_t)n8 * pg, 1, 0};
    if (n8) blk[n++] = {a->f8.kv.scales, (size_t)n8 * Hk * KV_PAGE * 4, (size_t)n8 * Hk * KV_PAGE * 4, 1, 0};
  } else if (reads_fp8) {  // rows lo..S-1 of every (sequence, KV head)
    blk[n++] = {a->f8.kv.k8 + (size_t)lo * D, (size_t)W * D, (size_t)S * D, (size_t)B * Hk, 0};
    blk[n++] = {a->f8.kv.v8 + (size_t)lo * D, (size_t)W * D, (size_t)S * D, (size_t)B * Hk, 0};
    blk[n++] = {a->f8.kv.scales + lo, (size_t)W * 4, (size_t)S * 4, (size_t)B * Hk, 0};
  } else {
    blk[n++] = {a->bf.kv.k + (size_t)lo * D, (size_t)W * D * 2, (size_t)S * D * 2, (size_t)B * Hk, 0};
    blk[n++] = {a->bf.kv.v + (size_t)lo * D, (size_t)W * D * 2, (size_t)S * D * 2, (size_t)B * Hk, 0};
  }
  kv_rot_fill(ctx, rot, blk, n, kv_rot_layout(blk, n));
  int cw = 2;  // window copies: a contiguous cache of W keys (pages of >= 4 tokens)
  while ((1 << cw) < W) cw++;
  if (row == 2) {
    int32_t *h = (int32_t *)malloc(B * 4);
    for (int b = 0; b < B; b++) h[b] = W;
    rot->d_lens = (int32_t *)gtl_malloc(B * 4, "--l2=rotate window copies: seq_lens");
    GTL_CUDA(cudaMemcpy(rot->d_lens, h, B * 4, cudaMemcpyHostToDevice));
    free(h);
  }
  for (int c = 0; c < rot->n; c++) {
    char *base = rot->base + rot->stride * c;
    KvRowArgs *r = &rot->a[c];
    *r = *a;
    r->bf.q = r->f8.q = (const __nv_bfloat16 *)base;
    int i = 1;
    if (row == 1) {
      if (n16) r->bf.kv.k = r->f8.kv.k16 = (const __nv_bfloat16 *)(base + blk[i++].off);
      if (n16) r->bf.kv.v = r->f8.kv.v16 = (const __nv_bfloat16 *)(base + blk[i++].off);
      if (n8) r->f8.kv.k8 = (const uint8_t *)(base + blk[i++].off);
      if (n8) r->f8.kv.v8 = (const uint8_t *)(base + blk[i++].off);
      if (n8) r->f8.kv.scales = (const uint32_t *)(base + blk[i++].off);
      continue;
    }
    if (reads_fp8) {
      r->f8.kv.k8 = (const uint8_t *)(base + blk[1].off);
      r->f8.kv.v8 = (const uint8_t *)(base + blk[2].off);
      r->f8.kv.scales = (const uint32_t *)(base + blk[3].off);
    } else {
      r->bf.kv.k = r->f8.kv.k16 = (const __nv_bfloat16 *)(base + blk[1].off);
      r->bf.kv.v = r->f8.kv.v16 = (const __nv_bfloat16 *)(base + blk[2].off);
    }
    if (row == 2) {  // W keys per (sequence, KV head), no window: the same keys and values
      r->bf.seq_lens = r->f8.seq_lens = rot->d_lens;
      r->bf.window = r->f8.window = 0;
      r->bf.kv.page_shift = r->f8.kv.page_shift = cw;
      r->bf.kv.page_stride = r->f8.kv.page_stride = (int64_t)Hk * W * D;
      r->bf.kv.head_stride = r->f8.kv.head_stride = (int64_t)W * D;
      r->f8.kv.scale_page_stride = (int64_t)Hk * W, r->f8.kv.scale_head_stride = W;
    }
  }
}
