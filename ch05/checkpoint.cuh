// checkpoint.cuh — ch05's problem and driver (checksum.cuh, synth_ckpt.cuh: its parts), shared
// by baseline.cu and optimized.cu so that the two files differ only in their loader.
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

#include "checksum.cuh"    // ck_host, ck_device: the per-tensor checksum, CPU and GPU
#include "synth_ckpt.cuh"  // Checkpoint, ckpt_plan/ckpt_write: the seeded file; cleanup

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
