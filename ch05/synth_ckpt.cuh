// synth_ckpt.cuh — ch05's synthetic checkpoint: its tensor plan (Hugging Face MoE names,
// gptoss20b shapes), ckpt_write (seeded tensors made on the GPU, written through a pinned
// buffer, checksummed on the CPU, fdatasync'ed), the page-cache residency probe
// (ckpt_resident_pct) and the scratch file's removal at exit and on SIGINT/SIGTERM/SIGHUP.
#pragma once
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../common/gauntlet.h"
#include "../common/safetensors.h"
#include "checksum.cuh"

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
