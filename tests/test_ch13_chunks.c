/* test_ch13_chunks.c — ch13's row chunks for the overlapped step (ch13/chunks.h): the chunks
 * tile [0, M) in order without gaps or overlap, never more than asked, every chunk but the
 * last a multiple of X_CHUNK_ALIGN rows (so every chunk's fp8 X, bf16 X and bf16 Y start on
 * the 256-byte boundary cuBLASLt assumes by default when N and K are multiples of 16), the
 * shapes the program plans (at most two), and the --chunks and --chunk_priority parsers. */
#include "cmocka_all.h"
#include <stdint.h>
#include "../ch13/chunks.h"

static void default_shape_splits_evenly(void **state) {
  (void)state;
  const int want[4] = {1, 2, 4, 8};
  const int64_t rows[4] = {4096, 2048, 1024, 512};
  for (int i = 0; i < 4; i++) {
    assert_int_equal(x_chunk_count(4096, want[i]), want[i]);
    for (int c = 0; c < want[i]; c++) {
      int64_t r0, n;
      x_chunk_range(4096, want[i], c, &r0, &n);
      assert_int_equal(r0, c * rows[i]);
      assert_int_equal(n, rows[i]);
    }
  }
}

static void small_shapes_give_fewer_chunks(void **state) {
  (void)state;
  int64_t r0, n;
  assert_int_equal(x_chunk_count(200, 4), 2);  /* --size=small: 128 + 72 */
  x_chunk_range(200, 4, 0, &r0, &n);
  assert_int_equal(r0, 0);
  assert_int_equal(n, 128);
  x_chunk_range(200, 4, 1, &r0, &n);
  assert_int_equal(r0, 128);
  assert_int_equal(n, 72);
  assert_int_equal(x_chunk_count(64, 8), 1);   /* decode: the one-launch step */
  assert_int_equal(x_chunk_count(128, 2), 1);
  assert_int_equal(x_chunk_count(129, 2), 2);
  assert_int_equal(x_chunk_count(1, 8), 1);
  assert_int_equal(x_chunk_count(3000, 3), 3); /* 1024 + 1024 + 952 */
  x_chunk_range(3000, 3, 2, &r0, &n);
  assert_int_equal(r0, 2048);
  assert_int_equal(n, 952);
  assert_int_equal(x_chunk_base(100, 0), X_CHUNK_ALIGN); /* chunks < 1 read as 1 */
}

static void chunks_tile_the_rows(void **state) {
  (void)state;
  for (int64_t M = 1; M <= 20000; M += (M < 600 ? 1 : 97)) {
    for (int ch = 1; ch <= X_CHUNKS_MAX; ch++) {
      const int n = x_chunk_count(M, ch);
      assert_true(n >= 1 && n <= ch);
      int64_t next = 0, first_rows = -1, last_rows = -1;
      for (int c = 0; c < n; c++) {
        int64_t r0, rows;
        x_chunk_range(M, ch, c, &r0, &rows);
        assert_int_equal(r0, next);
        assert_true(rows >= 1);
        if (c < n - 1) assert_int_equal(rows % X_CHUNK_ALIGN, 0);
        if (c == 0) first_rows = rows;
        if (c < n - 1) assert_int_equal(rows, first_rows); /* one shape but the last */
        /* 256-byte starts for K, N multiples of 16: r0·K (fp8), 2·r0·K, 2·r0·N */
        assert_int_equal((r0 * 16) % 256, 0);
        next = r0 + rows;
        last_rows = rows;
      }
      assert_int_equal(next, M);
      assert_true(last_rows <= first_rows); /* the last chunk: the second shape, never longer */
    }
  }
}

static void parse_accepts_auto_and_one_to_eight(void **state) {
  (void)state;
  assert_int_equal(x_chunks_parse("auto"), 0);
  assert_int_equal(x_chunks_parse("1"), 1);
  assert_int_equal(x_chunks_parse("8"), 8);
  assert_int_equal(x_chunks_parse("0"), -1);
  assert_int_equal(x_chunks_parse("9"), -1);
  assert_int_equal(x_chunks_parse("16"), -1);
  assert_int_equal(x_chunks_parse("4x"), -1);
  assert_int_equal(x_chunks_parse(""), -1);
  assert_int_equal(x_chunks_parse("-1"), -1);
  assert_int_equal(x_chunks_parse("Auto"), -1);
  assert_int_equal(x_chunk_priority_parse("none"), X_CHUNK_PRIO_NONE);
  assert_int_equal(x_chunk_priority_parse("gemm"), X_CHUNK_PRIO_GEMM);
  assert_int_equal(x_chunk_priority_parse("quant"), X_CHUNK_PRIO_QUANT);
  assert_int_equal(x_chunk_priority_parse("high"), -1);
  assert_int_equal(x_chunk_priority_parse(""), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(default_shape_splits_evenly),
      cmocka_unit_test(small_shapes_give_fewer_chunks),
      cmocka_unit_test(chunks_tile_the_rows),
      cmocka_unit_test(parse_accepts_auto_and_one_to_eight),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
