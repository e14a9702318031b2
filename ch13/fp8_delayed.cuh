// fp8_delayed.cuh — per-tensor FP8 E4M3 delayed scaling: the one-pass quantize kernels
// (kernels and launchers only) that ch13 times in front of its cuBLASLt FP8 GEMM, on top of
// fp8_quant.cuh's scale state, helpers and plan.
//
// Delayed scaling (NVIDIA Transformer Engine's DelayedScaling, amax_compute_algo="max",
// margin 0; https://nvidia.github.io/TransformerEngine/features/low_precision_training/):
// quantize with the scale an amax history of earlier steps gives, record this tensor's amax,
// push it into the history and set the next step's scale, in one streaming pass with no
// barrier in it. Two kernels run the same function, bit for bit:
//   fp8_tensor_quantize_delayed_kernel<U>         one block per tile of 256 threads × U
//                                                 16-byte chunks (U = 2, 4, 8)
//   fp8_tensor_quantize_delayed_wave_kernel<T, V> one wave: the resident blocks loop, with
//                                                 the next V loads in flight per thread
// Fp8QuantPlan::delayed_wave picks one (0 = tiled), fp8_tensor_quantize_delayed_launch
// runs it. Data as in fp8_quant.cuh: x bf16 [n], q fp8 E4M3 [n], 16-byte aligned.
#pragma once
#include "fp8_quant.cuh"

// The amax history as a launch finds it. Only the last block of a launch writes the
// history, after every block has counted itself done, so a copy read by any block at any
// time during the launch is current when the last block pushes (fp8_delayed_push): the
// one-wave kernel reads it when its pass starts, and its tail needs no dependent loads.
typedef struct {
  unsigned pos;      // st->history_pos: the slot this launch writes
  unsigned leaving;  // history[pos] (fp32 bits): the entry this launch's amax replaces
  unsigned max;      // st->history_max: the window's max (bits)
} Fp8HistoryPeek;
__device__ __forceinline__ Fp8HistoryPeek fp8_history_peek(const Fp8TensorScale *st,
                                                           const float *history) {
  Fp8HistoryPeek h;
  h.pos = st->history_pos;
  h.leaving = __float_as_uint(history[h.pos]);
  h.max = st->history_max;
  return h;
}
// One thread of the last block, a = the launch's amax (fp32 bits), s = the scale the pass
// used: push a into the history, set scale_inv = 1/s for this step's GEMM and the next
// scale from the history's max, kept up to date entry by entry (rescanned only when the
// entry leaving the window held it); leaves blocks_done at 0.
// set_scale_inv 0: the chunked pass's first chunk wrote scale_inv already (GEMMs read it).
__device__ __forceinline__ void fp8_delayed_push(Fp8TensorScale *st, float *history, int history_len,
                                                 float s, unsigned a, Fp8HistoryPeek p,
                                                 bool set_scale_inv = true) {
  history[p.pos] = __uint_as_float(a);
  st->history_pos = (p.pos + 1) % (unsigned)history_len;
  st->amax = __uint_as_float(a);
  if (set_scale_inv) st->scale_inv = 1.0f / s;
  unsigned h = p.max;  // max over the window (entries never written are 0)
  if (a >= h) {
    h = a;
  } else if (p.leaving >= h) {  // the entry that held the max left the window: rescan
    h = 0;
    for (int k = 0; k < history_len; k++) h = max(h, __float_as_uint(history[k]));
  }
  st->history_max = h;
  const float hmax = __uint_as_float(h);
  st->scale = hmax == 0.0f ? s : FP8_E4M3_MAX / hmax;  // no history yet: keep s
  st->blocks_done = 0;
}

// The end of the tiled pass, in every block (all threads; bits: the thread's amax as fp32
// bits): one block max, one atomic max into st->amax_acc and one count per block (its grid
// can exceed st->partial); the last block to count takes the max, reads the history and
// pushes. Leaves amax_acc and blocks_done at 0.
__device__ __forceinline__ void fp8_delayed_finish(Fp8TensorScale *st, float *history,
                                                   int history_len, float s, unsigned bits,
                                                   bool set_scale_inv = true) {
  bits = fp8_block_max(bits);
  __shared__ int is_last;
  if (threadIdx.x == 0) {
    atomicMax(&st->amax_acc, bits);
    __threadfence();  // the max is visible device-wide before the count says so
    is_last = atomicAdd(&st->blocks_done, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!is_last || threadIdx.x != 0) return;
  __threadfence();
  const unsigned a = atomicExch(&st->amax_acc, 0u);  // every block's max; 0 for the next launch
  fp8_delayed_push(st, history, history_len, s, a, fp8_history_peek(st, history), set_scale_inv);
}

// Strategy: a streaming pass with the scale known before it starts: block b quantizes tile
// b (FP8_QUANT_THREADS × U 16-byte chunks, chunk u of thread t at t + u·FP8_QUANT_THREADS,
// so each of the U loads is coalesced across the block), tiles b + gridDim.x, … after it;
// a thread issues its U loads before it converts the first, and stores each chunk as soon
// as it is converted. The grid covers the tensor in one round of tiles when it can (up to
// FP8_DELAYED_MAX_BLOCKS blocks, several resident per SM), so that blocks still loading
// overlap blocks already storing: no barrier inside the pass. The amax of the same
// registers ends in fp8_delayed_finish (one atomic max and one count per block, the history
// update by the last). Limiter: HBM read of x (q's writes land in L2).
// Delayed scaling: q = RNE_satfinite(x · st->scale); st->scale_inv = 1/that scale (for this
// step's GEMM); history[pos] = amax(x); st->scale = 448 / max(history) for the next step.
template <int U>
__device__ __forceinline__ unsigned fp8_delayed_tiles(const __nv_bfloat16 *__restrict__ x,
                                                      __nv_fp8_storage_t *__restrict__ q, size_t n,
                                                      float s) {
  const uint4 *x8 = (const uint4 *)x;
  uint2 *q8 = (uint2 *)q;
  const size_t n8 = n / 8, tile = (size_t)FP8_QUANT_THREADS * U, tiles = (n8 + tile - 1) / tile;
  unsigned m = 0;
  for (size_t b = blockIdx.x; b < tiles; b += gridDim.x) {
    const size_t i0 = b * tile + threadIdx.x;
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; u++) {  // zeros past the end change no max
      const size_t i = i0 + (size_t)u * FP8_QUANT_THREADS;
      v[u] = i < n8 ? __ldcs(x8 + i) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      const size_t i = i0 + (size_t)u * FP8_QUANT_THREADS;
      if (i < n8) q8[i] = fp8_quantize8(v[u], s);
      m = fp8_absmax8_bits(v[u], m);
    }
  }
  unsigned bits = fp8_halves_to_f32_bits(m);
  const uint16_t *xs = (const uint16_t *)x;  // the n % 8 elements past the last 16 bytes
  if (blockIdx.x == 0)
    for (size_t t = n8 * 8 + threadIdx.x; t < n; t += blockDim.x) {
      q[t] = fp8_quantize1(xs[t], s);
      bits = max(bits, (unsigned)(xs[t] & 0x7FFFu) << 16);
    }
  return bits;  // this thread's amax, fp32 bits
}
template <int U>
__global__ void __launch_bounds__(FP8_QUANT_THREADS)
    fp8_tensor_quantize_delayed_kernel(const __nv_bfloat16 *__restrict__ x,
                                       __nv_fp8_storage_t *__restrict__ q, size_t n,
                                       Fp8TensorScale *st, float *history, int history_len) {
  // Every block reads the scale before it counts itself done, and only the last block to
  // count writes the next one: no block can see the new scale in this launch.
  const float s = *(volatile float *)&st->scale;
  fp8_delayed_finish(st, history, history_len, s, fp8_delayed_tiles<U>(x, q, n, s));
}

// Delayed scaling in row chunks (ch13 --chunks): the pass above split into one launch per
// chunk of x, each over its own x and q (the chunk's first element, n its elements), all
// with the one scale st->scale (only the last chunk's last block writes the next one, after
// every earlier chunk has finished: the launches are ordered on one stream), so the GEMM
// of chunk i can run while chunk i+1 is quantized. part: FP8_CHUNK_FIRST (block 0 sets
// st->scale_inv = 1/s before any GEMM reads it), FP8_CHUNK_LAST (count the blocks; the last
// takes the amax of every chunk from st->amax_acc and pushes it: one history entry per
// step, as the one-launch pass), both for a single chunk. Earlier chunks only atomicMax
// their blocks' amax into st->amax_acc. Same bytes, same scale state as the one launch.
#define FP8_CHUNK_FIRST 1
#define FP8_CHUNK_LAST 2
template <int U>
__global__ void __launch_bounds__(FP8_QUANT_THREADS)
    fp8_tensor_quantize_delayed_chunk_kernel(const __nv_bfloat16 *__restrict__ x,
                                             __nv_fp8_storage_t *__restrict__ q, size_t n,
                                             Fp8TensorScale *st, float *history, int history_len,
                                             int part) {
  const float s = *(volatile float *)&st->scale;
  if ((part & FP8_CHUNK_FIRST) && blockIdx.x == 0 && threadIdx.x == 0) st->scale_inv = 1.0f / s;
  const unsigned bits = fp8_delayed_tiles<U>(x, q, n, s);
  if (part & FP8_CHUNK_LAST) {
    fp8_delayed_finish(st, history, history_len, s, bits, false);
    return;
  }
  const unsigned b = fp8_block_max(bits);
  if (threadIdx.x == 0) atomicMax(&st->amax_acc, b);
}

// Blocks per SM the compiler must fit (registers): the full 2,048 threads up to 2 loads per
// thread, 5 blocks of 256 at 4 (48 registers), 1 block of 1,024 at 2.
#define FP8_WAVE_MIN_BLOCKS(threads, v) ((threads) == 1024 ? ((v) == 1 ? 2 : 1) : ((v) >= 4 ? 5 : 8))

// Strategy: one wave. The grid is exactly the blocks resident at once (SMs × blocks per SM,
// fp8_delayed_plan asks the occupancy calculator), and each thread loops: iteration k covers
// chunks [k·G·V, (k+1)·G·V) of the tensor, G the grid's threads, thread g's V chunks at
// g, g + G, … (each load coalesced across the grid). Register double buffer: a thread
// issues iteration k+1's V 16-byte loads before it converts and stores iteration k's, so
// 2V loads per thread are in flight while it works. The amax stays in a register across
// iterations: one block reduction, one plain store of the block's max (st->partial) and one
// atomic count per block at the end (fp8_grid_amax), not per tile; the last block reduces
// the partials and pushes the amax (fp8_delayed_push). No block waits for a second wave.
// Grid at most FP8_QUANT_MAX_BLOCKS. Limiter: HBM read of x.
// Delayed scaling, the same function as fp8_tensor_quantize_delayed_kernel (same bytes,
// same scale state); THREADS threads per block (a multiple of 32, at most 1024), V 16-byte
// chunks per thread per iteration.
template <int THREADS, int V>
__global__ void __launch_bounds__(THREADS, FP8_WAVE_MIN_BLOCKS(THREADS, V))
    fp8_tensor_quantize_delayed_wave_kernel(const __nv_bfloat16 *__restrict__ x,
                                            __nv_fp8_storage_t *__restrict__ q, size_t n,
                                            Fp8TensorScale *st, float *history, int history_len) {
  const float s = *(volatile float *)&st->scale;  // read before this block counts itself done
  const uint4 *x8 = (const uint4 *)x;
  uint2 *q8 = (uint2 *)q;
  const size_t n8 = n / 8, G = (size_t)gridDim.x * THREADS, step = G * V;
  size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x;
  uint4 cur[V], nxt[V];
#pragma unroll
  for (int u = 0; u < V; u++)  // zeros past the end change no max
    cur[u] = i + u * G < n8 ? __ldcs(x8 + i + u * G) : make_uint4(0, 0, 0, 0);
  __shared__ Fp8HistoryPeek peek;  // in shared memory: no registers held across the loop
  if (threadIdx.x == 0) peek = fp8_history_peek(st, history);  // waits while x's loads fly
  unsigned m = 0;
  for (; i < n8; i += step) {
    const size_t j = i + step;
#pragma unroll
    for (int u = 0; u < V; u++)  // the next iteration's loads, before this one's stores
      nxt[u] = j + u * G < n8 ? __ldcs(x8 + j + u * G) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int u = 0; u < V; u++) {
      if (i + u * G < n8) q8[i + u * G] = fp8_quantize8(cur[u], s);
      m = fp8_absmax8_bits(cur[u], m);
      cur[u] = nxt[u];
    }
  }
  unsigned bits = fp8_halves_to_f32_bits(m);
  const uint16_t *xs = (const uint16_t *)x;  // the n % 8 elements past the last 16 bytes
  if (blockIdx.x == 0)
    for (size_t t = n8 * 8 + threadIdx.x; t < n; t += THREADS) {
      q[t] = fp8_quantize1(xs[t], s);
      bits = max(bits, (unsigned)(xs[t] & 0x7FFFu) << 16);
    }
  unsigned a;
  if (fp8_grid_amax(st, fp8_block_max(bits), &a) && threadIdx.x == 0)
    fp8_delayed_push(st, history, history_len, s, a, peek);
}

// The one-wave kernel's shapes (Fp8QuantPlan::delayed_wave 1 to 5): threads per block and
// 16-byte chunks per thread per iteration, {256, 1}, {256, 2}, {1024, 1}, {1024, 2},
// {256, 4}. 1024-thread blocks are the fewer, larger CTAs.
static inline int fp8_wave_threads(int w) { return w == 3 || w == 4 ? 1024 : 256; }
static inline int fp8_wave_vec(int w) { return w == 5 ? 4 : w == 2 || w == 4 ? 2 : 1; }
// Its grid for n elements: SMs × blocks per SM (capped by wave_ctas_per_sm), and no more
// blocks than it takes to give every thread one 16-byte chunk.
static inline unsigned fp8_wave_blocks(const Fp8QuantPlan *p, int w) {
  int per_sm = p->wave_per_sm[w - 1];
  if (p->wave_ctas_per_sm > 0 && p->wave_ctas_per_sm < per_sm) per_sm = p->wave_ctas_per_sm;
  const size_t t = (size_t)fp8_wave_threads(w), need = (p->n / 8 + t - 1) / t;
  size_t b = (size_t)p->sms * (per_sm < 1 ? 1 : per_sm);
  b = b < need ? b : need;
  b = b < FP8_QUANT_MAX_BLOCKS ? b : FP8_QUANT_MAX_BLOCKS;  // st->partial's entries
  return (unsigned)(b < 1 ? 1 : b);
}

/** Complete a plan (fp8_quant_plan(n, p) first) for the one-wave delayed kernel: the
 *  blocks of each shape resident per SM, by the occupancy calculator. Host only; CUDA
 *  errors exit. Returns 0. */
static inline int fp8_delayed_plan(Fp8QuantPlan *p) {
  const void *wave[FP8_WAVE_SHAPES] = {
      (const void *)fp8_tensor_quantize_delayed_wave_kernel<256, 1>,
      (const void *)fp8_tensor_quantize_delayed_wave_kernel<256, 2>,
      (const void *)fp8_tensor_quantize_delayed_wave_kernel<1024, 1>,
      (const void *)fp8_tensor_quantize_delayed_wave_kernel<1024, 2>,
      (const void *)fp8_tensor_quantize_delayed_wave_kernel<256, 4>};
  for (int w = 0; w < FP8_WAVE_SHAPES; w++)
    GTL_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&p->wave_per_sm[w], wave[w],
                                                           fp8_wave_threads(w + 1), 0));
  return 0;
}

/** Delayed scaling, one pass: q = E4M3(x · st->scale) with the scale from earlier steps,
 *  st->scale_inv = its inverse (this step's GEMM), amax(x) pushed into history
 *  (history_len floats, a ring), and st->scale = 448 / max(history) for the next call.
 *  p: fp8_quant_plan(n). p->delayed_wave 0: fp8_tensor_quantize_delayed_kernel, whose
 *  chunks per thread p->delayed_unroll (2, 4 or 8) picks, and with them its grid: one block
 *  per tile, at most FP8_DELAYED_MAX_BLOCKS. p->delayed_wave 1 to FP8_WAVE_SHAPES:
 *  fp8_tensor_quantize_delayed_wave_kernel of that shape on one wave (fp8_wave_blocks).
 *  Reads 2n bytes, writes n. Returns 0 or -1. */
static inline int fp8_tensor_quantize_delayed_launch(const __nv_bfloat16 *x, __nv_fp8_storage_t *q,
                                                     size_t n, Fp8TensorScale *st, float *history,
                                                     int history_len, const Fp8QuantPlan *p,
                                                     cudaStream_t s) {
  if (fp8_quant_check("fp8_tensor_quantize_delayed_launch", x, q, n, p)) return -1;
  if (!history || history_len < 1) {
    fprintf(stderr, "fp8_tensor_quantize_delayed_launch: need an amax history (len >= 1)\n");
    return -1;
  }
  const int w = p->delayed_wave;
  if (w >= 1 && w <= FP8_WAVE_SHAPES) {
    const unsigned b = fp8_wave_blocks(p, w);
    if (w == 1)
      fp8_tensor_quantize_delayed_wave_kernel<256, 1><<<b, 256, 0, s>>>(x, q, n, st, history, history_len);
    else if (w == 2)
      fp8_tensor_quantize_delayed_wave_kernel<256, 2><<<b, 256, 0, s>>>(x, q, n, st, history, history_len);
    else if (w == 3)
      fp8_tensor_quantize_delayed_wave_kernel<1024, 1><<<b, 1024, 0, s>>>(x, q, n, st, history, history_len);
    else if (w == 4)
      fp8_tensor_quantize_delayed_wave_kernel<1024, 2><<<b, 1024, 0, s>>>(x, q, n, st, history, history_len);
    else
      fp8_tensor_quantize_delayed_wave_kernel<256, 4><<<b, 256, 0, s>>>(x, q, n, st, history, history_len);
    GTL_LAUNCH();
    return 0;
  }
  if (w != 0) {
    fprintf(stderr, "fp8_tensor_quantize_delayed_launch: delayed_wave must be 0 to %d (got %d)\n",
            FP8_WAVE_SHAPES, w);
    return -1;
  }
  const int u = p->delayed_unroll;
  const size_t tile = (size_t)FP8_QUANT_THREADS * u, tiles = (n / 8 + tile - 1) / tile;
  const unsigned blocks = (unsigned)(tiles < 1 ? 1 : tiles > FP8_DELAYED_MAX_BLOCKS ? FP8_DELAYED_MAX_BLOCKS : tiles);
  if (u == 2)
    fp8_tensor_quantize_delayed_kernel<2><<<blocks, FP8_QUANT_THREADS, 0, s>>>(x, q, n, st, history, history_len);
  else if (u == 8)
    fp8_tensor_quantize_delayed_kernel<8><<<blocks, FP8_QUANT_THREADS, 0, s>>>(x, q, n, st, history, history_len);
  else if (u == 4)
    fp8_tensor_quantize_delayed_kernel<4><<<blocks, FP8_QUANT_THREADS, 0, s>>>(x, q, n, st, history, history_len);
  else {
    fprintf(stderr, "fp8_tensor_quantize_delayed_launch: delayed_unroll must be 2, 4 or 8 (got %d)\n", u);
    return -1;
  }
  GTL_LAUNCH();
  return 0;
}

/** One chunk of the chunked delayed pass (fp8_tensor_quantize_delayed_chunk_kernel): x, q
 *  the chunk's first element (16-byte aligned), n >= 1 its elements, u = 2, 4 or 8 16-byte
 *  chunks per thread per tile (one block per tile, at most FP8_DELAYED_MAX_BLOCKS), part
 *  FP8_CHUNK_FIRST and/or FP8_CHUNK_LAST. The chunks of one step go on one stream, in order,
 *  first to last. Reads 2n bytes, writes n. Returns 0 or -1. */
static inline int fp8_tensor_quantize_delayed_chunk_launch(const __nv_bfloat16 *x, __nv_fp8_storage_t *q,
                                                           size_t n, Fp8TensorScale *st, float *history,
                                                           int history_len, int u, int part,
                                                           cudaStream_t s) {
  if (n == 0 || ((uintptr_t)x | (uintptr_t)q) % 16 || !history || history_len < 1 ||
      (u != 2 && u != 4 && u != 8) || part < 0 || part > (FP8_CHUNK_FIRST | FP8_CHUNK_LAST)) {
    fprintf(stderr, "fp8_tensor_quantize_delayed_chunk_launch: need n >= 1, 16-byte aligned x and "
            "q, a history, u 2, 4 or 8 and part 0 to 3 (n=%zu u=%d part=%d)\n", n, u, part);
    return -1;
  }
  const size_t tile = (size_t)FP8_QUANT_THREADS * u, tiles = (n / 8 + tile - 1) / tile;
  const unsigned blocks = (unsigned)(tiles < 1 ? 1 : tiles > FP8_DELAYED_MAX_BLOCKS ? FP8_DELAYED_MAX_BLOCKS : tiles);
  if (u == 2)
    fp8_tensor_quantize_delayed_chunk_kernel<2><<<blocks, FP8_QUANT_THREADS, 0, s>>>(x, q, n, st, history, history_len, part);
  else if (u == 4)
    fp8_tensor_quantize_delayed_chunk_kernel<4><<<blocks, FP8_QUANT_THREADS, 0, s>>>(x, q, n, st, history, history_len, part);
  else
    fp8_tensor_quantize_delayed_chunk_kernel<8><<<blocks, FP8_QUANT_THREADS, 0, s>>>(x, q, n, st, history, history_len, part);
  GTL_LAUNCH();
  return 0;
}
