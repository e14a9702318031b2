// mxfp4_test.cpp — host test of layer 05's MXFP4 experts (mxfp4.cuh; no GPU needed).
//   make labs && nvcc -std=c++17 -arch=sm_90 -Icommon -Ibuild -o /tmp/lab05_mxfp4_test -x cu labs/05_precision/mxfp4_test.cpp
//        -Lbuild -lmoe -lcommon -lcublas && /tmp/lab05_mxfp4_test      (one line)
// 1. The element quantizer (lab05_mx4_e2m1) against an independent nearest-even search of the
//    E2M1 grid written here from the format's definition (OCP MX v1.0 §5.3.3): every grid
//    value, midpoint and neighbour of a midpoint, ±0, values past 6, inf, 200,000 seeded values.
// 2. The decoders (lab05_mx4_unpack32: the GEMV's; lab05_mx4_bf16x2: the MMA's) against the
//    loader's moe_mxfp4_value (labs/moe/mxfp4.c) for all 256 bytes at 8 scales, both nibble
//    orders; results exactly bf16.
// 3. The block rule (§6.3): the scale byte is floor(log2 amax) − 2 + 127 computed in double,
//    the largest element lands on 4 or 6 (or saturates from (6, 8)), every element within
//    2^(X+1), the codes equal an independent quantizer; a zero block gives zeros.
// 4. THE ROUND TRIP that makes --weights=mxfp4 exact on gpt-oss as released: 100,000 seeded
//    MXFP4 blocks (every nibble pattern family: small maxima, ±0, scales 0..240) and the
//    synthetic writer's bytes (moe_mxfp4_synth_*), decoded to bf16 by the loader's decoder
//    (moe_mxfp4_decode_row), quantized by lab05_mx4_quantize_row_host, decoded again: the
//    same bf16 bits, every element.
// 5. The store's offsets (lab05_mx4_offsets) for mini, tiny_gptoss, gptoss20b_mixtral: sizes,
//    16-byte alignment, one pitch per array over every layer and expert.
// 6. The MMA path: the stage's copy roles cover it once, b_frags_scaled's fragments equal the
//    decoded weights with their block scales, the 8-byte reads are conflict-free, the scale
//    stage copies (03's body: SCOPIES threads, 8 rows each) read the slice-major layout, and
//    an emulated mma.sync equals a double product, at BM 16/32/64, gate+up and down.
// 7. The configure hook and the bytes: --weights=mxfp4 swaps the expert stages, setup,
//    teardown, reference weights and roofline format; gptoss20b's experts per batch-1 token.
// Prints "ok: ..." / "FAILED: ..." and exits 1 on any failure.
#include "../moe/engine.cuh"
#include "layer.cuh"
#include "../moe/plan_check.h"
#include "../../tests/ptx_sim.h"  // mma.m16n8k16 emulated from the PTX fragment definitions

static const double kGrid[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};

// Nearest E2M1 code of y by search, ties to the even code (mantissa bit 0), saturating.
static unsigned ref_e2m1(double y) {
  const double a = fabs(y);
  unsigned best = 0;
  for (unsigned m = 1; m < 8; m++) {
    const double d = fabs(a - kGrid[m]), db = fabs(a - kGrid[best]);
    if (d < db || (d == db && (m & 1) == 0)) best = m;
  }
  if (a != a || a > 6) best = 7;
  return best | (signbit(y) ? 8u : 0u);
}
static double ref_value(unsigned nib, int s) { return (nib & 8 ? -1 : 1) * kGrid[nib & 7] * ldexp(1.0, s - 127); }
static float bits_f(uint32_t b) {
  float f;
  memcpy(&f, &b, 4);
  return f;
}
static uint16_t f_bf16(float f) {  // RNE
  uint32_t b;
  memcpy(&b, &f, 4);
  return (uint16_t)((b + 0x7FFF + ((b >> 16) & 1)) >> 16);
}

static void test_element() {
  int n = 0;
  for (int m = 0; m < 8; m++) {
    const double v = kGrid[m], next = m < 7 ? kGrid[m + 1] : 8;
    const double vals[5] = {v, (v + next) / 2, nextafter((v + next) / 2, 0), nextafter((v + next) / 2, 99), next};
    for (int j = 0; j < 5; j++)
      for (int sg = 0; sg < 2; sg++) {
        const float y = (float)(sg ? -vals[j] : vals[j]);
        CHECK(lab05_mx4_e2m1(y) == ref_e2m1(y), "e2m1(%a) = %u, want %u\n", y, lab05_mx4_e2m1(y), ref_e2m1(y));
        n++;
      }
  }
  CHECK(lab05_mx4_e2m1(-0.f) == 8 && lab05_mx4_e2m1(0.f) == 0, "±0\n");
  CHECK(lab05_mx4_e2m1(INFINITY) == 7 && lab05_mx4_e2m1(-INFINITY) == 15 && lab05_mx4_e2m1(1e30f) == 7, "saturation\n");
  uint64_t st = 3;
  for (int i = 0; i < 200000; i++, n++) {
    const float y = (float)((plan_rng_next(&st, 1u << 30) / (double)(1u << 30)) * 9.0 * (plan_rng_next(&st, 2) ? 1 : -1));
    CHECK(lab05_mx4_e2m1(y) == ref_e2m1(y), "e2m1(%a) = %u, want %u\n", y, lab05_mx4_e2m1(y), ref_e2m1(y));
    if (fails) return;
  }
  printf("ok: E2M1 quantizer: %d values (grid, midpoints and their neighbours, ±0, saturation, seeded) equal a "
         "nearest-even search of the grid\n", n);
}

static void test_decoders() {
  const int scales[8] = {0, 1, 2, 100, 120, 127, 200, 240};
  for (int si = 0; si < 8; si++) {
    const int s = scales[si];
    for (int b = 0; b < 256; b++) {
      uint8_t blk[16];
      for (int j = 0; j < 16; j++) blk[j] = (uint8_t)(b + 37 * j);  // byte b at position 0, others varied
      uint4 v;
      memcpy(&v, blk, 16);
      float f[32];
      lab05_mx4_unpack32(v, (unsigned)s, f);
      for (int k = 0; k < 32; k++) {
        const unsigned nib = (blk[k / 2] >> (4 * (k % 2))) & 15u;
        const float want = moe_mxfp4_value(nib, (uint8_t)s);
        CHECK(f[k] == want && signbit(f[k]) == signbit(want) && (double)want == ref_value(nib, s),
              "unpack32 byte %d k %d scale %d: %a, want %a\n", blk[k / 2], k, s, f[k], want);
        CHECK(bits_f((uint32_t)f_bf16(f[k]) << 16) == f[k], "%a (scale %d) is not a bf16\n", f[k], s);
      }
      const unsigned r = lab05_mx4_bf16x2((uint32_t)b, lab05_mx4_factor((unsigned)s));
      CHECK(bits_f(r << 16) == moe_mxfp4_value(b & 15u, (uint8_t)s) && bits_f(r & 0xFFFF0000u) == moe_mxfp4_value(b >> 4, (uint8_t)s),
            "bf16x2 of byte 0x%02x scale %d\n", b, s);
      if (fails) return;
    }
  }
  printf("ok: decoders: the GEMV's (32 per load) and the MMA's (bf16x2) equal the loader's moe_mxfp4_value for all "
         "256 bytes at 8 scales (0..240), exactly bf16, sign of zero kept\n");
}

// An independent block quantizer in double: X from frexp, codes by search.
static int ref_block(const uint16_t *w, uint8_t *q) {
  double amax = 0;
  for (int k = 0; k < 32; k++) amax = fmax(amax, fabs(bits_f((uint32_t)w[k] << 16)));
  int e = 0;
  if (amax > 0) frexp(amax, &e);  // amax = m · 2^e, m in [0.5, 1): floor(log2) = e − 1
  int x = amax > 0 ? e - 1 - 2 : -127;
  x = x < -127 ? -127 : x > 113 ? 113 : x;
  for (int b = 0; b < 16; b++)
    q[b] = (uint8_t)(ref_e2m1(ldexp(bits_f((uint32_t)w[2 * b] << 16), -x)) |
                     ref_e2m1(ldexp(bits_f((uint32_t)w[2 * b + 1] << 16), -x)) << 4);
  return x + 127;
}

static void test_blocks() {
  uint64_t st = 11;
  uint16_t w[32];
  uint8_t q[16], rq[16];
  for (int t = 0; t < 20000; t++) {
    const int e0 = (int)plan_rng_next(&st, 200) - 130;  // block ranges 2^-130 .. 2^69
    for (int k = 0; k < 32; k++)
      w[k] = f_bf16((float)ldexp((plan_rng_next(&st, 1u << 24) / (double)(1u << 24) * 2 - 1), e0 + (int)plan_rng_next(&st, 4)));
    const unsigned s = lab05_mx4_quantize_block(w, q);
    const int rs = ref_block(w, rq);
    CHECK((int)s == rs && !memcmp(q, rq, 16), "block %d (2^%d): scale %u vs %d or codes differ\n", t, e0, s, rs);
    double amax = 0;
    for (int k = 0; k < 32; k++) {
      const double g = bits_f((uint32_t)w[k] << 16), d = ref_value((q[k / 2] >> (4 * (k % 2))) & 15u, (int)s);
      amax = fmax(amax, fabs(g));
      CHECK(fabs(d - g) <= ldexp(1.0, (int)s - 127 + 1), "block %d k %d: %g vs %g\n", t, k, d, g);
    }
    if (s > 0 && s < 240) CHECK(amax >= ldexp(4.0, (int)s - 127) && amax < ldexp(8.0, (int)s - 127), "block %d: amax\n", t);
    if (fails) return;
  }
  memset(w, 0, sizeof w);
  memset(q, 0xFF, 16);
  CHECK(lab05_mx4_quantize_block(w, q) == 0 && !memcmp(q, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16), "zero block\n");
  for (int i = 0; i < 32; i++) w[i] = f_bf16(7.0f);  // (6, 8) · 2^0 clips to 6
  CHECK(lab05_mx4_quantize_block(w, q) == 127 && q[0] == 0x77, "7 -> 6 at scale 2^0\n");
  printf("ok: blocks: 20000 seeded bf16 blocks (2^-130..2^72): scale byte and codes equal an independent quantizer, "
         "amax / 2^X in [4, 8), every element within 2^(X+1); zero block, clip of (6, 8)\n");
}

static void test_round_trip() {
  uint64_t st = 29;
  const int K = 2880;
  uint8_t *blk = (uint8_t *)malloc(K / 2), *sc = (uint8_t *)malloc(K / 32), *q2 = (uint8_t *)malloc(K / 2),
          *s2 = (uint8_t *)malloc(K / 32);
  uint16_t *w = (uint16_t *)malloc(K * 2), *w2 = (uint16_t *)malloc(K * 2);
  int64_t rescaled = 0, n = 0;
  for (int t = 0; t < 1200; t++) {  // 1200 rows of 90 blocks: 108,000 blocks
    for (int c = 0; c < K / 32; c++) {
      const int fam = (int)plan_rng_next(&st, 4), top = fam == 0 ? 16 : fam == 1 ? 8 : fam == 2 ? 4 : 2;
      sc[c] = (uint8_t)plan_rng_next(&st, 241);  // 0 .. 240
      for (int b = 0; b < 16; b++) {  // nibbles below `top` in magnitude (family 3: only 0 and 0.5), any sign
        const unsigned lo = plan_rng_next(&st, (uint32_t)(top > 8 ? 16 : top)), hi = plan_rng_next(&st, (uint32_t)(top > 8 ? 16 : top));
        blk[c * 16 + b] = (uint8_t)((lo | (plan_rng_next(&st, 2) << 3)) | (hi | (plan_rng_next(&st, 2) << 3)) << 4);
      }
    }
    if (t >= 1000)  // the synthetic writer's bytes (what a written MXFP4 checkpoint holds)
      for (int i = 0; i < K / 2; i++) blk[i] = moe_mxfp4_synth_block(7, (uint64_t)t * K + i);
    if (t >= 1000)
      for (int c = 0; c < K / 32; c++) sc[c] = moe_mxfp4_synth_scale(7, (uint64_t)t * K + c, 0.02);
    moe_mxfp4_decode_row(blk, sc, K, w);  // the loader's decoder: the bf16 the engine starts from
    lab05_mx4_quantize_row_host(w, K, q2, s2);
    moe_mxfp4_decode_row(q2, s2, K, w2);
    for (int k = 0; k < K; k++) {
      CHECK(w[k] == w2[k], "row %d k %d: 0x%04x -> 0x%04x after the round trip\n", t, k, w[k], w2[k]);
      if (fails) return;
    }
    for (int c = 0; c < K / 32; c++) rescaled += s2[c] != sc[c], n++;
  }
  printf("ok: round trip: %lld MXFP4 blocks (seeded nibble families, scales 0..240, and the writer's bytes) decoded "
         "by the loader, re-quantized, decoded again: every bf16 bit equal (%lld blocks got another scale byte, "
         "same values)\n", (long long)n, (long long)rescaled);
  free(blk), free(sc), free(q2), free(s2), free(w), free(w2);
}

static void test_offsets(const char *preset) {
  MoeConfig c;
  MoeLayout lay;
  CHECK(!moe_config_preset(preset, &c) && !moe_layout_build(&c, &lay), "%s: layout\n", preset);
  int64_t *qo = (int64_t *)malloc(sizeof(int64_t) * 3 * lay.n), *so = qo + lay.n, *to = so + lay.n, tot[3], want[3] = {0, 0, 0};
  lab05_mx4_offsets(&lay, qo, so, to, tot);
  int mats = 0;
  for (int i = 0; i < lay.n; i++) {
    const MoeTensor *t = &lay.t[i];
    if (!lab05_mx4_is_expert(t->kind)) {
      CHECK(qo[i] < 0 && so[i] < 0 && to[i] < 0, "%s: %s is in the store\n", preset, t->name);
      continue;
    }
    CHECK(qo[i] == want[0] && so[i] == want[1] && to[i] == want[2] && qo[i] % 16 == 0 && to[i] % 16 == 0,
          "%s: %s offsets\n", preset, t->name);
    want[0] += t->rows * t->cols / 2, want[1] += t->rows * t->cols / 32, want[2] += (t->cols + 63) / 64 * t->rows * 2;
    mats++;
  }
  CHECK(tot[0] == want[0] && tot[1] == want[1] && tot[2] == want[2], "%s: totals\n", preset);
  CHECK(mats == 3 * c.L * c.E, "%s: %d expert matrices\n", preset, mats);
  const int g0 = moe_tensor_index(&lay, MOE_GATE, 0, 0), g1 = moe_tensor_index(&lay, MOE_GATE, 0, 1);
  const MoeKind kinds[3] = {MOE_GATE, MOE_UP, MOE_DOWN};
  for (int l = 0; l < c.L; l++)
    for (int x = 0; x < c.E; x++)
      for (int k = 0; k < 3; k++) {
        const int i = moe_tensor_index(&lay, kinds[k], l, x), i0 = moe_tensor_index(&lay, kinds[k], l, 0);
        CHECK(qo[i] - qo[i0] == x * (qo[g1] - qo[g0]) && so[i] - so[i0] == x * (so[g1] - so[g0]) &&
                  to[i] - to[i0] == x * (to[g1] - to[g0]),
              "%s: layer %d expert %d off the pitch\n", preset, l, x);
      }
  printf("ok: store of %s: %d matrices, %.1f MB nibbles + 2 x %.2f MB scales, 16-byte aligned, one pitch per array "
         "(%lld / %lld / %lld bytes)\n", preset, mats, tot[0] / 1e6, tot[1] / 1e6, (long long)(qo[g1] - qo[g0]),
         (long long)(so[g1] - so[g0]), (long long)(to[g1] - to[g0]));
  free(qo);
  moe_layout_free(&lay);
}

static float bf16_bits_to_f(uint32_t h) { return bits_f(h << 16); }

template <int BM, bool GLU>
static void test_mma_stage(uint64_t seed) {
  using namespace moe_grouped;
  typedef Lab05Mx4Weights W;
  constexpr int MATS = GLU ? 2 : 1, BROWS = MATS * BN, BCH = BK / W::kPerLoad, RB = BK / 2;  // RB: bytes per stage row
  constexpr int SCOPIES = BROWS * W::kScaleBytes / 16;
  uint8_t *q = (uint8_t *)malloc(BROWS * RB), *stage = (uint8_t *)malloc(BROWS * RB);
  uint8_t sc[BROWS][2], sstage[BROWS * 2];
  int *hit = (int *)calloc(BROWS * BCH, sizeof(int));
  for (int tid = 0; tid < THREADS; tid++)  // 03's copy roles: r = tid / BCH + i · THREADS / BCH, chunk tid % BCH
    for (int i = 0; i < BROWS * BCH / THREADS; i++) {
      const int r = tid / BCH + i * (THREADS / BCH), ch = tid % BCH, off = W::stage_offset(r, ch);
      CHECK(off >= r * RB && off + 16 <= (r + 1) * RB && off % 16 == 0, "BM=%d: chunk %d of row %d at %d\n", BM, ch, r, off);
      hit[off / 16]++;
    }
  for (int c = 0; c < BROWS * BCH; c++) CHECK(hit[c] == 1, "BM=%d GLU=%d: stage chunk %d written %d times\n", BM, GLU, c, hit[c]);
  uint64_t st = seed;
  for (int i = 0; i < BROWS * RB; i++) q[i] = (uint8_t)plan_rng_next(&st, 256);
  for (int r = 0; r < BROWS; r++) sc[r][0] = (uint8_t)(110 + plan_rng_next(&st, 30)), sc[r][1] = (uint8_t)(110 + plan_rng_next(&st, 30));
  for (int r = 0; r < BROWS; r++)
    for (int ch = 0; ch < BCH; ch++) memcpy(stage + W::stage_offset(r, ch), q + r * RB + 16 * ch, 16);
  // the scale stage as 03's body fills it: thread tid < SCOPIES copies 16 bytes of the
  // slice-major array (rows n0 + 8·(tid % (SCOPIES / MATS)) of matrix tid / (SCOPIES / MATS))
  // to stage rows tid·8 .. tid·8 + 7
  const int N = 4 * BN, KS = 3, n0 = BN, kt = 1;  // a matrix of 4 tiles, 3 slices; tile 1, slice 1
  uint8_t *slice_major = (uint8_t *)calloc((size_t)MATS * KS * N * 2, 1);
  for (int g = 0; g < MATS; g++)
    for (int r = 0; r < BN; r++)
      for (int h = 0; h < 2; h++) slice_major[(size_t)g * KS * N * 2 + kt * N * 2 + (n0 + r) * 2 + h] = sc[g * BN + r][h];
  memset(sstage, 0, sizeof sstage);
  for (int tid = 0; tid < SCOPIES; tid++) {
    const int g = tid / (SCOPIES / MATS), n = n0 + (tid % (SCOPIES / MATS)) * (16 / W::kScaleBytes);
    memcpy(sstage + tid * (16 / W::kScaleBytes) * W::kScaleBytes, slice_major + (size_t)g * KS * N * 2 + kt * N * 2 + 2 * n, 16);
  }
  CHECK(!memcmp(sstage, sc, sizeof sstage), "BM=%d GLU=%d: the scale stage's copies\n", BM, GLU);
  free(slice_major);
  uint16_t A[16][BK];
  for (int m = 0; m < 16; m++)
    for (int k = 0; k < BK; k++) A[m][k] = f_bf16((float)((int)plan_rng_next(&st, 2001) - 1000) / 1000.f);
  double worst = 0;
  for (int warp = 0; warp < THREADS / 32; warp++)
    for (int g = 0; g < MATS; g++) {
      const int row0 = g * BN + warp * 16;
      float d[2][32][4];
      memset(d, 0, sizeof d);
      for (int kk = 0; kk < BK / 16; kk++) {
        uint32_t b[32][4], a[32][4], b0[32], b1[32];
        for (int lane = 0; lane < 32; lane++) {
          const int gi = lane / 4, t = lane % 4, k0 = kk * 16 + 2 * t;
          W::b_frags_scaled(b[lane], stage, sstage, row0, kk, lane);
          for (int nt = 0; nt < 2; nt++)
            for (int h = 0; h < 2; h++) {
              const int row = row0 + nt * 8 + gi, k = k0 + 8 * h, s = sc[row][k / 32];
              const uint8_t byte = q[row * RB + k / 2];
              const uint32_t v = b[lane][2 * nt + h];
              CHECK(bf16_bits_to_f(v & 0xFFFFu) == (float)ref_value(byte & 15u, s) &&
                        bf16_bits_to_f(v >> 16) == (float)ref_value(byte >> 4, s),
                    "BM=%d GLU=%d warp %d mat %d kk %d lane %d: fragment %d\n", BM, GLU, warp, g, kk, lane, 2 * nt + h);
            }
          a[lane][0] = A[gi][k0] | (uint32_t)A[gi][k0 + 1] << 16;
          a[lane][1] = A[gi + 8][k0] | (uint32_t)A[gi + 8][k0 + 1] << 16;
          a[lane][2] = A[gi][k0 + 8] | (uint32_t)A[gi][k0 + 9] << 16;
          a[lane][3] = A[gi + 8][k0 + 8] | (uint32_t)A[gi + 8][k0 + 9] << 16;
        }
        for (int nt = 0; nt < 2; nt++) {  // one 8-byte read per lane: 8 rows, distinct bank pairs
          int word_of_bank[32];
          for (int i = 0; i < 32; i++) word_of_bank[i] = -1;
          for (int lane = 0; lane < 32; lane++) {
            const int word = (W::stage_offset(row0 + nt * 8 + lane / 4, kk >> 1) + (kk & 1) * 8) / 4;
            for (int j = 0; j < 2; j++) {
              CHECK(word_of_bank[(word + j) % 32] < 0 || word_of_bank[(word + j) % 32] == word + j,
                    "BM=%d warp %d kk %d: bank conflict (lane %d)\n", BM, warp, kk, lane);
              word_of_bank[(word + j) % 32] = word + j;
            }
          }
        }
        for (int nt = 0; nt < 2; nt++) {
          for (int lane = 0; lane < 32; lane++) b0[lane] = b[lane][2 * nt], b1[lane] = b[lane][2 * nt + 1];
          ptx_mma_m16n8k16(d[nt], a, b0, b1, [](uint16_t h) { return bf16_bits_to_f(h); });
        }
      }
      for (int nt = 0; nt < 2; nt++)
        for (int lane = 0; lane < 32; lane++)
          for (int e = 0; e < 4; e++) {
            const int m = lane / 4 + (e >= 2 ? 8 : 0), n = row0 + nt * 8 + 2 * (lane % 4) + (e & 1);
            double ref = 0, mag = 0;
            for (int k = 0; k < BK; k++) {
              const double p = bf16_bits_to_f(A[m][k]) * ref_value((q[n * RB + k / 2] >> (4 * (k % 2))) & 15u, sc[n][k / 32]);
              ref += p, mag += fabs(p);
            }
            const double err = fabs(d[nt][lane][e] - ref) / (mag > 0 ? mag : 1);
            CHECK(err <= 1e-6, "BM=%d GLU=%d: D[%d][%d] = %g, want %g\n", BM, GLU, m, n, d[nt][lane][e], ref);
            worst = err > worst ? err : worst;
          }
    }
  printf("ok: MMA stage BM=%d %s (%d B of shared memory per block, %d stages): copies cover it once, scale stage = "
         "slice-major rows, B fragments exact and conflict-free, emulated mma = double product (%.1e)\n",
         BM, GLU ? "gate+up" : "down", Lab03Smem<BM, GLU, W>::bytes, Lab03Stages<BM, W>::value, worst);
  free(q), free(stage), free(hit);
}

static void test_configure() {
  static Engine e;  // only cfg, ops, weights and B are read
  memset(&e, 0, sizeof e);
  CHECK(!moe_config_preset("gptoss20b_mixtral", &e.cfg), "preset\n");
  e.ops = lab05_ops();
  char err[256];
  CHECK(lab05_mx4_configure(&e, err, sizeof err) == 0, "configure: %s\n", err);
  CHECK(e.ops.expert_up == lab05_mx4_expert_up && e.ops.expert_down == lab05_mx4_expert_down &&
            e.ops.setup == lab05_mx4_setup && e.ops.teardown == lab05_mx4_teardown &&
            e.ops.ref_weights == lab05_mx4_ref_weights && e.ops.expert_fmt == MOE_WF_MXFP4 &&
            e.ops.dense_fmt == MOE_WF_FP8 && e.ops.qkv == lab05_ops().qkv && e.ops.tol_rel_l2 == 1e-2,
        "mxfp4 table\n");
  CHECK(lab05_weight_fmt("mxfp4") == LAB05_W_MXFP4 && lab05_weight_fmt("mxfp5") < 0 && lab05_weight_fmt("fp8") == LAB05_W_FP8,
        "--weights values\n");
  // the whole configure (layer 05's, fused.cuh's, then ours) at batch 1 and 64, fused or not:
  // the MXFP4 hooks survive fused.cuh's (its setup is wrapped, its stages kept)
  const char *fuse_env[2] = {"0", "2"};
  for (int fi = 0; fi < 2; fi++)
    for (int B = 1; B <= 64; B += 63) {
      setenv("LAB05_FUSE", fuse_env[fi], 1);
      static Engine f;
      memset(&f, 0, sizeof f);
      moe_config_preset("gptoss20b_mixtral", &f.cfg);
      f.B = B, f.weights = "mxfp4", f.ops = lab05_ops();
      CHECK(f.ops.configure(&f, err, sizeof err) == 0, "lab05_configure B=%d: %s\n", B, err);
      CHECK(f.ops.setup == lab05_mx4_setup && f.ops.expert_up == lab05_mx4_expert_up &&
                f.ops.expert_down == lab05_mx4_expert_down && f.ops.expert_fmt == MOE_WF_MXFP4 &&
                f.ops.ref_weights == lab05_mx4_ref_weights,
            "LAB05_FUSE=%s B=%d: the MXFP4 hooks\n", fuse_env[fi], B);
      const int fused = f.ops.qkv == lab05_fuse_qkv || f.ops.router == lab05_fuse_router;
      CHECK(fused == (fi == 1 && B == 1), "LAB05_FUSE=%s B=%d: fused stages %d\n", fuse_env[fi], B, fused);
      CHECK(f.ops.dense_fmt == (B == 1 ? MOE_WF_FP8 : MOE_WF_BF16), "B=%d: dense format\n", B);
    }
  unsetenv("LAB05_FUSE");
  MoeConfig odd = e.cfg;
  odd.F = 2880 + 16;
  e.cfg = odd;
  CHECK(lab05_mx4_configure(&e, err, sizeof err) != 0 && strstr(err, "multiples of 32"), "F %% 32 != 0 refused\n");
  MoeConfig c;
  moe_config_preset("gptoss20b_mixtral", &c);
  const double mx = moe_step_bytes_fmt(&c, 1, 0, MOE_WF_MXFP4, MOE_WF_FP8, 1), f8 = moe_step_bytes_fmt(&c, 1, 0, MOE_WF_FP8, MOE_WF_FP8, 1);
  const double experts_fp8 = (f8 - mx) / (1 - 4.25 / 8);  // the difference is the experts' 8 − 4.25 bits
  const double want = (double)c.L * c.top_k * 3 * c.F * c.D;  // bytes at one per weight
  CHECK(fabs(experts_fp8 - want) < 1e-6 * want, "expert bytes %g vs %g\n", experts_fp8, want);
  printf("ok: configure: --weights=mxfp4 swaps the expert stages, setup, teardown, reference weights and roofline "
         "format (batch 1 and 64, fused stages on and off: the hooks survive fused.cuh's), refuses F %% 32 != 0; gptoss20b_mixtral batch 1: experts %.3f GB (mxfp4) vs %.3f GB (fp8), step "
         "%.3f vs %.3f GB\n", experts_fp8 * 4.25 / 8 / 1e9, experts_fp8 / 1e9, mx / 1e9, f8 / 1e9);
}

int main() {
  test_element();
  test_decoders();
  test_blocks();
  test_round_trip();
  test_offsets("mini");
  test_offsets("tiny_gptoss");
  test_offsets("gptoss20b_mixtral");
  test_mma_stage<16, true>(201);
  test_mma_stage<16, false>(202);
  test_mma_stage<32, true>(203);
  test_mma_stage<64, false>(204);
  test_configure();
  return fails ? 1 : 0;
}
