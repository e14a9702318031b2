// host_threads.h — ch04's host-side parallel for: a range split over a few pthreads, for the
// host-staged sum (host_staged.cuh) and the reference (check.cuh). Host C only.
#pragma once
#include <pthread.h>
#include <stddef.h>
#include <unistd.h>

#define AR_MAX_THREADS 16  // host threads for the host-staged sum and the reference

typedef void (*ArRangeFn)(void *arg, size_t lo, size_t hi);
typedef struct {
  ArRangeFn fn;
  void *arg;
  size_t lo, hi;
} ArSlice;

static void *ar_slice_main(void *p) {
  ArSlice *s = (ArSlice *)p;
  s->fn(s->arg, s->lo, s->hi);
  return NULL;
}

// fn over [0, n) split across up to AR_MAX_THREADS host threads, at least min_per_thread
// items each (a small range runs on the calling thread alone: a thread start costs ~20 µs).
static void ar_parallel_for(size_t n, size_t min_per_thread, ArRangeFn fn, void *arg) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  size_t threads = n / (min_per_thread ? min_per_thread : 1);
  if (threads > AR_MAX_THREADS) threads = AR_MAX_THREADS;
  if (cpus > 0 && threads > (size_t)cpus) threads = (size_t)cpus;
  if (threads < 1) threads = 1;
  const size_t chunk = ((n + threads - 1) / threads + 7) & ~(size_t)7;
  ArSlice slice[AR_MAX_THREADS];
  pthread_t tid[AR_MAX_THREADS];
  int started[AR_MAX_THREADS] = {0};
  for (size_t i = 0; i < threads; i++) {
    size_t lo = i * chunk < n ? i * chunk : n, hi = lo + chunk < n ? lo + chunk : n;
    slice[i].fn = fn;
    slice[i].arg = arg;
    slice[i].lo = lo;
    slice[i].hi = hi;
    if (i > 0) started[i] = pthread_create(&tid[i], NULL, ar_slice_main, &slice[i]) == 0;
  }
  for (size_t i = 0; i < threads; i++)  // slice 0, and any thread that failed to start
    if (i == 0 || !started[i]) ar_slice_main(&slice[i]);
  for (size_t i = 1; i < threads; i++)
    if (started[i]) pthread_join(tid[i], NULL);
}
