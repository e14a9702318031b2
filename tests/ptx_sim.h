/* ptx_sim.h — lane-by-lane host emulation of two warp-wide PTX instructions, from their PTX
 * ISA fragment definitions ("ldmatrix"; "Matrix Fragments for mma.m16n8k16"), for the host
 * simulations of ch19's kernels (tests/test_ch19_kernel_sim.c, tests/test_ch19_direct_sim.c). */
#pragma once
#include <stdint.h>
#include <string.h>

/* ldmatrix.sync.x4(.trans).b16 from shared memory `mem`: lane l gives the byte address of
 * row l % 8 of matrix l / 8. Without .trans lane t receives row t/4, elements 2(t%4) and
 * 2(t%4)+1 of each matrix (low half first); with .trans the matrix is transposed first:
 * elements (2(t%4), t/4) and (2(t%4)+1, t/4). r[lane][matrix]. */
static inline void ptx_ldmatrix_x4(const uint8_t *mem, const uint32_t addr[32], int trans, uint32_t r[32][4]) {
  for (int m = 0; m < 4; m++)
    for (int t = 0; t < 32; t++) {
      if (!trans) {
        memcpy(&r[t][m], mem + addr[m * 8 + t / 4] + 4 * (t % 4), 4);
      } else {
        uint16_t e0, e1;
        memcpy(&e0, mem + addr[m * 8 + 2 * (t % 4)] + 2 * (t / 4), 2);
        memcpy(&e1, mem + addr[m * 8 + 2 * (t % 4) + 1] + 2 * (t / 4), 2);
        r[t][m] = e0 | ((uint32_t)e1 << 16);
      }
    }
}

/* mma.sync.m16n8k16 with fp32 accumulate: d (16x8) += a (16x16) · b (16x8), 16-bit inputs
 * read by `half` (bf16 or fp16 to float). Per lane t, g = t/4, c = t%4: a0 (g, 2c..),
 * a1 (g+8, 2c..), a2 (g, 2c+8..), a3 (g+8, 2c+8..); b0 (k 2c.., n g), b1 (k 2c+8.., n g);
 * d0,d1 (g, 2c..), d2,d3 (g+8, 2c..); each register's low half is the lower index. */
static inline void ptx_mma_m16n8k16(float d[32][4], const uint32_t a[32][4], const uint32_t b0[32],
                                    const uint32_t b1[32], float (*half)(uint16_t)) {
  float A[16][16], B[16][8];
#define PTX_LO(r) half((uint16_t)((r) & 0xFFFF))
#define PTX_HI(r) half((uint16_t)((r) >> 16))
  for (int t = 0; t < 32; t++) {
    const int g = t / 4, c = t % 4;
    A[g][2 * c] = PTX_LO(a[t][0]), A[g][2 * c + 1] = PTX_HI(a[t][0]);
    A[g + 8][2 * c] = PTX_LO(a[t][1]), A[g + 8][2 * c + 1] = PTX_HI(a[t][1]);
    A[g][2 * c + 8] = PTX_LO(a[t][2]), A[g][2 * c + 9] = PTX_HI(a[t][2]);
    A[g + 8][2 * c + 8] = PTX_LO(a[t][3]), A[g + 8][2 * c + 9] = PTX_HI(a[t][3]);
    B[2 * c][g] = PTX_LO(b0[t]), B[2 * c + 1][g] = PTX_HI(b0[t]);
    B[2 * c + 8][g] = PTX_LO(b1[t]), B[2 * c + 9][g] = PTX_HI(b1[t]);
  }
#undef PTX_LO
#undef PTX_HI
  for (int t = 0; t < 32; t++)
    for (int e = 0; e < 4; e++) {
      const int row = t / 4 + (e >= 2 ? 8 : 0), col = 2 * (t % 4) + (e & 1);
      float acc = d[t][e];
      for (int k = 0; k < 16; k++) acc += A[row][k] * B[k][col];
      d[t][e] = acc;
    }
}
