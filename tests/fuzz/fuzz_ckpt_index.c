/* fuzz_ckpt_index.c — libFuzzer harness for the sharded-checkpoint index reader
 * (labs/moe/checkpoint.c: moe_ckpt_open through model.safetensors.index.json).
 * At start it writes a real sharded checkpoint of the tiny_mixtral preset into a fresh
 * folder under TMPDIR (removed at exit); each input replaces the folder's index file and
 * opens the checkpoint. Any index must give an open checkpoint or -1 with a message,
 * never a crash, a leak, a file outside the folder, or undefined behaviour. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "config.h"
#include "checkpoint.h"

static char g_dir[512], g_index[600];

static void remove_dir(void) {
  DIR *d = opendir(g_dir);
  if (!d) return;
  struct dirent *e;
  char p[1100];
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc; (void)argv;
  const char *tmp = getenv("TMPDIR");
  snprintf(g_dir, sizeof g_dir, "%s/gtl_fuzz_index_XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(g_dir)) { perror("mkdtemp"); exit(3); }
  atexit(remove_dir);
  MoeConfig c;
  char err[2048];
  if (moe_config_preset("tiny_mixtral", &c)) { fprintf(stderr, "no tiny_mixtral preset\n"); exit(3); }
  MoeWriteOpts o;
  memset(&o, 0, sizeof o);
  o.dtype = GTL_ST_BF16;
  o.shard_bytes = 32768; /* several shards, so the index names several files */
  if (moe_ckpt_write_synthetic(g_dir, &c, 1, &o, err, sizeof err)) {
    fprintf(stderr, "writer: %s\n", err);
    exit(3);
  }
  snprintf(g_index, sizeof g_index, "%s/model.safetensors.index.json", g_dir);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FILE *f = fopen(g_index, "wb");
  if (!f) abort();
  if (size && fwrite(data, 1, size, f) != size) abort();
  fclose(f);
  MoeCheckpoint ck;
  char err[2048];
  err[0] = '\0';
  if (moe_ckpt_open(g_dir, &ck, err, sizeof err) == 0) {
    for (int i = 0; i < ck.n_files; i++)  /* every file it opened is in the folder */
      if (strncmp(ck.path[i], g_dir, strlen(g_dir)) != 0 || strchr(ck.path[i] + strlen(g_dir) + 1, '/')) abort();
    moe_ckpt_close(&ck);
  } else if (err[0] == '\0') {
    abort();
  }
  return 0;
}
