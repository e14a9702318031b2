/* test_convert.c — bf16/fp16/fp8 host conversions (common/convert.c), against bit patterns
 * from the format definitions (IEEE 754-2008 binary16; OCP 8-bit FP spec v1.0 for E4M3). */
#include "cmocka_all.h"
#include <math.h>
#include "convert.h"

static void bf16_known_patterns(void **state) {
  (void)state;
  assert_int_equal(gtl_f32_to_bf16(1.0f), 0x3F80);
  assert_int_equal(gtl_f32_to_bf16(-2.0f), 0xC000);
  assert_int_equal(gtl_f32_to_bf16(0.0f), 0x0000);
  /* 1 + 2^-8 is halfway between 1 and 1+2^-7: ties to even (down to 0x3F80) */
  assert_int_equal(gtl_f32_to_bf16(1.00390625f), 0x3F80);
  /* 1 + 3·2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6: rounds up to even 0x3F82 */
  assert_int_equal(gtl_f32_to_bf16(1.01171875f), 0x3F82);
  assert_true(isnan(gtl_bf16_to_f32(gtl_f32_to_bf16(NAN))));
  assert_true(gtl_bf16_to_f32(0x4049) == 3.140625f);
}

static void fp16_known_patterns(void **state) {
  (void)state;
  assert_int_equal(gtl_f32_to_fp16(1.0f), 0x3C00);
  assert_int_equal(gtl_f32_to_fp16(65504.0f), 0x7BFF);  /* max finite */
  assert_int_equal(gtl_f32_to_fp16(65520.0f), 0x7C00);  /* halfway to 2^16 rounds to inf */
  assert_int_equal(gtl_f32_to_fp16(65519.0f), 0x7BFF);
  assert_int_equal(gtl_f32_to_fp16(5.9604645e-8f), 0x0001); /* 2^-24, smallest subnormal */
  assert_int_equal(gtl_f32_to_fp16(2.9802322e-8f), 0x0000); /* 2^-25 ties to even zero */
  assert_int_equal(gtl_f32_to_fp16(-0.333251953125f), 0xB555);
  assert_true(gtl_fp16_to_f32(0x0001) == 5.9604645e-8f);
  assert_true(isinf(gtl_fp16_to_f32(0x7C00)));
}

static void fp16_round_trips_every_finite_value(void **state) {
  (void)state;
  for (uint32_t h = 0; h < 0x10000; h++) {
    if ((h & 0x7C00) == 0x7C00) continue; /* inf/NaN */
    assert_int_equal(gtl_f32_to_fp16(gtl_fp16_to_f32((uint16_t)h)), h);
  }
}

static void fp8_e4m3_known_patterns(void **state) {
  (void)state;
  assert_int_equal(gtl_f32_to_fp8e4m3(1.0f), 0x38);
  assert_int_equal(gtl_f32_to_fp8e4m3(448.0f), 0x7E);
  assert_int_equal(gtl_f32_to_fp8e4m3(1000.0f), 0x7E);  /* saturates */
  assert_int_equal(gtl_f32_to_fp8e4m3(-1e9f), 0xFE);
  assert_int_equal(gtl_f32_to_fp8e4m3(0.001953125f), 0x01); /* 2^-9 smallest subnormal */
  assert_int_equal(gtl_f32_to_fp8e4m3(0.0009765625f), 0x00); /* 2^-10 ties to zero */
  assert_int_equal(gtl_f32_to_fp8e4m3(NAN), 0x7F);
  assert_true(isnan(gtl_fp8e4m3_to_f32(0x7F)));
  assert_true(gtl_fp8e4m3_to_f32(0x7E) == 448.0f);
  assert_true(gtl_fp8e4m3_to_f32(0x08) == 0.015625f); /* 2^-6 min normal */
}

static void fp8_round_trips_every_finite_value(void **state) {
  (void)state;
  for (uint32_t v = 0; v < 256; v++) {
    if ((v & 0x7F) == 0x7F) continue;
    if (v == 0x80) continue; /* -0 maps back to 0x80, checked below */
    assert_int_equal(gtl_f32_to_fp8e4m3(gtl_fp8e4m3_to_f32((uint8_t)v)), v);
  }
  assert_int_equal(gtl_f32_to_fp8e4m3(-0.0f), 0x80);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(bf16_known_patterns), cmocka_unit_test(fp16_known_patterns),
      cmocka_unit_test(fp16_round_trips_every_finite_value),
      cmocka_unit_test(fp8_e4m3_known_patterns), cmocka_unit_test(fp8_round_trips_every_finite_value)};
  return cmocka_run_group_tests_name("convert", tests, NULL, NULL);
}
