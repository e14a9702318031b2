/* test_json.c — the JSON reader (common/json.c). */
#include "cmocka_all.h"
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "json.h"

static GtlJson *P(const char *s, char *err) { return gtl_json_parse(s, strlen(s), err, 200); }

static void parses_nested_values(void **state) {
  (void)state;
  char err[200];
  GtlJson *j = P(" {\"a\": [1, -2.5e3, true, null], \"b\": {\"c\": \"x\\\"y\\u00e9\"}} ", err);
  assert_non_null(j);
  const GtlJson *a = gtl_json_get(j, "a");
  assert_int_equal(a->n, 4);
  assert_true(gtl_json_at(a, 1)->num == -2500);
  assert_int_equal(gtl_json_at(a, 2)->type, GTL_JSON_BOOL);
  assert_int_equal(gtl_json_at(a, 3)->type, GTL_JSON_NULL);
  assert_null(gtl_json_at(a, 4));
  assert_string_equal(gtl_json_str(gtl_json_get(j, "b"), "c"), "x\"y\xc3\xa9");
  assert_true(gtl_json_num(j, "missing", 7.0) == 7.0);
  gtl_json_free(j);
}

static void surrogate_pairs_become_utf8(void **state) {
  (void)state;
  char err[200];
  GtlJson *j = P("\"\\ud83d\\ude00\"", err);
  assert_non_null(j);
  assert_string_equal(j->str, "\xf0\x9f\x98\x80");
  gtl_json_free(j);
}

static void malformed_inputs_are_rejected_with_an_offset(void **state) {
  (void)state;
  const char *bad[] = {"", "{", "[1,]", "{\"a\" 1}", "{\"a\":1,}", "01", "1.", "-", "tru",
                       "\"abc", "\"\\x\"", "\"\\ud800\"", "[1] x", "{1:2}", "\"a\nb\"", "1e"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char err[200] = "";
    GtlJson *j = P(bad[i], err);
    if (j) fail_msg("accepted bad JSON: %s", bad[i]);
    assert_non_null(strstr(err, "offset"));
  }
}

static void deep_nesting_is_refused(void **state) {
  (void)state;
  char s[300], err[200];
  memset(s, '[', 100);
  memset(s + 100, ']', 100);
  s[200] = '\0';
  assert_null(P(s, err));
  assert_non_null(strstr(err, "nesting"));
}

static void length_bounds_the_parse(void **state) {
  (void)state;
  char err[200];
  /* only the first 3 bytes are the document: "[1]" — the rest must not be read */
  GtlJson *j = gtl_json_parse("[1]garbage", 3, err, sizeof err);
  assert_non_null(j);
  gtl_json_free(j);
  assert_null(gtl_json_parse("[12", 2, err, sizeof err)); /* "[1" is unterminated */
}

static void writer_escapes_what_the_reader_reads(void **state) {
  (void)state;
  char buf[256], err[200];
  FILE *f = fmemopen(buf, sizeof buf, "w");
  gtl_json_write_str(f, "a\"b\\c\nd\te\x01");
  fclose(f);
  GtlJson *j = P(buf, err);
  assert_non_null(j);
  assert_string_equal(j->str, "a\"b\\c\nd\te\x01");
  gtl_json_free(j);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(parses_nested_values), cmocka_unit_test(surrogate_pairs_become_utf8),
      cmocka_unit_test(malformed_inputs_are_rejected_with_an_offset),
      cmocka_unit_test(deep_nesting_is_refused), cmocka_unit_test(length_bounds_the_parse),
      cmocka_unit_test(writer_escapes_what_the_reader_reads)};
  return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
