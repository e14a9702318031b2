/* fuzz_safetensors.c — libFuzzer harness for the safetensors header parser
 * (common/safetensors.c: gtl_st_parse). The input is a whole file: 8-byte length prefix,
 * JSON header, tensor bytes. Whatever the bytes, the parser must return 0 or -1 with a
 * message, never read outside the input, leak, or hit undefined behaviour; on success
 * every tensor must lie inside the file and be findable by name.
 * Built and run by scripts/fuzz.sh (clang -fsanitize=fuzzer,address,undefined). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  GtlSafetensors st;
  char err[512];
  err[0] = '\0';
  if (gtl_st_parse(data, size, (uint64_t)size, &st, err, sizeof err) == 0) {
    if (st.data_offset + st.data_len != (uint64_t)size) abort();
    for (size_t i = 0; i < st.n_tensors; i++) {
      const GtlStTensor *t = &st.tensors[i];
      if (t->begin > t->end || t->end > st.data_len) abort();      /* inside the file */
      if (gtl_st_find(&st, t->name) != t) abort();                  /* names unique, found */
      if (gtl_st_numel(t) * gtl_st_dtype_size(t->dtype) != t->end - t->begin) abort();
    }
  } else if (err[0] == '\0') {
    abort(); /* a refusal always says why */
  }
  gtl_st_free(&st);
  return 0;
}
