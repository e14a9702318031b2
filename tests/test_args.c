/* test_args.c — the shared command line (common/args.c). */
#include "cmocka_all.h"
#include <string.h>
#include "args.h"

static int parse(GtlArgs *a, const char *const *av, int n, const GtlOpt *o, int no, char *err) {
  char *argv[16];
  argv[0] = (char *)"prog";
  for (int i = 0; i < n; i++) argv[i + 1] = (char *)av[i];
  gtl_args_defaults(a, 10, 100, GTL_L2_COLD);
  return gtl_args_parse(a, n + 1, argv, o, no, err, 256);
}

static void defaults_hold_without_flags(void **state) {
  (void)state;
  GtlArgs a;
  char err[256];
  assert_int_equal(parse(&a, NULL, 0, NULL, 0, err), 0);
  assert_int_equal(a.warmup, 10);
  assert_int_equal(a.iters, 100);
  assert_true(a.seed == 42 && a.verify == 1 && a.json == 0 && a.l2 == GTL_L2_COLD);
}

static void common_flags_parse(void **state) {
  (void)state;
  const char *av[] = {"--warmup=0", "--iters=7", "--seed=123", "--size=small", "--l2=warm",
                      "--device=1", "--json", "--no-verify"};
  GtlArgs a;
  char err[256];
  assert_int_equal(parse(&a, av, 8, NULL, 0, err), 0);
  assert_int_equal(a.warmup, 0);
  assert_int_equal(a.iters, 7);
  assert_true(a.seed == 123 && a.size == GTL_SIZE_SMALL && a.l2 == GTL_L2_WARM);
  assert_true(a.device == 1 && a.json == 1 && a.verify == 0);
}

static void bad_flags_are_rejected_with_a_reason(void **state) {
  (void)state;
  const char *cases[][1] = {{"--bogus"}, {"--iters=0"}, {"--iters=12x"}, {"--iters="},
                            {"--warmup=-1"}, {"--size=huge"}, {"--l2=lukewarm"}, {"-x"},
                            {"--json=1"}, {"--seed=-5"}, {"--device=abc"}, {"plain"}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    GtlArgs a;
    char err[256] = "";
    assert_int_equal(parse(&a, cases[i], 1, NULL, 0, err), -1);
    assert_true(strlen(err) > 0);
  }
}

static void program_options_parse_and_validate(void **state) {
  (void)state;
  int64_t M = 1;
  double alpha = 0;
  const char *variant = NULL;
  int flag = 0;
  GtlOpt o[] = {{"M", GTL_OPT_INT, &M, ""}, {"alpha", GTL_OPT_DOUBLE, &alpha, ""},
                {"variant", GTL_OPT_STR, &variant, ""}, {"check-sm", GTL_OPT_FLAG, &flag, ""}};
  const char *av[] = {"--M=4096", "--alpha=0.5", "--variant=wgmma", "--check-sm"};
  GtlArgs a;
  char err[256];
  assert_int_equal(parse(&a, av, 4, o, 4, err), 0);
  assert_true(M == 4096 && alpha == 0.5 && flag == 1);
  assert_string_equal(variant, "wgmma");
  const char *bad1[] = {"--M=4k"}, *bad2[] = {"--variant="}, *bad3[] = {"--alpha=nan"},
             *bad4[] = {"--Mx=3"};
  assert_int_equal(parse(&a, bad1, 1, o, 4, err), -1);
  assert_int_equal(parse(&a, bad2, 1, o, 4, err), -1);
  assert_int_equal(parse(&a, bad3, 1, o, 4, err), -1);
  assert_int_equal(parse(&a, bad4, 1, o, 4, err), -1);
  assert_non_null(strstr(err, "--Mx"));
}

static void help_is_flagged_not_an_error(void **state) {
  (void)state;
  const char *av[] = {"--help"};
  GtlArgs a;
  char err[256];
  assert_int_equal(parse(&a, av, 1, NULL, 0, err), 0);
  assert_int_equal(a.help, 1);
  const char *av_short[] = {"-h"};
  assert_int_equal(parse(&a, av_short, 1, NULL, 0, err), 0);
  assert_int_equal(a.help, 1);
  const char *av_other[] = {"-x"}; /* no other short flags */
  assert_int_equal(parse(&a, av_other, 1, NULL, 0, err), -1);
  assert_non_null(strstr(err, "-x"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(defaults_hold_without_flags), cmocka_unit_test(common_flags_parse),
      cmocka_unit_test(bad_flags_are_rejected_with_a_reason),
      cmocka_unit_test(program_options_parse_and_validate),
      cmocka_unit_test(help_is_flagged_not_an_error)};
  return cmocka_run_group_tests_name("args", tests, NULL, NULL);
}
