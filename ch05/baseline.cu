// ch05 storage and I/O — baseline: read() + cudaMemcpy, one tensor at a time.
//
// What it shows: the loader most of us write first. For each tensor of the safetensors
// file, in file order: pread() its bytes into one reused malloc'd buffer, then
// cudaMemcpy them to the tensor's place on the device. Nothing overlaps. The read is a
// CPU memcpy out of the page cache (warm) or a wait on the disk (cold); the cudaMemcpy
// from pageable memory is another CPU memcpy into the driver's pinned staging buffers
// plus the DMA (ch03). The load time is the SUM of the read path and the copy path, and
// the GPU's copy engine idles while the file is read, the disk while the GPU copies.
//
// Build and run:   make ch05 && ./ch05/baseline          (pair: scripts/pair.sh ch05)
//                  ./ch05/baseline --size=small --dir=/mnt/nvme --keep
// Nsight Systems:  nsys profile -t cuda,nvtx,osrt -o ch05_baseline ./ch05/baseline --iters=2
//   in range ch05.baseline.timed: pread (OS runtime row) and Memcpy HtoD (Pageable)
//   alternate on one thread, never at the same time; the copy engine row has gaps.
// Nsight Compute:  nothing to see (the only kernel is the validation checksum).
// Book: storage and I/O — overlapping disk reads with host-to-device copies.
#include "checkpoint.cuh"

typedef struct {
  unsigned char *h_buf;  // one tensor's bytes, reused
  size_t bytes;
} SerialLoader;

void load_setup(LoadJob *j) {
  SerialLoader *s = (SerialLoader *)calloc(1, sizeof *s);
  for (size_t t = 0; t < j->st->n_tensors; t++) {
    const size_t b = (size_t)(j->st->tensors[t].end - j->st->tensors[t].begin);
    s->bytes = b > s->bytes ? b : s->bytes;
  }
  s->h_buf = (unsigned char *)malloc(s->bytes ? s->bytes : 1);
  if (!s->h_buf) {
    fprintf(stderr, "ch05: out of host memory for a %zu-byte read buffer\n", s->bytes);
    exit(GTL_EXIT_RUNTIME);
  }
  memset(s->h_buf, 0, s->bytes);  // fault the pages in once, outside the timing
  snprintf(j->desc, sizeof j->desc, "one %.1f MB pageable buffer (the largest tensor)",
           s->bytes / 1e6);
  j->state = s;
}

// Strategy: per tensor, pread into a pageable buffer, then a synchronous cudaMemcpy.
// Limiter: read time + pageable copy time, serialized.
int load_file(LoadJob *j) {
  SerialLoader *s = (SerialLoader *)j->state;
  for (size_t t = 0; t < j->st->n_tensors; t++) {
    const GtlStTensor *x = &j->st->tensors[t];
    const size_t bytes = (size_t)(x->end - x->begin);
    const off_t at = (off_t)(j->st->data_offset + x->begin);
    for (size_t got = 0; got < bytes;) {
      ssize_t n = pread(j->fd, s->h_buf + got, bytes - got, at + (off_t)got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        snprintf(j->err, sizeof j->err, "pread of %s: %s", x->name,
                 n < 0 ? strerror(errno) : "short file");
        return -1;
      }
      got += (size_t)n;
    }
    GTL_CUDA(cudaMemcpy(j->d_arena + x->begin, s->h_buf, bytes, cudaMemcpyHostToDevice));
  }
  return 0;
}

void load_teardown(LoadJob *j) {
  SerialLoader *s = (SerialLoader *)j->state;
  free(s->h_buf);
  free(s);
}

int main(int argc, char **argv) {
  return load_main(argc, argv, "baseline", "per tensor: pread into malloc, cudaMemcpy");
}
