/* check.c — the one error reporter behind every check macro (see check.h). */
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void (*gtl_mem_info_hook)(size_t *free_b, size_t *total_b) = NULL;

static int is_out_of_memory(const char *lib, int code) {
  return (lib && !strcmp(lib, "CUDA") && code == 2) ||   /* cudaErrorMemoryAllocation */
         (lib && !strcmp(lib, "cuBLAS") && code == 3);   /* CUBLAS_STATUS_ALLOC_FAILED */
}

void gtl_die(const char *lib, const char *name, int code, const char *expr, const char *file,
             int line) {
  fflush(stdout);
  fprintf(stderr, "error: %s %s (%d) at %s:%d: %s\n", lib, name ? name : "?", code, file, line,
          expr);
  if (is_out_of_memory(lib, code) && gtl_mem_info_hook) {
    size_t free_b = 0, total_b = 0;
    gtl_mem_info_hook(&free_b, &total_b);
    fprintf(stderr,
            "error: out of device memory in %s: device free %.1f of %.1f MiB (the call does not "
            "say how much it asked for)\n",
            lib, free_b / 1048576.0, total_b / 1048576.0);
  }
  exit(GTL_EXIT_RUNTIME);
}

const char *gtl_oom_message(char *buf, size_t n, const char *kind, const char *what,
                            size_t asked, size_t free_b, size_t total_b, const char *err_name) {
  if (!buf || !n) return buf;
  snprintf(buf, n,
           "error: out of %s memory allocating %s: asked %.1f MiB, device free %.1f of %.1f MiB (%s)",
           kind ? kind : "?", what ? what : "?", asked / 1048576.0, free_b / 1048576.0,
           total_b / 1048576.0, err_name ? err_name : "?");
  return buf;
}
