/* data_text.c: byte-token text. Files (or every regular file of a
 * directory, sorted by name, except *.dat and *.u8 index/link files and
 * hidden files) are concatenated and cut into SEQ-byte windows. */
#include "data_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
  unsigned char *buf;
  size_t len;
} Text;

static int append_file(Text *t, const char *path, char *err, size_t errlen) {
  uint64_t cap = data_max_bytes();
  unsigned char *b;
  size_t n;
  if (data_read_file(path, &b, &n, cap - t->len, err, errlen)) return -1;
  if (n == 0) { free(b); return 0; }
  unsigned char *nb = realloc(t->buf, t->len + n);
  if (!nb) {
    free(b);
    return data_errf(err, errlen, "%s: out of memory (%zu bytes of text)", path, t->len + n);
  }
  memcpy(nb + t->len, b, n);
  free(b);
  t->buf = nb;
  t->len += n;
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int skip_name(const char *name) {
  size_t n = strlen(name);
  if (name[0] == '.') return 1;
  if (n >= 4 && strcmp(name + n - 4, ".dat") == 0) return 1;
  if (n >= 3 && strcmp(name + n - 3, ".u8") == 0) return 1;
  return 0;
}

static int append_dir(Text *t, const char *dir, char *err, size_t errlen) {
  DIR *dp = opendir(dir);
  if (!dp) return data_errf(err, errlen, "%s: cannot open directory: %s", dir, strerror(errno));
  char **names = NULL;
  size_t nn = 0, cap = 0;
  int rc = 0;
  struct dirent *e;
  while ((e = readdir(dp))) {
    if (skip_name(e->d_name)) continue;
    if (nn == cap) {
      cap = cap ? cap * 2 : 64;
      if (cap > (1u << 20)) { rc = data_errf(err, errlen, "%s: too many files", dir); break; }
      char **nb = realloc(names, cap * sizeof *names);
      if (!nb) { rc = data_errf(err, errlen, "%s: out of memory", dir); break; }
      names = nb;
    }
    if (!(names[nn] = strdup(e->d_name))) { rc = data_errf(err, errlen, "%s: out of memory", dir); break; }
    nn++;
  }
  closedir(dp);
  if (!rc && nn) qsort(names, nn, sizeof *names, cmp_str);
  size_t used = 0;
  for (size_t i = 0; i < nn && !rc; i++) {
    size_t pl = strlen(dir) + strlen(names[i]) + 2;
    char *p = malloc(pl);
    if (!p) { rc = data_errf(err, errlen, "%s: out of memory", dir); break; }
    snprintf(p, pl, "%s/%s", dir, names[i]);
    struct stat st;
    if (!stat(p, &st) && S_ISREG(st.st_mode)) {
      rc = append_file(t, p, err, errlen);
      used++;
    }
    free(p);
  }
  for (size_t i = 0; i < nn; i++) free(names[i]);
  free(names);
  if (!rc && !used) rc = data_errf(err, errlen, "%s: no text files in the directory", dir);
  return rc;
}

int data_open_text(Dataset *d, const char *paths, int mlm, int64_t seq, char *err, size_t errlen) {
  Text t = {0};
  char *list = strdup(paths);
  if (!list) return data_errf(err, errlen, "%s: out of memory", paths);
  int rc = 0;
  for (char *p = list, *next; p && !rc; p = next) {
    next = strchr(p, ',');
    if (next) *next++ = 0;
    if (!*p) continue;
    struct stat st;
    if (stat(p, &st)) rc = data_errf(err, errlen, "%s: missing: %s", p, strerror(errno));
    else if (S_ISDIR(st.st_mode)) rc = append_dir(&t, p, err, errlen);
    else rc = append_file(&t, p, err, errlen);
  }
  if (!rc) {
    /* causal needs one byte past each window for the last target */
    size_t need = (size_t)seq + (mlm ? 0 : 1);
    if (t.len < need) {
      rc = data_errf(err, errlen, "%s: %zu bytes of text, fewer than one window of %lld%s", paths, t.len,
                     (long long)seq, mlm ? "" : " plus the next byte");
    } else {
      int64_t n = (int64_t)((mlm ? t.len : t.len - 1) / (size_t)seq);
      /* int64 tokens per batch are the caller's; the text itself must fit */
      d->kind = mlm ? DS_TEXT_MLM : DS_TEXT_CAUSAL;
      d->n = n;
      d->seq = seq;
      d->text = t.buf;
      d->text_len = t.len;
      t.buf = NULL;
      d->in.dtype = d->tg.dtype = DDT_I64;
      d->in.rank = d->tg.rank = 1;
      d->in.dims[0] = d->tg.dims[0] = seq;
      d->in_bytes = d->tg_bytes = (size_t)seq * 8;
      d->num_classes = 256;
    }
  }
  free(t.buf);
  free(list);
  return rc;
}
