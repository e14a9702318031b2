/* fuzz_json.c — libFuzzer harness for the JSON reader (common/json.c: gtl_json_parse),
 * which reads expectations, safetensors headers and HF config.json. Any bytes: a tree or
 * NULL with "offset N: reason", no read past `size` (the input is not NUL-terminated),
 * no leak, no undefined behaviour, no stack overflow on deep nesting (depth limit 64).
 * On success the tree's element counts must match its child lists. */
#include <stdint.h>
#include <stdlib.h>
#include "json.h"

static void walk(const GtlJson *j, int depth) {
  if (depth > 70) abort(); /* deeper than the documented limit */
  if (j->type == GTL_JSON_ARR || j->type == GTL_JSON_OBJ) {
    size_t n = 0;
    for (const GtlJson *c = j->child; c; c = c->next, n++) {
      if (j->type == GTL_JSON_OBJ && !c->key) abort(); /* members carry their key */
      walk(c, depth + 1);
    }
    if (n != j->n) abort();
  } else if (j->type == GTL_JSON_STR && !j->str) {
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[256];
  err[0] = '\0';
  GtlJson *j = gtl_json_parse((const char *)data, size, err, sizeof err);
  if (j) {
    walk(j, 0);
    gtl_json_free(j);
  } else if (err[0] == '\0') {
    abort();
  }
  return 0;
}
