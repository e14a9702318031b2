// stages.cuh — ch17's two stages on a stream: the prefill's cuBLASLt GEMMs, one decode
// step, one prefill chunk, and the buffers they use (set-up and release). The workload and
// the small kernels are in model.cuh.
#pragma once
#include "model.cuh"

// ---- cuBLASLt for the prefill GEMMs ------------------------------------------------------
// Row-major Y[n][m] = X[n][k] · W[m][k]^T is column-major Y^T = op_T(W) · X^T: transa = T on
// W's column-major [k][m] view, transb = N on X's [k][n] view ("TN", as ch10). Batched:
// `batch` such products at strides sa (W), sb (X), sc (Y) elements.
static void pd_gemm_init(PdWork *w, PdGemm *g, int m, int n, int k, int batch, int64_t sa,
                         int64_t sb, int64_t sc) {
  g->m = m;
  g->n = n;
  g->k = k;
  g->batch = batch;
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  GTL_CUBLAS(cublasLtMatmulDescCreate(&g->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  GTL_CUBLAS(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  GTL_CUBLAS(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  GTL_CUBLAS(cublasLtMatrixLayoutCreate(&g->a, CUDA_R_16BF, k, m, k));
  GTL_CUBLAS(cublasLtMatrixLayoutCreate(&g->b, CUDA_R_16BF, k, n, k));
  GTL_CUBLAS(cublasLtMatrixLayoutCreate(&g->c, CUDA_R_16BF, m, n, m));
  if (batch > 1) {
    const int32_t bc = batch;
    const cublasLtMatrixLayout_t lay[3] = {g->a, g->b, g->c};
    const int64_t stride[3] = {sa, sb, sc};
    for (int i = 0; i < 3; i++) {
      GTL_CUBLAS(cublasLtMatrixLayoutSetAttribute(lay[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc,
                                                  sizeof bc));
      GTL_CUBLAS(cublasLtMatrixLayoutSetAttribute(
          lay[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride[i], sizeof stride[i]));
    }
  }
  // One algorithm, chosen once for the whole GPU and used in every mode: the first heuristic
  // answer without split-K (split-K sums partial products in an order that depends on the
  // split, and the modes must agree bit for bit).
  cublasLtMatmulPreference_t pref;
  GTL_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = w->lt_ws_bytes;
  GTL_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &ws, sizeof ws));
  cublasLtMatmulHeuristicResult_t res[8];
  int found = 0, pick = -1;
  GTL_CUBLAS(cublasLtMatmulAlgoGetHeuristic(w->lt, g->op, g->a, g->b, g->c, g->c, pref, 8, res,
                                            &found));
  for (int i = 0; i < found && pick < 0; i++) {
    int32_t splitk = 1;
    size_t got = 0;
    if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
    cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk,
                                         sizeof splitk, &got);
    if (splitk <= 1) pick = i;
  }
  GTL_CUBLAS(cublasLtMatmulPreferenceDestroy(pref));
  if (pick < 0) {
    fprintf(stderr, "error: cuBLASLt offers no split-K-free algorithm for %dx%dx%d (batch %d)\n",
            m, n, k, batch);
    exit(GTL_EXIT_RUNTIME);
  }
  g->algo = res[pick].algo;
  size_t got = 0;
  int32_t id = -1;
  cublasLtMatmulAlgoConfigGetAttribute(&g->algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &got);
  g->algo_id = id;
}

// CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET: how many SMs cuBLASLt should size its grid for
// (0 = the device's count). A persistent GEMM sized for 132 SMs in a 96-SM partition runs a
// second, partial wave; told 96, it fills the partition once.
static void pd_gemm_sm_target(PdWork *w, int sms) {
  const int32_t v = sms;
  PdGemm *gs[4] = {&w->g_qkv, &w->g_o, &w->g_gu, &w->g_down};
  for (int i = 0; i < 4; i++)
    GTL_CUBLAS(cublasLtMatmulDescSetAttribute(gs[i]->op, CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET, &v,
                                              sizeof v));
}

static void pd_gemm_run(const PdWork *w, const PdGemm *g, const __nv_bfloat16 *W,
                        const __nv_bfloat16 *X, __nv_bfloat16 *Y, cudaStream_t s) {
  const float alpha = 1.0f, beta = 0.0f;
  GTL_CUBLAS(cublasLtMatmul(w->lt, g->op, &alpha, W, g->a, X, g->b, &beta, Y, g->c, Y, g->c,
                            &g->algo, w->lt_ws, w->lt_ws_bytes, s));
}

// ---- the two stages ----------------------------------------------------------------------
// Decode step i on s: reads step i−1's residual stream (or x0), writes dec_out[i].
static void pd_decode_step(const PdWork *w, int i, cudaStream_t s) {
  float *x = w->dec_out + (size_t)i * PD_D;
  const float *prev = i ? x - PD_D : w->dec_x0;
  for (int l = 0; l < w->L; l++) {
    const PdLayer *ly = &w->layer[l];
    int e[PD_TOP_K];
    float wt[PD_TOP_K];
    pd_decode_route(w, i, l, e, wt);
    norm_rows_launch<float, float>(1, l == 0 ? prev : NULL, l == 0 ? PD_SRC_COPY : PD_SRC_NONE,
                                   x, ly->attn_norm, w->dec_xn, 0, 0, PD_STAGE_DECODE, s);
    GemvF32Batch g;
    memset(&g, 0, sizeof g);
    g.n_mats = 1, g.N = PD_QKV, g.K = PD_D, g.W[0] = ly->qkv, g.x[0] = w->dec_xn, g.y = w->dec_qkv;
    pd_gemv_launch(&g, PD_STAGE_DECODE, s);
    attn_standin_launch<float>(w->dec_qkv, w->dec_a, 1, PD_STAGE_DECODE, s);
    g.N = PD_D, g.K = PD_Q, g.W[0] = ly->o, g.x[0] = w->dec_a, g.scale[0] = 1.0f, g.y = x;
    g.accumulate = 1;
    pd_gemv_launch(&g, PD_STAGE_DECODE, s);
    norm_rows_launch<float, float>(1, NULL, PD_SRC_NONE, x, ly->ffn_norm, w->dec_xn, 0, 0,
                                   PD_STAGE_DECODE, s);
    g.n_mats = PD_TOP_K, g.N = 2 * PD_F, g.K = PD_D, g.y = w->dec_h, g.accumulate = 0;
    for (int j = 0; j < PD_TOP_K; j++)
      g.W[j] = ly->gu + (size_t)e[j] * 2 * PD_F * PD_D, g.x[j] = w->dec_xn;
    pd_gemv_launch(&g, PD_STAGE_DECODE, s);
    swiglu_launch<float>(w->dec_h, w->dec_act, PD_TOP_K, PD_STAGE_DECODE, s);
    g.N = PD_D, g.K = PD_F, g.y = x, g.accumulate = 1;
    for (int j = 0; j < PD_TOP_K; j++)
      g.W[j] = ly->down + (size_t)e[j] * PD_D * PD_F, g.x[j] = w->dec_act + (size_t)j * PD_F,
      g.scale[j] = wt[j];
    pd_gemv_launch(&g, PD_STAGE_DECODE, s);
  }
}

// Prefill chunk c on s: pre_in[c] through L layers into pre_out[c].
static void pd_prefill_chunk(const PdWork *w, int c, cudaStream_t s) {
  const int T = w->T, rows = T * PD_TOP_K;
  float *X = w->pre_out + (size_t)c * T * PD_D;
  const __nv_bfloat16 *Xin = w->pre_in + (size_t)c * T * PD_D;
  for (int l = 0; l < w->L; l++) {
    const PdLayer *ly = &w->layer[l];
    const int off = pd_prefill_offset(w, c, l);
    norm_rows_launch<__nv_bfloat16, __nv_bfloat16>(T, l == 0 ? Xin : NULL,
                                                   l == 0 ? PD_SRC_COPY : PD_SRC_NONE, X,
                                                   ly->attn_norm, w->pre_xn, 0, 0,
                                                   PD_STAGE_PREFILL, s);
    pd_gemm_run(w, &w->g_qkv, ly->qkv, w->pre_xn, w->pre_qkv, s);
    attn_standin_launch<__nv_bfloat16>(w->pre_qkv, w->pre_a, T, PD_STAGE_PREFILL, s);
    pd_gemm_run(w, &w->g_o, ly->o, w->pre_a, w->pre_y, s);
    norm_rows_launch<__nv_bfloat16, __nv_bfloat16>(T, w->pre_y, PD_SRC_ADD, X, ly->ffn_norm,
                                                   w->pre_xe, T, off, PD_STAGE_PREFILL, s);
    pd_gemm_run(w, &w->g_gu, ly->gu, w->pre_xe, w->pre_he, s);
    swiglu_launch<__nv_bfloat16>(w->pre_he, w->pre_ae, rows, PD_STAGE_PREFILL, s);
    pd_gemm_run(w, &w->g_down, ly->down, w->pre_ae, w->pre_ye, s);
    colocate_combine_kernel<<<T, 256, 0, s>>>(w->pre_ye, X, T, off, w->seed ^ PD_SEED_PRE_WEIGHT,
                                     pd_prefill_wbase(w, c, l), PD_STAGE_PREFILL);
    GTL_LAUNCH();
  }
}

// ---- set-up ------------------------------------------------------------------------------
static void pd_setup(PdWork *w, GtlCtx *ctx, GtlGuarded *g_dec, GtlGuarded *g_pre) {
  const cudaStream_t s = ctx->stream;
  const uint64_t seed = w->seed;
  const size_t D = PD_D, T = w->T, R = (size_t)pd_R(w), rows = T * PD_TOP_K;
  for (int l = 0; l < w->L; l++) {
    PdLayer *ly = &w->layer[l];
    const size_t n[4] = {(size_t)PD_QKV * D, D * PD_Q, (size_t)PD_E * 2 * PD_F * D,
                         (size_t)PD_E * D * PD_F};
    const int fan_in[4] = {PD_D, PD_Q, PD_D, PD_F};
    __nv_bfloat16 **dst[4] = {&ly->qkv, &ly->o, &ly->gu, &ly->down};
    const char *what[4] = {"Wqkv [5120][2880] bf16", "Wo [2880][4096] bf16",
                           "W gate+up [32][5760][2880] bf16", "W down [32][2880][2880] bf16"};
    for (int i = 0; i < 4; i++) {
      *dst[i] = (__nv_bfloat16 *)gtl_malloc(n[i] * 2, what[i]);
      const float a = sqrtf(3.0f / fan_in[i]);
      gtl_fill_uniform(*dst[i], GTL_BF16, n[i], seed + 101 * (uint64_t)(l * 8 + i + 1), -a, a, s);
    }
    ly->attn_norm = (float *)gtl_malloc(D * 4, "attn_norm [2880] fp32");
    ly->ffn_norm = (float *)gtl_malloc(D * 4, "ffn_norm [2880] fp32");
    gtl_fill_uniform(ly->attn_norm, GTL_FP32, D, seed + 101 * (uint64_t)(l * 8 + 5), 0.8f, 1.2f, s);
    gtl_fill_uniform(ly->ffn_norm, GTL_FP32, D, seed + 101 * (uint64_t)(l * 8 + 6), 0.8f, 1.2f, s);
  }
  w->dec_x0 = (float *)gtl_malloc(D * 4, "decode x0 [2880] fp32");
  gtl_fill_uniform(w->dec_x0, GTL_FP32, D, seed + 7, -1.0f, 1.0f, s);
  w->dec_out = (float *)gtl_guarded_alloc(g_dec, (size_t)w->S * D * 4, "decode out [S][2880] fp32");
  w->dec_xn = (float *)gtl_malloc(D * 4, "decode xn");
  w->dec_qkv = (float *)gtl_malloc(PD_QKV * 4, "decode qkv");
  w->dec_a = (float *)gtl_malloc(PD_Q * 4, "decode attention stand-in");
  w->dec_h = (float *)gtl_malloc((size_t)PD_TOP_K * 2 * PD_F * 4, "decode expert gate+up");
  w->dec_act = (float *)gtl_malloc((size_t)PD_TOP_K * PD_F * 4, "decode expert act");
  const size_t n_in = (size_t)w->C * T * D;
  w->pre_in = (__nv_bfloat16 *)gtl_malloc(n_in * 2, "prefill inputs [C][T][2880] bf16");
  gtl_fill_uniform(w->pre_in, GTL_BF16, n_in, seed + 9, -1.0f, 1.0f, s);
  w->pre_out = (float *)gtl_guarded_alloc(g_pre, n_in * 4, "prefill out [C][T][2880] fp32");
  w->pre_xn = (__nv_bfloat16 *)gtl_malloc(T * D * 2, "prefill xn");
  w->pre_qkv = (__nv_bfloat16 *)gtl_malloc(T * PD_QKV * 2, "prefill qkv");
  w->pre_a = (__nv_bfloat16 *)gtl_malloc(T * PD_Q * 2, "prefill attention stand-in");
  w->pre_y = (__nv_bfloat16 *)gtl_malloc(T * D * 2, "prefill o-proj out");
  w->pre_xe = (__nv_bfloat16 *)gtl_malloc(rows * D * 2, "prefill expert inputs");
  w->pre_he = (__nv_bfloat16 *)gtl_malloc(rows * 2 * PD_F * 2, "prefill expert gate+up");
  w->pre_ae = (__nv_bfloat16 *)gtl_malloc(rows * PD_F * 2, "prefill expert act");
  w->pre_ye = (__nv_bfloat16 *)gtl_malloc(rows * D * 2, "prefill expert out");
  GTL_CUBLAS(cublasLtCreate(&w->lt));
  w->lt_ws_bytes = (size_t)32 << 20;
  w->lt_ws = gtl_malloc(w->lt_ws_bytes, "cuBLASLt workspace");
  pd_gemm_init(w, &w->g_qkv, PD_QKV, (int)T, PD_D, 1, 0, 0, 0);
  pd_gemm_init(w, &w->g_o, PD_D, (int)T, PD_Q, 1, 0, 0, 0);
  pd_gemm_init(w, &w->g_gu, 2 * PD_F, (int)R, PD_D, PD_E, (int64_t)2 * PD_F * PD_D,
               (int64_t)R * PD_D, (int64_t)R * 2 * PD_F);
  pd_gemm_init(w, &w->g_down, PD_D, (int)R, PD_F, PD_E, (int64_t)PD_D * PD_F, (int64_t)R * PD_F,
               (int64_t)R * PD_D);
  GTL_CUDA(cudaStreamSynchronize(s));
}

static void pd_release(PdWork *w) {
  for (int l = 0; l < w->L; l++) {
    PdLayer *ly = &w->layer[l];
    void *p[6] = {ly->qkv, ly->o, ly->gu, ly->down, ly->attn_norm, ly->ffn_norm};
    for (int i = 0; i < 6; i++) GTL_CUDA(cudaFree(p[i]));
  }
  void *p[15] = {w->dec_x0, w->dec_xn, w->dec_qkv, w->dec_a, w->dec_h, w->dec_act, w->pre_in,
                 w->pre_xn, w->pre_qkv, w->pre_a, w->pre_y, w->pre_xe, w->pre_he, w->pre_ae,
                 w->lt_ws};
  for (int i = 0; i < 15; i++) GTL_CUDA(cudaFree(p[i]));
  GTL_CUDA(cudaFree(w->pre_ye));
  PdGemm *gs[4] = {&w->g_qkv, &w->g_o, &w->g_gu, &w->g_down};
  for (int i = 0; i < 4; i++) {
    GTL_CUBLAS(cublasLtMatmulDescDestroy(gs[i]->op));
    GTL_CUBLAS(cublasLtMatrixLayoutDestroy(gs[i]->a));
    GTL_CUBLAS(cublasLtMatrixLayoutDestroy(gs[i]->b));
    GTL_CUBLAS(cublasLtMatrixLayoutDestroy(gs[i]->c));
  }
  GTL_CUBLAS(cublasLtDestroy(w->lt));
}

