/* gauntlet.h — the umbrella header of the thin library every program links
 * (build/libcommon.a). One job per file behind it:
 *   check.h    error checks and exit codes        args.h     the shared command line
 *   device.h   GPU facts, hardware key, ceilings  bench.h    start-up, timing, L2 flush
 *   stats.h    percentiles                        validate.h poison, compare, guards
 *   rng.h      seeded counter-based fills         convert.h  bf16/fp16/fp8 on the host
 *   nvtx.h     NVTX3 ranges                       report.h   header, table, JSON line
 *   json.h     a small JSON reader                                                     */
#pragma once
#include "check.h"
#include "args.h"
#include "stats.h"
#include "rng.h"
#include "convert.h"
#include "json.h"
#include "validate.h"
#include "device.h"
#include "nvtx.h"
#include "report.h"
#include "bench.h"
