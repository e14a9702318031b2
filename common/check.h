/* check.h — exit codes and the checks every CUDA, cuBLAS, driver and NCCL call goes
 * through. A failed check prints the expression as text, file:line and the error's
 * name, then exits with GTL_EXIT_RUNTIME (3). One reporter sits behind every macro. */
#pragma once
#include <stddef.h>

#define GTL_EXIT_PASS 0     /* validated (and timed) */
#define GTL_EXIT_FAIL 1     /* validation failed */
#define GTL_EXIT_USAGE 2    /* bad flag or value */
#define GTL_EXIT_RUNTIME 3  /* CUDA / I/O / out-of-memory error */
#define GTL_EXIT_WAIVED 77  /* no GPU, or the GPU lacks the feature (automake/CTest skip code) */

#ifdef __cplusplus
extern "C" {
#endif

/** Print "error: <lib> <name> (<code>) at file:line: <expr>" on stderr and exit 3.
 *  `lib` is "CUDA", "cuBLAS", "CU" or "NCCL"; `name` the library's name of the code.
 *  When the code says out of memory (CUDA's cudaErrorMemoryAllocation = 2, cuBLAS's
 *  CUBLAS_STATUS_ALLOC_FAILED = 3) and gtl_mem_info_hook is set, a second line gives the
 *  device's free and total memory: "error: out of device memory in <lib>: device free <F>
 *  of <T> MiB (the call does not say how much it asked for)". */
void gtl_die(const char *lib, const char *name, int code, const char *expr, const char *file,
             int line);

/** Set by the device start-up (common/device.cu) to a cudaMemGetInfo wrapper (bytes): how
 *  gtl_die learns the free memory without this file linking the CUDA runtime. NULL in
 *  host-only programs. */
extern void (*gtl_mem_info_hook)(size_t *free_b, size_t *total_b);

/** The out-of-memory line every program prints before exit 3 (docs/contract.md):
 *  "error: out of <kind> memory allocating <what>: asked <A> MiB, device free <F> of <T> MiB
 *  (<err_name>)", MiB = 2^20 bytes, one decimal. Written into buf[n] (always terminated);
 *  returns buf. kind is "device" or "pinned host"; asked/free_b/total_b in bytes. */
const char *gtl_oom_message(char *buf, size_t n, const char *kind, const char *what,
                            size_t asked, size_t free_b, size_t total_b, const char *err_name);

#ifdef __cplusplus
}
#endif

#ifdef __CUDACC__
#include <cuda_runtime.h>
#define GTL_CUDA(x)                                                                      \
  do {                                                                                   \
    cudaError_t gtl_e_ = (x);                                                            \
    if (gtl_e_ != cudaSuccess)                                                           \
      gtl_die("CUDA", cudaGetErrorName(gtl_e_), (int)gtl_e_, #x, __FILE__, __LINE__);    \
  } while (0)
/* After every launch: catches bad configurations at once (not at the next sync). */
#define GTL_LAUNCH() GTL_CUDA(cudaGetLastError())
#endif

/* Defined whatever the include order: a macro's body is read where it is used, so only
 * the code that uses it needs cublas_v2.h (or cublasLt.h) included before. */
#define GTL_CUBLAS(x)                                                                    \
  do {                                                                                   \
    cublasStatus_t gtl_s_ = (x);                                                         \
    if (gtl_s_ != CUBLAS_STATUS_SUCCESS)                                                 \
      gtl_die("cuBLAS", cublasGetStatusName(gtl_s_), (int)gtl_s_, #x, __FILE__, __LINE__); \
  } while (0)

/* Driver-API results (CUresult) from entry points got through cudaGetDriverEntryPoint:
 * we never link -lcuda, so the code is printed as a number with its enum name. */
#define GTL_CU(x)                                                                        \
  do {                                                                                   \
    int gtl_r_ = (int)(x);                                                               \
    if (gtl_r_ != 0) gtl_die("CU", "CUresult", gtl_r_, #x, __FILE__, __LINE__);          \
  } while (0)

#if defined(NCCL_MAJOR)
#define GTL_NCCL(x)                                                                      \
  do {                                                                                   \
    ncclResult_t gtl_n_ = (x);                                                           \
    if (gtl_n_ != ncclSuccess)                                                           \
      gtl_die("NCCL", ncclGetErrorString(gtl_n_), (int)gtl_n_, #x, __FILE__, __LINE__);  \
  } while (0)
#endif
