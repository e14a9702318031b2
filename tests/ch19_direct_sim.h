/* ch19_direct_sim.h — the host simulation behind tests/test_ch19_direct_sim.c: the table of
 * index maps under test (Maps, kMaps: ch19/fp8_kv.h's, replaceable by wrong ones), the PTX
 * emulation over one shared-memory stage (ldmatrix, prmt, cvt e4m3x2 → f16x2, movmatrix,
 * mma.m16n8k16), one CTA of attn_fp8_direct_kernel lane by lane (sim_split: tile loads,
 * both operand layouts, online softmax, the 4-warp merge) and the split combine
 * (sim_attention). Static functions for that one test's translation unit. */
#pragma once
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "convert.h"
#include "../ch19/fp8_kv.h"
#include "ptx_sim.h"

/* The maps under test (ch19/fp8_kv.h), replaceable by wrong ones. */
typedef struct {
  int (*load_row0)(int tid, int rows);
  int (*load_row)(int tid, int i, int rows, int coalesced);
  int (*scale_row)(int tid, int rows, int coalesced);
  int (*k_row)(int kpw, int warp, int nt, int lane);
  int (*v_row)(int kpw, int warp, int kk, int lane);
  int (*v_chunk)(int sg, int lane);
  int (*qk_dim)(int ks, int qc, int hi);
  int (*pv_dim)(int n, int qc, int e);
  uint32_t (*row_off)(int row, int chunk);
  int (*swap_dim)(int ch, int qr, int odd);
  uint32_t sel_even, sel_odd;
} Maps;
static int h_load_row0(int t, int r) { return fp8kv_load_row0(t, r); }
static int h_load_row(int t, int i, int r, int c) { return fp8kv_load_row(t, i, r, c); }
static int h_scale_row(int t, int r, int c) { return fp8kv_scale_row(t, r, c); }
static int h_k_row(int k, int w, int n, int l) { return fp8kv_k_row(k, w, n, l); }
static int h_v_row(int k, int w, int kk, int l) { return fp8kv_v_row(k, w, kk, l); }
static int h_v_chunk(int sg, int l) { return fp8kv_v_chunk(sg, l); }
static int h_qk_dim(int ks, int qc, int hi) { return fp8kv_qk_dim(ks, qc, hi); }
static int h_pv_dim(int n, int qc, int e) { return fp8kv_pv_dim(n, qc, e); }
static uint32_t h_row_off(int r, int c) { return fp8kv_row_off(r, c); }
static int h_swap_dim(int ch, int qr, int odd) { return fp8kv_swap_dim(ch, qr, odd); }
static const Maps kMaps = {h_load_row0, h_load_row, h_scale_row, h_k_row, h_v_row, h_v_chunk, h_qk_dim, h_pv_dim, h_row_off, h_swap_dim,
                           FP8KV_V_SEL_EVEN, FP8KV_V_SEL_ODD};

/* ---- PTX emulation ---------------------------------------------------------------- */
static uint8_t stage[2 * 128 * 64 + 128 * 4]; /* one stage: K codes, V codes, scale words */
static uint8_t written[sizeof stage];
static int loads_ok; /* 0 once a stage byte was written twice, never, or out of place */
static uint32_t rd32(uint32_t off) { uint32_t v; memcpy(&v, stage + off, 4); return v; }
static void ldmatrix_x4(const uint32_t addr[32], int trans, uint32_t r[32][4]) { ptx_ldmatrix_x4(stage, addr, trans, r); }
/* prmt.b32 (default mode): byte n of the result is byte (sel >> 4n) & 7 of {y, x}. */
static uint32_t byte_perm(uint32_t x, uint32_t y, uint32_t sel) {
  const uint64_t xy = (uint64_t)x | ((uint64_t)y << 32);
  uint32_t r = 0;
  for (int n = 0; n < 4; n++) r |= (uint32_t)((xy >> (8 * ((sel >> (4 * n)) & 7))) & 0xFF) << (8 * n);
  return r;
}
/* cvt.rn.f16x2.e4m3x2 of the low (hi = 0) or high 16 bits: byte 0 → low half (exact). */
static uint32_t cvt_e4m3x2(uint32_t x, int hi) {
  const uint32_t b = hi ? x >> 16 : x;
  return gtl_f32_to_fp16(gtl_fp8e4m3_to_f32((uint8_t)b)) |
         ((uint32_t)gtl_f32_to_fp16(gtl_fp8e4m3_to_f32((uint8_t)(b >> 8))) << 16);
}
/* movmatrix.m8n8.trans.b16: lane t holds row t/4, columns 2(t%4), 2(t%4)+1 of M before and
 * of Mᵀ after. */
static void movmatrix_t(const uint32_t in[32], uint32_t out[32]) {
  uint16_t M[8][8];
  for (int t = 0; t < 32; t++) M[t / 4][2 * (t % 4)] = (uint16_t)in[t], M[t / 4][2 * (t % 4) + 1] = (uint16_t)(in[t] >> 16);
  for (int t = 0; t < 32; t++) out[t] = M[2 * (t % 4)][t / 4] | ((uint32_t)M[2 * (t % 4) + 1][t / 4] << 16);
}
static uint32_t pack_f16(float lo, float hi) { return gtl_f32_to_fp16(lo) | ((uint32_t)gtl_f32_to_fp16(hi) << 16); }
static void mma(float d[32][4], uint32_t a[32][4], const uint32_t b0[32], const uint32_t b1[32]) {
  ptx_mma_m16n8k16(d, a, b0, b1, gtl_fp16_to_f32);
}

/* One (sequence, KV head): len keys in a pool of P-token pages (table[logical] = physical),
 * codes kp/vp [pages][P][64], scale words sp [pages][P]; q [G][64]; out [G][64]. */
typedef struct {
  int G, kpw, len, window, num_splits, P, swap; /* swap: ATTN8D_SWAP_AB's path (G <= 8) */
  int coalesced;                                /* ATTN8D_COALESCED's tile loads */
  const float *q, *sinks;
  const int32_t *table;
  const uint8_t *kp, *vp;
  const uint32_t *sp;
} Problem;

static void sim_split(const Maps *mp, const Problem *pb, int split, float *o_part, float *lse_part,
                      float *out) {
  const int kpw = pb->kpw, TILE = 4 * kpw, RPT = TILE / 32, NT = kpw / 8, KK = kpw / 16, G = pb->G;
  const int upper = G > 8, len = pb->len, lo = pb->window > 0 && len > pb->window ? len - pb->window : 0;
  const int lo_al = lo & ~(TILE - 1), ns = pb->num_splits;
  int shift = 0;
  while ((1 << shift) < pb->P) shift++;
  int chunk = (len - lo_al + ns - 1) / ns;
  chunk = (chunk + TILE - 1) / TILE * TILE;
  const int start = lo_al + split * chunk, end = len < start + chunk ? len : start + chunk;
  const int n_tiles = end > start ? (end - start + TILE - 1) / TILE : 0;
  const float sl2 = 0.125f * 1.4426950408889634f;
  static uint32_t qa[32][4][4];
  for (int lane = 0; lane < 32; lane++)
    for (int ks = 0; ks < 4; ks++)
      for (int i = 0; i < 4; i++) {
        const int r = lane / 4 + (i & 1) * 8, d = mp->qk_dim(ks, lane & 3, i >> 1);
        qa[lane][ks][i] = r < G ? pack_f16(pb->q[r * 64 + d], pb->q[r * 64 + d + 1]) : 0u;
      }
  static float m_lo[4][32], m_hi[4][32], l_lo[4][32], l_hi[4][32], o[4][32][8][4];
  static float ot[4][32][4][4], mh[4][32][2], lh[4][32][2];
  static uint32_t qb[32][4][2];
  for (int lane = 0; lane < 32; lane++)
    for (int ks = 0; ks < 4; ks++)
      for (int hi = 0; hi < 2; hi++) {
        const int r = lane / 4, d = mp->qk_dim(ks, lane & 3, hi);
        qb[lane][ks][hi] = r < G ? pack_f16(pb->q[r * 64 + d], pb->q[r * 64 + d + 1]) : 0u;
      }
  memset(ot, 0, sizeof ot), memset(lh, 0, sizeof lh);
  for (int w = 0; w < 4; w++)
    for (int l = 0; l < 32; l++) mh[w][l][0] = mh[w][l][1] = -INFINITY;
  int E[4];
  for (int w = 0; w < 4; w++) {
    E[w] = -126;
    for (int l = 0; l < 32; l++) {
      m_lo[w][l] = m_hi[w][l] = -INFINITY, l_lo[w][l] = l_hi[w][l] = 0;
      memset(o[w][l], 0, sizeof o[w][l]);
    }
  }
  const uint32_t vs = TILE * 64, scb = 2 * TILE * 64;
  for (int t = 0; t < n_tiles; t++) {
    memset(stage, 0xCD, sizeof stage); /* what the stage held before */
    memset(written, 0, sizeof written);
    for (int tid = 0; tid < 128 && pb->coalesced; tid++) { /* load_tile, ATTN8D_COALESCED */
      const int lc = tid & 3;
      for (int i = 0; i < RPT; i++) {
        const int r = mp->load_row(tid, i, TILE, 1), j = start + t * TILE + r, ok = j >= lo && j < end;
        const int64_t off = ok ? (int64_t)pb->table[j >> shift] * pb->P * 64 + (int64_t)(j & (pb->P - 1)) * 64 + lc * 16 : 0;
        for (int op = 0; op < 2; op++) {
          const uint32_t dst = (op ? vs : 0) + mp->row_off(r, lc);
          if (r < 0 || r >= TILE || dst + 16 > (uint32_t)(op ? scb : vs)) {
            loads_ok = 0;
            continue;
          }
          for (int x = 0; x < 16; x++) {
            stage[dst + x] = ok ? (op ? pb->vp : pb->kp)[off + x] : 0;
            written[dst + x]++;
          }
        }
      }
      const int r = mp->scale_row(tid, TILE, 1), j = start + t * TILE + r;
      if (r >= TILE) loads_ok = 0;
      if (r >= 0 && r < TILE) {
        const int ok = j >= lo && j < end;
        const uint32_t w = ok ? pb->sp[(int64_t)pb->table[j >> shift] * pb->P + (j & (pb->P - 1))] : 0, dst = scb + r * 4;
        memcpy(stage + dst, &w, 4);
        for (int x = 0; x < 4; x++) written[dst + x]++;
      }
    }
    for (int tid = 0; tid < 128 && !pb->coalesced; tid++) { /* load_tile */
      const int lc = tid & 3, lr0 = mp->load_row0(tid, TILE), j0 = start + t * TILE + lr0;
      int64_t off0 = 0, soff0 = 0;
      if (j0 + RPT - 1 >= lo && j0 < end) {
        const int64_t e = pb->table[j0 >> shift];
        off0 = e * pb->P * 64 + (int64_t)(j0 & (pb->P - 1)) * 64 + lc * 16;
        soff0 = e * pb->P + (j0 & (pb->P - 1));
      }
      for (int i = 0; i < RPT; i++) {
        const int ok = j0 + i >= lo && j0 + i < end;
        for (int op = 0; op < 2; op++) {
          const uint32_t dst = (op ? vs : 0) + mp->row_off(lr0 + i, lc);
          if (lr0 + i >= TILE || dst + 16 > (uint32_t)(op ? scb : vs)) {
            loads_ok = 0;
            continue;
          }
          for (int x = 0; x < 16; x++) {
            stage[dst + x] = ok ? (op ? pb->vp : pb->kp)[off0 + i * 64 + x] : 0;
            written[dst + x]++;
          }
        }
      }
      if (lc < RPT && lr0 + lc < TILE) {
        const int ok = j0 + lc >= lo && j0 + lc < end;
        const uint32_t w = ok ? pb->sp[soff0 + lc] : 0, dst = scb + (lr0 + lc) * 4;
        memcpy(stage + dst, &w, 4);
        for (int x = 0; x < 4; x++) written[dst + x]++;
      }
    }
    for (uint32_t x = 0; x < (uint32_t)(2 * TILE * 64 + TILE * 4); x++) loads_ok &= written[x] == 1;
    const int full = start + t * TILE >= lo && start + t * TILE + TILE <= end;
    for (int warp = 0; warp < 4 && pb->swap; warp++) { /* attn8d_swap_tile */
      float st[2][32][4], vsc[32][2][2], mx[32][2], vmax = 0.f;
      for (int mt = 0; mt < KK; mt++) {
        memset(st[mt], 0, sizeof st[mt]);
        for (int h = 0; h < 2; h++) {
          uint32_t addr[32], kr[32][4], b0[32], b1[32], a[32][4];
          for (int l = 0; l < 32; l++) addr[l] = mp->row_off(mp->v_row(kpw, warp, mt, l), mp->v_chunk(h, l));
          ldmatrix_x4(addr, 0, kr);
          for (int hs = 0; hs < 2; hs++) {
            for (int l = 0; l < 32; l++) {
              a[l][0] = cvt_e4m3x2(kr[l][2 * hs], 0), a[l][1] = cvt_e4m3x2(kr[l][2 * hs + 1], 0);
              a[l][2] = cvt_e4m3x2(kr[l][2 * hs], 1), a[l][3] = cvt_e4m3x2(kr[l][2 * hs + 1], 1);
              b0[l] = qb[l][2 * h + hs][0], b1[l] = qb[l][2 * h + hs][1];
            }
            mma(st[mt], a, b0, b1);
          }
        }
      }
      for (int l = 0; l < 32; l++) {
        const int qr = l / 4;
        mx[l][0] = mx[l][1] = -INFINITY;
        for (int mt = 0; mt < KK; mt++)
          for (int kh = 0; kh < 2; kh++) {
            const int key = kpw * warp + 16 * mt + 8 * kh + qr, j = start + t * TILE + key;
            const uint32_t w = rd32(scb + key * 4);
            const float ksc = fp8kv_bf16_bits_to_float((uint16_t)(w & 0xFFFF)) * sl2;
            vsc[l][mt][kh] = fp8kv_bf16_bits_to_float((uint16_t)(w >> 16));
            vmax = fmaxf(vmax, vsc[l][mt][kh]);
            st[mt][l][2 * kh] *= ksc, st[mt][l][2 * kh + 1] *= ksc;
            if (!full && (j < lo || j >= end)) st[mt][l][2 * kh] = st[mt][l][2 * kh + 1] = -INFINITY;
            mx[l][0] = fmaxf(mx[l][0], st[mt][l][2 * kh]), mx[l][1] = fmaxf(mx[l][1], st[mt][l][2 * kh + 1]);
          }
      }
      float use[32][2], al[32][2];
      for (int l = 0; l < 32; l++) /* the column's 8 lanes: the shuffles xor 4, 8, 16 */
        for (int e = 0; e < 2; e++) {
          float m = -INFINITY;
          for (int r = 0; r < 8; r++) m = fmaxf(m, mx[(l & 3) + 4 * r][e]);
          const float mn = fmaxf(mh[warp][l][e], m);
          use[l][e] = mn == -INFINITY ? 0.f : mn;
          al[l][e] = exp2f(mh[warp][l][e] - use[l][e]);
          mh[warp][l][e] = mn;
        }
      uint32_t vb;
      memcpy(&vb, &vmax, 4);
      const int e_t = vmax > 0.f ? (int)((vb >> 23) & 0xFF) - 126 : E[warp];
      int E_new = E[warp] > e_t ? E[warp] : e_t;
      E_new = E_new < 127 ? E_new : 127;
      const float rescale = E_new > E[warp] ? ldexpf(1.f, E[warp] - E_new < -126 ? -126 : E[warp] - E_new) : 1.f;
      const float inv = ldexpf(1.f, -E_new < -126 ? -126 : -E_new);
      E[warp] = E_new;
      uint32_t pbf[2][2][32]; /* Pᵀ B fragments of k-step mt, keys 0-7 / 8-15 of it */
      float sum[32][2] = {{0}};
      for (int mt = 0; mt < KK; mt++)
        for (int kh = 0; kh < 2; kh++) {
          uint32_t m[32];
          for (int l = 0; l < 32; l++) {
            const float p0 = exp2f(st[mt][l][2 * kh] - use[l][0]), p1 = exp2f(st[mt][l][2 * kh + 1] - use[l][1]);
            const float f = vsc[l][mt][kh] * inv;
            sum[l][0] += p0, sum[l][1] += p1;
            m[l] = pack_f16(p0 * f, p1 * f);
          }
          movmatrix_t(m, pbf[mt][kh]);
        }
      for (int l = 0; l < 32; l++)
        for (int e = 0; e < 2; e++) {
          lh[warp][l][e] = lh[warp][l][e] * al[l][e] + sum[l][e];
          for (int ch = 0; ch < 4; ch++) ot[warp][l][ch][e] *= al[l][e] * rescale, ot[warp][l][ch][e + 2] *= al[l][e] * rescale;
        }
      for (int kk = 0; kk < KK; kk++)
        for (int sg = 0; sg < 2; sg++) {
          uint32_t addr[32], vr[32][4];
          for (int l = 0; l < 32; l++) addr[l] = vs + mp->row_off(mp->v_row(kpw, warp, kk, l), mp->v_chunk(sg, l));
          ldmatrix_x4(addr, 1, vr);
          for (int hs = 0; hs < 2; hs++) {
            uint32_t a[32][4];
            float d[32][4];
            for (int l = 0; l < 32; l++) {
              const uint32_t ve = byte_perm(vr[l][2 * hs], vr[l][2 * hs + 1], mp->sel_even);
              const uint32_t vo = byte_perm(vr[l][2 * hs], vr[l][2 * hs + 1], mp->sel_odd);
              a[l][0] = cvt_e4m3x2(ve, 0), a[l][1] = cvt_e4m3x2(vo, 0), a[l][2] = cvt_e4m3x2(ve, 1), a[l][3] = cvt_e4m3x2(vo, 1);
              memcpy(d[l], ot[warp][l][2 * sg + hs], 16);
            }
            mma(d, a, pbf[kk][0], pbf[kk][1]);
            for (int l = 0; l < 32; l++) memcpy(ot[warp][l][2 * sg + hs], d[l], 16);
          }
        }
    }
    for (int warp = 0; warp < 4 && !pb->swap; warp++) {
      float s[4][32][4];
      for (int nt = 0; nt < NT; nt++) { /* S = Q · K̂ᵀ */
        uint32_t addr[32], kr[32][4], b0[32], b1[32], a[32][4];
        memset(s[nt], 0, sizeof s[nt]);
        for (int l = 0; l < 32; l++) addr[l] = mp->row_off(mp->k_row(kpw, warp, nt, l), l >> 3);
        ldmatrix_x4(addr, 0, kr);
        for (int m = 0; m < 4; m++) {
          for (int l = 0; l < 32; l++) {
            b0[l] = cvt_e4m3x2(kr[l][m], 0), b1[l] = cvt_e4m3x2(kr[l][m], 1);
            memcpy(a[l], qa[l][m], 16);
          }
          mma(s[nt], a, b0, b1);
        }
      }
      float vsc[32][4][2], al_lo[32], al_hi[32], use_lo[32], use_hi[32];
      for (int quad = 0; quad < 8; quad++) { /* attn8_scale_scores; the quad's shuffles */
        float mx_lo = -INFINITY, mx_hi = -INFINITY;
        for (int qc = 0; qc < 4; qc++) {
          const int lane = quad * 4 + qc, c0 = warp * kpw + 2 * qc, j0 = start + t * TILE + c0;
          for (int nt = 0; nt < NT; nt++)
            for (int e = 0; e < 2; e++) {
              const uint32_t w = rd32(scb + (c0 + nt * 8 + e) * 4);
              const float ksc = fp8kv_bf16_bits_to_float((uint16_t)(w & 0xFFFF)) * sl2;
              vsc[lane][nt][e] = fp8kv_bf16_bits_to_float((uint16_t)(w >> 16));
              s[nt][lane][e] *= ksc, s[nt][lane][e + 2] *= ksc;
              const int j = j0 + nt * 8 + e;
              if (!full && (j < lo || j >= end)) s[nt][lane][e] = s[nt][lane][e + 2] = -INFINITY;
              mx_lo = fmaxf(mx_lo, s[nt][lane][e]), mx_hi = fmaxf(mx_hi, s[nt][lane][e + 2]);
            }
        }
        for (int qc = 0; qc < 4; qc++) {
          const int lane = quad * 4 + qc;
          const float mn_lo = fmaxf(m_lo[warp][lane], mx_lo);
          use_lo[lane] = mn_lo == -INFINITY ? 0.f : mn_lo;
          al_lo[lane] = exp2f(m_lo[warp][lane] - use_lo[lane]);
          m_lo[warp][lane] = mn_lo;
          al_hi[lane] = 1.f, use_hi[lane] = 0.f;
          if (upper) {
            const float mn_hi = fmaxf(m_hi[warp][lane], mx_hi);
            use_hi[lane] = mn_hi == -INFINITY ? 0.f : mn_hi;
            al_hi[lane] = exp2f(m_hi[warp][lane] - use_hi[lane]);
            m_hi[warp][lane] = mn_hi;
          }
        }
      }
      float vmax = 0.f; /* every quad covers the warp's kpw keys: the same maximum */
      for (int l = 0; l < 4; l++)
        for (int nt = 0; nt < NT; nt++) vmax = fmaxf(vmax, fmaxf(vsc[l][nt][0], vsc[l][nt][1]));
      uint32_t vb;
      memcpy(&vb, &vmax, 4);
      const int e_t = vmax > 0.f ? (int)((vb >> 23) & 0xFF) - 126 : E[warp];
      int E_new = E[warp] > e_t ? E[warp] : e_t;
      E_new = E_new < 127 ? E_new : 127;
      const float rescale = E_new > E[warp] ? ldexpf(1.f, E[warp] - E_new < -126 ? -126 : E[warp] - E_new) : 1.f;
      const float inv = ldexpf(1.f, -E_new < -126 ? -126 : -E_new);
      E[warp] = E_new;
      uint32_t pa[2][32][4];
      for (int l = 0; l < 32; l++) {
        float sum_lo = 0, sum_hi = 0;
        for (int nt = 0; nt < NT; nt++) {
          const float p0 = exp2f(s[nt][l][0] - use_lo[l]), p1 = exp2f(s[nt][l][1] - use_lo[l]);
          sum_lo += p0 + p1;
          pa[nt >> 1][l][(nt & 1) * 2] = pack_f16(p0 * (vsc[l][nt][0] * inv), p1 * (vsc[l][nt][1] * inv));
          pa[nt >> 1][l][(nt & 1) * 2 + 1] = 0u;
          if (upper) {
            const float p2 = exp2f(s[nt][l][2] - use_hi[l]), p3 = exp2f(s[nt][l][3] - use_hi[l]);
            sum_hi += p2 + p3;
            pa[nt >> 1][l][(nt & 1) * 2 + 1] = pack_f16(p2 * (vsc[l][nt][0] * inv), p3 * (vsc[l][nt][1] * inv));
          }
        }
        l_lo[warp][l] = l_lo[warp][l] * al_lo[l] + sum_lo;
        if (upper) l_hi[warp][l] = l_hi[warp][l] * al_hi[l] + sum_hi;
        for (int n = 0; n < 8; n++) {
          o[warp][l][n][0] *= al_lo[l] * rescale, o[warp][l][n][1] *= al_lo[l] * rescale;
          if (upper) o[warp][l][n][2] *= al_hi[l] * rescale, o[warp][l][n][3] *= al_hi[l] * rescale;
        }
      }
      for (int kk = 0; kk < KK; kk++)
        for (int sg = 0; sg < 2; sg++) { /* O += P · V̂ */
          uint32_t addr[32], vr[32][4];
          for (int l = 0; l < 32; l++) addr[l] = vs + mp->row_off(mp->v_row(kpw, warp, kk, l), mp->v_chunk(sg, l));
          ldmatrix_x4(addr, 1, vr);
          for (int hs = 0; hs < 2; hs++)
            for (int par = 0; par < 2; par++) {
              uint32_t b0[32], b1[32];
              float d[32][4];
              const int n = (2 * sg + hs) * 2 + par;
              for (int l = 0; l < 32; l++) {
                const uint32_t v = byte_perm(vr[l][2 * hs], vr[l][2 * hs + 1], par ? mp->sel_odd : mp->sel_even);
                b0[l] = cvt_e4m3x2(v, 0), b1[l] = cvt_e4m3x2(v, 1);
                memcpy(d[l], o[warp][l][n], 16);
              }
              mma(d, pa[kk], b0, b1);
              for (int l = 0; l < 32; l++) memcpy(o[warp][l][n], d[l], 16);
            }
        }
    }
  }
  /* epilogue: row sums over the lane quad, o times 2^E in true dim order, merge, sink */
  static float so[4][16][64];
  float smx[4][16], sls[4][16];
  for (int w = 0; w < 4 && pb->swap; w++)
    for (int l = 0; l < 32; l++) {
      const int qr = l >> 2, qc = l & 3;
      for (int e = 0; e < 2; e++) {
        float L = 0;
        for (int r = 0; r < 8; r++) L += lh[w][qc + 4 * r][e];
        if (qr == 0) smx[w][2 * qc + e] = mh[w][l][e], sls[w][2 * qc + e] = L;
        for (int ch = 0; ch < 4; ch++) {
          so[w][2 * qc + e][mp->swap_dim(ch, qr, 0)] = ot[w][l][ch][e] * ldexpf(1.f, E[w]);
          so[w][2 * qc + e][mp->swap_dim(ch, qr, 1)] = ot[w][l][ch][e + 2] * ldexpf(1.f, E[w]);
        }
      }
    }
  for (int w = 0; w < 4 && !pb->swap; w++)
    for (int l = 0; l < 32; l++) {
      const int qr = l >> 2, qc = l & 3, base = l & ~3;
      float Llo = 0, Lhi = 0;
      for (int i = 0; i < 4; i++) Llo += l_lo[w][base + i], Lhi += l_hi[w][base + i];
      if (qc == 0) smx[w][qr] = m_lo[w][l], sls[w][qr] = Llo, smx[w][qr + 8] = m_hi[w][l], sls[w][qr + 8] = Lhi;
      for (int n = 0; n < 8; n++)
        for (int e = 0; e < 2; e++) {
          so[w][qr][mp->pv_dim(n, qc, e)] = o[w][l][n][e] * ldexpf(1.f, E[w]);
          so[w][qr + 8][mp->pv_dim(n, qc, e)] = o[w][l][n][e + 2] * ldexpf(1.f, E[w]);
        }
    }
  for (int r = 0; r < G; r++)
    for (int d = 0; d < 64; d++) {
      float M = -INFINITY, L = 0, O = 0;
      for (int w = 0; w < 4; w++) M = fmaxf(M, smx[w][r]);
      for (int w = 0; w < 4; w++) {
        const float f = smx[w][r] == -INFINITY ? 0.f : exp2f(smx[w][r] - M);
        L += sls[w][r] * f, O += so[w][r][d] * f;
      }
      if (ns == 1) {
        const float s2 = pb->sinks[r] * 1.4426950408889634f, Mx = fmaxf(M, s2), f = exp2f(M - Mx);
        out[r * 64 + d] = O * f / (L * f + exp2f(s2 - Mx));
      } else {
        o_part[(r * ns + split) * 64 + d] = L > 0.f ? O / L : 0.f;
        if (d == 0) lse_part[r * ns + split] = L > 0.f ? M + log2f(L) : -INFINITY;
      }
    }
}

/* All splits, then attn_splitkv_combine_kernel's merge. */
static void sim_attention(const Maps *mp, const Problem *pb, float *out) {
  const int ns = pb->num_splits;
  float *o_part = malloc(sizeof(float) * pb->G * ns * 64), *lse = malloc(sizeof(float) * pb->G * ns);
  for (int sp = 0; sp < ns; sp++) sim_split(mp, pb, sp, o_part, lse, out);
  if (ns > 1)
    for (int r = 0; r < pb->G; r++) {
      const float s2 = pb->sinks[r] * 1.4426950408889634f;
      float M = s2, wsum = 0;
      for (int sp = 0; sp < ns; sp++) M = fmaxf(M, lse[r * ns + sp]);
      for (int sp = 0; sp < ns; sp++) wsum += exp2f(lse[r * ns + sp] - M);
      const float den = wsum + exp2f(s2 - M);
      for (int d = 0; d < 64; d++) {
        float acc = 0;
        for (int sp = 0; sp < ns; sp++) acc += exp2f(lse[r * ns + sp] - M) * o_part[(r * ns + sp) * 64 + d];
        out[r * 64 + d] = acc / den;
      }
    }
  free(o_part), free(lse);
}
