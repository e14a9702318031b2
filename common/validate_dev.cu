// validate_dev.cu — poison and guard bands on the device (see validate.h).
#include <stdlib.h>

#include "gauntlet.h"

void gtl_poison(void *d, size_t bytes, cudaStream_t s) {
  GTL_CUDA(cudaMemsetAsync(d, 0xFF, bytes, s));
}

void *gtl_guarded_alloc(GtlGuarded *g, size_t bytes, const char *what) {
  g->bytes = bytes;
  g->base = (unsigned char *)gtl_malloc(bytes + 2 * GTL_GUARD_BYTES, what);
  g->ptr = g->base + GTL_GUARD_BYTES;
  GTL_CUDA(cudaMemset(g->base, GTL_GUARD_BYTE, GTL_GUARD_BYTES));
  GTL_CUDA(cudaMemset(g->base + GTL_GUARD_BYTES + bytes, GTL_GUARD_BYTE, GTL_GUARD_BYTES));
  return g->ptr;
}

size_t gtl_guarded_check(const GtlGuarded *g) {
  unsigned char band[2 * GTL_GUARD_BYTES];
  GTL_CUDA(cudaDeviceSynchronize());
  GTL_CUDA(cudaMemcpy(band, g->base, GTL_GUARD_BYTES, cudaMemcpyDeviceToHost));
  GTL_CUDA(cudaMemcpy(band + GTL_GUARD_BYTES, g->base + GTL_GUARD_BYTES + g->bytes,
                      GTL_GUARD_BYTES, cudaMemcpyDeviceToHost));
  return gtl_guard_count_bad(band, sizeof band);
}

void gtl_guarded_free(GtlGuarded *g) {
  if (g->base) GTL_CUDA(cudaFree(g->base));
  g->base = NULL;
  g->ptr = NULL;
}
