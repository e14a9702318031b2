// checkpoint.cuh — ch05's problem, reference and driver, shared by baseline.cu and
// optimized.cu so that the two files differ only in their loader.
//
// The problem: load a checkpoint. The program writes a seeded safetensors file in the
// Hugging Face layout of an MoE model with gptoss20b shapes (hidden 2880, 64 q / 8 kv
// heads of 64, expert FFN 2880; Mixtral/Qwen3-MoE per-expert tensor names), then loads
// every tensor into one device buffer that mirrors the file's byte buffer (tensor t at
// d_arena + t.begin). Sizes: small = 1 layer of 4 experts (0.25 GB, 19 tensors); default
// = embeddings + 2 layers of 32 experts (4.45 GB, 208 tensors); large = embeddings + 6
// layers (11.0 GB, 620 tensors). The file goes to --dir (default $TMPDIR, else /tmp), is
// created new (never over an existing file) and is deleted at exit, on SIGINT, SIGTERM
// and SIGHUP too, unless --keep.
//
// Roofline: bytes = the byte buffer (every tensor byte crosses storage → host → PCIe
// once), flops = 0. A load is bound by the slower of the read path and the pinned H2D
// link; the table reports % of the pinned H2D ceiling, the best a load can do.
//
// Timing: wall clock (CLOCK_MONOTONIC) around the whole load, ended by
// cudaDeviceSynchronize, per iteration; median is the headline. CUDA events are not
// right here: they timestamp points in one stream's GPU work, and a load is mostly host
// work (read() copying out of the page cache or waiting on the disk, a CPU memcpy into
// the driver's staging buffers) that no stream sees; the baseline's cudaMemcpy runs on
// the legacy default stream, not on the timed one; and a pageable cudaMemcpy returns
// before its last DMA ends. What a user waits for is "open to weights ready", a host
// interval, so that is what is timed.
//
// Warm and cold: warm iterations read the file from the page cache (it was just written
// and read); it is the headline, the repeatable number. Cold iterations first drop the
// file from the page cache (fdatasync at write, then posix_fadvise(POSIX_FADV_DONTNEED));
// mincore() on a mapping of the file checks that it took effect. In a VM the host may
// still cache the virtual disk: cold is cold for this kernel's page cache only.
//
// Validation: a 64-bit checksum per tensor, computed by the CPU over the bytes as they
// were written and by a GPU kernel over the loaded bytes; every tensor must match, after
// the first load and again after the last timed one (a slot recycled too early shows up
// as a changed checksum). The device buffer is poisoned (0xFF) first and guarded.
#pragma once
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "../common/gauntlet.h"
#include "../common/safetensors.h"

// What a loader gets: the open file, its parsed header, where each tensor goes.
typedef struct {
  int fd;                      // the checkpoint, opened O_RDONLY
  const GtlSafetensors *st;    // its header: tensors sorted by file offset
  unsigned char *d_arena;      // [st->data_len] device copy of the byte buffer
  cudaStream_t stream;         // the program's stream (a loader may use its own)
  int device;
  int slots, readers;          // ring loader settings (optimized only)
  size_t slot_bytes;
  void *state;                 // the loader's buffers, made once by load_setup
  char desc[160];              // load_setup: one line on how it loads, for the header
  char err[320];
} LoadJob;

// Each variant defines these: make its buffers (untimed), load every tensor of the file
// into d_arena (returns 0 once every byte is on the device or in flight to it; the
// driver synchronizes the device before stopping the clock), free its buffers.
void load_setup(LoadJob *j);
int load_file(LoadJob *j);
void load_teardown(LoadJob *j);

// ---- the checksum: h = Σ_i splitmix64(w_i ^ i·φ) mod 2^64 over the tensor's 8-byte
// little-endian words w_i (the last one zero-padded). A sum, so any block order gives
// the same value; each word mixed with its index, so swapped or shifted bytes change it.
GTL_HD uint64_t ck_word(uint64_t w, uint64_t i) {
  return gtl_splitmix64(w ^ (i * 0x9E3779B97F4A7C15ull));
}

// CPU: words [word0, word0 + ceil(bytes/8)) of a tensor held at p.
static uint64_t ck_host(const unsigned char *p, size_t bytes, uint64_t word0) {
  uint64_t h = 0, i = 0;
  for (; 8 * i + 8 <= bytes; i++) {
    uint64_t w;
    memcpy(&w, p + 8 * i, 8);
    h += ck_word(w, word0 + i);
  }
  if (8 * i < bytes) {
    uint64_t w = 0;
    memcpy(&w, p + 8 * i, bytes - 8 * i);
    h += ck_word(w, word0 + i);
  }
  return h;
}

// Strategy: grid-stride over 8-byte words, warp shuffle sum, one atomic per warp.
// Limiter: HBM read (4.45 GB in about 1 ms).
__global__ void ck_kernel(const unsigned char *__restrict__ p, uint64_t bytes,
                          unsigned long long *out) {
  const uint64_t n_words = (bytes + 7) / 8;
  const bool aligned = ((uintptr_t)p & 7) == 0;
  unsigned long long acc = 0;
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n_words;
       i += (uint64_t)gridDim.x * blockDim.x) {
    uint64_t w = 0;
    if (aligned && 8 * i + 8 <= bytes) {
      w = reinterpret_cast<const uint64_t *>(p)[i];
    } else {
      for (int b = 0; b < 8 && 8 * i + b < bytes; b++) w |= (uint64_t)p[8 * i + b] << (8 * b);
    }
    acc += ck_word(w, i);
  }
  for (int o = 16; o; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0) atomicAdd(out, acc);
}

// Device checksums of every tensor of st into h_sums[n_tensors] (file order).
static void ck_device(const GtlSafetensors *st, const unsigned char *d_arena,
                      unsigned long long *d_sums, uint64_t *h_sums, int sms, cudaStream_t s) {
  GTL_CUDA(cudaMemsetAsync(d_sums, 0, sizeof(unsigned long long) * st->n_tensors, s));
  for (size_t t = 0; t < st->n_tensors; t++) {
    const uint64_t bytes = st->tensors[t].end - st->tensors[t].begin;
    if (!bytes) continue;
    const uint64_t words = (bytes + 7) / 8, threads = 256;
    uint64_t blocks = (words + threads - 1) / threads;
    if (blocks > (uint64_t)sms * 8) blocks = (uint64_t)sms * 8;
    ck_kernel<<<(unsigned)blocks, (unsigned)threads, 0, s>>>(d_arena + st->tensors[t].begin,
                                                             bytes, d_sums + t);
    GTL_LAUNCH();
  }
  GTL_CUDA(cudaMemcpyAsync(h_sums, d_sums, sizeof(uint64_t) * st->n_tensors,
                           cudaMemcpyDeviceToHost, s));
  GTL_CUDA(cudaStreamSynchronize(s));
}

// ---- the synthetic checkpoint ------------------------------------------------------

#define CKPT_MAX_TENSORS 8192
typedef struct {
  int n;
  GtlStTensor t[CKPT_MAX_TENSORS];
  char names[CKPT_MAX_TENSORS][96];
  float lo[CKPT_MAX_TENSORS], hi[CKPT_MAX_TENSORS];  // value range of the seeded fill
  uint64_t sum[CKPT_MAX_TENSORS];                     // CPU checksum of the bytes written
} Checkpoint;

static void ckpt_add(Checkpoint *c, const char *name, GtlStDtype d, int ndim, uint64_t d0,
                     uint64_t d1, float lo, float hi) {
  const int i = c->n++;
  snprintf(c->names[i], sizeof c->names[i], "%s", name);
  memset(&c->t[i], 0, sizeof c->t[i]);
  c->t[i].name = c->names[i];
  c->t[i].dtype = d;
  c->t[i].ndim = ndim;
  c->t[i].shape[0] = d0;
  c->t[i].shape[1] = d1;
  c->lo[i] = lo;
  c->hi[i] = hi;
}

// gptoss20b shapes: D 2880, 64 q / 8 kv heads × 64, expert FFN 2880, vocab 201088.
static void ckpt_plan(Checkpoint *c, int64_t layers, int64_t experts, int embed) {
  const uint64_t D = 2880, F = 2880, Q = 64 * 64, KV = 8 * 64, V = 201088;
  char nm[96];
  c->n = 0;
  if (embed) ckpt_add(c, "model.embed_tokens.weight", GTL_ST_BF16, 2, V, D, -1, 1);
  for (int64_t l = 0; l < layers; l++) {
#define L(s) (snprintf(nm, sizeof nm, "model.layers.%lld.%s", (long long)l, s), nm)
    ckpt_add(c, L("input_layernorm.weight"), GTL_ST_BF16, 1, D, 0, 0.5f, 1.5f);
    ckpt_add(c, L("self_attn.q_proj.weight"), GTL_ST_BF16, 2, Q, D, -1, 1);
    ckpt_add(c, L("self_attn.k_proj.weight"), GTL_ST_BF16, 2, KV, D, -1, 1);
    ckpt_add(c, L("self_attn.v_proj.weight"), GTL_ST_BF16, 2, KV, D, -1, 1);
    ckpt_add(c, L("self_attn.o_proj.weight"), GTL_ST_BF16, 2, D, Q, -1, 1);
    ckpt_add(c, L("post_attention_layernorm.weight"), GTL_ST_BF16, 1, D, 0, 0.5f, 1.5f);
    ckpt_add(c, L("mlp.gate.weight"), GTL_ST_F32, 2, (uint64_t)experts, D, -1, 1);
#undef L
    for (int64_t e = 0; e < experts; e++) {
      static const char *proj[3] = {"gate_proj", "up_proj", "down_proj"};
      for (int k = 0; k < 3; k++) {
        snprintf(nm, sizeof nm, "model.layers.%lld.mlp.experts.%lld.%s.weight", (long long)l,
                 (long long)e, proj[k]);
        ckpt_add(c, nm, GTL_ST_BF16, 2, k < 2 ? F : D, k < 2 ? D : F, -1, 1);
      }
    }
  }
  if (embed) ckpt_add(c, "model.norm.weight", GTL_ST_BF16, 1, D, 0, 0.5f, 1.5f);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int write_full(int fd, const void *p, size_t n) {
  for (size_t got = 0; got < n;) {
    ssize_t w = write(fd, (const char *)p + got, n - got);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    got += (size_t)w;
  }
  return 0;
}

// The scratch checkpoint: its path, whether this process created it (only then is it
// removed at exit or on a signal), and --keep.
static char g_ckpt_path[4096];
static volatile sig_atomic_t g_ckpt_owned;
static int g_ckpt_keep;

// Write c to path: header, then each tensor filled on the device with its own seed,
// brought back through a pinned buffer in 64 MB pieces, checksummed on the CPU, written.
// fdatasync at the end: the pages must be clean for POSIX_FADV_DONTNEED to drop them.
// Returns the seconds it took; exits 3 on I/O errors.
static double ckpt_write(Checkpoint *c, const char *path, uint64_t seed, cudaStream_t s) {
  char err[320];
  size_t hlen;
  const char *meta[] = {"format", "pt", "generator", "moe-gauntlet ch05 (seeded synthetic)"};
  unsigned char *h = gtl_st_header_build(c->t, (size_t)c->n, meta, 2, &hlen, err, sizeof err);
  if (!h) {
    fprintf(stderr, "ch05: header: %s\n", err);
    exit(GTL_EXIT_RUNTIME);
  }
  uint64_t max_bytes = 0;
  for (int i = 0; i < c->n; i++)
    max_bytes = c->t[i].end - c->t[i].begin > max_bytes ? c->t[i].end - c->t[i].begin : max_bytes;
  const size_t piece = (size_t)64 << 20;
  unsigned char *d_tmp = (unsigned char *)gtl_malloc(max_bytes, "checkpoint writer scratch");
  unsigned char *h_pin = (unsigned char *)gtl_malloc_pinned(piece, "checkpoint writer piece");
  const double t0 = now_s();
  int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0644);  // never over a file already there
  if (fd >= 0 && path == g_ckpt_path) g_ckpt_owned = 1;     // ours now: removed on every exit
  if (fd < 0 || write_full(fd, h, hlen) != 0) {
    fprintf(stderr, "ch05: cannot write %s: %s\n", path, strerror(errno));
    exit(GTL_EXIT_RUNTIME);
  }
  for (int i = 0; i < c->n; i++) {
    const uint64_t bytes = c->t[i].end - c->t[i].begin;
    const GtlDtype dt = c->t[i].dtype == GTL_ST_F32 ? GTL_FP32 : GTL_BF16;
    gtl_fill_uniform(d_tmp, dt, gtl_st_numel(&c->t[i]), gtl_splitmix64(seed ^ (uint64_t)(i + 1)),
                     c->lo[i], c->hi[i], s);
    c->sum[i] = 0;
    for (uint64_t o = 0; o < bytes; o += piece) {
      const size_t n = (size_t)(bytes - o < piece ? bytes - o : piece);
      GTL_CUDA(cudaMemcpyAsync(h_pin, d_tmp + o, n, cudaMemcpyDeviceToHost, s));
      GTL_CUDA(cudaStreamSynchronize(s));
      c->sum[i] += ck_host(h_pin, n, o / 8);
      if (write_full(fd, h_pin, n) != 0) {
        fprintf(stderr, "ch05: write to %s failed: %s\n", path, strerror(errno));
        exit(GTL_EXIT_RUNTIME);
      }
    }
  }
  if (fdatasync(fd) != 0 || close(fd) != 0) {
    fprintf(stderr, "ch05: fdatasync/close of %s failed: %s\n", path, strerror(errno));
    exit(GTL_EXIT_RUNTIME);
  }
  const double dt = now_s() - t0;
  GTL_CUDA(cudaFree(d_tmp));
  GTL_CUDA(cudaFreeHost(h_pin));
  free(h);
  return dt;
}

// Percent of the file's pages in the page cache (mincore on a read-only mapping);
// NaN when the kernel will not say.
static double ckpt_resident_pct(int fd, uint64_t size) {
  const long pg = sysconf(_SC_PAGESIZE);
  void *m = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) return NAN;
  const size_t pages = (size_t)((size + pg - 1) / pg);
  unsigned char *v = (unsigned char *)malloc(pages);
  double pct = NAN;
  if (v && mincore(m, (size_t)size, v) == 0) {
    size_t in = 0;
    for (size_t i = 0; i < pages; i++) in += v[i] & 1;
    pct = 100.0 * in / pages;
  }
  free(v);
  munmap(m, (size_t)size);
  return pct;
}

static void ckpt_cleanup(void) {  // atexit: also on exit(3) from a failed CUDA call
  if (g_ckpt_owned && !g_ckpt_keep) unlink(g_ckpt_path);
}
// SIGINT / SIGTERM / SIGHUP (Ctrl-C mid-write, a killed job): atexit handlers do not run
// on a signal, so remove the file here (unlink is async-signal-safe), then die by the same
// signal so the caller still sees how the program ended.
static void ckpt_on_signal(int sig) {
  if (g_ckpt_owned && !g_ckpt_keep) unlink(g_ckpt_path);
  signal(sig, SIG_DFL);
  raise(sig);
}
static void ckpt_install_cleanup(void) {
  atexit(ckpt_cleanup);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = ckpt_on_signal;
  sigemptyset(&sa.sa_mask);
  const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
  for (int i = 0; i < 3; i++) sigaction(sigs[i], &sa, NULL);
}

// Validate: device checksum of every tensor equals the CPU's. Fills e; returns pass.
static int ckpt_validate(const Checkpoint *c, const GtlSafetensors *st, LoadJob *j,
                         unsigned long long *d_sums, uint64_t *h_sums, int sms, GtlErr *e) {
  ck_device(st, j->d_arena, d_sums, h_sums, sms, j->stream);
  memset(e, 0, sizeof *e);
  for (int i = 0; i < c->n; i++) {
    const GtlStTensor *t = gtl_st_find(st, c->t[i].name);
    const size_t k = t ? (size_t)(t - st->tensors) : 0;
    if (t && h_sums[k] == c->sum[i] && t->begin == c->t[i].begin && t->end == c->t[i].end)
      continue;
    if (!e->n_bad) {
      fprintf(stderr, "ch05: tensor %s: %s\n", c->t[i].name,
              t ? "device checksum differs from the bytes written" : "missing from the header");
      e->worst = (size_t)i;
    }
    e->n_bad++;
  }
  e->rel_l2 = c->n ? (double)e->n_bad / c->n : 0;  // here: the fraction of bad tensors
  e->max_abs = NAN;
  e->worst_out = e->worst_ref = NAN;
  e->tol_rel_l2 = 0;
  e->pass = e->n_bad == 0 && st->n_tensors == (size_t)c->n;
  return e->pass;
}

// One timed load: wall clock from the first read to the device synchronized.
static double ckpt_load_ms(LoadJob *j) {
  const double t0 = now_s();
  if (load_file(j) != 0) {
    fprintf(stderr, "ch05: load failed: %s\n", j->err);
    exit(GTL_EXIT_RUNTIME);
  }
  GTL_CUDA(cudaDeviceSynchronize());
  return (now_s() - t0) * 1e3;
}

static int ckpt_drop_cache(int fd) { return posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED); }

// main() of both variants.
static int load_main(int argc, char **argv, const char *variant, const char *strategy) {
  int64_t layers = INT64_MIN, experts = INT64_MIN, cold = 2, slots = 8, slot_mb = 32, readers = 4;
  const char *tmpdir = getenv("TMPDIR");
  const char *dir = tmpdir && *tmpdir ? tmpdir : "/tmp";
  int keep = 0;
  GtlOpt opts[] = {
      {"layers", GTL_OPT_INT, &layers, "transformer layers in the file (default by --size)"},
      {"experts", GTL_OPT_INT, &experts, "experts per layer (default by --size)"},
      {"dir", GTL_OPT_STR, &dir, "folder for the checkpoint file (default $TMPDIR, else /tmp)"},
      {"keep", GTL_OPT_FLAG, &keep, "keep the checkpoint file at exit"},
      {"cold", GTL_OPT_INT, &cold, "cold-cache loads after the warm ones (default 2; 0: none)"},
      {"slots", GTL_OPT_INT, &slots, "ring slots, optimized only (default 8)"},
      {"slot_mb", GTL_OPT_INT, &slot_mb, "ring slot size in MiB, optimized only (default 32)"},
      {"readers", GTL_OPT_INT, &readers, "ring reader threads, optimized only (default 4)"}};
  GtlCtx ctx;
  gtl_begin(&ctx, "ch05", variant, argc, argv, opts, 8, 1, 5, GTL_L2_WARM);
  const int small = ctx.args.size == GTL_SIZE_SMALL, large = ctx.args.size == GTL_SIZE_LARGE;
  if (layers == INT64_MIN) layers = small ? 1 : large ? 6 : 2;
  if (experts == INT64_MIN) experts = small ? 4 : 32;
  const int embed = !small;
  if (layers < 1 || layers > 1000 || experts < 1 || experts > 1000 ||
      2 + layers * (7 + 3 * experts) > CKPT_MAX_TENSORS || cold < 0 || cold > 100 ||
      slots < 1 || slots > 16 || slot_mb < 1 || slot_mb > 1024 || readers < 1 ||
      readers > slots || readers > 8) {
    fprintf(stderr, "ch05: need 1 <= layers, experts <= 1000 (at most %d tensors), "
                    "0 <= cold <= 100, 1 <= readers <= 8, readers <= slots <= 16, "
                    "1 <= slot_mb <= 1024\n",
            CKPT_MAX_TENSORS);
    return GTL_EXIT_USAGE;
  }
  g_ckpt_keep = keep;

  static Checkpoint c;  // large: keep it off the stack
  ckpt_plan(&c, layers, experts, embed);
  uint64_t data = 0;
  for (int i = 0; i < c.n; i++) data += gtl_st_numel(&c.t[i]) * gtl_st_dtype_size(c.t[i].dtype);
  struct statvfs vfs;
  if (statvfs(dir, &vfs) != 0) {
    fprintf(stderr, "ch05: --dir=%s: %s\n", dir, strerror(errno));
    return GTL_EXIT_USAGE;
  }
  const double free_b = (double)vfs.f_bavail * vfs.f_frsize;
  if (free_b < data + (64 << 20)) {
    fprintf(stderr, "ch05: %s has %.2f GB free, the checkpoint needs %.2f GB\n", dir,
            free_b / 1e9, data / 1e9);
    return GTL_EXIT_RUNTIME;
  }
  snprintf(g_ckpt_path, sizeof g_ckpt_path, "%s/gauntlet_ch05_%s_%d.safetensors", dir, variant,
           (int)getpid());
  ckpt_install_cleanup();
  char workload[128];
  snprintf(workload, sizeof workload, "L%lld_E%lld%s_%.2fGB", (long long)layers,
           (long long)experts, embed ? "_embed" : "", data / 1e9);

  // Write the file, then parse it back: the loader works from the header it reads.
  gtl_phase_push(GTL_PHASE_SETUP);
  const double write_s = ckpt_write(&c, g_ckpt_path, ctx.args.seed, ctx.stream);
  GtlSafetensors st;
  char err[512];
  if (gtl_st_open(g_ckpt_path, &st, err, sizeof err) != 0) {
    fprintf(stderr, "ch05: %s\n", err);
    return GTL_EXIT_RUNTIME;
  }
  LoadJob j;
  memset(&j, 0, sizeof j);
  j.fd = open(g_ckpt_path, O_RDONLY);
  if (j.fd < 0) {
    fprintf(stderr, "ch05: cannot open %s: %s\n", g_ckpt_path, strerror(errno));
    return GTL_EXIT_RUNTIME;
  }
  j.st = &st;
  j.stream = ctx.stream;
  j.device = ctx.args.device;
  j.slots = (int)slots;
  j.readers = (int)readers;
  j.slot_bytes = (size_t)slot_mb << 20;
  GtlGuarded g_arena;
  j.d_arena = (unsigned char *)gtl_guarded_alloc(&g_arena, st.data_len, "checkpoint arena");
  unsigned long long *d_sums =
      (unsigned long long *)gtl_malloc(sizeof(unsigned long long) * st.n_tensors, "checksums");
  uint64_t *h_sums = (uint64_t *)malloc(sizeof(uint64_t) * st.n_tensors);
  const double setup_t0 = now_s();
  load_setup(&j);
  const double setup_ms = (now_s() - setup_t0) * 1e3;
  // Does dropping the file from the page cache work here? Probe once, before any load.
  const double res_written = ckpt_resident_pct(j.fd, st.data_offset + st.data_len);
  const int fadv_rc = ckpt_drop_cache(j.fd);
  const double res_dropped = ckpt_resident_pct(j.fd, st.data_offset + st.data_len);
  const int fadv_ok = fadv_rc == 0 && res_dropped == res_dropped && res_dropped < 5.0;
  gtl_phase_pop();

  char notes[6144];
  snprintf(notes, sizeof notes,
           "loader: %s; %s (setup %.1f ms, untimed)\n"
           "file: %s, %.2f GB, %zu tensors, header %llu B; seeded, written and "
           "fdatasync'd in %.1f s\n"
           "roofline: %.2f GB per load, 0 flops; bound by min(read path, pinned H2D)\n"
           "timing: wall clock around each whole load, ended by cudaDeviceSynchronize (not "
           "events: most of a load is host work no stream sees)\n"
           "warm (headline): file in the page cache; cold: posix_fadvise(DONTNEED) before "
           "each of %lld loads\n"
           "page cache: %.1f%% of the file resident after writing, %.1f%% after "
           "posix_fadvise(DONTNEED) -> cold %s\n"
           "L2 policy irrelevant: the load streams %.2f GB through L2 at PCIe speed",
           strategy, j.desc, setup_ms, g_ckpt_path, (st.data_offset + st.data_len) / 1e9,
           st.n_tensors,
           (unsigned long long)st.header_len, write_s, st.data_len / 1e9,
           (long long)cold, res_written, res_dropped,
           fadv_ok ? "took effect" : "did NOT take effect (cold numbers are warm-ish)",
           st.data_len / 1e9);
  gtl_report_header(&ctx, workload, notes);

  GtlResult r;
  gtl_result_init(&r, &ctx, "bf16", workload);  // bf16 weights, fp32 routers
  r.bytes = (double)st.data_len;
  r.flops = 0;
  r.bound = GTL_BOUND_H2D;
  r.ref = "cpu_checksum";

  if (ctx.args.verify) {
    gtl_phase_push(GTL_PHASE_VALIDATE);
    gtl_poison(j.d_arena, st.data_len, ctx.stream);
    GTL_CUDA(cudaStreamSynchronize(ctx.stream));
    ckpt_load_ms(&j);
    ckpt_validate(&c, &st, &j, d_sums, h_sums, ctx.dev.sms, &r.err);
    if (gtl_guarded_check(&g_arena)) {
      fprintf(stderr, "ch05: guard bytes around the arena were overwritten\n");
      r.err.pass = 0;
    }
    r.validated = 1;
    gtl_phase_pop();
    if (!r.err.pass) {
      gtl_report_row(&ctx, &r);
      return gtl_report_finish(&ctx, &r);  // never time a wrong loader
    }
  }

  // Warm: the validated load (or one warm-up) has put the whole file in the page cache.
  const int it = ctx.args.iters;
  float *ms = (float *)malloc(sizeof(float) * (size_t)(it + cold + 1));
  gtl_phase_push(GTL_PHASE_WARMUP);
  if (!ctx.args.verify && ctx.args.warmup == 0) ckpt_load_ms(&j);  // warm the page cache
  for (int i = 0; i < ctx.args.warmup; i++) ckpt_load_ms(&j);
  gtl_phase_pop();
  const double res_warm = ckpt_resident_pct(j.fd, st.data_offset + st.data_len);
  gtl_phase_push(GTL_PHASE_TIMED);
  for (int i = 0; i < it; i++) ms[i] = (float)ckpt_load_ms(&j);
  gtl_phase_pop();
  if (gtl_stats_compute(ms, it, &r.st) != 0) return GTL_EXIT_RUNTIME;

  GtlResult rc_cold = r;
  rc_cold.st.n = 0;
  char cold_label[40];
  snprintf(cold_label, sizeof cold_label, "%s.cold", variant);
  rc_cold.variant = cold_label;
  double res_cold = NAN;
  for (int i = 0; i < cold; i++) {
    ckpt_drop_cache(j.fd);
    if (i == 0) res_cold = ckpt_resident_pct(j.fd, st.data_offset + st.data_len);
    ms[i] = (float)ckpt_load_ms(&j);
  }
  if (cold && gtl_stats_compute(ms, (int)cold, &rc_cold.st) != 0) return GTL_EXIT_RUNTIME;

  if (ctx.args.verify) {  // again, after the last timed load
    GtlErr e2;
    if (!ckpt_validate(&c, &st, &j, d_sums, h_sums, ctx.dev.sms, &e2)) {
      fprintf(stderr, "ch05: the last timed load differs from the file\n");
      r.err = e2;
    }
  }
  gtl_result_extra(&r, "cold_gbps", cold ? gtl_result_gbps(&rc_cold) : NAN);
  gtl_result_extra(&r, "cold_median_ms", cold ? rc_cold.st.median : NAN);
  gtl_result_extra(&r, "cold_resident_pct", res_cold);
  gtl_result_extra(&r, "fadvise_took_effect", fadv_ok);
  gtl_result_extra(&r, "warm_resident_pct", res_warm);
  gtl_result_extra(&r, "write_gbps", data / 1e9 / write_s);
  gtl_result_extra(&r, "tensors", (double)st.n_tensors);
  if (!ctx.args.json)
    printf("# page cache before the warm loads: %.1f%% resident; before the first cold load: "
           "%.1f%%\n",
           res_warm, res_cold);
  gtl_report_row(&ctx, &r);
  if (cold) gtl_report_row(&ctx, &rc_cold);
  const int rc = gtl_report_finish(&ctx, &r);

  free(ms);
  free(h_sums);
  load_teardown(&j);
  close(j.fd);
  GTL_CUDA(cudaFree(d_sums));
  gtl_guarded_free(&g_arena);
  gtl_st_free(&st);
  gtl_end(&ctx);
  return rc;
}
