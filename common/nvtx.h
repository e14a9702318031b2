/* nvtx.h — NVTX3 ranges in one domain, "gauntlet", for Nsight. Names are registered
 * once (nvtxDomainRegisterStringA) and pushed by handle, never formatted per call.
 * Chapter phases are named "chNN.<variant>.<phase>"; ncu selects the timed range with
 *   ncu --nvtx --nvtx-include "gauntlet@chNN.optimized.timed]" ...
 * Names use [a-z0-9_.] only (ncu's filter grammar reserves @ ] /). NVTX3 is header-only:
 * with no tool attached each call is a cheap no-op. */
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  GTL_PHASE_SETUP, GTL_PHASE_REFERENCE, GTL_PHASE_VALIDATE, GTL_PHASE_WARMUP,
  GTL_PHASE_TIMED, GTL_PHASE_COUNT
} GtlPhase;

/** Register "<target>.<variant>.<phase>" for every phase (target "labs/03_tiling" is
 *  written "labs_03_tiling"). gtl_begin/gtl_open call it. Calling it again switches the
 *  names of later phases: a program that times a reference library in the same run
 *  (ch10's cuBLAS) re-initializes with variant "cublas", so a profile filtered on
 *  "chNN.optimized.timed]" holds only the program's own kernels. */
void gtl_nvtx_init(const char *target, const char *variant);
void gtl_phase_push(GtlPhase p);
void gtl_phase_pop(void);

/** A registered name, for the labs' stage ranges ("decode.step", "moe.router", …). */
const void *gtl_nvtx_name(const char *name);
void gtl_nvtx_push(const void *name);
void gtl_nvtx_push_payload(const void *name, long long payload); /* step or layer index */
void gtl_nvtx_pop(void);

/** A start/end range (payload = index) that leaves the push/pop stack alone, for markers
 *  that must not become the innermost pushed range a profiler filter names (ch17's
 *  per-step and per-chunk marks inside "chNN.<variant>.timed"). Returns the id to end. */
unsigned long long gtl_nvtx_start_payload(const void *name, long long payload);
void gtl_nvtx_end(unsigned long long id);

#ifdef __cplusplus
}
#endif
