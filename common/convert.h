/* convert.h — host conversions between float and the 16/8-bit formats the kernels use,
 * bit-exact with CUDA's round-to-nearest-even intrinsics (__float2bfloat16_rn,
 * __float2half_rn, __nv_cvt_float_to_fp8(…, __NV_SATFINITE, __NV_E4M3)).
 * Formats: bf16 = 1-8-7, fp16 = IEEE binary16 1-5-10, fp8 E4M3 = 1-4-3 with bias 7, no
 * infinities, max finite 448, NaN = S.1111.111 (OCP 8-bit FP spec v1.0, 2023).
 * Pure C11, unit-tested (tests/test_convert.c). */
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

uint16_t gtl_f32_to_bf16(float x); /* RNE; NaN stays NaN (quiet) */
float gtl_bf16_to_f32(uint16_t h);
uint16_t gtl_f32_to_fp16(float x); /* RNE; overflow → ±inf; subnormals kept */
float gtl_fp16_to_f32(uint16_t h);
uint8_t gtl_f32_to_fp8e4m3(float x); /* RNE, saturating to ±448; NaN → 0x7F */
float gtl_fp8e4m3_to_f32(uint8_t v);

/* Round trip: the value a bf16 can hold. */
float gtl_round_bf16(float x);

/* Array forms (n elements). */
void gtl_bf16_to_f32_array(const uint16_t *in, float *out, size_t n);
void gtl_f32_to_bf16_array(const float *in, uint16_t *out, size_t n);

#ifdef __cplusplus
}
#endif
