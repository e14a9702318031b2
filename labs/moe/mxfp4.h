/* mxfp4.h — MXFP4 weights as gpt-oss stores its experts (OCP Microscaling Formats v1.0;
 * transformers integrations/mxfp4.py, convert_moe_packed_tensors):
 *
 *   blocks[..., r, g, b]  u8: output row r, 32-wide block g along the input, byte b holds
 *                         input 32g+2b in its LOW nibble and 32g+2b+1 in its HIGH nibble
 *   scales[..., r, g]     u8 (UE8M0): the block's factor 2^(s − 127)
 *   nibble (E2M1, bit 3 the sign): 0, .5, 1, 1.5, 2, 3, 4, 6, −0, −.5, −1, −1.5, −2, −3, −4, −6
 *
 * A weight is E2M1(nibble)·2^(s−127); transformers computes it in bf16 with torch.ldexp,
 * which is exact (two significant bits) unless it overflows (s >= 254 with |value| >= 2
 * gives inf, as there). Pure C11, unit-tested (tests/test_lab_checkpoint.c). */
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOE_MXFP4_BLOCK 32 /* weights per scale */

/** The E2M1 value of a nibble (only its low 4 bits are used). */
float moe_e2m1(unsigned nibble);
/** One weight: E2M1(nibble) · 2^(scale − 127), as fp32 (exact; ±inf past fp32's range). */
float moe_mxfp4_value(unsigned nibble, uint8_t scale);
/** Decode one row of n_in inputs (n_in a multiple of 32): blocks[n_in/2] bytes and
 *  scales[n_in/32] → out[n_in] bf16 bits (exact, RNE of an exact value). */
void moe_mxfp4_decode_row(const uint8_t *blocks, const uint8_t *scales, int64_t n_in, uint16_t *out);
/** The seeded MXFP4 bytes the synthetic writer stores: blocks byte i of a file tensor is
 *  uniform in 0..255 (every nibble equally likely); scales byte i is base − 2 … base + 1,
 *  uniform, with base chosen so the weights' RMS is about rms. */
uint8_t moe_mxfp4_synth_block(uint64_t seed, uint64_t i);
uint8_t moe_mxfp4_synth_scale(uint64_t seed, uint64_t i, double rms);

#ifdef __cplusplus
}
#endif
