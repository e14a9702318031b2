/* fuzz_hf_config.c — libFuzzer harness for the Hugging Face config.json reader
 * (labs/moe/config.c: moe_config_from_hf, then moe_config_check). A config the reader
 * accepts and the check passes must describe a model whose sizes are all positive and
 * whose heads divide; a refusal must name the field. */
#include <stdint.h>
#include <stdlib.h>
#include "json.h"
#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[512];
  GtlJson *j = gtl_json_parse((const char *)data, size, err, sizeof err);
  if (!j) return 0;
  MoeConfig c;
  err[0] = '\0';
  if (moe_config_from_hf(j, &c, err, sizeof err) == 0) {
    err[0] = '\0';
    if (moe_config_check(&c, err, sizeof err) == 0) {
      if (c.L < 1 || c.D < 1 || c.E < 1 || c.top_k < 1 || c.top_k > c.E || c.H < 1 ||
          c.H_kv < 1 || c.H % c.H_kv != 0 || c.V < 1 || c.F < 1)
        abort();
    } else if (err[0] == '\0') {
      abort();
    }
  } else if (err[0] == '\0') {
    abort();
  }
  gtl_json_free(j);
  return 0;
}
