// allreduce.cuh — ch04's driver, shared by baseline.cu and optimized.cu (which add only their
// methods): flags, the team, the reference, validated runs of every method, the decode
// table, the sweep and the report. The problem and the roofline are described in team.cuh,
// the timing rules in timing.cuh.
#pragma once
#include "host_staged.cuh"
#include "timing.cuh"

// ---- the driver -------------------------------------------------------------------------
#define AR_N_DECODE 7
static const int ar_decode_batch[AR_N_DECODE] = {1, 2, 4, 8, 16, 32, 64};
#define AR_SWEEP_MIN (4ull << 10)
#define AR_SWEEP_MAX (256ull << 20)

// Key storage for gtl_result_extra, which keeps the pointer.
static char ar_keys[GTL_MAX_EXTRA][48];
static const char *ar_key(int i, const char *fmt, const char *name) {
  snprintf(ar_keys[i], sizeof ar_keys[i], fmt, name);
  return ar_keys[i];
}

// main() of both programs. methods[0] is the headline (its JSON line); the others get a
// row each at the same size, a column in the decode table and in the sweep. The sweep
// adds host_staged in front when the program does not already hold it.
static int ar_main(int argc, char **argv, const char *variant, const ArMethod *const *methods,
                   int n_methods) {
  int64_t bytes_opt = 0, gpus = 0, graph_k = AR_GRAPH_K;
  int sweep = 0;
  const char *only = NULL;
  GtlOpt opts[] = {
      {"bytes", GTL_OPT_INT, &bytes_opt,
       "message per GPU in bytes, a multiple of 16 (default 64 MiB; small 1 MiB, large 256 MiB)"},
      {"gpus", GTL_OPT_INT, &gpus, "GPUs in the all-reduce, 2..8 (default: every visible one)"},
      {"method", GTL_OPT_STR, &only, "run only this method (host_staged, nccl, oneshot)"},
      {"graph_k", GTL_OPT_INT, &graph_k,
       "all-reduces per graph-timed sample, 1..1000 (default 100; 1 under compute-sanitizer)"},
      {"sweep", GTL_OPT_FLAG, &sweep, "also time every method from 4 KiB to 256 MiB"}};
  GtlCtx ctx;
  gtl_parse(&ctx, "ch04", variant, argc, argv, opts, 5, 5, 100, GTL_L2_WARM);
  size_t bytes = ctx.args.size == GTL_SIZE_SMALL ? (1u << 20)
                 : ctx.args.size == GTL_SIZE_LARGE ? (256u << 20) : (64u << 20);
  if (bytes_opt) bytes = (size_t)bytes_opt;
  if (bytes_opt < 0 || bytes < 16 || bytes % 16 || bytes > AR_MAX_BYTES)
    gtl_usage_fail(&ctx, "need 16 <= --bytes <= %llu, a multiple of 16 (8 bf16 per 16-byte "
                         "vector)", AR_MAX_BYTES);
  if (graph_k < 1 || graph_k > 1000) gtl_usage_fail(&ctx, "need 1 <= --graph_k <= 1000");
  if (gpus != 0 && (gpus < 2 || gpus > AR_MAX_GPUS))
    gtl_usage_fail(&ctx, "need 2 <= --gpus <= %d", AR_MAX_GPUS);
  if (ctx.args.device != 0)
    gtl_usage_fail(&ctx, "--device is not used: rank r runs on device r (choose the GPUs with "
                         "CUDA_VISIBLE_DEVICES)");
  const ArMethod *run_m[AR_MAX_METHODS];
  int n_run = 0;
  for (int i = 0; i < n_methods; i++)
    if (!only || strcmp(only, methods[i]->name) == 0) run_m[n_run++] = methods[i];
  if (!n_run) {
    char names[128] = "";
    for (int i = 0; i < n_methods; i++)
      snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
               methods[i]->name);
    gtl_usage_fail(&ctx, "--method=%s: this program runs %s", only, names);
  }

  ArTeam team;
  memset(&team, 0, sizeof team);
  team.graph_k = (int)graph_k;
  int n_dev = 0;
  cudaError_t ce = cudaGetDeviceCount(&n_dev);
  if (ce != cudaSuccess) n_dev = 0;
#ifdef GTL_MPI
  MPI_Init(&argc, &argv);
  int world = 1, me = 0, local = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, me, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local);
  MPI_Comm_free(&node);
  if (me != 0 && !freopen("/dev/null", "w", stdout)) ar_exit(GTL_EXIT_RUNTIME);
  if (gpus && gpus != world) gtl_usage_fail(&ctx, "with MPI, --gpus must equal the processes (%d)", world);
  if (world < 2 || n_dev < 1) {
    char msg[256];
    snprintf(msg, sizeof msg, "needs 2 or more MPI processes with a CUDA GPU each; found %d "
             "process(es), %d GPU(s) on this node%s%s", world, n_dev,
             ce != cudaSuccess ? " (cudaGetDeviceCount: " : "",
             ce != cudaSuccess ? cudaGetErrorName(ce) : "");
    if (ce != cudaSuccess) strncat(msg, ")", sizeof msg - strlen(msg) - 1);
    ar_waive(&ctx, msg);
  }
  team.n_ranks = world;
  team.n_local = 1;
  team.rank0 = me;
  team.dev[0] = local % n_dev;
  ctx.args.device = team.dev[0];
#else
  const int want = gpus ? (int)gpus : 2;
  if (n_dev < want) {
    char msg[256];
    snprintf(msg, sizeof msg, "needs %d CUDA GPUs for an all-reduce; found %d%s%s%s", want, n_dev,
             ce != cudaSuccess ? " (cudaGetDeviceCount: " : "",
             ce != cudaSuccess ? cudaGetErrorName(ce) : "", ce != cudaSuccess ? ")" : "");
    ar_waive(&ctx, msg);
  }
  team.n_ranks = team.n_local = gpus ? (int)gpus : (n_dev < AR_MAX_GPUS ? n_dev : AR_MAX_GPUS);
  for (int r = 0; r < team.n_local; r++) team.dev[r] = r;
#endif
  gtl_open(&ctx);
  // Results of n GPUs are kept under "<n>x_<key>" (expectations/2x_h200.json, 4x_h200.json, …).
  char key1[48];
  snprintf(key1, sizeof key1, "%.40s", ctx.dev.hardware_key);
  snprintf(ctx.dev.hardware_key, sizeof ctx.dev.hardware_key, "%dx_%s", team.n_ranks, key1);
  int mixed = 0;
  for (int r = 1; r < team.n_local; r++) {
    cudaDeviceProp p;
    GTL_CUDA(cudaGetDeviceProperties(&p, team.dev[r]));
    mixed |= strcmp(p.name, ctx.dev.name) != 0;
  }

  // The methods this run times: the program's, and host_staged first in a sweep.
  const ArMethod *sw[AR_MAX_METHODS];
  int n_sw = 0;
  int has_host = 0;
  for (int i = 0; i < n_run; i++) has_host |= run_m[i] == &ar_host_staged;
  if (sweep && !has_host && !only) sw[n_sw++] = &ar_host_staged;
  for (int i = 0; i < n_run; i++) sw[n_sw++] = run_m[i];
  int ok_m[AR_MAX_METHODS];
  char why[AR_MAX_METHODS][256];
  size_t max_count = (sweep && AR_SWEEP_MAX > bytes ? AR_SWEEP_MAX : bytes) / 2;
  if (max_count < (size_t)64 * AR_HIDDEN) max_count = (size_t)64 * AR_HIDDEN;

  gtl_phase_push(GTL_PHASE_SETUP);
  ar_team_open(&ctx, &team, max_count);
  for (int i = 0; i < n_sw; i++) {
    why[i][0] = 0;
    ok_m[i] = sw[i]->setup(&team, why[i], sizeof why[i]) == 0;
  }
  gtl_phase_pop();
  const int head = sw[0] == &ar_host_staged && !has_host ? 1 : 0;  // index of run_m[0] in sw
  if (!ok_m[head]) ar_waive(&ctx, why[head]);

  ArCheck chk;
  memset(&chk, 0, sizeof chk);
  chk.ctx = &ctx;
  chk.t = &team;
  gtl_phase_push(GTL_PHASE_REFERENCE);
  chk.ref = (double *)malloc(max_count * sizeof(double));
  chk.bits = (uint16_t *)malloc(max_count * sizeof(uint16_t));
  chk.outf = (float *)malloc(max_count * sizeof(float));
  if (!chk.ref || !chk.bits || !chk.outf) {
    fprintf(stderr, "error: host out of memory for the reference (%zu elements)\n", max_count);
    ar_exit(GTL_EXIT_RUNTIME);
  }
  if (ctx.args.verify) {
    ArRef ra = {chk.ref, ctx.args.seed, team.n_ranks};
    ar_parallel_for(max_count, 1 << 16, ar_ref_range, &ra);
  }
  gtl_phase_pop();

  // The link figure: every GPU copies the largest message to the next one at once.
  double peer_gbps = NAN;
  size_t peer_bytes = max_count * sizeof(__nv_bfloat16);
  if (team.n_local == team.n_ranks) {
    ArRun pc = {&team, NULL, max_count};
    GtlStats st;
    gtl_bench(&ctx, ar_peer_copy, &pc, &st);
    peer_gbps = peer_bytes / (st.median * 1e-3) / 1e9;
  }

  char workload[96], notes[4096], links[1024], sz[32];
  snprintf(workload, sizeof workload, "bytes%zu_bf16_gpus%d", bytes, team.n_ranks);
  ar_describe_links(&team, links, sizeof links);
  ar_fmt_bytes(sz, sizeof sz, peer_bytes);
  size_t o = 0;
  o += (size_t)snprintf(notes + o, sizeof notes - o,
                        "all-reduce (sum) of %zu bf16 per GPU across %d GPUs (%s), %s; hardware "
                        "key %s%s\n", bytes / 2, team.n_ranks,
#ifdef GTL_MPI
                        "one per MPI process",
#else
                        "one process",
#endif
                        ctx.dev.name, ctx.dev.hardware_key, mixed ? " (MIXED GPU models)" : "");
  for (int i = 0; i < n_sw; i++)
    o += (size_t)snprintf(notes + o, sizeof notes - o, "%s: %s%s%s\n", sw[i]->name,
                          ok_m[i] ? sw[i]->strategy : "NOT RUN: ", ok_m[i] && why[i][0] ? "; " : "",
                          why[i]);
  if (links[0]) o += (size_t)snprintf(notes + o, sizeof notes - o, "%s\n", links);
  if (peer_gbps == peer_gbps)
    o += (size_t)snprintf(notes + o, sizeof notes - o,
                          "peer copy (every GPU copies %s to the next at once, "
                          "cudaMemcpyPeerAsync): %.1f GB/s per GPU per direction%s\n", sz,
                          peer_gbps, team.peer_ok ? "" : " (no peer access: through the host)");
  const char *nvls = getenv("NCCL_NVLS_ENABLE"), *algo = getenv("NCCL_ALGO"),
             *proto = getenv("NCCL_PROTO");
  o += (size_t)snprintf(notes + o, sizeof notes - o,
                        "env: NCCL_NVLS_ENABLE=%s NCCL_ALGO=%s NCCL_PROTO=%s\n"
                        "GB/s column = bus bandwidth: 2(n-1)/n x message bytes / time per GPU "
                        "(NCCL-tests convention)\n"
                        "timing, one method per size (the timing column says which):\n"
                        "  graph (messages <= %llu KiB; nccl, oneshot): %d back-to-back "
                        "all-reduces captured in one CUDA graph per GPU, replayed on each GPU's "
                        "stream between that GPU's events; us = slowest GPU's replay / %d, "
                        "median over samples\n"
                        "  fork (larger messages, and host_staged at every size): GPU 0's stream "
                        "forks to every GPU's stream by event and joins them back, one "
                        "all-reduce per sample, host enqueue included\n"
                        "headline (%zu bytes): %s timing",
                        nvls ? nvls : "(unset)", algo ? algo : "(unset)", proto ? proto : "(unset)",
                        AR_GRAPH_MAX_BYTES >> 10, team.graph_k, team.graph_k, bytes,
                        ar_timing_name(&ctx, sw + head, ok_m + head, n_sw - head, bytes));
  gtl_report_header(&ctx, workload, notes);

  // Headline: every method this program runs, at --bytes; the JSON line is run_m[0]'s.
  GtlResult r;
  GtlResult rows[AR_MAX_METHODS];
  int n_rows = 0;
  for (int i = head; i < n_sw; i++) {
    if (!ok_m[i]) continue;
    GtlResult *x = &rows[n_rows++];
    gtl_result_init(x, &ctx, "bf16", workload);
    x->variant = sw[i]->name;
    x->bytes = ar_bus_bytes(team.n_ranks, bytes);
    x->flops = (double)(team.n_ranks - 1) * (bytes / 2);  // adds per rank's result
    x->bound = GTL_BOUND_NONE;
    x->ref = "cpu_double";
    if (ctx.args.verify) {
      x->validated = 1;
      if (!ar_validate(&chk, sw[i], bytes / 2, &x->err)) {
        gtl_report_row(&ctx, x);
        continue;  // never time a wrong result
      }
    }
    const GtlStats untimed = x->st;
    if (!ar_time(&chk, sw[i], bytes / 2, &x->st)) {
      x->validated = 1;
      x->err = chk.fail_err;
      x->st = untimed;  // the replays gave a wrong result: their time is not reported
    }
    gtl_report_row(&ctx, x);
  }
  r = rows[0];
  r.variant = variant;
  int ek = 0;
  gtl_result_extra(&r, "gpus", team.n_ranks);
  gtl_result_extra(&r, "peer_copy_gbps", peer_gbps);
  gtl_result_extra(&r, "pct_of_peer_copy", 100.0 * gtl_result_gbps(&rows[0]) / peer_gbps);
  for (int i = 1; i < n_rows; i++)
    gtl_result_extra(&r, ar_key(ek++, "%s_ms", rows[i].variant),
                     rows[i].st.n ? rows[i].st.median : NAN);

  // Decode-shaped messages: batch × 2880 bf16, one TP MoE layer's all-reduce.
  if (!ctx.args.json) {
    printf("decode all-reduce: batch x %d bf16 per GPU (one tensor-parallel MoE layer), "
           "median us\n%-8s %8s %10s %6s", AR_HIDDEN, "decode", "batch", "bytes", "timing");
    for (int i = head; i < n_sw; i++)
      if (ok_m[i]) printf(" %12s", sw[i]->name);
    printf("  fastest\n");
  }
  double dus[AR_N_DECODE][AR_MAX_METHODS];
  for (int b = 0; b < AR_N_DECODE; b++) {
    const size_t count = (size_t)ar_decode_batch[b] * AR_HIDDEN;
    double *us = dus[b];
    int best = -1;
    for (int i = head; i < n_sw; i++) {
      us[i] = NAN;
      if (!ok_m[i]) continue;
      GtlErr e;
      if (ctx.args.verify && !ar_validate(&chk, sw[i], count, &e)) continue;
      GtlStats st;
      if (!ar_time(&chk, sw[i], count, &st)) continue;
      us[i] = st.median * 1e3;
      if (best < 0 || us[i] < us[best]) best = i;
      if (ar_decode_batch[b] == 1 || ar_decode_batch[b] == 64) {
        char fmt[32];
        snprintf(fmt, sizeof fmt, "decode_b%d_%%s_us", ar_decode_batch[b]);
        gtl_result_extra(&r, ar_key(ek++, fmt, sw[i]->name), us[i]);
      }
    }
    if (ctx.args.json) continue;
    printf("%-8s %8d %10zu %6s", "decode", ar_decode_batch[b], count * 2,
           ar_timing_name(&ctx, sw + head, ok_m + head, n_sw - head, count * 2));
    for (int i = head; i < n_sw; i++)
      if (ok_m[i]) printf(" %12.2f", us[i]);
    printf("  %s\n", best >= 0 ? sw[best]->name : "-");
    fflush(stdout);
  }
  // Decode: the largest message up to which the program's second method (the one-shot
  // kernel) beats its first (NCCL) at every batch; 0 when it loses at batch 1.
  if (head + 1 < n_sw && ok_m[head] && ok_m[head + 1]) {
    size_t upto = 0;
    for (int b = 0; b < AR_N_DECODE && dus[b][head + 1] < dus[b][head]; b++)
      upto = (size_t)ar_decode_batch[b] * AR_HIDDEN * 2;
    gtl_result_extra(&r, ar_key(ek++, "decode_%s_wins_upto_bytes", sw[head + 1]->name),
                     (double)upto);
    if (!ctx.args.json)
      printf("# decode: %s faster than %s at every batch up to %zu bytes%s\n",
             sw[head + 1]->name, sw[head]->name, upto, upto ? "" : " (slower at batch 1)");
  }
  for (int i = head; i < n_sw; i++)
    if (ok_m[i] && ar_graph_timed(&ctx, sw[i], (size_t)AR_HIDDEN * 2)) {
      gtl_result_extra(&r, "graph_k", team.graph_k);  // decode rows are graph-timed
      break;
    }

  // The sweep: 4 KiB … 256 MiB, every method, latency and bus bandwidth.
  if (sweep) {
    int n_sizes = 0;
    size_t sizes[32];
    double sus[32][AR_MAX_METHODS];
    for (size_t s = AR_SWEEP_MIN; s <= AR_SWEEP_MAX; s *= 2) sizes[n_sizes++] = s;
    if (!ctx.args.json) {
      printf("sweep: median us and bus GB/s per method (host_staged: fork timing at every "
             "size)\n%-6s %10s %6s", "sweep", "bytes", "timing");
      for (int i = 0; i < n_sw; i++)
        if (ok_m[i]) printf(" %14s_us %8s", sw[i]->name, "bus_GB/s");
      printf("  fastest\n");
    }
    for (int k = 0; k < n_sizes; k++) {
      int best = -1;
      for (int i = 0; i < n_sw; i++) {
        sus[k][i] = NAN;
        if (!ok_m[i]) continue;
        GtlErr e;
        if (ctx.args.verify && !ar_validate(&chk, sw[i], sizes[k] / 2, &e)) continue;
        GtlStats st;
        if (!ar_time(&chk, sw[i], sizes[k] / 2, &st)) continue;
        sus[k][i] = st.median * 1e3;
        if (best < 0 || sus[k][i] < sus[k][best]) best = i;
      }
      if (ctx.args.json) continue;
      printf("%-6s %10zu %6s", "sweep", sizes[k],
             ar_timing_name(&ctx, sw + head, ok_m + head, n_sw - head, sizes[k]));
      for (int i = 0; i < n_sw; i++)
        if (ok_m[i])
          printf(" %17.2f %8.1f", sus[k][i],
                 ar_bus_bytes(team.n_ranks, sizes[k]) / (sus[k][i] * 1e-6) / 1e9);
      printf("  %s\n", best >= 0 ? sw[best]->name : "-");
      fflush(stdout);
    }
    // Where the second of the program's methods (the one-shot kernel) stops beating the first.
    const int a = head, b2 = head + 1;
    if (b2 < n_sw && ok_m[a] && ok_m[b2]) {
      size_t upto = 0, from = 0;  // b2 faster at every size up to `upto`; first slower at `from`
      int wins = 0;
      for (int k = 0; k < n_sizes; k++) {
        const int win = sus[k][b2] < sus[k][a];
        wins += win;
        if (win && !from) upto = sizes[k];
        if (!win && !from) from = sizes[k];
      }
      char s1[32], s2[32];
      ar_fmt_bytes(s1, sizeof s1, upto);
      ar_fmt_bytes(s2, sizeof s2, from);
      if (!ctx.args.json) {
        printf("# crossover: %s faster than %s at %d of %d sizes; ", sw[b2]->name, sw[a]->name,
               wins, n_sizes);
        if (!from) printf("at every size from 4 KiB to 256 MiB\n");
        else if (!upto) printf("already slower at 4 KiB\n");
        else printf("at every size from 4 KiB up to %s, first slower at %s\n", s1, s2);
        printf("# %s faster than %s at:", sw[b2]->name, sw[a]->name);
        for (int k = 0; k < n_sizes; k++)
          if (sus[k][b2] < sus[k][a]) {
            ar_fmt_bytes(s1, sizeof s1, sizes[k]);
            printf(" %s", s1);
          }
        printf("%s\n", wins ? "" : " none");
      }
      gtl_result_extra(&r, ar_key(ek++, "%s_wins_upto_bytes", sw[b2]->name), (double)upto);
    }
    const int top = n_sizes - 1;
    const double top_bus = ar_bus_bytes(team.n_ranks, sizes[top]) / (sus[top][a] * 1e-6) / 1e9;
    if (!ctx.args.json) {
      printf("# %s at 256 MiB: %.1f GB/s bus = %.0f%% of the peer copy (%.1f GB/s per GPU per "
             "direction, same run)\n", sw[a]->name, top_bus, 100.0 * top_bus / peer_gbps, peer_gbps);
      if (!has_host && ok_m[0])
        for (int k = 0; k < n_sizes; k++)
          if (sizes[k] == (64u << 20))
            printf("# %s vs host_staged at 64 MiB: %.1fx\n", sw[a]->name, sus[k][0] / sus[k][a]);
    }
    gtl_result_extra(&r, ar_key(ek++, "sweep_256mib_%s_bus_gbps", sw[a]->name), top_bus);
  }

  if (chk.any_fail && r.err.pass) {
    r.err = chk.fail_err;
    r.validated = 1;
  }
  int rc = gtl_report_finish(&ctx, &r);
  for (int i = 0; i < n_sw; i++)
    if (ok_m[i] && sw[i]->teardown) sw[i]->teardown(&team);
  free(chk.ref);
  free(chk.bits);
  free(chk.outf);
  ar_team_close(&team);
  gtl_end(&ctx);
  ar_exit(rc);
  return rc;
}
