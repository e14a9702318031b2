// ch16 production inference, PagedAttention — baseline: static batching over KV reserved
// at each request's maximum length.
//
// What a first server does: it cannot know how long a request will run, so it reserves a
// contiguous region of the KV budget for its worst case (prompt + max output tokens),
// takes as many waiting requests as those regions fit, prefills them, and decodes the
// batch until its longest request is done; then it forms the next batch. Finished
// requests drop out of the step (no wasted compute), but their regions stay reserved and
// no new request can join until the whole batch is done. The scheduler is
// serve_run_static in ch16/serve.cuh (the optimized program runs it too, as its reference
// schedule); the decode step — ch18's attention over the cache, ch08's GEMV, argmax — is
// the same code in both programs.
//
// Build and run:   make ch16 && ./ch16/baseline          (pair: scripts/pair.sh ch16)
// Nsight Systems: nsys profile -t cuda,nvtx ./ch16/baseline --iters=1 — long runs of steps
//   whose batch shrinks to a few stragglers while the reserved memory sits unused.
// Nsight Compute: the same kernels as optimized (its header has the command); the
//   difference is how many sequences each step carries: launch__grid_size of attn_splitkv.
// Book: production inference — why static batching wastes KV memory and steps.
#include "serve_main.cuh"

int serve_run(Server *sv) { return serve_run_static(sv); }

int main(int argc, char **argv) {
  return serve_main(argc, argv, "baseline",
                    "static batches, KV reserved contiguously at prompt + max output per request", 0);
}
