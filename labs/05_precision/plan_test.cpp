// plan_test.cpp — host test of layer 05's fp8 store and index code (no GPU needed).
//   make labs && nvcc -std=c++17 -arch=sm_90 -Icommon -Ibuild -o /tmp/lab05_plan_test -x cu labs/05_precision/plan_test.cpp
//        -Lbuild -lmoe -lcommon -lcublas && /tmp/lab05_plan_test      (one line)
// 1. The quantizer of one element (lab05_quantize1, the host path of the kernel's
//    arithmetic) against an independent E4M3 encoder written here from the format's
//    definition (1 sign, 4 exponent bits with bias 7, 3 mantissa bits, no infinities,
//    S.1111.111 NaN, largest finite 448; OCP 8-bit FP spec v1.0): every value halfway
//    between two neighbours (ties to even), the neighbours themselves, the subnormals,
//    values past 448 (saturate to ±448, also ±inf), NaN, and 200,000 seeded values
//    spread over 2^-14 … 2^10.
// 2. The decoder used by the check (E4M3 → fp16 → fp32) against the definition for all
//    256 codes.
// 3. A row (lab05_quantize_row_host): seeded bf16 rows; the largest |w| lands on ±448
//    exactly; every |s·q − w| within 2^-4·|w| + s·2^-10; a row of zeros: s = 0, q = 0.
// 4. The scale rows (lab05_scale_rows) of mini and gptoss20b_mixtral: every matrix gets
//    rows consecutive scales in layout order, vectors none, the experts one pitch in bytes
//    and in scales (what lab05_w8_build checks on the device).
// 5. The GEMV's index code: lab05_xs_at is a permutation of 0..R·K−1 and puts chunk c's
//    plane j at float4 (r·4 + j)·K/16 + c; lab05_proj_row maps q|k|v's concatenated rows;
//    lab05_gemv_rows; and a host run of the kernel's loop order (lanes, ILP, planes)
//    equals a plain dot product of the dequantized row to fp32 rounding.
// 6. The table: lab05_ops() is lab04_ops() with embed, qkv, out, router, logits, the expert
//    stages, configure/setup/teardown replaced, fp8 formats, the reference's weights hook
//    and its tolerances. And (information) mini's fp8 model against its bf16 model.
// 7. The fp8 experts (grouped8.cuh): the B-fragment decoder on all E4M3 pairs; the MMA
//    kernel's fp8 weight stage (copy roles, swizzle, fragments, banks, an emulated
//    mma.sync against a double product) at BM 16, 32, 64, gate+up and down.
// 8. The fused stages (fused.cuh): RoPE pairs of the q/k/v kernel, when configure fuses.
// Prints "ok: ..." / "FAILED: ..." and exits 1 on any failure.
#include "../moe/engine.cuh"
#include "layer.cuh"
#include "../moe/plan_check.h"
#include "../../tests/ptx_sim.h"  // mma.m16n8k16 emulated from the PTX fragment definitions

// ---- an independent E4M3 encoder / decoder (from the format's definition) -------------------
static double e4m3_decode(unsigned char b) {
  const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
  if (e == 15 && m == 7) return NAN;
  const double v = e == 0 ? m / 8.0 * ldexp(1.0, -6) : (1.0 + m / 8.0) * ldexp(1.0, e - 7);
  return s ? -v : v;
}
static unsigned char e4m3_encode_satfinite(double y) {
  const unsigned char sign = signbit(y) ? 0x80 : 0;
  if (y != y) return 0x7F | sign;
  const double a = fabs(y);
  if (a >= 448.0) return 0x7E | sign;              // saturate (finite or not)
  if (a < ldexp(1.0, -6)) {                         // subnormal: multiples of 2^-9
    const double q = rint(a / ldexp(1.0, -9));      // round half to even (default mode)
    return (unsigned char)q | sign;                 // q == 8 is the smallest normal, 0x08
  }
  int e;
  frexp(a, &e);
  e -= 1;                                           // a = 1.f · 2^e
  double m = rint((a / ldexp(1.0, e) - 1.0) * 8.0);
  if (m == 8) m = 0, e += 1;
  const int code = ((e + 7) << 3) | (int)m;
  return (unsigned char)(code > 0x7E ? 0x7E : code) | sign;
}

static void check_element(float w, float s) {
  const float y = s > 0.f ? w / s : 0.f;
  const unsigned char want = e4m3_encode_satfinite(y), got = lab05_quantize1(w, s);
  const bool nan = y != y;
  CHECK(nan ? (got & 0x7F) == 0x7F : got == want, "quantize(%a / %a = %a): 0x%02x, want 0x%02x\n", w, s, y, got, want);
}

static void test_quantizer() {
  const float scales[3] = {1.f, 0.0078125f, 3.0517578e-05f};
  for (int si = 0; si < 3; si++) {
    const float s = scales[si];
    for (int b = 0; b < 0x7E; b++) {  // every positive code, its midpoint to the next, signs
      const double v = e4m3_decode((unsigned char)b), next = e4m3_decode((unsigned char)(b + 1));
      const double vals[4] = {v, (v + next) / 2, nextafter((v + next) / 2, 0), nextafter((v + next) / 2, 1e9)};
      for (int j = 0; j < 4; j++) {
        check_element((float)(vals[j] * s), s);
        check_element((float)(-vals[j] * s), s);
        if (fails) return;
      }
    }
    const float big[6] = {448.f, 449.f, 463.99f, 464.f, 480.f, 1e30f};
    for (int j = 0; j < 6; j++) {
      check_element(big[j] * s, s);
      check_element(-big[j] * s, s);
      CHECK(lab05_quantize1(big[j] * s, s) == 0x7E, "%g saturates to 448\n", big[j]);
    }
  }
  CHECK(lab05_quantize1(INFINITY, 1.f) == 0x7E && lab05_quantize1(-INFINITY, 1.f) == 0xFE, "inf saturates\n");
  CHECK((lab05_quantize1(NAN, 1.f) & 0x7F) == 0x7F, "NaN stays NaN\n");
  CHECK(lab05_quantize1(1.f, 0.f) == 0, "scale 0 gives 0\n");
  uint64_t st = 17;
  for (int i = 0; i < 200000; i++) {
    const double u = plan_rng_next(&st, 1u << 30) / (double)(1u << 30);
    const float w = (float)(ldexp(1.0 + u, (int)plan_rng_next(&st, 24) - 14) * (plan_rng_next(&st, 2) ? 1 : -1));
    check_element(w, scales[i % 3]);
    if (fails) return;
  }
  printf("ok: quantizer: every code, midpoint and neighbour (3 scales), saturation, inf, NaN, 200000 seeded values "
         "equal an independent E4M3 encoder\n");
}

static void test_decoder() {
  for (int b = 0; b < 256; b++) {
    const __half_raw hr = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)b, __NV_E4M3);
    const float f = __half2float(__half(hr));
    const double want = e4m3_decode((unsigned char)b);
    CHECK(want != want ? f != f : (double)f == want, "decode 0x%02x: %g, want %g\n", b, f, want);
  }
  printf("ok: decoder: all 256 E4M3 codes through fp16 equal the definition\n");
}

static void test_row() {
  const int K = 2880;
  uint16_t *w = (uint16_t *)malloc(K * 2);
  __nv_fp8_storage_t *q = (__nv_fp8_storage_t *)malloc(K);
  uint64_t st = 5;
  int exp_;
  for (int t = 0; t < 50; t++) {
    const float range = ldexp(1.0f, (int)plan_rng_next(&st, 20) - 12);
    int at_max = -1;
    float amax = 0;
    for (int k = 0; k < K; k++) {
      const float f = range * (2.f * plan_rng_next(&st, 1u << 24) / (float)(1u << 24) - 1.f);
      uint32_t b;
      memcpy(&b, &f, 4);
      w[k] = (uint16_t)((b + 0x7FFF + ((b >> 16) & 1)) >> 16);  // bf16, RNE
      const uint32_t bb = (uint32_t)w[k] << 16;
      float g;
      memcpy(&g, &bb, 4);
      if (fabsf(g) > amax) amax = fabsf(g), at_max = k;
    }
    const float s = lab05_quantize_row_host(w, K, q);
    CHECK(s > 0 && frexp(s, &exp_) == 0.5 && amax / s <= 448.f && amax / s > 224.f, "row %d: scale %a for amax %a\n",
          t, s, amax);
    CHECK(fabs(e4m3_decode(q[at_max])) >= 224 && fabs(e4m3_decode(q[at_max])) <= 448,
          "row %d: the largest element is 0x%02x, not in [224, 448]\n", t, q[at_max]);
    for (int k = 0; k < K; k++) {
      const uint32_t bb = (uint32_t)w[k] << 16;
      float g;
      memcpy(&g, &bb, 4);
      const double d = s * e4m3_decode(q[k]);
      CHECK(fabs(d - g) <= (fabs(g) * 0.0625 + s * ldexp(1.0, -10)) * 1.001, "row %d k %d: %g vs %g\n", t, k, d, g);
      const float df = (float)d;  // exactly a bf16: what the CPU reference is given
      uint32_t b;
      memcpy(&b, &df, 4);
      CHECK((double)df == d && (b & 0xFFFFu) == 0, "row %d k %d: s·q = %a is not a bf16\n", t, k, d);
    }
  }
  memset(w, 0, K * 2);
  memset(q, 0xFF, K);
  const float s0 = lab05_quantize_row_host(w, K, q);
  int nz = 0;
  for (int k = 0; k < K; k++) nz += q[k] != 0;
  CHECK(s0 == 0.f && nz == 0, "zero row: scale %g, %d non-zero codes\n", s0, nz);
  free(w);
  free(q);
  for (int i = 0; i < 100000; i++) {  // the scale rule alone: a power of two, amax / s in (224, 448]
    const float amax = (float)ldexp(1.0 + plan_rng_next(&st, 1u << 23) / (double)(1u << 23), (int)plan_rng_next(&st, 60) - 40);
    const float sc = lab05_row_scale(amax);
    CHECK(frexp(sc, &exp_) == 0.5 && amax / sc <= 448.f && amax / sc > 224.f, "scale %a for amax %a\n", sc, amax);
  }
  CHECK(lab05_row_scale(448.f) == 1.f && lab05_row_scale(448.5f) == 2.f && lab05_row_scale(224.f) == 0.5f &&
            lab05_row_scale(0.f) == 0.f,
        "scale at 448, 448.5, 224, 0\n");
  printf("ok: rows: 50 seeded bf16 rows of 2880 (ranges 2^-12..2^7): power-of-two scale, amax in [224, 448], every "
         "element within E4M3's rounding and s·q exactly a bf16; 100000 scales; a zero row gives scale 0 and zeros\n");
}

static void test_scale_rows(const char *preset) {
  MoeConfig c;
  MoeLayout lay;
  CHECK(!moe_config_preset(preset, &c) && !moe_layout_build(&c, &lay), "%s: layout\n", preset);
  int64_t *row0 = (int64_t *)malloc(sizeof(int64_t) * lay.n), n = 0, mats = 0;
  const int64_t total = lab05_scale_rows(&lay, row0);
  for (int i = 0; i < lay.n; i++) {
    if (lay.t[i].cols == 0) {
      CHECK(row0[i] == -1, "%s: vector %s has scales\n", preset, lay.t[i].name);
      continue;
    }
    CHECK(row0[i] == n, "%s: %s at scale %lld, want %lld\n", preset, lay.t[i].name, (long long)row0[i], (long long)n);
    n += lay.t[i].rows;
    mats++;
  }
  CHECK(total == n, "%s: %lld scales, want %lld\n", preset, (long long)total, (long long)n);
  const int g0 = moe_tensor_index(&lay, MOE_GATE, 0, 0), g1 = moe_tensor_index(&lay, MOE_GATE, 0, 1);
  const int64_t ws = (int64_t)(lay.t[g1].offset - lay.t[g0].offset), ss = row0[g1] - row0[g0];
  CHECK(ss == 2 * c.F + c.D, "%s: scale pitch %lld, want 2F + D = %d\n", preset, (long long)ss, 2 * c.F + c.D);
  const MoeKind kinds[3] = {MOE_GATE, MOE_UP, MOE_DOWN};
  for (int l = 0; l < c.L; l++)
    for (int x = 0; x < c.E; x++)
      for (int k = 0; k < 3; k++) {
        const int i = moe_tensor_index(&lay, kinds[k], l, x), i0 = moe_tensor_index(&lay, kinds[k], l, 0);
        CHECK((int64_t)(lay.t[i].offset - lay.t[i0].offset) == x * ws && row0[i] - row0[i0] == x * ss,
              "%s: layer %d expert %d off the pitch\n", preset, l, x);
      }
  printf("ok: scale rows of %s: %lld matrices, %lld scales (%.2f MB), expert pitch %lld bytes / %lld scales\n", preset,
         (long long)mats, (long long)total, total * 4 / 1e6, (long long)ws, (long long)ss);
  free(row0);
  moe_layout_free(&lay);
}

static void test_index() {
  for (int R = 1; R <= 8; R *= 2)
    for (int K = 16; K <= 4096; K *= 4) {
      char *seen = (char *)calloc((size_t)R * K, 1);
      for (int r = 0; r < R; r++)
        for (int k = 0; k < K; k++) {
          const int at = lab05_xs_at(r, k, K);
          CHECK(at >= 0 && at < R * K && !seen[at], "xs_at(%d, %d, K=%d) = %d repeats or escapes\n", r, k, K, at);
          seen[at] = 1;
          CHECK(at / 4 == (r * 4 + (k % 16) / 4) * (K / 16) + k / 16 && at % 4 == k % 4, "xs_at(%d, %d): plane\n", r, k);
          const int i4 = k / 4;  // the prologue's float4 store of piece i4
          CHECK(at == ((r * 4 + (i4 & 3)) * (K >> 4) + (i4 >> 2)) * 4 + k % 4, "prologue store of (%d, %d)\n", r, k);
        }
      free(seen);
    }
  Lab05Proj8 p;
  memset(&p, 0, sizeof p);
  p.count = 3, p.n[0] = 4096, p.n[1] = 512, p.n[2] = 512;
  int row, m;
  m = lab05_proj_row(p, 0, &row);
  CHECK(m == 0 && row == 0, "row 0\n");
  m = lab05_proj_row(p, 4095, &row);
  CHECK(m == 0 && row == 4095, "row 4095\n");
  m = lab05_proj_row(p, 4096, &row);
  CHECK(m == 1 && row == 0, "row 4096\n");
  m = lab05_proj_row(p, 4608, &row);
  CHECK(m == 2 && row == 0, "row 4608\n");
  m = lab05_proj_row(p, 5119, &row);
  CHECK(m == 2 && row == 511, "row 5119\n");
  CHECK(lab05_proj_row(p, 5120, &row) == -1, "past the end\n");
  p.count = 1;
  CHECK(lab05_proj_row(p, 4096, &row) == -1, "one matrix: past its end\n");
  const int want[10] = {1, 1, 2, 4, 4, 8, 8, 8, 8, 8};
  for (int B = 1; B <= 9; B++) CHECK(lab05_gemv_rows(B) == want[B], "gemv rows at B=%d\n", B);
  CHECK(lab05_gemv_rows(64) == 8, "gemv rows at B=64\n");
  // the kernel's order of the sum: lane, ILP step, 16-byte chunk, plane, element; then
  // the butterfly over lanes. Against a double dot product of the decoded row.
  const int K = 2880, K16 = K / 16;
  unsigned char *q = (unsigned char *)malloc(K);
  float *x = (float *)malloc(K * 4), *xs = (float *)malloc(K * 4);
  uint64_t st = 9;
  for (int k = 0; k < K; k++) {
    q[k] = (unsigned char)plan_rng_next(&st, 256);
    if ((q[k] & 0x7F) == 0x7F) q[k] = 0;
    x[k] = 2.f * plan_rng_next(&st, 1u << 20) / (float)(1u << 20) - 1.f;
    xs[lab05_xs_at(0, k, K)] = x[k];
  }
  float lane_acc[32];
  double ref = 0, mag = 0;
  for (int k = 0; k < K; k++) ref += e4m3_decode(q[k]) * x[k], mag += fabs(e4m3_decode(q[k]) * x[k]);
  for (int lane = 0; lane < 32; lane++) {
    float a = 0;
    for (int c0 = lane; c0 < K16; c0 += 32 * kLab05GemvIlp)
      for (int j = 0; j < kLab05GemvIlp && c0 + 32 * j < K16; j++) {
        const int c = c0 + 32 * j;
        for (int pl = 0; pl < 4; pl++)
          for (int i = 0; i < 4; i++) a = fmaf((float)e4m3_decode(q[16 * c + 4 * pl + i]), xs[((pl)*K16 + c) * 4 + i], a);
      }
    lane_acc[lane] = a;
  }
  for (int o = 16; o > 0; o >>= 1)
    for (int l = 0; l < 32; l++)
      if (!(l & o)) lane_acc[l] += lane_acc[l | o], lane_acc[l | o] = lane_acc[l];
  CHECK(fabs(lane_acc[0] - ref) <= 1e-6 * mag, "kernel order: %g vs %g\n", lane_acc[0], ref);
  free(q), free(x), free(xs);
  printf("ok: GEMV index code: xs_at a conflict-free permutation (R 1..8, K 16..4096) and the prologue's float4 stores on it, q|k|v rows, rows per launch, "
         "the kernel's summation order vs a double dot product (%.1e)\n", fabs(lane_acc[0] - ref) / mag);
}

static void test_table() {
  const LayerOps a = lab04_ops(), b = lab05_ops();
  CHECK(b.embed == lab05_embed && b.qkv == lab05_qkv && b.out == lab05_out && b.router == lab05_router &&
            b.logits == lab05_logits,
        "dense stages\n");
  CHECK(b.expert_up == lab05_expert_up && b.expert_down == lab05_expert_down, "expert stages\n");
  CHECK(b.configure == lab05_configure && b.setup == lab05_setup && b.teardown == lab05_teardown, "hooks\n");
  CHECK(b.rope == a.rope && b.attend == a.attend && b.topk == a.topk &&
            b.dispatch == a.dispatch && b.combine == a.combine && b.sample == a.sample && b.graph == a.graph &&
            b.experts_plan == a.experts_plan && b.kv_alloc == a.kv_alloc && b.graph_edit == a.graph_edit,
        "every other stage is 04's\n");
  CHECK(b.dense_fmt == MOE_WF_FP8 && b.expert_fmt == MOE_WF_FP8 && b.tol_rel_l2 == 1e-2 && b.tol_top1 == 0.99 &&
            !strcmp(b.dtype, "fp8") && b.weight_fmts && !a.weight_fmts && b.ref_weights == lab05_ref_weights &&
            !a.ref_weights,
        "formats, tolerances, the reference's weights\n");
  CHECK(lab05_weight_fmt(NULL) == LAB05_W_FP8 && lab05_weight_fmt("fp8") == LAB05_W_FP8 &&
            lab05_weight_fmt("bf16") == LAB05_W_BF16 && lab05_weight_fmt("mxfp4") == LAB05_W_MXFP4 &&
            lab05_weight_fmt("int4") == -1,
        "--weights values\n");
  printf("ok: table: lab05_ops() = lab04_ops() with embed, qkv, out, router, logits, expert_up/down, configure, setup, "
         "teardown replaced; fp8 formats; the reference on the fp8 weights, tolerances 1e-2 / 99%%\n");
}

// The fp8 model against the bf16 model on mini (information, not a bound): the CPU
// reference on the seeded bf16 weights and on their fp8 values (every matrix through
// lab05_quantize_row_host, s·q as bf16: exact), 32 teacher-forced positions of 2 rows.
// Why the engine's check compares with the fp8 model (ref_weights) instead.
static void test_drift() {
  MoeConfig c;
  MoeLayout lay;
  CHECK(!moe_config_preset("mini", &c) && !moe_layout_build(&c, &lay), "mini layout\n");
  uint16_t *a = moe_synth_arena(&lay, 42), *b = (uint16_t *)malloc(lay.numel * 2);
  memcpy(b, a, lay.numel * 2);
  __nv_fp8_storage_t *q = (__nv_fp8_storage_t *)malloc(lay.max_numel);
  for (int i = 0; i < lay.n; i++) {
    const MoeTensor *t = &lay.t[i];
    for (int64_t r = 0; t->cols > 0 && r < t->rows; r++) {
      uint16_t *w = b + t->offset + r * t->cols;
      const float sc = lab05_quantize_row_host(w, t->cols, q);
      for (int64_t k = 0; k < t->cols; k++) {
        const float v = (float)(sc * e4m3_decode(q[k]));
        uint32_t bits;
        memcpy(&bits, &v, 4);
        w[k] = (uint16_t)(bits >> 16);  // exact (test_row)
      }
    }
  }
  const int P = 32, rows = 2, V = c.V;
  MoeArenaFetch fa = {&lay, a}, fb = {&lay, b};
  MoeRef ra, rb;
  CHECK(!moe_ref_init(&ra, &lay, moe_ref_fetch_arena, &fa, rows, P, 2) &&
            !moe_ref_init(&rb, &lay, moe_ref_fetch_arena, &fb, rows, P, 2),
        "reference\n");
  double *la = (double *)malloc(sizeof(double) * V * rows), *lb = (double *)malloc(sizeof(double) * V * rows);
  double num = 0, den = 0;
  int agree = 0, tok[2];
  uint64_t st = 11;
  for (int p = 0; p < P; p++) {
    for (int r = 0; r < rows; r++) tok[r] = (int)plan_rng_next(&st, (uint32_t)V);
    moe_ref_step(&ra, tok, p, la);
    moe_ref_step(&rb, tok, p, lb);
    for (int r = 0; r < rows; r++) {
      int ia = 0, ib = 0;
      for (int v = 0; v < V; v++) {
        const double d = lb[r * V + v] - la[r * V + v];
        num += d * d, den += la[r * V + v] * la[r * V + v];
        if (la[r * V + v] > la[r * V + ia]) ia = v;
        if (lb[r * V + v] > lb[r * V + ib]) ib = v;
      }
      agree += ia == ib;
    }
  }
  CHECK(num == num && den > 0, "drift not finite\n");
  printf("ok: drift (information): mini's fp8 model against its bf16 model, %d positions x %d rows: rel_l2 %.2e, "
         "top-1 agreement %.1f%% (seeded random weights: near-tied routers and maxima)\n",
         P, rows, sqrt(num / den), 100.0 * agree / (P * rows));
  moe_ref_free(&ra), moe_ref_free(&rb);
  free(a), free(b), free(q), free(la), free(lb);
  moe_layout_free(&lay);
}

// ---- the fp8 experts (grouped8.cuh: 03's kernel bodies with Lab05Fp8Weights) ----------------
static float bf16_bits_to_f(uint32_t h) {
  const uint32_t b = h << 16;
  float f;
  memcpy(&f, &b, 4);
  return f;
}

// The B-fragment decoder on every pair of E4M3 codes (NaN codes aside: the quantizer never
// writes them) against the definition, low byte to low half.
static void test_experts8_convert() {
  int n = 0;
  for (int v = 0; v < 65536; v++) {
    const unsigned char lo = (unsigned char)(v & 0xFF), hi = (unsigned char)(v >> 8);
    if ((lo & 0x7F) == 0x7F || (hi & 0x7F) == 0x7F) continue;
    const unsigned r = lab05_fp8x2_to_bf16x2((uint16_t)v);
    n++;
    CHECK(bf16_bits_to_f(r & 0xFFFFu) == e4m3_decode(lo) && bf16_bits_to_f(r >> 16) == e4m3_decode(hi),
          "fp8x2 0x%04x -> bf16x2 0x%08x\n", v, r);
  }
  printf("ok: experts: E4M3 pairs -> bf16x2 (the MMA path's B decode) exact for all %d non-NaN pairs\n", n);
}

// One shared-memory weight stage of the MMA kernel at (BM, GLU): the copy roles of 03's body
// at 16 weights per copy (thread t: chunk t % 4 of rows t / 4 + 32·i) write every 16-byte
// chunk of [BROWS][64] once, inside its row (stage_offset one to one); seeded rows placed
// there give, for every warp, matrix and k-step, B fragments (b_frags) holding exactly the
// bf16 of the bytes the PTX fragment layout names, read without bank conflicts (a 2-byte
// read instruction: 8 rows × 4 lanes on 16 distinct 4-byte words in 16 banks), and the
// emulated mma.sync over the four k-steps (tests/ptx_sim.h) equals a double product of
// seeded bf16 activations with the decoded weights.
template <int BM, bool GLU>
static void test_experts8_stage(uint64_t seed) {
  using namespace moe_grouped;
  typedef Lab05Fp8Weights W;
  constexpr int MATS = GLU ? 2 : 1, BROWS = MATS * BN, BCH = BK / W::kPerLoad;
  unsigned char *q = (unsigned char *)malloc(BROWS * BK), *stage = (unsigned char *)malloc(BROWS * BK);
  int *hit = (int *)calloc(BROWS * BCH, sizeof(int));
  for (int tid = 0; tid < THREADS; tid++)
    for (int i = 0; i < BROWS * BCH / THREADS; i++) {
      const int r = tid / BCH + i * (THREADS / BCH), ch = tid % BCH, off = W::stage_offset(r, ch);
      CHECK(off >= r * BK && off + 16 <= (r + 1) * BK && off % 16 == 0, "BM=%d: chunk %d of row %d at byte %d\n", BM,
            ch, r, off);
      hit[off / 16]++;
    }
  for (int c = 0; c < BROWS * BCH; c++) CHECK(hit[c] == 1, "BM=%d GLU=%d: stage chunk %d written %d times\n", BM, GLU, c, hit[c]);
  uint64_t st = seed;
  for (int i = 0; i < BROWS * BK; i++) {
    q[i] = (unsigned char)plan_rng_next(&st, 256);
    if ((q[i] & 0x7F) == 0x7F) q[i] = 0x38;  // NaN code: 1.0 instead
  }
  for (int r = 0; r < BROWS; r++)
    for (int ch = 0; ch < BCH; ch++) memcpy(stage + W::stage_offset(r, ch), q + r * BK + 16 * ch, 16);
  uint16_t A[16][BK];  // one m16 tile of bf16 activations (BM / 16 tiles share the fragments)
  for (int m = 0; m < 16; m++)
    for (int k = 0; k < BK; k++) {
      const float f = 2.f * plan_rng_next(&st, 1u << 20) / (float)(1u << 20) - 1.f;
      uint32_t b;
      memcpy(&b, &f, 4);
      A[m][k] = (uint16_t)(b >> 16);  // truncation: any bf16 will do
    }
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
          W::b_frags(b[lane], (const W::T *)stage, row0, kk, lane);
          for (int nt = 0; nt < 2; nt++)
            for (int h = 0; h < 2; h++) {
              const unsigned char *want = q + (row0 + nt * 8 + gi) * BK + k0 + 8 * h;
              const uint32_t v = b[lane][2 * nt + h];
              CHECK(bf16_bits_to_f(v & 0xFFFFu) == e4m3_decode(want[0]) && bf16_bits_to_f(v >> 16) == e4m3_decode(want[1]),
                    "BM=%d GLU=%d warp %d mat %d kk %d lane %d: fragment %d holds the wrong weights\n", BM, GLU, warp, g,
                    kk, lane, 2 * nt + h);
            }
          a[lane][0] = A[gi][k0] | (uint32_t)A[gi][k0 + 1] << 16;
          a[lane][1] = A[gi + 8][k0] | (uint32_t)A[gi + 8][k0 + 1] << 16;
          a[lane][2] = A[gi][k0 + 8] | (uint32_t)A[gi][k0 + 9] << 16;
          a[lane][3] = A[gi + 8][k0 + 8] | (uint32_t)A[gi + 8][k0 + 9] << 16;
        }
        for (int nt = 0; nt < 2; nt++)
          for (int h = 0; h < 2; h++) {  // one 2-byte read instruction: distinct words -> distinct banks
            int word_of_bank[32];
            for (int i = 0; i < 32; i++) word_of_bank[i] = -1;
            for (int lane = 0; lane < 32; lane++) {
              const int word = (W::stage_offset(row0 + nt * 8 + lane / 4, kk) + 2 * (lane % 4) + 8 * h) / 4;
              CHECK(word_of_bank[word % 32] < 0 || word_of_bank[word % 32] == word,
                    "BM=%d warp %d kk %d: bank conflict (lane %d)\n", BM, warp, kk, lane);
              word_of_bank[word % 32] = word;
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
              const double p = bf16_bits_to_f(A[m][k]) * e4m3_decode(q[n * BK + k]);
              ref += p, mag += fabs(p);
            }
            const double err = fabs(d[nt][lane][e] - ref) / (mag > 0 ? mag : 1);
            CHECK(err <= 1e-6, "BM=%d GLU=%d: D[%d][%d] = %g, want %g\n", BM, GLU, m, n, d[nt][lane][e], ref);
            worst = err > worst ? err : worst;
          }
    }
  printf("ok: experts: MMA weight stage BM=%d %s (%d B of shared memory per block): copies cover it once, B "
         "fragments exact and conflict-free, emulated mma = double product (%.1e)\n",
         BM, GLU ? "gate+up" : "down", Lab03Smem<BM, GLU, Lab05Fp8Weights>::bytes, worst);
  free(q), free(stage), free(hit);
}

// 8. fused.cuh: the q/k/v + RoPE kernel's pairs cover every row of q|k|v once, both rows
//    of a pair in one matrix and one head, j + hd/2 apart; lab05_fuse_configure fuses at
//    batch <= 8 only, keeps q/k/v + RoPE apart for Qwen3's q/k norm, the dispatch sort at
//    level 2 (the default) only; LAB05_FUSE=0 or --weights=bf16 leave the table alone, and
//    another value is refused.
static void test_fuse() {
  const char *presets[] = {"mini", "gptoss20b_mixtral", "tiny_gptoss", "tiny_qwen3"};
  for (int i = 0; i < 4; i++) {
    MoeConfig c;
    CHECK(!moe_config_preset(presets[i], &c), "%s\n", presets[i]);
    Lab05Proj8 p;
    memset(&p, 0, sizeof p);
    p.count = 3, p.n[0] = c.H * c.head_dim, p.n[1] = p.n[2] = c.H_kv * c.head_dim;
    const int total = p.n[0] + 2 * p.n[1], half = c.head_dim / 2;
    char *seen = (char *)calloc(total, 1);
    for (int t = 0; t < total / 2; t++) {
      const int g = lab05_fuse_pair_row(t, c.head_dim);
      int r0, r1;
      const int m0 = lab05_proj_row(p, g, &r0), m1 = lab05_proj_row(p, g + half, &r1);
      CHECK(m0 >= 0 && m0 == m1 && r1 == r0 + half && r0 / c.head_dim == r1 / c.head_dim && r0 % c.head_dim < half &&
                !seen[g] && !seen[g + half],
            "%s: pair %d -> rows %d, %d\n", presets[i], t, g, g + half);
      seen[g] = seen[g + half] = 1;
    }
    for (int g = 0; g < total; g++) CHECK(seen[g], "%s: row %d not covered\n", presets[i], g);
    free(seen);
  }
  struct { const char *preset, *weights, *env; int B, qkv, router, sort; } cs[] = {
      {"gptoss20b_mixtral", NULL, "2", 1, 1, 1, 1}, {"mini", "fp8", "2", 8, 1, 1, 1}, {"tiny_gptoss", NULL, "2", 3, 1, 1, 1},
      {"tiny_qwen3", NULL, "2", 3, 0, 1, 1},        {"mini", NULL, "1", 1, 1, 1, 0},  {"mini", NULL, "2", 9, 0, 0, 0},
      {"mini", NULL, "0", 1, 0, 0, 0},              {"mini", "bf16", "2", 1, 0, 0, 0},
      {"mini", NULL, "q", 1, 1, 0, 0},              {"mini", NULL, "t", 1, 0, 1, 0},  {"mini", NULL, "s", 1, 0, 1, 1},
      {"mini", NULL, NULL, 1, kLab05FuseDefault & 1, (kLab05FuseDefault >> 1) & 1, (kLab05FuseDefault >> 2) & 1}};
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    static Engine e;
    memset(&e, 0, sizeof e);
    CHECK(!moe_config_preset(cs[i].preset, &e.cfg), "%s\n", cs[i].preset);
    e.B = cs[i].B, e.kv.max_len = 64, e.weights = cs[i].weights, e.ops = lab05_ops();
    if (cs[i].env) setenv("LAB05_FUSE", cs[i].env, 1);
    else unsetenv("LAB05_FUSE");
    char err[256] = "";
    const int rc = lab05_configure(&e, err, sizeof err);
    const LayerOps *o = &e.ops;
    CHECK(!rc, "%s B=%d: configure: %s\n", cs[i].preset, cs[i].B, err);
    CHECK((o->qkv == lab05_fuse_qkv) == cs[i].qkv && (o->rope == NULL) == cs[i].qkv &&
              (o->router == lab05_fuse_router) == cs[i].router && (o->topk == NULL) == cs[i].router &&
              (o->setup == lab05_fuse_setup) == (cs[i].qkv || cs[i].router) && (o->dispatch == NULL) == cs[i].sort,
          "%s B=%d weights=%s LAB05_FUSE=%s: fused q/k/v %d (want %d), router %d (want %d)\n", cs[i].preset, cs[i].B,
          cs[i].weights ? cs[i].weights : "-", cs[i].env ? cs[i].env : "-", o->qkv == lab05_fuse_qkv, cs[i].qkv,
          o->router == lab05_fuse_router, cs[i].router);
  }
  {
    static Engine e;
    memset(&e, 0, sizeof e);
    moe_config_preset("mini", &e.cfg);
    e.B = 1, e.kv.max_len = 64, e.ops = lab05_ops();
    setenv("LAB05_FUSE", "3", 1);
    char err[256] = "";
    CHECK(lab05_configure(&e, err, sizeof err) && strstr(err, "LAB05_FUSE"), "LAB05_FUSE=3 accepted\n");
  }
  CHECK(lab05_fuse_parts(NULL) == kLab05FuseDefault && lab05_fuse_parts("2") == 7 && lab05_fuse_parts("1") == 3 &&
            lab05_fuse_parts("0") == 0 && lab05_fuse_parts("q") == 1 && lab05_fuse_parts("t") == 2 &&
            lab05_fuse_parts("s") == 6 && lab05_fuse_parts("qs") == 7 && lab05_fuse_parts("") == -1 &&
            lab05_fuse_parts("yes") == -1 && lab05_fuse_parts("3") == -1,
        "lab05_fuse_parts\n");
  unsetenv("LAB05_FUSE");
  printf("ok: fused stages: RoPE pairs cover q|k|v once (4 presets), the table fused at batch <= 8 only, q/k/v + RoPE "
         "kept apart under q/k norm, the sort at level 2 only, LAB05_FUSE=0 and --weights=bf16 unfused, unset = level %d, "
         "3 refused\n", kLab05FuseDefault);
}

int main() {
  test_quantizer();
  test_decoder();
  test_row();
  test_scale_rows("mini");
  test_scale_rows("gptoss20b_mixtral");
  test_index();
  test_table();
  test_drift();
  test_experts8_convert();
  test_experts8_stage<16, true>(101);
  test_experts8_stage<16, false>(102);
  test_experts8_stage<32, true>(103);
  test_experts8_stage<64, false>(104);
  test_fuse();
  return fails ? 1 : 0;
}
