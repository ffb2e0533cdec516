/* common.c: scratch files and input splitting for the fuzz targets. */
#define _GNU_SOURCE
#include "fuzz.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fuzz_split(const uint8_t *data, size_t size, const uint8_t **part, size_t *len, int max) {
  size_t sl = strlen(FUZZ_SPLIT);
  int n = 0;
  const uint8_t *p = data, *end = data + size;
  while (n < max - 1) {
    const uint8_t *s = memmem(p, (size_t)(end - p), FUZZ_SPLIT, sl);
    if (!s) break;
    part[n] = p;
    len[n++] = (size_t)(s - p);
    p = s + sl;
  }
  part[n] = p;
  len[n++] = (size_t)(end - p);
  return n;
}

static char dir[256];

static void rm_tree(const char *path) {
  DIR *d = opendir(path);
  if (!d) return;
  struct dirent *e;
  char p[1024];
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", path, e->d_name);
    struct stat st;
    if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
      rm_tree(p);
      rmdir(p);
    } else {
      unlink(p);
    }
  }
  closedir(d);
}

static void cleanup(void) {
  if (!dir[0]) return;
  rm_tree(dir);
  rmdir(dir);
}

const char *fuzz_dir(void) {
  if (dir[0]) return dir;
  struct stat st;
  const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
  snprintf(dir, sizeof dir, "%s/matc-fuzz-XXXXXX", base);
  if (!mkdtemp(dir)) {
    perror("fuzz: mkdtemp");
    abort();
  }
  atexit(cleanup);
  return dir;
}

void fuzz_clear(void) {
  if (dir[0]) rm_tree(dir);
}

void fuzz_write(const char *rel, const void *data, size_t size, char *path, size_t pathlen) {
  snprintf(path, pathlen, "%s/%s", fuzz_dir(), rel);
  for (char *s = path + strlen(fuzz_dir()) + 1; (s = strchr(s, '/')); s++) {
    *s = 0;
    mkdir(path, 0700);
    *s = '/';
  }
  FILE *f = fopen(path, "wb");
  if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f)) {
    perror(path);
    abort();
  }
}

void fuzz_require_message(int failed, const char *err) {
  if (failed && (!err || !*err)) {
    fprintf(stderr, "fuzz: refused without a message\n");
    abort();
  }
}
