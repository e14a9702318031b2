/* check.c — the one error reporter behind every check macro (see check.h). */
#include "check.h"

#include <stdio.h>
#include <stdlib.h>

void gtl_die(const char *lib, const char *name, int code, const char *expr, const char *file,
             int line) {
  fflush(stdout);
  fprintf(stderr, "error: %s %s (%d) at %s:%d: %s\n", lib, name ? name : "?", code, file, line,
          expr);
  exit(GTL_EXIT_RUNTIME);
}
