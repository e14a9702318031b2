/* json.h — a small JSON reader (RFC 8259) into a tree, for expectations/<key>.json,
 * safetensors headers and HF config.json; and the escaping helper the report writer
 * uses. Pure C11, unit-tested (tests/test_json.c). Numbers are held as double; strings
 * are unescaped UTF-8 (\uXXXX, surrogate pairs included). Depth is limited to 64. */
#pragma once
#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { GTL_JSON_NULL, GTL_JSON_BOOL, GTL_JSON_NUM, GTL_JSON_STR, GTL_JSON_ARR,
               GTL_JSON_OBJ } GtlJsonType;

typedef struct GtlJson {
  GtlJsonType type;
  double num;            /* NUM, and BOOL as 0/1 */
  char *str;             /* STR: value; NUL-terminated (may hold no NUL inside) */
  char *key;             /* set on members of an object */
  struct GtlJson *child; /* ARR/OBJ: first element */
  struct GtlJson *next;  /* next sibling */
  size_t n;              /* ARR/OBJ: number of elements */
} GtlJson;

/** Parse `len` bytes at `text`. Returns the root, or NULL with "offset N: reason" in
 *  err[errlen]. Trailing non-space text is an error. Free with gtl_json_free. */
GtlJson *gtl_json_parse(const char *text, size_t len, char *err, size_t errlen);
/** Read and parse a whole file; NULL with the reason (including open errors) in err. */
GtlJson *gtl_json_parse_file(const char *path, char *err, size_t errlen);
void gtl_json_free(GtlJson *j);

/** Member `key` of an object (NULL when absent or j is not an object). */
const GtlJson *gtl_json_get(const GtlJson *j, const char *key);
/** Element i of an array (NULL when out of range). */
const GtlJson *gtl_json_at(const GtlJson *j, size_t i);
/** Number at `key`, or `dflt` when absent or not a number. */
double gtl_json_num(const GtlJson *j, const char *key, double dflt);
/** String at `key`, or NULL. */
const char *gtl_json_str(const GtlJson *j, const char *key);

/** Write s as a JSON string literal (quotes included) to f. */
void gtl_json_write_str(FILE *f, const char *s);

#ifdef __cplusplus
}
#endif
