// checksum.cuh — ch05's validation checksum: ck_word (one 8-byte word mixed with its
// index), ck_host (the CPU's sum over a tensor's bytes as written), ck_kernel and
// ck_device (the GPU's sum over every loaded tensor). Used by checkpoint.cuh's driver.
#pragma once
#include <stdint.h>
#include <string.h>

#include "../common/gauntlet.h"
#include "../common/safetensors.h"

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
