// fused.cuh — kernel variants that remove a launch, not just change a knob: mechanisms
// ch20's autotuner may pick where they win (validated like every other candidate). Kernels
// and launchers only (pointers, sizes, stream in); the bodies are ch18's and ch15's own.
//
//   attn_splitkv_gqa_selfmerge_kernel   ch18's split-KV attention with the split combine
//       folded in: every CTA writes its partial (O, log2-sum-exp) as in ch18, then takes a
//       ticket from a per-(sequence, KV head) counter; the CTA that takes the last ticket
//       merges the group's partials (the same arithmetic as ch18's combine kernel) and
//       resets the counter. One kernel per step instead of two; no spin-waits (a CTA never
//       waits for another), so any grid and any residency is correct. The pattern: the
//       last block to finish reduces, with a __threadfence() before its ticket (CUDA C++
//       Programming Guide, "Memory Fence Functions", the sum-of-N-numbers example).
//   moe_grouped_gemm_selfsort_kernel    ch15's grouped GEMM that builds the work-item
//       tables itself: each block reads the T·top_k routing, counts the pairs per expert,
//       scans the counts and m-tiles, and ranks each pair among the earlier pairs of its
//       expert, all in shared memory; then runs ch15's body on those tables. Replaces
//       ch15's sort kernel (one launch, and the tables' round trip through L2 that each
//       persistent block's tile lookup pays) for small decode batches. The rank makes the
//       row order deterministic — pair p goes to row offsets[e] + #{p' < p with expert e}
//       — so the gate+up and down launches, which sort independently, agree on it.
//   moe_combine_topk_dependent_kernel   ch15's combine behind griddepcontrol.wait: with the
//       self-sorting down projection letting it launch early, the step is three launches
//       with no launch gap before the combine.
#pragma once
#include "../ch18/decode_attn.cuh"
#include "../ch15/grouped.cuh"

// ---- attention: split kernel + combine in one launch -------------------------------------

// Strategy: ch18's body, then one thread takes ticket = atomicAdd(counter[b][g]); the CTA
// with ticket num_splits − 1 loads the group's G·num_splits log2-sum-exp values (L2) into
// shared memory, turns them into weights exp2(lse_s − M) (one warp per head), and sums
// Σ w_s·o_s for the G·64 outputs (one thread per 4 dims, float4 loads, 8 in flight).
// Limiter: as ch18's split kernel (DRAM reads); the merge adds one CTA's L2 round trips
// (ticket, lse, partials) to the tail of each group.
template <bool kUpper, int STAGES>
__global__ void __launch_bounds__(ATTN_THREADS)
    attn_splitkv_gqa_selfmerge_kernel(const __grid_constant__ AttnDecodeArgs a, int num_splits,
                                      float *__restrict__ o_part, float *__restrict__ lse_part,
                                      unsigned *__restrict__ counters) {
  attn_splitkv_gqa_body<kUpper, STAGES>(a, num_splits, o_part, lse_part);
  if (num_splits == 1) return;  // the body wrote the output (the same for every CTA)
  // Every thread's partials are written (barrier); one thread's fence then orders them all
  // before the ticket (fences are cumulative: the pattern of cooperative groups' grid sync),
  // and its second fence orders the ticket before the last CTA's reads of the others'.
  __syncthreads();
  const int g = blockIdx.y, b = blockIdx.z, grp = b * a.H_kv + g;
  unsigned ticket = 0;
  if (threadIdx.x == 0) {
    __threadfence();
    ticket = atomicAdd(counters + grp, 1u);
    __threadfence();
  }
  if (!__syncthreads_or(threadIdx.x == 0 && ticket == (unsigned)num_splits - 1)) return;
  if (threadIdx.x == 0) counters[grp] = 0;  // ready for the next launch (stream-ordered)

  extern __shared__ __align__(128) float attn_merge_smem[];  // the body's dynamic smem
  const int G = a.H / a.H_kv, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float *s_w = attn_merge_smem;                          // [G][num_splits] lse, then weights
  float *s_den = attn_merge_smem + G * num_splits;       // [G] denominators
  // The group's G heads are consecutive: their lse values are G·num_splits consecutive
  // floats, their partial outputs G·num_splits·64. One coalesced pass brings the lse in.
  const int64_t bh0 = (int64_t)b * a.H + g * G;
  for (int i = threadIdx.x; i < G * num_splits; i += ATTN_THREADS) s_w[i] = __ldcg(lse_part + bh0 * num_splits + i);
  __syncthreads();
  for (int r = warp; r < G; r += ATTN_THREADS / 32) {  // one warp per head: max, weights, sum
    float *w = s_w + r * num_splits;
    const float s2 = a.sinks ? a.sinks[g * G + r] * ATTN_LOG2E : -INFINITY;
    float M = s2, wsum = 0.f;
    for (int s = lane; s < num_splits; s += 32) M = fmaxf(M, w[s]);
    for (int off = 16; off; off >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, off));
    for (int s = lane; s < num_splits; s += 32) {
      const float e = exp2f(w[s] - M);
      w[s] = e;
      wsum += e;
    }
    for (int off = 16; off; off >>= 1) wsum += __shfl_xor_sync(0xffffffffu, wsum, off);
    if (lane == 0) s_den[r] = wsum + exp2f(s2 - M);
  }
  __syncthreads();
  // One thread per 4 consecutive dims of one head (G·16 float4 columns; 128 at G = 8):
  // 16-byte partial loads, 8 splits in flight.
  for (int c = threadIdx.x; c < G * (ATTN_HEAD_DIM / 4); c += ATTN_THREADS) {
    const int r = c / (ATTN_HEAD_DIM / 4), d4 = c % (ATTN_HEAD_DIM / 4);
    const float4 *op = reinterpret_cast<const float4 *>(o_part + (bh0 + r) * num_splits * ATTN_HEAD_DIM) + d4;
    const float *w = s_w + r * num_splits;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
    for (int s = 0; s < num_splits; s++) {
      const float4 v = __ldcg(op + s * (ATTN_HEAD_DIM / 4));
      const float ws = w[s];
      acc.x = fmaf(ws, v.x, acc.x), acc.y = fmaf(ws, v.y, acc.y);
      acc.z = fmaf(ws, v.z, acc.z), acc.w = fmaf(ws, v.w, acc.w);
    }
    const float inv = 1.f / s_den[r];
    __nv_bfloat162 *o2 = reinterpret_cast<__nv_bfloat162 *>(a.out + (bh0 + r) * ATTN_HEAD_DIM + 4 * d4);
    o2[0] = __floats2bfloat162_rn(acc.x * inv, acc.y * inv);
    o2[1] = __floats2bfloat162_rn(acc.z * inv, acc.w * inv);
  }
}

// Dynamic shared memory of the self-merging kernel at STAGES: the pipeline's, or the merge's
// weights (G·num_splits + G floats, at most 16·256 + 16) when larger.
static inline int attn_selfmerge_smem_bytes(int stages) {
  const int pipe = attn_splitkv_smem_bytes(stages), merge = (ATTN_MAX_GROUP * 256 + ATTN_MAX_GROUP) * 4;
  return pipe > merge ? pipe : merge;
}

/** CTAs of attn_splitkv_gqa_selfmerge_kernel<*, STAGES> resident per SM (also raises its
 *  shared-memory limit: call it before the first launch). Exits 3 on a CUDA error. */
template <int STAGES>
static inline int attn_selfmerge_ctas_per_sm(void) {
  const int smem = attn_selfmerge_smem_bytes(STAGES);
  int n0 = 0, n1 = 0;
  GTL_CUDA(cudaFuncSetAttribute(attn_splitkv_gqa_selfmerge_kernel<false, STAGES>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  GTL_CUDA(cudaFuncSetAttribute(attn_splitkv_gqa_selfmerge_kernel<true, STAGES>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  GTL_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n0, attn_splitkv_gqa_selfmerge_kernel<false, STAGES>,
                                                         ATTN_THREADS, smem));
  GTL_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n1, attn_splitkv_gqa_selfmerge_kernel<true, STAGES>,
                                                         ATTN_THREADS, smem));
  return n0 < n1 ? n0 : n1;
}

/** One attention step in ONE launch: ch18's attn_splitkv_launch_stages<STAGES> with the
 *  combine folded into the split kernel. workspace: attn_splitkv_workspace_floats(B, H,
 *  num_splits) floats (NULL when num_splits == 1); counters: B·H_kv unsigned, zero before
 *  the first launch (each launch leaves them zero); num_splits <= 256. Returns 0, or -1
 *  with a message on stderr for arguments the kernel cannot take. */
template <int STAGES>
static inline int attn_selfmerge_launch(const AttnDecodeArgs *a, int num_splits, float *workspace,
                                        unsigned *counters, cudaStream_t s) {
  if (!attn_splitkv_args_ok(a, num_splits, workspace)) return -1;
  if (num_splits > 256 || (num_splits > 1 && !counters)) {
    fprintf(stderr, "attn_selfmerge_launch: needs num_splits <= 256 and counters (got %d)\n", num_splits);
    return -1;
  }
  float *o_part = workspace;
  float *lse_part = workspace ? workspace + (size_t)a->B * a->H * num_splits * ATTN_HEAD_DIM : NULL;
  const dim3 grid(num_splits, a->H_kv, a->B);
  const int smem = attn_selfmerge_smem_bytes(STAGES);
  if (a->H / a->H_kv > 8)
    attn_splitkv_gqa_selfmerge_kernel<true, STAGES><<<grid, ATTN_THREADS, smem, s>>>(*a, num_splits, o_part,
                                                                                     lse_part, counters);
  else
    attn_splitkv_gqa_selfmerge_kernel<false, STAGES><<<grid, ATTN_THREADS, smem, s>>>(*a, num_splits, o_part,
                                                                                      lse_part, counters);
  GTL_LAUNCH();
  return 0;
}

// ---- grouped GEMM: the dispatch sort inside each block ------------------------------------

#define MOE_SELFSORT_MAX_PAIRS 256    // T·top_k: decode batches (qwen3moe T <= 32, gpt-oss T <= 64)
#define MOE_SELFSORT_MAX_EXPERTS 256

// Strategy: before ch15's body, every block builds offsets [E+1], tile_start [E+1] (m-tiles
// of BM rows) and the row → token map in shared memory from topk_idx [P] (shared-memory
// counts; one warp scans them 32 experts at a time with shuffles; each pair's row is its
// expert's offset plus its rank among the earlier pairs of that expert, an O(P²/threads)
// loop of shared-memory broadcasts). pair_pos (non-NULL: block 0 writes row of each pair,
// for the combine). Limiter: as ch15's kernel; the table build is a few hundred cycles.
template <int BM, bool GLU, int STAGES, int BN, bool PDL>
__global__ void __launch_bounds__(moe_grouped::ThreadsOf<BN>::value)
    moe_grouped_gemm_selfsort_kernel(const __nv_bfloat16 *__restrict__ A,
                                     const int32_t *__restrict__ topk_idx, int P, int top_k,
                                     const __nv_bfloat16 *__restrict__ W0,
                                     const __nv_bfloat16 *__restrict__ W1, int64_t expert_stride,
                                     int E, int N, int K, __nv_bfloat16 *__restrict__ C,
                                     int32_t *__restrict__ pair_pos) {
  constexpr int TH = moe_grouped::ThreadsOf<BN>::value;
  __shared__ int32_t s_off[MOE_SELFSORT_MAX_EXPERTS + 1], s_tile[MOE_SELFSORT_MAX_EXPERTS + 1];
  __shared__ int32_t s_e[MOE_SELFSORT_MAX_PAIRS], s_tok[MOE_SELFSORT_MAX_PAIRS];
  const int tid = threadIdx.x, lane = tid & 31;
  for (int e = tid; e <= E; e += TH) s_off[e] = 0;
  for (int p = tid; p < P; p += TH) s_e[p] = topk_idx[p];
  __syncthreads();
  for (int p = tid; p < P; p += TH) atomicAdd(&s_off[s_e[p]], 1);
  __syncthreads();
  if (tid < 32) {  // exclusive scans of the counts and of the m-tiles, 32 experts per step
    int run_c = 0, run_m = 0;
    for (int base = 0; base < E; base += 32) {
      const int e = base + lane, c = e < E ? s_off[e] : 0, m = (c + BM - 1) / BM;
      int ci = c, mi = m;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const int x = __shfl_up_sync(0xffffffffu, ci, o), y = __shfl_up_sync(0xffffffffu, mi, o);
        if (lane >= o) ci += x, mi += y;
      }
      if (e < E) s_off[e] = run_c + ci - c, s_tile[e] = run_m + mi - m;
      run_c += __shfl_sync(0xffffffffu, ci, 31), run_m += __shfl_sync(0xffffffffu, mi, 31);
    }
    if (lane == 0) s_off[E] = run_c, s_tile[E] = run_m;
  }
  __syncthreads();
  for (int p = tid; p < P; p += TH) {
    const int e = s_e[p];
    int rank = 0;
    for (int q = 0; q < p; q++) rank += s_e[q] == e;
    const int row = s_off[e] + rank;
    s_tok[row] = p / top_k;
    if (pair_pos && blockIdx.x == 0) pair_pos[p] = row;
  }
  __syncthreads();
  moe_grouped_gemm_body<BM, GLU, STAGES, BN, TH, PDL>(A, GLU ? s_tok : nullptr, W0, W1, expert_stride,
                                                      s_off, s_tile, E, N, K, C);
}

/** Whether the self-sorting kernel takes this routing: P = T·top_k pairs and E experts
 *  within its shared-memory tables. */
static inline int moe_selfsort_ok(int64_t P, int64_t E) {
  return P >= 1 && P <= MOE_SELFSORT_MAX_PAIRS && E >= 1 && E <= MOE_SELFSORT_MAX_EXPERTS;
}

/** Raise the dynamic shared-memory limit of moe_grouped_gemm_selfsort_kernel<...> (call
 *  before its first launch) and return SMs × its resident blocks. Exit 3 on error. */
template <int BM, bool GLU, int ST, int BN, bool PDL>
static inline int moe_selfsort_configure(int sms) {
  auto *k = moe_grouped_gemm_selfsort_kernel<BM, GLU, ST, BN, PDL>;
  const int smem = moe_grouped::SmemOf<BM, GLU, ST, BN>::bytes;
  GTL_CUDA(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  int per_sm = 0;
  GTL_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, moe_grouped::ThreadsOf<BN>::value, smem));
  if (per_sm < 1) moe_die("a self-sorting grouped-GEMM variant does not fit on an SM");
  return sms * per_sm;
}

/** One grouped GEMM with the sort inside (the same product as ch15's moe_grouped_gemm_launch:
 *  GLU: h = silu(x·W0^T) ⊙ x·W1^T over each pair's token row; else C = A·W0^T over the
 *  expert-sorted rows of A), no dispatch kernel before it. topk_idx int32 [P] (values in
 *  [0, E)); pair_pos int32 [P] written by block 0 when non-NULL (the combine's input).
 *  PDL (the kernel): it lets the next kernel launch at once and streams its first weight
 *  slices before it waits for the previous grid; programmatic != 0: launched as a
 *  programmatic dependent of the kernel before it (which must let it launch). Call
 *  moe_selfsort_configure first; moe_selfsort_ok(P, E) must hold. */
template <int BM, bool GLU, int ST, int BN, bool PDL>
static inline void moe_selfsort_launch(int grid, const __nv_bfloat16 *A, const int32_t *topk_idx, int P,
                                       int top_k, const __nv_bfloat16 *W0, const __nv_bfloat16 *W1,
                                       int64_t stride, int E, int N, int K, __nv_bfloat16 *C,
                                       int32_t *pair_pos, int programmatic, cudaStream_t s) {
  if (!moe_selfsort_ok(P, E)) moe_die("self-sorting grouped GEMM: too many pairs or experts");
  constexpr int threads = moe_grouped::ThreadsOf<BN>::value, smem = moe_grouped::SmemOf<BM, GLU, ST, BN>::bytes;
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute attr = {};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cfg.gridDim = dim3(grid), cfg.blockDim = dim3(threads), cfg.dynamicSmemBytes = smem, cfg.stream = s;
  cfg.attrs = &attr, cfg.numAttrs = programmatic ? 1 : 0;
  GTL_CUDA(cudaLaunchKernelEx(&cfg, moe_grouped_gemm_selfsort_kernel<BM, GLU, ST, BN, PDL>, A, topk_idx, P,
                              top_k, W0, W1, stride, E, N, K, C, pair_pos));
  GTL_LAUNCH();
}

// ---- the combine as a programmatic dependent ------------------------------------------------

// Strategy: ch15's moe_combine_topk_kernel (one block per token, 16-byte loads of its
// top_k rows of y, fp32 sum in routing order, one bf16 rounding) behind griddepcontrol.wait,
// so it can be launched while the down projection (which lets it launch) still runs: its
// blocks are resident when y is complete, no launch gap. Limiter: latency.
__global__ void __launch_bounds__(256)
    moe_combine_topk_dependent_kernel(const __nv_bfloat16 *__restrict__ y,
                                      const int32_t *__restrict__ pair_pos,
                                      const float *__restrict__ topk_w, int top_k, int D,
                                      __nv_bfloat16 *__restrict__ out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");  // y and pair_pos are complete
#endif
  const int t = blockIdx.x;
  for (int c = threadIdx.x; c < D / 8; c += blockDim.x) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int j = 0; j < top_k; j++) {
      const float w = topk_w[(int64_t)t * top_k + j];
      const uint4 v = *(const uint4 *)(y + (int64_t)pair_pos[(int64_t)t * top_k + j] * D + c * 8);
      const __nv_bfloat162 *h = (const __nv_bfloat162 *)&v;
#pragma unroll
      for (int q = 0; q < 4; q++) {
        const float2 f = __bfloat1622float2(h[q]);
        acc[2 * q] += w * f.x;
        acc[2 * q + 1] += w * f.y;
      }
    }
    uint4 o;
    __nv_bfloat162 *oh = (__nv_bfloat162 *)&o;
#pragma unroll
    for (int q = 0; q < 4; q++) oh[q] = __floats2bfloat162_rn(acc[2 * q], acc[2 * q + 1]);
    *(uint4 *)(out + (int64_t)t * D + c * 8) = o;
  }
}

/** ch15's moe_combine_launch (out [T][D] bf16 = Σ_j topk_w[t][j] · y[pair_pos[t·top_k + j]],
 *  fp32 sum, j in order) launched as a programmatic dependent of the kernel before it on s
 *  (which should let it launch early: griddepcontrol.launch_dependents). Exit 3 on bad
 *  sizes or a launch error. */
static inline void moe_combine_dependent_launch(const __nv_bfloat16 *y, const int32_t *pair_pos,
                                                const float *topk_w, int64_t T, int top_k, int64_t D,
                                                __nv_bfloat16 *out, cudaStream_t s) {
  if (D % 8 || T < 1 || T > (1ll << 31) - 1) moe_die("combine needs D % 8 == 0");
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute attr = {};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cfg.gridDim = dim3((unsigned)T), cfg.blockDim = dim3(256), cfg.stream = s;
  cfg.attrs = &attr, cfg.numAttrs = 1;
  GTL_CUDA(cudaLaunchKernelEx(&cfg, moe_combine_topk_dependent_kernel, y, pair_pos, topk_w, top_k, (int)D, out));
}
