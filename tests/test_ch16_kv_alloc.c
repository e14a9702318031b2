/* test_ch16_kv_alloc.c — ch16's KV block allocator (ch16/kv_alloc.h): block counts, the
 * free list, all-or-nothing growth, reference-counted sharing of prefix blocks, double
 * frees caught, and a randomized serving workload whose invariants are checked after
 * every operation (every block either free or mapped exactly refcount times, no block in
 * two unrelated tables, the free count conserved). */
#include "cmocka_all.h"
#include <stdlib.h>
#include <string.h>
#include "../ch16/kv_alloc.h"

static void blocks_for_rounds_up(void **state) {
  (void)state;
  assert_int_equal(kv_blocks_for(0), 0);
  assert_int_equal(kv_blocks_for(-5), 0);
  assert_int_equal(kv_blocks_for(1), 1);
  assert_int_equal(kv_blocks_for(16), 1);
  assert_int_equal(kv_blocks_for(17), 2);
  assert_int_equal(kv_blocks_for(960), 60);
  assert_int_equal(kv_blocks_for(961), 61);
}

static void pool_hands_out_each_block_once(void **state) {
  (void)state;
  KvPool p;
  assert_int_equal(kv_pool_init(&p, 0), -1);
  assert_int_equal(kv_pool_init(&p, 37), 0);
  int seen[37] = {0};
  for (int i = 0; i < 37; i++) {
    const int32_t b = kv_pool_alloc(&p);
    assert_true(b >= 0 && b < 37);
    assert_int_equal(seen[b], 0);
    seen[b] = 1;
    assert_int_equal(p.refcount[b], 1);
  }
  assert_int_equal(p.n_free, 0);
  assert_int_equal(kv_pool_alloc(&p), -1); /* dry */
  assert_int_equal(kv_pool_release(&p, 5), 0);
  assert_int_equal(kv_pool_release(&p, 5), -1); /* double free caught */
  assert_int_equal(kv_pool_ref(&p, 5), -1);     /* a free block cannot be shared */
  assert_int_equal(kv_pool_release(&p, 37), -1);
  assert_int_equal(kv_pool_release(&p, -1), -1);
  assert_int_equal(kv_pool_alloc(&p), 5); /* LIFO: the block freed last comes back first */
  kv_pool_reset(&p);
  assert_int_equal(p.n_free, 37);
  assert_int_equal(kv_pool_alloc(&p), 0); /* a fresh pool starts at block 0 */
  kv_pool_destroy(&p);
}

static void seq_grows_on_demand_all_or_nothing(void **state) {
  (void)state;
  KvPool p;
  KvSeq s, t;
  assert_int_equal(kv_pool_init(&p, 4), 0);
  assert_int_equal(kv_seq_init(&s, 8), 0);
  assert_int_equal(kv_seq_init(&t, 8), 0);
  assert_int_equal(kv_seq_blocks_needed(&s, 1), 1);
  assert_int_equal(kv_seq_grow(&p, &s, 1), 0);
  assert_int_equal(s.n_blocks, 1);
  assert_int_equal(kv_seq_grow(&p, &s, 16), 0); /* still one block */
  assert_int_equal(s.n_blocks, 1);
  assert_int_equal(kv_seq_blocks_needed(&s, 17), 1);
  assert_int_equal(kv_seq_grow(&p, &s, 17), 0);
  assert_int_equal(s.n_blocks, 2);
  assert_int_equal(kv_seq_grow(&p, &s, 10), 0); /* never shrinks */
  assert_int_equal(s.n_blocks, 2);
  assert_int_equal(p.n_free, 2);
  /* t wants 3 blocks, 2 are free: nothing taken */
  assert_int_equal(kv_seq_grow(&p, &t, 48), -1);
  assert_int_equal(t.n_blocks, 0);
  assert_int_equal(p.n_free, 2);
  assert_int_equal(kv_seq_grow(&p, &t, 32), 0);
  assert_int_equal(p.n_free, 0);
  assert_true(t.blocks[0] != s.blocks[0] && t.blocks[0] != s.blocks[1] && t.blocks[1] != s.blocks[0] &&
              t.blocks[1] != s.blocks[1] && t.blocks[0] != t.blocks[1]);
  assert_int_equal(kv_seq_release(&p, &s), 2);
  assert_int_equal(s.n_blocks, 0);
  assert_int_equal(p.n_free, 2);
  /* a table of cap 8 cannot map 9 blocks even with a big pool */
  KvPool big;
  assert_int_equal(kv_pool_init(&big, 100), 0);
  assert_int_equal(kv_seq_grow(&big, &s, 8 * 16 + 1), -1);
  assert_int_equal(big.n_free, 100);
  kv_pool_destroy(&big);
  kv_seq_destroy(&s);
  kv_seq_destroy(&t);
  kv_pool_destroy(&p);
}

static void prefix_blocks_are_reference_counted(void **state) {
  (void)state;
  KvPool p;
  KvSeq a, b;
  assert_int_equal(kv_pool_init(&p, 10), 0);
  assert_int_equal(kv_seq_init(&a, 8), 0);
  assert_int_equal(kv_seq_init(&b, 8), 0);
  int32_t prefix[2] = {kv_pool_alloc(&p), kv_pool_alloc(&p)}; /* the cache's reference */
  assert_int_equal(kv_seq_share(&p, &a, prefix, 2), 0);
  assert_int_equal(kv_seq_share(&p, &b, prefix, 2), 0);
  assert_int_equal(p.refcount[prefix[0]], 3);
  assert_int_equal(p.refcount[prefix[1]], 3);
  assert_int_equal(kv_seq_share(&p, &a, prefix, 2), -1); /* only into an empty table */
  /* 40 tokens: blocks 0-1 shared, block 2 its own */
  assert_int_equal(kv_seq_grow(&p, &a, 40), 0);
  assert_int_equal(kv_seq_grow(&p, &b, 40), 0);
  assert_int_equal(a.n_blocks, 3);
  assert_true(a.blocks[2] != b.blocks[2]);
  assert_int_equal(a.blocks[0], prefix[0]);
  assert_int_equal(b.blocks[1], prefix[1]);
  assert_int_equal(p.n_free, 10 - 4); /* 2 shared + 2 own, not 6 */
  assert_int_equal(kv_seq_release(&p, &a), 1); /* only its own block is freed */
  assert_int_equal(p.refcount[prefix[0]], 2);
  assert_int_equal(kv_seq_release(&p, &b), 1);
  assert_int_equal(p.refcount[prefix[0]], 1); /* the cache still holds it */
  assert_int_equal(p.n_free, 8);
  assert_int_equal(kv_pool_release(&p, prefix[0]), 0);
  assert_int_equal(kv_pool_release(&p, prefix[1]), 0);
  assert_int_equal(p.n_free, 10);
  /* sharing a free block fails and takes no reference */
  assert_int_equal(kv_seq_share(&p, &a, prefix, 2), -1);
  assert_int_equal(a.n_blocks, 0);
  assert_int_equal(p.refcount[prefix[0]], 0);
  kv_seq_destroy(&a);
  kv_seq_destroy(&b);
  kv_pool_destroy(&p);
}

/* Every block is free (refcount 0, on the free list once) or mapped exactly refcount
 * times across the tables plus the cache's prefix reference. */
static void check_invariants(const KvPool *p, const KvSeq *s, int n, const int32_t *prefix, int nsh) {
  int32_t *maps = (int32_t *)calloc((size_t)p->n_blocks, sizeof(int32_t));
  int32_t *on_free = (int32_t *)calloc((size_t)p->n_blocks, sizeof(int32_t));
  assert_non_null(maps);
  assert_non_null(on_free);
  for (int i = 0; i < nsh; i++) maps[prefix[i]]++;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < s[i].n_blocks; j++) maps[s[i].blocks[j]]++;
  for (int i = 0; i < p->n_free; i++) on_free[p->free_list[i]]++;
  for (int b = 0; b < p->n_blocks; b++) {
    assert_int_equal(maps[b], p->refcount[b]);
    assert_int_equal(on_free[b], p->refcount[b] == 0 ? 1 : 0);
  }
  free(maps);
  free(on_free);
}

static void random_serving_keeps_invariants(void **state) {
  (void)state;
  enum { N = 24, NB = 96, NSH = 3, CAP = 40 };
  KvPool p;
  KvSeq s[N];
  int len[N] = {0};
  assert_int_equal(kv_pool_init(&p, NB), 0);
  for (int i = 0; i < N; i++) assert_int_equal(kv_seq_init(&s[i], CAP), 0);
  int32_t prefix[NSH];
  for (int i = 0; i < NSH; i++) prefix[i] = kv_pool_alloc(&p);
  uint64_t x = 12345;
  int grows = 0, refusals = 0, releases = 0;
  for (int it = 0; it < 20000; it++) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    const int i = (int)((x >> 33) % N), op = (int)((x >> 20) % 8);
    if (op == 0 && s[i].n_blocks) { /* finish or preempt */
      assert_true(kv_seq_release(&p, &s[i]) >= 0);
      len[i] = 0;
      releases++;
    } else {
      if (len[i] == 0 && (x >> 40) % 2) { /* a new sequence, half of them on the prefix */
        assert_int_equal(kv_seq_share(&p, &s[i], prefix, NSH), 0);
        len[i] = NSH * KV_BLOCK_TOKENS;
      }
      const int want = len[i] + 1 + (int)((x >> 45) % 20);
      const int32_t free_before = p.n_free, need = kv_seq_blocks_needed(&s[i], want);
      if (kv_seq_grow(&p, &s[i], want) == 0) {
        assert_int_equal(p.n_free, free_before - need);
        assert_true(s[i].n_blocks * KV_BLOCK_TOKENS >= want);
        len[i] = want > len[i] ? want : len[i];
        grows++;
      } else {
        assert_int_equal(p.n_free, free_before); /* all or nothing */
        assert_true(need > free_before || kv_blocks_for(want) > CAP);
        refusals++;
      }
    }
    check_invariants(&p, s, N, prefix, NSH);
  }
  assert_true(grows > 1000 && refusals > 100 && releases > 1000); /* every path was taken */
  for (int i = 0; i < N; i++) {
    assert_true(kv_seq_release(&p, &s[i]) >= 0);
    kv_seq_destroy(&s[i]);
  }
  for (int i = 0; i < NSH; i++) assert_int_equal(kv_pool_release(&p, prefix[i]), 0);
  assert_int_equal(p.n_free, NB); /* nothing leaked */
  kv_pool_destroy(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(blocks_for_rounds_up),
      cmocka_unit_test(pool_hands_out_each_block_once),
      cmocka_unit_test(seq_grows_on_demand_all_or_nothing),
      cmocka_unit_test(prefix_blocks_are_reference_counted),
      cmocka_unit_test(random_serving_keeps_invariants),
  };
  return cmocka_run_group_tests_name("ch16_kv_alloc", tests, NULL, NULL);
}
