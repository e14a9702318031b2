// rng_dev.cu — device fills with the generator of rng.h (see bench.h gtl_fill_uniform).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "gauntlet.h"

// Grid-stride; each element depends only on (seed, i), so any launch shape writes the
// same values the host computes.
template <typename T>
__global__ void fill_kernel(T *out, size_t n, uint64_t seed, float lo, float hi) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    float v = gtl_uniform(seed, i, lo, hi);
    if constexpr (sizeof(T) == 4) out[i] = v;
    else if constexpr (std::is_same<T, __nv_bfloat16>::value) out[i] = __float2bfloat16_rn(v);
    else if constexpr (std::is_same<T, __half>::value) out[i] = __float2half_rn(v);
    else out[i] = __nv_fp8_e4m3(v);  // RNE, saturating to ±448
  }
}

void gtl_fill_uniform(void *d, GtlDtype dt, size_t n, uint64_t seed, float lo, float hi,
                      cudaStream_t s) {
  if (n == 0) return;
  const int threads = 256;
  size_t want = (n + threads - 1) / threads;
  int blocks = (int)(want < 65536 ? want : 65536);
  switch (dt) {
    case GTL_FP32:
    case GTL_TF32: fill_kernel<<<blocks, threads, 0, s>>>((float *)d, n, seed, lo, hi); break;
    case GTL_BF16:
      fill_kernel<<<blocks, threads, 0, s>>>((__nv_bfloat16 *)d, n, seed, lo, hi);
      break;
    case GTL_FP16: fill_kernel<<<blocks, threads, 0, s>>>((__half *)d, n, seed, lo, hi); break;
    case GTL_FP8E4M3:
      fill_kernel<<<blocks, threads, 0, s>>>((__nv_fp8_e4m3 *)d, n, seed, lo, hi);
      break;
    default:
      fprintf(stderr, "error: gtl_fill_uniform: dtype %s not supported\n", gtl_dtype_name(dt));
      exit(GTL_EXIT_RUNTIME);
  }
  GTL_LAUNCH();
}
