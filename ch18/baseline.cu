// ch18 advanced decode attention — baseline: one block per (sequence, query head).
//
// What it shows: the decode attention most engines start with. One block of 128 threads
// owns one query head of one sequence and walks every visible key of that head's KV head
// itself: 16 groups of 8 lanes, each group taking every 16th key, each lane one 16-byte
// piece (8 dims) of the key's K and V rows (a warp load covers 4 whole 128-byte rows), 4
// keys in flight per group; the 8-lane dot product meets through 3 butterfly shuffles; an
// online softmax per group (running max and sum, rescaled once per 4 keys); the 16 groups
// merge in shared memory at the end, the sink joins the denominator. Competent, coalesced,
// vectorized — but under GQA the 8 query heads of a KV head are 8 blocks that each read
// the same K and V: 8 reads of every cache byte, from DRAM or (when the 8 blocks run side
// by side, as the grid order makes likely) from L2.
//
// Build and run:   make ch18 && ./ch18/baseline                (pair: scripts/pair.sh ch18)
// Nsight Compute:  scripts/profile.sh ch18 baseline, or directly
//   ncu --clock-control none --nvtx --nvtx-include "gauntlet@ch18.baseline.timed]" -k regex:attn
//       --metrics dram__bytes_read.sum,lts__t_bytes.sum,gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
//       ./ch18/baseline --warmup=0 --iters=1
//   at 16 x 8192: lts__t_bytes 1.22 GB against dram__bytes_read 277 MB (the L2 serves most
//   of the GQA re-reads, but they still cost L2 bandwidth), dram__throughput 19%.
// Book: advanced decode attention — split-KV flash-decoding.
#include "attention.cuh"

#define ATTN_BASE_GROUPS 16  // groups of 8 lanes per block
#define ATTN_BASE_UNROLL 4   // keys in flight per group

// Strategy: block per (query head, sequence), 8 lanes per key, 16-byte loads, 4 keys in
// flight per group, online softmax. Limiter: L2/DRAM traffic (K/V read once per query head).
__global__ void __launch_bounds__(ATTN_BASE_GROUPS * 8)
    attn_head_kernel(const __grid_constant__ AttnDecodeArgs a) {
  __shared__ float s_m[ATTN_BASE_GROUPS], s_l[ATTN_BASE_GROUPS], s_o[ATTN_BASE_GROUPS][ATTN_HEAD_DIM];
  const int h = blockIdx.x, b = blockIdx.y, g = h / (a.H / a.H_kv);
  const int grp = threadIdx.x >> 3, sub = threadIdx.x & 7;
  const int len = a.seq_lens[b], lo = attn_first_key(len, a.window);
  const float sl2 = a.scale * ATTN_LOG2E;  // base-2 scores: exp(x) = exp2(x·log2 e)
  float q[8], acc[8];
  {
    const uint4 raw = *reinterpret_cast<const uint4 *>(a.q + ((int64_t)b * a.H + h) * ATTN_HEAD_DIM + sub * 8);
    const __nv_bfloat162 *p2 = reinterpret_cast<const __nv_bfloat162 *>(&raw);
    for (int i = 0; i < 4; i++) {
      const float2 f = __bfloat1622float2(p2[i]);
      q[2 * i] = f.x * sl2;
      q[2 * i + 1] = f.y * sl2;
    }
  }
  for (int i = 0; i < 8; i++) acc[i] = 0.f;
  float m = -INFINITY, l = 0.f;
  // Every lane runs the same trip count, so the shuffles always see the full warp.
  for (int base = lo; base < len; base += ATTN_BASE_GROUPS * ATTN_BASE_UNROLL) {
    uint4 kr[ATTN_BASE_UNROLL], vr[ATTN_BASE_UNROLL];
    float s[ATTN_BASE_UNROLL];
#pragma unroll
    for (int u = 0; u < ATTN_BASE_UNROLL; u++) {
      const int j = base + u * ATTN_BASE_GROUPS + grp;
      kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
      if (j < len) {
        const int64_t off = attn_kv_offset(a.kv, b, g, j) + sub * 8;
        kr[u] = __ldg(reinterpret_cast<const uint4 *>(a.kv.k + off));
        vr[u] = __ldg(reinterpret_cast<const uint4 *>(a.kv.v + off));
      }
    }
    float mx = -INFINITY;
#pragma unroll
    for (int u = 0; u < ATTN_BASE_UNROLL; u++) {
      const __nv_bfloat162 *k2 = reinterpret_cast<const __nv_bfloat162 *>(&kr[u]);
      float dot = 0.f;
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const float2 f = __bfloat1622float2(k2[i]);
        dot = fmaf(q[2 * i], f.x, fmaf(q[2 * i + 1], f.y, dot));
      }
      dot += __shfl_xor_sync(0xffffffffu, dot, 4);  // the 8 lanes of a group: dims 0..63
      dot += __shfl_xor_sync(0xffffffffu, dot, 2);
      dot += __shfl_xor_sync(0xffffffffu, dot, 1);
      s[u] = base + u * ATTN_BASE_GROUPS + grp < len ? dot : -INFINITY;
      mx = fmaxf(mx, s[u]);
    }
    const float mn = fmaxf(m, mx), use = mn == -INFINITY ? 0.f : mn, alpha = exp2f(m - use);
    l *= alpha;
    for (int i = 0; i < 8; i++) acc[i] *= alpha;
#pragma unroll
    for (int u = 0; u < ATTN_BASE_UNROLL; u++) {
      const float p = exp2f(s[u] - use);
      const __nv_bfloat162 *v2 = reinterpret_cast<const __nv_bfloat162 *>(&vr[u]);
      l += p;
      for (int i = 0; i < 4; i++) {
        const float2 f = __bfloat1622float2(v2[i]);
        acc[2 * i] = fmaf(p, f.x, acc[2 * i]);
        acc[2 * i + 1] = fmaf(p, f.y, acc[2 * i + 1]);
      }
    }
    m = mn;
  }
  if (sub == 0) s_m[grp] = m, s_l[grp] = l;
  for (int i = 0; i < 8; i++) s_o[grp][sub * 8 + i] = acc[i];
  __syncthreads();
  if (threadIdx.x < ATTN_HEAD_DIM) {  // merge the 16 groups, add the sink, normalize
    const int d = threadIdx.x;
    float M = a.sinks ? a.sinks[h] * ATTN_LOG2E : -INFINITY, L = 0.f, O = 0.f;
    for (int i = 0; i < ATTN_BASE_GROUPS; i++) M = fmaxf(M, s_m[i]);
    for (int i = 0; i < ATTN_BASE_GROUPS; i++) {
      const float f = s_m[i] == -INFINITY ? 0.f : exp2f(s_m[i] - M);
      L += s_l[i] * f;
      O += s_o[i][d] * f;
    }
    if (a.sinks) L += exp2f(a.sinks[h] * ATTN_LOG2E - M);
    a.out[((int64_t)b * a.H + h) * ATTN_HEAD_DIM + d] = __float2bfloat16_rn(O / L);
  }
}

void attn_plan(const GtlCtx *ctx, const AttnDecodeArgs *a, int max_keys, AttnPlan *p) {
  (void)ctx, (void)max_keys;
  p->num_splits = 1;
  p->workspace = NULL;
  snprintf(p->what, sizeof p->what, "attn_head_kernel grid (H=%d, B=%d) x %d threads, one block per query head",
           a->H, a->B, ATTN_BASE_GROUPS * 8);
}

void attn_launch(const AttnDecodeArgs *a, const AttnPlan *p, cudaStream_t s) {
  (void)p;
  attn_head_kernel<<<dim3(a->H, a->B), ATTN_BASE_GROUPS * 8, 0, s>>>(*a);
  GTL_LAUNCH();
}

void attn_plan_free(AttnPlan *p) { (void)p; }

int main(int argc, char **argv) {
  return attn_main(argc, argv, "baseline",
                   "block per (query head, sequence); 8 lanes per key, 16-byte loads, online softmax");
}
