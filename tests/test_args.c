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

static void l2_rotate_is_accepted_and_junk_rejected(void **state) {
  (void)state;
  GtlArgs a;
  char err[256] = "";
  const char *av[] = {"--l2=rotate"};
  assert_int_equal(parse(&a, av, 1, NULL, 0, err), 0);
  assert_int_equal(a.l2, GTL_L2_ROTATE);
  assert_string_equal(gtl_l2_name(a.l2), "rotate");
  assert_string_equal(gtl_l2_name(GTL_L2_COLD), "cold");
  assert_string_equal(gtl_l2_name(GTL_L2_WARM), "warm");
  const char *last[] = {"--l2=rotate", "--l2=warm"}; /* the last one wins */
  assert_int_equal(parse(&a, last, 2, NULL, 0, err), 0);
  assert_int_equal(a.l2, GTL_L2_WARM);
  const char *junk[][1] = {{"--l2=rotated"}, {"--l2=Rotate"}, {"--l2=rot"}, {"--l2="},
                           {"--l2"}, {"--l2=rotate,cold"}, {"--l2=rotate "}};
  for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
    err[0] = 0;
    assert_int_equal(parse(&a, junk[i], 1, NULL, 0, err), -1);
    assert_non_null(strstr(err, "cold, warm or rotate"));
  }
}

/* N = max(2, ceil(4 · L2 / bytes)): the smallest N >= 2 with N · bytes >= 4 · L2. */
/* The usage line offers --l2=rotate only where the program said it rotates. */
static void usage_offers_rotate_only_when_allowed(void **state) {
  (void)state;
  char buf[1024];
  FILE *f = fmemopen(buf, sizeof buf, "w");
  assert_non_null(f);
  gtl_args_usage(f, "prog", NULL, 0);
  fclose(f);
  assert_non_null(strstr(buf, "[--l2=cold|warm]"));
  assert_null(strstr(buf, "rotate"));
  gtl_args_offer_rotate(1);
  f = fmemopen(buf, sizeof buf, "w");
  gtl_args_usage(f, "prog", NULL, 0);
  fclose(f);
  gtl_args_offer_rotate(0);
  assert_non_null(strstr(buf, "[--l2=cold|warm|rotate]"));
}

static void rotate_copy_count_spans_four_l2(void **state) {
  (void)state;
  const size_t l2 = (size_t)60 << 20; /* H200 */
  /* ch08's four experts (199 MB) and ch07's x (23.6 MB) */
  assert_int_equal(gtl_rotate_copies((size_t)4 * 3 * 2880 * 2880 * 2, l2, 0), 2);
  assert_int_equal(gtl_rotate_copies((size_t)4096 * 2880 * 2, l2, 0), 11);
  assert_int_equal(gtl_rotate_copies(l2, l2, 0), 4);
  assert_int_equal(gtl_rotate_copies(l2 + 1, l2, 0), 4);
  assert_int_equal(gtl_rotate_copies(l2 - 1, l2, 0), 5);
  assert_int_equal(gtl_rotate_copies(2 * l2, l2, 0), 2);
  assert_int_equal(gtl_rotate_copies(100 * l2, l2, 0), 2); /* never fewer than 2 */
  assert_int_equal(gtl_rotate_copies(1, 1, 0), 4);
  assert_int_equal(gtl_rotate_copies(1000, 0, 0), 2);
  for (size_t bytes = 1000; bytes < 8 * l2; bytes = bytes * 3 / 2 + 7) {
    const int n = gtl_rotate_copies(bytes, l2, 0);
    assert_true(n >= 2);
    assert_true((unsigned long long)n * bytes >= 4ull * l2);
    if (n > 2) assert_true((unsigned long long)(n - 1) * bytes < 4ull * l2); /* smallest */
  }
  assert_int_equal(gtl_rotate_copies(0, l2, 0), -1);
  assert_int_equal(gtl_rotate_copies(l2 / 16, l2, 63), -1); /* 64 needed, 63 allowed */
  assert_int_equal(gtl_rotate_copies(l2 / 16, l2, 64), 64);
  assert_int_equal(gtl_rotate_copies(1, (size_t)1 << 40, 0), -1); /* over INT_MAX copies */
}

static void rotate_pairs_and_k(void **state) {
  (void)state;
  assert_int_equal(gtl_rotate_k(1), 16);
  assert_int_equal(gtl_rotate_k(2), 16);
  assert_int_equal(gtl_rotate_k(3), 18);
  assert_int_equal(gtl_rotate_k(11), 22);
  assert_int_equal(gtl_rotate_k(16), 16);
  assert_int_equal(gtl_rotate_k(17), 17);
  assert_int_equal(gtl_rotate_k(0), -1);
  assert_int_equal(gtl_rotate_pairs(100, 16), 10);  /* at least 10 samples */
  assert_int_equal(gtl_rotate_pairs(1000, 16), 63); /* about iters iterations */
  assert_int_equal(gtl_rotate_pairs(1, 16), 1);     /* --iters=1 (a profile): one pair */
  assert_int_equal(gtl_rotate_pairs(3, 22), 3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(defaults_hold_without_flags), cmocka_unit_test(common_flags_parse),
      cmocka_unit_test(bad_flags_are_rejected_with_a_reason),
      cmocka_unit_test(program_options_parse_and_validate),
      cmocka_unit_test(help_is_flagged_not_an_error),
      cmocka_unit_test(l2_rotate_is_accepted_and_junk_rejected),
      cmocka_unit_test(usage_offers_rotate_only_when_allowed),
      cmocka_unit_test(rotate_copy_count_spans_four_l2), cmocka_unit_test(rotate_pairs_and_k)};
  return cmocka_run_group_tests_name("args", tests, NULL, NULL);
}
