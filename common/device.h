/* device.h — what the GPU is (name, CC, SMs, L2, clocks), its hardware key, and the
 * ceilings every program reports against. Pure-C parts (hardware key, ceilings file,
 * datasheet fallback) live in ceilings.c and are unit-tested; the CUDA part
 * (gtl_device_query, feature checks that waive with 77) in device.cu. */
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int id;
  char name[256];
  int cc_major, cc_minor;
  int sms;
  size_t l2_bytes;
  size_t mem_total, mem_free;       /* bytes, at init */
  size_t smem_optin;                /* max dynamic shared memory per block, bytes */
  int mem_clock_khz, bus_width_bits, sm_clock_khz;
  double peak_gbps;                 /* 2 · mem clock · bus width / 8 (DDR), GB/s */
  int runtime_version, driver_version; /* e.g. 13000 */
  char hardware_key[64];            /* "h200", "h100", "a100", "unknown" … */
} GtlDevice;

/* Ceilings in GB/s (1e9 B/s) and TFLOP/s (1e12 FLOP/s); NaN where unknown. */
typedef struct {
  double copy_gbps;   /* device-to-device copy, bytes read + written */
  double read_gbps;   /* read-only streaming kernel */
  double bf16_tflops; /* dense bf16 GEMM, fp32 accumulate */
  double fp8_tflops;  /* dense fp8 e4m3 GEMM */
  double tf32_tflops;
  double fp32_tflops; /* SIMT fp32 FMA */
  double h2d_gbps, d2h_gbps; /* pinned host <-> device */
  double launch_us, graph_launch_us; /* empty-kernel launch latency, eager and per node in a graph */
  int measured;       /* 1: read from expectations/<key>.json, 0: datasheet fallback */
  char source[512];   /* the file read, or "datasheet (…)" */
} GtlCeilings;

/** Map a CUDA device name to a hardware key: "NVIDIA H200" → "h200",
 *  "NVIDIA H100 80GB HBM3" → "h100", "NVIDIA A100-SXM4-80GB" → "a100",
 *  "NVIDIA GeForce RTX 4090" → "rtx4090", "NVIDIA B200" → "b200". Lower case,
 *  [a-z0-9] only. Returns 0, or -1 (and "unknown") when nothing usable remains. */
int gtl_hardware_key(const char *name, char *out, size_t n);

/** Vendor datasheet figures for a key (NaN where not known): h200, h100, a100, b200.
 *  Sources: NVIDIA H200 Tensor Core GPU datasheet (2024), H100 datasheet (2023),
 *  A100 datasheet (2021), DGX B200 datasheet (2024); dense (no sparsity) rates. */
void gtl_ceilings_datasheet(const char *key, double peak_gbps, GtlCeilings *c);

/** Read the "ceilings" block of <dir>/<key>.json into c. Returns 0, or -1 with the
 *  reason in err (missing file, bad JSON, no ceilings block); c is untouched on error. */
int gtl_ceilings_read(const char *dir, const char *key, GtlCeilings *c, char *err,
                      size_t errlen);

/** Find the repository's expectations/ folder: $GAUNTLET_ROOT/expectations, else walk up
 *  from the executable's folder (/proc/self/exe) at most 4 levels. Returns 0 with the
 *  path in out, or -1. */
int gtl_find_expectations_dir(char *out, size_t n);

#ifdef __cplusplus
}
#endif
