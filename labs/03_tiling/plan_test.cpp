// plan_test.cpp — host test of layer 03's attention and expert bookkeeping (no GPU needed).
//   make labs && nvcc -std=c++17 -Icommon -Ibuild -o /tmp/lab03_plan_test -x cu labs/03_tiling/plan_test.cpp
//        -Lbuild -lmoe -lcommon -lcublas && /tmp/lab03_plan_test      (one line)
// 1. Which models take the fp32 split-KV attention (lab03_attn_fits): every preset, by its
//    head_dim and grouping, and groups of 16 (the largest) and 32 (refused).
// 2. The chunks: for batches 1, 4, 64 and contexts 1..max_len, the chunk count never
//    exceeds the workspace lab03_setup sizes, every chunk is a whole number of tiles and
//    holds a key (no empty CTA), and the chunks cover every key once.
// 3. The experts' work items: for seeded routings, ch15's tables built on the host as its
//    counting sort builds them (bm from lab03_expert_plan_rows), then every work item of
//    the GEMV kernel (moe_tile_of with one tile per weight row, lab03_gemv_row) and of the
//    MMA kernel (64-column tiles): each (sorted row, output column) is covered exactly once,
//    every row of an item belongs to its expert, and the GEMV kernel's R holds every expert.
// 4. The projections' GEMV (proj.cuh): for the qkv, out and router shapes of the presets,
//    batches 1..9 and 64, a warp or a block per weight row and several wave sizes, the
//    launch's blocks, warps and row strides (simulated as the kernel walks them) write
//    every (token, output row) exactly once, the lanes' 16-byte pieces cover each row's K
//    once, the staged row's order (lab03_proj_xs_at) is a permutation whose two planes the
//    kernel reads as float4 c and K/8 + c, and the blocks' xn/xb slices tile [0, K).
// 5. The sinks (lab03_sink_norm): for seeded scores split into chunks and merged as
//    lab03_attn_combine_kernel merges them, o · f.x / f.y equals the softmax over the
//    scores and the sink computed directly in double (sink below, near and far above the
//    scores' max), and without a sink f = (1, l): o / l exactly.
// 6. The batch-1 GEMV path (grouped.cuh, lab03_gemv1_*): for bf16 (8 weights per load) and
//    fp8 (16) rows of the presets' widths and chunk depths 1..8, each lane's pieces walked
//    chunk by chunk, as lab03_gemv1_run walks them, are the general body's pieces in its
//    order (lane, lane + 32, … below K / kPerLoad: the bit-identical sums rest on it); the
//    staged row's order (lab03_gemv1_xs_at) is a permutation of the row's float4, and the
//    lanes reading loads c, c + 1 read consecutive float4.
// Prints "ok: ..." / "FAILED: ..." and exits 1 on any failure.
#include "../moe/engine.cuh"
#include "layer.cuh"
#include "../moe/plan_check.h"


static void check_fits(void) {
  const char *names[] = {"gptoss20b", "gptoss120b", "gptoss20b_mixtral", "qwen3moe", "mini", "tiny_mixtral",
                         "tiny_qwen3", "tiny_gptoss"};
  const int want[] = {1, 1, 1, 1, 1, 0, 1, 0};  // head_dim 64, 64, 64, 128, 32, 16, 32, 16
  for (int i = 0; i < 8; i++) {
    MoeConfig c;
    CHECK(moe_config_preset(names[i], &c) == 0, "preset %s missing\n", names[i]);
    CHECK(lab03_attn_fits(&c) == want[i], "%s (head_dim %d, H %d, H_kv %d): fits %d, want %d\n", names[i],
          c.head_dim, c.H, c.H_kv, lab03_attn_fits(&c), want[i]);
  }
  MoeConfig c;
  moe_config_preset("gptoss20b_mixtral", &c);
  c.H = 64, c.H_kv = 4;
  CHECK(lab03_attn_fits(&c), "group 16 refused\n");
  c.H_kv = 2;
  CHECK(!lab03_attn_fits(&c), "group 32 accepted (the kernel serves at most 16 query heads per KV head)\n");
  c.H_kv = 8, c.head_dim = 96;
  CHECK(!lab03_attn_fits(&c), "head_dim 96 accepted\n");
  printf("ok: fp32 split-KV attention for head_dim 32/64/128 (all presets but tiny_mixtral, tiny_gptoss); group 16 "
         "in, 32 out\n");
}

static void check_chunks(int B, int H_kv, int max_len, int sms) {
  const int max_chunks = lab03_attn_max_chunks(B, H_kv, max_len, sms);
  int most = 0;
  for (int n = 1; n <= max_len; n++) {
    const int len = lab03_attn_chunk_len(n, max_chunks), chunks = (n + len - 1) / len;
    CHECK(len % kLab03AttnTile == 0 && len > 0, "B=%d: %d keys: chunk of %d keys\n", B, n, len);
    CHECK(chunks >= 1 && chunks <= max_chunks, "B=%d: %d keys in %d chunks, workspace for %d\n", B, n, chunks,
          max_chunks);
    CHECK((chunks - 1) * len < n && chunks * len >= n, "B=%d: %d keys: chunks of %d leave one empty or a key out\n",
          B, n, len);
    most = chunks > most ? chunks : most;
  }
  printf("ok: B=%d H_kv=%d max_len=%d sms=%d: at most %d chunks (workspace %d), every chunk non-empty\n", B, H_kv,
         max_len, sms, most, max_chunks);
}

// ch15's tables for routing idx [T·top_k] (what moe_dispatch_sort_kernel writes; the order
// inside an expert does not matter here).
static void host_sort(const int32_t *idx, int P, int E, int bm, int32_t *offsets, int32_t *tile_start) {
  offsets[0] = tile_start[0] = 0;
  for (int x = 0; x < E; x++) {
    int c = 0;
    for (int i = 0; i < P; i++) c += idx[i] == x;
    offsets[x + 1] = offsets[x] + c;
    tile_start[x + 1] = tile_start[x] + (c + bm - 1) / bm;
  }
}

static void check_items(int B, int top_k, int E, int N, uint64_t seed) {
  const int P = B * top_k;
  const Lab03ExpertPlan xp = lab03_expert_plan_rows(B, top_k, E);
  int32_t *idx = (int32_t *)malloc(sizeof(int32_t) * P), off[1025], ts[1025];
  for (int t = 0; t < B; t++)  // top_k distinct experts per token, seeded
    for (int j = 0; j < top_k; j++) {
      int x, dup;
      uint64_t k = 0;
      do {
        x = (int)gtl_uniform_u32(seed, (uint64_t)(t * top_k + j) * 977 + k++, (uint32_t)E);
        dup = 0;
        for (int q = 0; q < j; q++) dup |= idx[t * top_k + q] == x;
      } while (dup);
      idx[t * top_k + j] = x;
    }
  host_sort(idx, P, E, xp.bm, off, ts);
  const int gemv = xp.gemv_rows > 0, n_tiles = gemv ? N : (N + moe_grouped::BN - 1) / moe_grouped::BN;
  const int cols = gemv ? 1 : moe_grouped::BN;
  unsigned char *seen = (unsigned char *)calloc((size_t)P * N, 1);
  for (int x = 0; gemv && x < E; x++)
    CHECK(off[x + 1] - off[x] <= xp.gemv_rows, "B=%d: expert %d has %d rows, R = %d\n", B, x, off[x + 1] - off[x],
          xp.gemv_rows);
  for (int w = 0; w < ts[E] * n_tiles; w++) {
    const MoeTile t = moe_tile_of(w, off, ts, E, n_tiles, xp.bm);
    const int n0 = gemv ? lab03_gemv_row(t) : t.n0;
    CHECK(t.rows >= 1 && t.rows <= xp.bm && t.row0 >= off[t.e] && t.row0 + t.rows <= off[t.e + 1],
          "B=%d: item %d: rows [%d, %d) outside expert %d's [%d, %d)\n", B, w, t.row0, t.row0 + t.rows, t.e, off[t.e],
          off[t.e + 1]);
    for (int r = t.row0; r < t.row0 + t.rows; r++)
      for (int c = n0; c < n0 + cols && c < N; c++) {
        CHECK(!seen[(size_t)r * N + c], "B=%d: (row %d, column %d) twice\n", B, r, c);
        seen[(size_t)r * N + c] = 1;
      }
  }
  for (size_t i = 0; i < (size_t)P * N; i++) CHECK(seen[i], "B=%d: (row %zu, column %zu) never\n", B, i / N, i % N);
  printf("ok: B=%d top_k=%d E=%d N=%d: %s kernel (bm %d), %d work items cover every (row, column) once\n", B, top_k, E,
         N, gemv ? "GEMV" : "MMA", xp.bm, ts[E] * n_tiles);
  free(seen);
  free(idx);
}

static void check_proj(const char *what, const int *N, int n_mats, int K, int B, int wpr, int wave) {
  int row_end[3] = {0, 0, 0};
  for (int m = 0; m < n_mats; m++) row_end[m] = (m ? row_end[m - 1] : 0) + N[m];
  const int rows = row_end[n_mats - 1], K8 = K / 8;
  const int R = B < kLab03ProjMaxRows ? B : kLab03ProjMaxRows, units = kLab03ProjWarps / wpr, step = 32 * wpr;
  const dim3 grid = lab03_proj_grid(rows, B, R, wpr, wave);
  CHECK(grid.x >= 1 && grid.y >= 1 && (int)(grid.x * grid.y) <= (wave > (int)grid.y ? wave : (int)grid.y),
        "%s B=%d: grid %u x %u for a wave of %d\n", what, B, grid.x, grid.y, wave);
  unsigned char *seen = (unsigned char *)calloc((size_t)B * rows, 1);
  int *piece = (int *)calloc((size_t)K8, sizeof(int));
  for (unsigned by = 0; by < grid.y; by++)
    for (unsigned bx = 0; bx < grid.x; bx++)
      for (int warp = 0; warp < kLab03ProjWarps; warp++) {
        const int sub = warp % wpr, b0 = (int)by * R, nb = B - b0 < R ? B - b0 : R;
        for (int row = (int)bx * units + warp / wpr; row < rows; row += (int)grid.x * units) {
          int n;
          const int m = lab03_proj_mat(row_end, row, &n);
          CHECK(m < n_mats && n >= 0 && n < N[m], "%s: row %d -> matrix %d row %d\n", what, row, m, n);
          if (row == 0)  // the pieces of one row, over its warps' lanes and loop steps
            for (int lane = 0; lane < 32; lane++)
              for (int c0 = lane + 32 * sub; c0 < K8; c0 += step * LAB03_PROJ_ILP)
                for (int j = 0; j < LAB03_PROJ_ILP && c0 + step * j < K8; j++) piece[c0 + step * j] += by == 0 && bx == 0;
          if (sub) continue;  // warp 0 of the row's warps writes
          for (int r = 0; r < nb; r++) {
            CHECK(!seen[(size_t)(b0 + r) * rows + row], "%s B=%d: (token %d, row %d) twice\n", what, B, b0 + r, row);
            seen[(size_t)(b0 + r) * rows + row] = 1;
          }
        }
      }
  for (size_t i = 0; i < (size_t)B * rows; i++)
    CHECK(seen[i], "%s B=%d wpr=%d: (token %zu, row %zu) never written\n", what, B, wpr, i / rows, i % rows);
  for (int c = 0; c < K8; c++) CHECK(piece[c] == 1, "%s: piece %d of row 0 read %d times\n", what, c, piece[c]);
  int *at = (int *)calloc((size_t)K, sizeof(int));
  for (int k = 0; k < K; k++) {
    const int i = lab03_proj_xs_at(k, K8), c = k / 8, h = (k % 8) / 4;
    CHECK(i >= 0 && i < K && i / 4 == h * K8 + c && i % 4 == k % 4, "%s: element %d staged at %d\n", what, k, i);
    if (i >= 0 && i < K) at[i]++;
  }
  for (int i = 0; i < K; i++) CHECK(at[i] == 1, "%s: staged slot %d used %d times\n", what, i, at[i]);
  for (int f = 0; f < K / 4; f++) {  // the 16-byte staging copies: float4 f lands where its 4 elements belong
    const int j = lab03_proj_xs4_at(f, K8), back = j < K8 ? 2 * j : 2 * (j - K8) + 1;
    CHECK(4 * j == lab03_proj_xs_at(4 * f, K8) && back == f, "%s: float4 %d staged at %d (read back as %d)\n", what,
          f, j, back);
  }
  memset(at, 0, (size_t)K * sizeof(int));
  for (unsigned bx = 0; bx < grid.x; bx++) {
    int k0, k1;
    lab03_proj_slice(K, (int)bx, (int)grid.x, &k0, &k1);
    for (int k = k0; k < k1; k++) at[k]++;
  }
  for (int k = 0; k < K; k++) CHECK(at[k] == 1, "%s: element %d in %d slices (grid %u)\n", what, k, at[k], grid.x);
  free(at);
  free(piece);
  free(seen);
}

static void check_projections(void) {
  const char *names[] = {"gptoss20b_mixtral", "qwen3moe", "mini", "tiny_mixtral", "tiny_qwen3"};
  const int batches[] = {1, 2, 3, 4, 5, 8, 9, 64};
  const int waves[] = {132 * 16, 132 * 4, 7, 1};
  int n = 0;
  for (int i = 0; i < 5; i++) {
    MoeConfig c;
    CHECK(moe_config_preset(names[i], &c) == 0, "preset %s missing\n", names[i]);
    const int Q = c.H * c.head_dim, KV = c.H_kv * c.head_dim, qkv[3] = {Q, KV, KV};
    CHECK(lab03_proj_gemv_fits(c.D) && lab03_proj_gemv_fits(Q), "%s: rows of %d / %d do not fit\n", names[i], c.D, Q);
    for (int b = 0; b < 8; b++)
      for (int w = 0; w < 4; w++) {
        if (batches[b] <= kLab03ProjGemvMaxBatch) {
          check_proj("qkv", qkv, 3, c.D, batches[b], 1, waves[w]);
          check_proj("out", &c.D, 1, Q, batches[b], 1, waves[w]);
          n += 2;
        }
        check_proj("router", &c.E, 1, c.D, batches[b], 4, waves[w]);
        n++;
      }
  }
  printf("ok: projections: %d launches simulated (qkv/out at batch <= %d, the router at every batch; waves 2112, "
         "528, 7, 1): every (token, row) written once, every piece read once, staging and slices exact\n",
         n, kLab03ProjGemvMaxBatch);
}

// n scores s_t (values v_t, one dimension) in chunks of len, each reduced to (m, l, o) as
// the split kernel does, merged as the combine kernel does, normalized with the sink.
static void check_sinks(int n, int len, double sink_off, uint64_t seed) {
  double s[300], v[300], mx = -1e300;
  for (int t = 0; t < n; t++) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    s[t] = ((seed >> 11) * 0x1.0p-53 - 0.5) * 16.0;
    v[t] = ((seed >> 20) & 1023) / 512.0 - 1.0;
    mx = s[t] > mx ? s[t] : mx;
  }
  const float sink = (float)(mx + sink_off);
  float M = -INFINITY, L = 0.f, O = 0.f, mc[32], lc[32], oc[32];
  const int nc = (n + len - 1) / len;
  for (int c = 0; c < nc; c++) {
    mc[c] = -INFINITY, lc[c] = 0.f, oc[c] = 0.f;
    for (int t = c * len; t < n && t < (c + 1) * len; t++) mc[c] = fmaxf(mc[c], (float)s[t]);
    for (int t = c * len; t < n && t < (c + 1) * len; t++) {
      lc[c] += expf((float)s[t] - mc[c]);
      oc[c] += expf((float)s[t] - mc[c]) * (float)v[t];
    }
    M = fmaxf(M, mc[c]);
  }
  for (int c = 0; c < nc; c++) L += expf(mc[c] - M) * lc[c], O += expf(mc[c] - M) * oc[c];
  const float2 f = lab03_sink_norm(M, L, sink);
  double den = exp((double)sink - mx), num = 0;
  for (int t = 0; t < n; t++) den += exp(s[t] - mx), num += exp(s[t] - mx) * v[t];
  const double got = O * f.x / f.y, want = num / den;
  CHECK(fabs(got - want) <= 1e-5 + 1e-5 * fabs(want), "sinks n=%d len=%d sink max%+g: %.9g, want %.9g\n", n, len,
        sink_off, got, want);
  const float2 g = lab03_sink_norm(M, L, -INFINITY);
  CHECK(g.x == 1.f && g.y == L && O * g.x / g.y == O / L, "no sink: f = (%g, %g), want (1, %g)\n", g.x, g.y, L);
}

static void check_gemv1(int per_load, int K, int D, int ilp) {
  const int KC = K / per_load, Q = per_load / 4, K4 = K / 4, nch = (KC + 32 * D - 1) / (32 * D);
  for (int lane = 0; lane < 32; lane++) {
    int mine[512], n_mine = 0, ref[512], n_ref = 0;
    for (int ch = 0; ch < nch; ch++)  // lab03_gemv1_run: chunk ch, loads j (break at KC)
      for (int j = 0; j < D; j++) {
        const int c = lane + 32 * (ch * D + j);
        if (c >= KC) break;
        CHECK(n_mine < 512, "K=%d: too many pieces\n", K);
        mine[n_mine++] = c;
      }
    for (int c0 = lane; c0 < KC; c0 += 32 * ilp)  // lab03_grouped_gemv_body: rounds of ilp loads
      for (int j = 0; j < ilp && c0 + 32 * j < KC; j++) {
        CHECK(n_ref < 512, "K=%d: too many pieces\n", K);
        ref[n_ref++] = c0 + 32 * j;
      }
    CHECK(n_mine == n_ref, "K=%d per_load=%d D=%d lane %d: %d pieces, the general body %d\n", K, per_load, D, lane,
          n_mine, n_ref);
    for (int i = 0; i < n_mine; i++)
      CHECK(mine[i] == ref[i], "K=%d D=%d lane %d: piece %d is %d, the general body's %d\n", K, D, lane, i, mine[i], ref[i]);
  }
  static int at[8192];
  CHECK(K4 <= 8192, "K=%d too wide for the test\n", K);
  for (int i = 0; i < K4; i++) at[i] = 0;
  for (int f = 0; f < K4; f++) {
    const int i = lab03_gemv1_xs_at(f, Q, KC);
    CHECK(i >= 0 && i < K4, "K=%d: float4 %d staged at %d\n", K, f, i);
    at[i]++;
  }
  for (int i = 0; i < K4; i++) CHECK(at[i] == 1, "K=%d: staged slot %d used %d times\n", K, i, at[i]);
  for (int c = 0; c + 1 < KC; c++)
    for (int q = 0; q < Q; q++)
      CHECK(lab03_gemv1_xs_at((c + 1) * Q + q, Q, KC) == lab03_gemv1_xs_at(c * Q + q, Q, KC) + 1,
            "K=%d: loads %d and %d read float4 %d apart\n", K, c, c + 1,
            lab03_gemv1_xs_at((c + 1) * Q + q, Q, KC) - lab03_gemv1_xs_at(c * Q + q, Q, KC));
}

int main(void) {
  check_fits();
  {
    const int widths[] = {2880, 2048, 768, 4096, 512, 256};  // gpt-oss D = F, Qwen3-MoE D and F, Mixtral D, mini F and D
    int cases = 0;
    for (int w = 0; w < 6; w++)
      for (int D = 1; D <= 8; D++) {
        check_gemv1(8, widths[w], D, 4), check_gemv1(16, widths[w], D, 6);
        cases += 2;
      }
    printf("ok: batch-1 GEMV: %d cases, each lane's pieces in the general body's order; the staged row a permutation\n",
           cases);
  }
  const double offs[] = {-30.0, -2.0, 0.0, 1.5, 40.0};
  for (int i = 0; i < 5; i++) {
    check_sinks(1, 32, offs[i], 11 + i);
    check_sinks(128, 32, offs[i], 21 + i);
    check_sinks(200, 64, offs[i], 31 + i);
  }
  printf("ok: sinks: chunked softmax with a sink logit (15 cases) = the direct one; without a sink o / l exactly\n");
  const int batches[] = {1, 4, 64};
  const int lens[] = {1, 31, 32, 33, 672, 4096, 20000};
  for (int b = 0; b < 3; b++)
    for (int m = 0; m < 7; m++) check_chunks(batches[b], 8, lens[m], 132);
  check_chunks(1, 4, 544, 132);
  const int xb[] = {1, 2, 3, 5, 8, 9, 16, 64, 200};
  for (int i = 0; i < 9; i++) check_items(xb[i], 4, 32, 136, 42 + i);  // gptoss20b_mixtral's E, top_k
  check_items(64, 8, 128, 72, 7);   // qwen3moe's E, top_k: mean load 4 (bm 16)
  check_items(1, 8, 128, 64, 8);
  check_items(300, 2, 8, 64, 9);    // mean 75: bm 64, several m-tiles per expert
  check_projections();
  printf("plan_test: %s\n", fails ? "FAILED" : "all passed");
  return fails ? 1 : 0;
}
