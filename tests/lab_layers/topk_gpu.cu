// topk_gpu.cu — a test-only lab layer: layer 00 with one stage replaced. moe.topk runs
// on the GPU (ch06's warp-per-token router, any E and top_k at run time) and writes the
// frame's per-token top-k (EngineActs.d_topk_idx/_w, [B][top_k]); 00's per-expert loop
// still needs each expert's token list on the host, so the top-k comes back with one
// copy. Every other stage is 00's. tests/lab_headers.sh compiles it with every chapter
// header the lab may include; on a GPU it is validated like any layer:
//   make tests/lab_layers/topk_gpu && tests/lab_layers/topk_gpu --preset=mini --check=64
#include "../../labs/moe/engine.cuh"
#include "../../labs/00_baseline/layer.cuh"
#include "../../ch06/topk.cuh"

static void topk_gpu(Engine *e, int) {
  const MoeConfig *c = &e->cfg;
  const size_t n = (size_t)e->B * c->top_k;
  router_topk_any_launch(e->a.d_router, e->a.d_topk_idx, e->a.d_topk_w, e->B, c->E, c->top_k, c->norm_topk_prob, e->s);
  GTL_CUDA(cudaMemcpyAsync(e->a.h_topk_idx, e->a.d_topk_idx, n * 4, cudaMemcpyDeviceToHost, e->s));
  GTL_CUDA(cudaMemcpyAsync(e->a.h_topk_w, e->a.d_topk_w, n * 4, cudaMemcpyDeviceToHost, e->s));
  GTL_CUDA(cudaStreamSynchronize(e->s));
  lab00_expert_lists(e);
}

int main(int argc, char **argv) {
  LayerOps ops = lab00_ops();  // start from the previous layer's table
  ops.target = "tests/lab_layers/topk_gpu";
  ops.adds = "adds: ch06's GPU top-k in place of 00's host router";
  ops.topk = topk_gpu;         // and replace one stage
  return engine_main(argc, argv, &ops);
}
