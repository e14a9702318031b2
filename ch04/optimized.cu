// ch04 multi-GPU communication — optimized: NCCL all-reduce, and a one-shot peer-to-peer
// all-reduce kernel for decode-sized messages.
//
// The one change: the reduction stays on the GPUs and the data moves GPU to GPU over
// NVLink, never through the host. Two ways:
//   nccl     the field's engine. One process drives every GPU: ncclCommInitAll makes one
//            communicator per GPU, and ncclGroupStart/End wraps the per-GPU ncclAllReduce
//            calls so one thread can launch a collective that spans them all. NCCL picks
//            a ring or tree algorithm and a protocol (LL, LL128, Simple) per message size;
//            its ring moves 2(n−1)/n of the message per GPU, the minimum.
//   oneshot  a hand-written kernel: a flag barrier between the GPUs, then each GPU loads
//            every other GPU's buffer directly (peer access, 16-byte loads over NVLink),
//            sums in fp32 and writes its own result, then a second flag barrier. One
//            kernel, one step, no protocol, no host synchronization between consecutive
//            all-reduces (so it can be replayed from a CUDA graph, as decode does). It
//            moves (n−1)·S per GPU instead of the ring's 2(n−1)/n·S (the same at n = 2,
//            more beyond).
// Both are validated against the host's double sum on every rank, before timing and again
// after the timed graph replays. Messages up to 4 MiB are timed as 100 all-reduces in one
// CUDA graph per GPU, larger ones one at a time by event fork/join (timing.cuh).
// --sweep adds the host-staged baseline and prints where the one-shot kernel stops
// beating NCCL. The measured crossover, on 2 and 4 H200s, is in the README.
//
// Multi-node: `make -B ch04 MPI=1` bootstraps the same NCCL code over MPI (rank 0 calls
// ncclGetUniqueId, MPI_Bcast sends it, every process calls ncclCommInitRank with one GPU):
//     mpirun -np 16 -H node1:8,node2:8 -x NCCL_NVLS_ENABLE ./ch04/optimized --method=nccl
// (the one-shot kernel needs every GPU in one process, so MPI runs skip it).
//
// Build and run:   make ch04 && ./ch04/optimized [--sweep]   (pair: scripts/pair.sh ch04)
// Nsight Compute cannot profile either method: it serializes kernels, and NCCL's kernels
// and the one-shot kernel's barrier wait for the kernel on the other GPU (the one-shot
// barrier then times out after 2 s and the run FAILs instead of hanging). Use Nsight
// Systems: nsys profile -t cuda,nvtx ./ch04/optimized --method=oneshot --bytes=65536
// (each graph replay: 100 allreduce_oneshot_kernel<2> per GPU, back to back).
// Book: multi-GPU communication — NCCL collectives, bus bandwidth, custom all-reduce.
#ifdef GTL_HAVE_NCCL
#include <nccl.h>
#endif
#include "allreduce.cuh"

// ---- NCCL -------------------------------------------------------------------------------
#ifdef GTL_HAVE_NCCL
static ncclComm_t g_comm[AR_MAX_GPUS];

static int nccl_setup(ArTeam *t, char *why, size_t n) {
  int v = 0;
  GTL_NCCL(ncclGetVersion(&v));
#ifdef GTL_MPI
  ncclUniqueId id;
  if (t->rank0 == 0) GTL_NCCL(ncclGetUniqueId(&id));
  MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
  GTL_CUDA(cudaSetDevice(t->dev[0]));
  GTL_NCCL(ncclCommInitRank(&g_comm[0], t->n_ranks, id, t->rank0));
#else
  GTL_NCCL(ncclCommInitAll(g_comm, t->n_local, t->dev));
#endif
  GTL_CUDA(cudaSetDevice(t->dev[0]));
  snprintf(why, n, "NCCL %d.%d.%d at run time, built with %d.%d.%d", v / 10000, v / 100 % 100,
           v % 100, NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH);
  return 0;
}

static void nccl_launch(ArTeam *t, size_t count) {
  GTL_NCCL(ncclGroupStart());
  for (int r = 0; r < t->n_local; r++)
    GTL_NCCL(ncclAllReduce(t->d_in[r], t->d_out[r], count, ncclBfloat16, ncclSum, g_comm[r],
                           t->stream[r]));
  GTL_NCCL(ncclGroupEnd());
  GTL_CUDA(cudaSetDevice(t->dev[0]));
}

static void nccl_teardown(ArTeam *t) {
  for (int r = 0; r < t->n_local; r++) GTL_NCCL(ncclCommDestroy(g_comm[r]));
  GTL_CUDA(cudaSetDevice(t->dev[0]));
}
#else
static int nccl_setup(ArTeam *t, char *why, size_t n) {
  (void)t;
  snprintf(why, n, "was built without NCCL (nccl.h not found): install it (apt-get install "
                   "libnccl-dev, or pip install nvidia-nccl-cu13) and rebuild with "
                   "make -B ch04 NCCL_HOME=<folder with include/nccl.h>");
  return -1;
}
static void nccl_launch(ArTeam *t, size_t count) {
  (void)t;
  (void)count;
}
static void nccl_teardown(ArTeam *t) { (void)t; }
#endif

// ---- one-shot peer-to-peer all-reduce ---------------------------------------------------
// The kernel synchronizes the GPUs itself, so consecutive all-reduces need no host
// synchronization (and can be replayed from a CUDA graph): every block runs
//   start barrier -> read all inputs, sum, write its output -> end barrier.
// Block b of rank r meets only block b of every other rank, through flags in each rank's
// signal buffer (its own memory; the peers write into it over NVLink).
//
// Memory ordering (PTX ISA, "Memory Consistency Model": "Release and Acquire Patterns",
// "Causality Order"; CUDA C++ Programming Guide, "Memory Fence Functions",
// "Synchronization Functions", and "Streams" for the order of kernels in a stream):
//   start barrier: thread p of block b stores epoch e into peer p's start[b][r] with
//     st.release.sys, then spins on its own start[b][p] with ld.acquire.sys until peer p's
//     block b has stored e there, then __syncthreads. Peer p's input was written by work
//     before the peer's kernel in its stream, which the stream completes before the kernel
//     starts, so it precedes the peer's release. Our acquire reads the released value, so
//     it synchronizes with that release (.sys scope: both GPUs are in it), and bar.sync
//     orders every other thread of the block after the acquire (causality order is
//     transitive through the CTA barrier). So every input load after the barrier sees the
//     peer's finished input.
//   end barrier: __syncthreads first (every thread's loads of the peers' inputs have
//     returned: their values were consumed into the sums stored to out), then thread p
//     releases e into peer p's end[b][r] and acquires e from its own end[b][p]. Peer p
//     passes its end barrier only after our loads of its input are ordered before its
//     acquire, so whatever the peer's stream does next (the next layer overwriting its
//     input) cannot change what we read. It also keeps the peer from storing epoch e+1
//     into our start[b] before we finished waiting for e there.
//   epoch: epoch[b] in the rank's own signal buffer counts the all-reduces block b has
//     done; every thread reads it at kernel start and thread 0 writes e at the end (after
//     two __syncthreads that follow every read). Kernels in one stream are ordered, so
//     the next kernel reads the new value. Every rank launches the same sequence of grids,
//     so the epochs of block b agree across ranks.
//   The peers' inputs are read with ld.global.cg (__ldcg: L2, not L1; never the
//   non-coherent .nc path, which assumes data that no one writes during the kernel).
// Co-residency: the grid has at most one block per SM, so every block of the kernel is
// resident at once and a block's wait never depends on a block not yet scheduled.
// Bounded waits: a wait that exceeds ONESHOT_TIMEOUT_NS (a peer that never arrives: a bug,
// or a profiler that serializes kernels) sets the error word of every rank and returns;
// every later wait sees the error word and returns at once, so nothing hangs, and the
// host reports FAIL (oneshot_check) instead of a result.
#define ONESHOT_THREADS 512
#define ONESHOT_MAX_BLOCKS 256
#define ONESHOT_TIMEOUT_NS 2000000000ull  // 2 s

typedef struct {
  uint32_t start[ONESHOT_MAX_BLOCKS][AR_MAX_GPUS];  // [b][p]: epoch peer p's block b reached
  uint32_t end[ONESHOT_MAX_BLOCKS][AR_MAX_GPUS];
  uint32_t epoch[ONESHOT_MAX_BLOCKS];  // all-reduces this rank's block b has done
  uint32_t error;                      // nonzero: a barrier wait timed out somewhere
} OneshotSignal;

typedef struct {
  const uint4 *in[AR_MAX_GPUS];    // every rank's input, in rank order (peer pointers)
  OneshotSignal *sig[AR_MAX_GPUS];  // every rank's signal buffer (peer pointers)
  int rank;                         // the rank this launch runs for
} OneshotArgs;

static OneshotSignal *g_sig[AR_MAX_GPUS];

__device__ __forceinline__ void flag_store_release(uint32_t *p, uint32_t v) {
  asm volatile("st.release.sys.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ uint32_t flag_load_acquire(const uint32_t *p) {
  uint32_t v;
  asm volatile("ld.acquire.sys.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ uint32_t flag_load_relaxed(const uint32_t *p) {
  uint32_t v;
  asm volatile("ld.relaxed.sys.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void flag_store_relaxed(uint32_t *p, uint32_t v) {
  asm volatile("st.relaxed.sys.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ uint64_t globaltimer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// One barrier between block blockIdx.x of every rank. END = false: the start barrier;
// true: the end barrier (separate flag arrays, so the two never see each other's epochs;
// only the end barrier has loads of this kernel to order before its release, hence the
// leading __syncthreads).
template <int N, bool END>
__device__ __forceinline__ void oneshot_barrier(const OneshotArgs &a, uint32_t e) {
  if (END) __syncthreads();
  const int p = threadIdx.x;
  if (p < N && p != a.rank) {
    OneshotSignal *self = a.sig[a.rank], *peer = a.sig[p];
    uint32_t *to = END ? &peer->end[blockIdx.x][a.rank] : &peer->start[blockIdx.x][a.rank];
    const uint32_t *from = END ? &self->end[blockIdx.x][p] : &self->start[blockIdx.x][p];
    flag_store_release(to, e);
    uint64_t t0 = 0;
    for (uint32_t spin = 1; flag_load_acquire(from) != e; spin++) {
      if (spin % 256) continue;
      if (flag_load_relaxed(&self->error)) break;
      const uint64_t now = globaltimer_ns();
      if (!t0) t0 = now;
      else if (now - t0 > ONESHOT_TIMEOUT_NS) {
#pragma unroll
        for (int q = 0; q < N; q++) flag_store_relaxed(&a.sig[q]->error, 1);
        break;
      }
    }
  }
  __syncthreads();
}

// 8 bf16 of each of the N ranks → their fp32 sum in rank order (the same order on every
// rank, so every rank's result is the same bits), rounded once to bf16.
template <int N>
__device__ __forceinline__ uint4 oneshot_sum(const uint4 *v) {
  const uint32_t *w0 = (const uint32_t *)&v[0];
  float acc[8];
#pragma unroll
  for (int k = 0; k < 4; k++) {
    acc[2 * k] = __uint_as_float(w0[k] << 16);
    acc[2 * k + 1] = __uint_as_float(w0[k] & 0xFFFF0000u);
  }
#pragma unroll
  for (int r = 1; r < N; r++) {
    const uint32_t *w = (const uint32_t *)&v[r];
#pragma unroll
    for (int k = 0; k < 4; k++) {
      acc[2 * k] += __uint_as_float(w[k] << 16);
      acc[2 * k + 1] += __uint_as_float(w[k] & 0xFFFF0000u);
    }
  }
  uint4 o;
  uint32_t *wo = (uint32_t *)&o;
#pragma unroll
  for (int k = 0; k < 4; k++) {
    __nv_bfloat162 h = __floats2bfloat162_rn(acc[2 * k], acc[2 * k + 1]);
    wo[k] = *(const uint32_t *)&h;
  }
  return o;
}

// Strategy: start barrier; each GPU reads all N inputs (N−1 over NVLink), 8 bf16 per
// 16-byte load, U·N loads in flight before the first add; fp32 sum in rank order, one
// bf16 rounding; end barrier.
// Limiter: small messages — the two barriers' NVLink round trips and one remote-load
// round trip; large ones — the link's read bandwidth.
template <int N>
__global__ void __launch_bounds__(ONESHOT_THREADS)
    allreduce_oneshot_kernel(OneshotArgs a, uint4 *__restrict__ out, size_t n16) {
  constexpr int U = N <= 2 ? 4 : N <= 4 ? 2 : 1;  // elements per rank in flight per thread
  const uint32_t e = a.sig[a.rank]->epoch[blockIdx.x] + 1;
  oneshot_barrier<N, false>(a, e);
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  for (; i + (U - 1) * stride < n16; i += U * stride) {  // U whole elements: loads first
    uint4 v[U][N];
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
      for (int r = 0; r < N; r++) v[u][r] = __ldcg(a.in[r] + i + u * stride);
#pragma unroll
    for (int u = 0; u < U; u++) out[i + u * stride] = oneshot_sum<N>(v[u]);
  }
  for (; i < n16; i += stride) {  // the tail: fewer than U elements left for this thread
    uint4 v[N];
#pragma unroll
    for (int r = 0; r < N; r++) v[r] = __ldcg(a.in[r] + i);
    out[i] = oneshot_sum<N>(v);
  }
  oneshot_barrier<N, true>(a, e);
  if (threadIdx.x == 0) a.sig[a.rank]->epoch[blockIdx.x] = e;
}

static const void *oneshot_kernel_for(int n) {
  switch (n) {
    case 2: return (const void *)allreduce_oneshot_kernel<2>;
    case 3: return (const void *)allreduce_oneshot_kernel<3>;
    case 4: return (const void *)allreduce_oneshot_kernel<4>;
    case 5: return (const void *)allreduce_oneshot_kernel<5>;
    case 6: return (const void *)allreduce_oneshot_kernel<6>;
    case 7: return (const void *)allreduce_oneshot_kernel<7>;
    default: return (const void *)allreduce_oneshot_kernel<8>;
  }
}

static int oneshot_setup(ArTeam *t, char *why, size_t n) {
  if (t->n_local != t->n_ranks) {
    snprintf(why, n, "needs every GPU in one process (peer pointers); MPI runs use NCCL only");
    return -1;
  }
  if (!t->peer_ok) {
    snprintf(why, n, "needs peer access between every pair of GPUs (cudaDeviceCanAccessPeer "
                     "said no)");
    return -1;
  }
  for (int r = 0; r < t->n_local; r++) {
    GTL_CUDA(cudaSetDevice(t->dev[r]));
    g_sig[r] = (OneshotSignal *)gtl_malloc(sizeof(OneshotSignal), "one-shot signal buffer");
    GTL_CUDA(cudaMemset(g_sig[r], 0, sizeof(OneshotSignal)));
    // Loads the kernel's module on this GPU now (lazy loading would do it at the first
    // launch, while the peer's kernel already waits in its barrier).
    cudaFuncAttributes fa;
    GTL_CUDA(cudaFuncGetAttributes(&fa, oneshot_kernel_for(t->n_ranks)));
    GTL_CUDA(cudaDeviceSynchronize());
  }
  GTL_CUDA(cudaSetDevice(t->dev[0]));
  return 0;
}

static void oneshot_launch(ArTeam *t, size_t count) {
  const size_t n16 = count / 8;  // count is a multiple of 8 (checked by the driver)
  size_t blocks = (n16 + ONESHOT_THREADS - 1) / ONESHOT_THREADS;
  const size_t max_blocks = t->sms < ONESHOT_MAX_BLOCKS ? (size_t)t->sms : ONESHOT_MAX_BLOCKS;
  if (blocks > max_blocks) blocks = max_blocks;  // one block per SM at most (co-residency)
  OneshotArgs a;
  memset(&a, 0, sizeof a);
  for (int k = 0; k < t->n_ranks; k++) {
    a.in[k] = (const uint4 *)t->d_in[k];
    a.sig[k] = g_sig[k];
  }
  const void *kernel = oneshot_kernel_for(t->n_ranks);
  for (int r = 0; r < t->n_local; r++) {
    GTL_CUDA(cudaSetDevice(t->dev[r]));
    a.rank = r;
    uint4 *out = (uint4 *)t->d_out[r];
    size_t n16_arg = n16;
    void *args[] = {&a, &out, &n16_arg};
    GTL_CUDA(cudaLaunchKernel(kernel, dim3((unsigned)blocks), dim3(ONESHOT_THREADS), args, 0,
                              t->stream[r]));
    GTL_LAUNCH();
  }
  GTL_CUDA(cudaSetDevice(t->dev[0]));
}

// The error word of every rank (read after the caller synchronized).
static int oneshot_check(ArTeam *t, char *why, size_t n) {
  for (int r = 0; r < t->n_local; r++) {
    uint32_t err = 0;
    GTL_CUDA(cudaSetDevice(t->dev[r]));
    GTL_CUDA(cudaMemcpy(&err, &g_sig[r]->error, sizeof err, cudaMemcpyDeviceToHost));
    if (err) {
      GTL_CUDA(cudaSetDevice(t->dev[0]));
      snprintf(why, n, "rank %d: a barrier wait timed out after %.0f s (a peer's kernel never "
                       "arrived; Nsight Compute serializes kernels, so it cannot run this one)",
               r, ONESHOT_TIMEOUT_NS * 1e-9);
      return 1;
    }
  }
  GTL_CUDA(cudaSetDevice(t->dev[0]));
  return 0;
}

static void oneshot_teardown(ArTeam *t) {
  for (int r = 0; r < t->n_local; r++) {
    GTL_CUDA(cudaSetDevice(t->dev[r]));
    GTL_CUDA(cudaFree(g_sig[r]));
  }
  GTL_CUDA(cudaSetDevice(t->dev[0]));
}

static const ArMethod nccl = {
    "nccl", "ncclAllReduce (bf16, sum), one communicator per GPU (ncclCommInitAll), group calls",
    nccl_setup, nccl_launch, nccl_teardown, NULL, 1};
static const ArMethod oneshot = {
    "oneshot", "one-shot kernel: flag barrier, every GPU loads all peers' inputs over NVLink "
               "(peer access) and sums in fp32, flag barrier; one launch per GPU",
    oneshot_setup, oneshot_launch, oneshot_teardown, oneshot_check, 1};

int main(int argc, char **argv) {
  const ArMethod *methods[] = {&nccl, &oneshot};
  return ar_main(argc, argv, "optimized", methods, 2);
}
