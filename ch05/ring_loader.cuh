// ring_loader.cuh — a pipelined file → GPU loader through a ring of pinned host slots.
// Used by ch05/optimized.cu and by the lab's checkpoint loader (labs/moe).
//
// Reader thread(s) pread() consecutive chunks of the file into pinned slots; the calling
// thread issues one cudaMemcpyAsync per filled slot and records an event behind it; a
// reader reuses a slot only after that event has completed. So the disk (or page-cache
// memcpy) of chunk k+1… overlaps the DMA of chunk k, and every copy is a pinned DMA at
// PCIe rate (ch03). Steady state runs at min(read rate, H2D rate) instead of their
// serial sum.
//
//   file:     [ seg 0 ][ seg 1 ][ seg 2 ] …     (segments merged when contiguous in the
//   chunks:   [ c0 ][ c1 ][ c2 ][ c3 ] …         file and on the device, then cut into
//   slots:      0     1     2     3   0 …       chunks of at most slot_bytes)
//
//   reader:  wait until chunk k−n_slots was issued → cudaEventSynchronize(ev[slot])
//            → pread chunk k into slot → mark the slot ready for chunk k
//   caller:  wait until slot ready for chunk k → cudaMemcpyAsync → cudaEventRecord(ev[slot])
//            → issued = k + 1
//
// With n_readers > 1, reader r takes chunks k ≡ r (mod n_readers): page-cache reads are a
// CPU memcpy, and one thread rarely reaches the H2D rate. State is guarded by one mutex
// and one condition variable; the reader threads call CUDA only for
// cudaEventSynchronize (after cudaSetDevice). Pure pthreads + CUDA runtime.
#pragma once
#include <cuda_runtime.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/gauntlet.h"

#define RING_MAX_SLOTS 16
#define RING_MAX_READERS 8

// Bytes [file_off, file_off + bytes) of the file go to d_dst on the device.
typedef struct {
  uint64_t file_off, bytes;
  void *d_dst;
} RingSegment;

typedef struct {
  int n_slots, n_readers, device;
  size_t slot_bytes;
  unsigned char *h_ring;            // n_slots · slot_bytes, pinned
  cudaEvent_t ev[RING_MAX_SLOTS];   // the copy out of each slot
  // one load's state, guarded by mu
  pthread_mutex_t mu;
  pthread_cond_t cv;
  RingSegment *chunk;               // the plan: chunks of at most slot_bytes
  int64_t n_chunks, issued;         // chunks whose copy has been enqueued
  int64_t ready[RING_MAX_SLOTS];    // chunk each slot holds, -1 while being filled
  int fd, failed;
  char err[256];
} RingLoader;

typedef struct {
  RingLoader *r;
  int id;
} RingReaderArg;

/** Allocate n_slots (1..16) pinned slots of slot_bytes each and their events;
 *  n_readers (1..8) reader threads per load. Exits 3 on CUDA errors (out of pinned
 *  memory with the size asked), 2 on bad arguments. */
static void ring_loader_init(RingLoader *r, int n_slots, size_t slot_bytes, int n_readers,
                             int device) {
  if (n_slots < 1 || n_slots > RING_MAX_SLOTS || n_readers < 1 ||
      n_readers > RING_MAX_READERS || n_readers > n_slots || slot_bytes < 4096) {
    fprintf(stderr, "ring_loader: need 1 <= readers <= slots <= %d, slot >= 4 KiB\n",
            RING_MAX_SLOTS);
    exit(GTL_EXIT_USAGE);
  }
  memset(r, 0, sizeof *r);
  r->n_slots = n_slots;
  r->n_readers = n_readers;
  r->slot_bytes = slot_bytes;
  r->device = device;
  r->h_ring = (unsigned char *)gtl_malloc_pinned((size_t)n_slots * slot_bytes,
                                                 "ring loader pinned slots");
  // Touch every page once so the first load does not pay for first-touch faults.
  memset(r->h_ring, 0, (size_t)n_slots * slot_bytes);
  for (int i = 0; i < n_slots; i++)
    GTL_CUDA(cudaEventCreateWithFlags(&r->ev[i], cudaEventDisableTiming));
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
}

static void ring_loader_destroy(RingLoader *r) {
  for (int i = 0; i < r->n_slots; i++) GTL_CUDA(cudaEventDestroy(r->ev[i]));
  GTL_CUDA(cudaFreeHost(r->h_ring));
  pthread_mutex_destroy(&r->mu);
  pthread_cond_destroy(&r->cv);
  free(r->chunk);
  r->chunk = NULL;
}

static void ring_fail(RingLoader *r, const char *what, int e) {
  pthread_mutex_lock(&r->mu);
  if (!r->failed) snprintf(r->err, sizeof r->err, "%s: %s", what, e ? strerror(e) : "short file");
  r->failed = 1;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

static void *ring_reader(void *argp) {
  RingReaderArg *a = (RingReaderArg *)argp;
  RingLoader *r = a->r;
  if (cudaSetDevice(r->device) != cudaSuccess) {
    ring_fail(r, "reader thread: cudaSetDevice", 0);
    return NULL;
  }
  for (int64_t k = a->id; k < r->n_chunks; k += r->n_readers) {
    const int slot = (int)(k % r->n_slots);
    pthread_mutex_lock(&r->mu);
    while (r->issued < k - r->n_slots + 1 && !r->failed) pthread_cond_wait(&r->cv, &r->mu);
    const int stop = r->failed;
    pthread_mutex_unlock(&r->mu);
    if (stop) return NULL;
    // The copy out of this slot (chunk k − n_slots) was enqueued; wait until it is done.
    cudaError_t ce = cudaEventSynchronize(r->ev[slot]);
    if (ce != cudaSuccess) {
      ring_fail(r, cudaGetErrorName(ce), 0);
      return NULL;
    }
    unsigned char *dst = r->h_ring + (size_t)slot * r->slot_bytes;
    const RingSegment *c = &r->chunk[k];
    for (uint64_t got = 0; got < c->bytes;) {
      ssize_t n = pread(r->fd, dst + got, (size_t)(c->bytes - got), (off_t)(c->file_off + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        ring_fail(r, "pread", n < 0 ? errno : 0);
        return NULL;
      }
      got += (uint64_t)n;
    }
    pthread_mutex_lock(&r->mu);
    r->ready[slot] = k;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
  }
  return NULL;
}

/** Load n segments of the open file fd to the device through the ring, copies on
 *  stream s. Returns 0 when every byte is on the device (s synchronized), or -1 with the
 *  reason (read error, short file) in err; the ring is reusable either way. */
static int ring_loader_load(RingLoader *r, int fd, const RingSegment *segs, size_t n,
                            cudaStream_t s, char *err, size_t errlen) {
  // Plan: merge neighbours that are contiguous in the file and on the device, then cut
  // into chunks of at most slot_bytes.
  int64_t cap = 0;
  for (size_t i = 0; i < n; i++)
    cap += (int64_t)((segs[i].bytes + r->slot_bytes - 1) / r->slot_bytes) + 1;
  free(r->chunk);
  r->chunk = (RingSegment *)malloc(sizeof(RingSegment) * (size_t)(cap ? cap : 1));
  if (!r->chunk) {
    snprintf(err, errlen, "ring_loader: out of host memory for the plan");
    return -1;
  }
  r->n_chunks = 0;
  for (size_t i = 0; i < n;) {
    RingSegment m = segs[i++];
    while (i < n && segs[i].file_off == m.file_off + m.bytes &&
           (unsigned char *)segs[i].d_dst == (unsigned char *)m.d_dst + m.bytes)
      m.bytes += segs[i++].bytes;
    for (uint64_t o = 0; o < m.bytes; o += r->slot_bytes) {
      RingSegment c = {m.file_off + o, m.bytes - o < r->slot_bytes ? m.bytes - o : r->slot_bytes,
                       (unsigned char *)m.d_dst + o};
      r->chunk[r->n_chunks++] = c;
    }
  }
  r->fd = fd;
  r->issued = 0;
  r->failed = 0;
  r->err[0] = '\0';
  for (int i = 0; i < r->n_slots; i++) r->ready[i] = -1;

  pthread_t th[RING_MAX_READERS];
  RingReaderArg args[RING_MAX_READERS];
  int started = 0;
  for (int i = 0; i < r->n_readers; i++) {
    args[i].r = r;
    args[i].id = i;
    if (pthread_create(&th[i], NULL, ring_reader, &args[i]) != 0) {
      ring_fail(r, "pthread_create", errno);
      break;
    }
    started++;
  }
  for (int64_t k = 0; k < r->n_chunks; k++) {
    const int slot = (int)(k % r->n_slots);
    pthread_mutex_lock(&r->mu);
    while (r->ready[slot] != k && !r->failed) pthread_cond_wait(&r->cv, &r->mu);
    const int stop = r->failed;
    pthread_mutex_unlock(&r->mu);
    if (stop) break;
    GTL_CUDA(cudaMemcpyAsync(r->chunk[k].d_dst, r->h_ring + (size_t)slot * r->slot_bytes,
                             r->chunk[k].bytes, cudaMemcpyHostToDevice, s));
    GTL_CUDA(cudaEventRecord(r->ev[slot], s));
    pthread_mutex_lock(&r->mu);
    r->ready[slot] = -1;
    r->issued = k + 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
  }
  for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
  GTL_CUDA(cudaStreamSynchronize(s));
  if (r->failed) {
    snprintf(err, errlen, "ring_loader: %s", r->err);
    return -1;
  }
  return 0;
}
