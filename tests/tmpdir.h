/* tmpdir.h — scratch folders for the host tests that write checkpoints: a fresh folder
 * under /tmp named after the test, and its removal (files only: the tests write no
 * subfolders). Header-only, for tests/test_*.c. */
#pragma once
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/** Remove dir's files, then dir. Missing dir: nothing to do. */
static void rm_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char p[1200];
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
      snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
      unlink(p);
    }
  closedir(d);
  rmdir(dir);
}

/** A new empty folder /tmp/<prefix>_XXXXXX, in static storage (the next call reuses
 *  it, as each test makes one folder at a time); the test fails when it cannot be made. */
static char *tmp_dir_named(const char *prefix) {
  static char d[96];
  snprintf(d, sizeof d, "/tmp/%s_XXXXXX", prefix);
  if (!mkdtemp(d)) fail_msg("mkdtemp failed");
  return d;
}
