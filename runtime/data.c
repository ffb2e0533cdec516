/* data.c: DataSpec parsing, the in-memory Dataset, shared helpers, and the
 * seeded Sampler (train/eval split, per-epoch shuffles, MLM masking).
 * Source formats live in data_idx.c, data_text.c, data_npy.c, data_pb.c.
 *
 * Every random choice comes from splitmix64 / xoshiro256** computed in
 * integer arithmetic, so a seed gives the same batches on every run and
 * platform. */
#include "data_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* --- errors, limits ------------------------------------------------------ */

static uint64_t max_bytes = 8ULL << 30;

uint64_t data_max_bytes(void) { return max_bytes; }
void data_set_max_bytes(uint64_t bytes) { max_bytes = bytes ? bytes : (8ULL << 30); }

int data_errf(char *err, size_t errlen, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return -1;
}

/* --- dtypes -------------------------------------------------------------- */

int data_dt_size(int dt) {
  switch (dt) {
  case DDT_F32: case DDT_I32: return 4;
  case DDT_U8: case DDT_I8: case DDT_BOOL: return 1;
  case DDT_U16: case DDT_I16: return 2;
  case DDT_I64: case DDT_F64: return 8;
  default: return 0;
  }
}

const char *data_dt_name(int dt) {
  switch (dt) {
  case DDT_F32: return "float32";
  case DDT_U8: return "uint8";
  case DDT_I8: return "int8";
  case DDT_U16: return "uint16";
  case DDT_I16: return "int16";
  case DDT_I32: return "int32";
  case DDT_I64: return "int64";
  case DDT_BOOL: return "bool";
  case DDT_F64: return "float64";
  default: return "unsupported";
  }
}

int data_dt_is_float(int dt) { return dt == DDT_F32 || dt == DDT_F64; }

static uint64_t le(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

void data_convert_le(const unsigned char *src, int src_dt, size_t n, void *dst, int dst_dt) {
  int es = data_dt_size(src_dt);
  for (size_t i = 0; i < n; i++, src += es) {
    double f = 0;
    int64_t v = 0;
    int is_f = 1;
    switch (src_dt) {
    case DDT_F32: { uint32_t b = (uint32_t)le(src, 4); float x; memcpy(&x, &b, 4); f = x; break; }
    case DDT_F64: { uint64_t b = le(src, 8); memcpy(&f, &b, 8); break; }
    case DDT_U8: case DDT_BOOL: v = src[0]; is_f = 0; break;
    case DDT_I8: v = (int8_t)src[0]; is_f = 0; break;
    case DDT_U16: v = (uint16_t)le(src, 2); is_f = 0; break;
    case DDT_I16: v = (int16_t)(uint16_t)le(src, 2); is_f = 0; break;
    case DDT_I32: v = (int32_t)(uint32_t)le(src, 4); is_f = 0; break;
    case DDT_I64: v = (int64_t)le(src, 8); is_f = 0; break;
    default: break;
    }
    if (dst_dt == DDT_F32) ((float *)dst)[i] = is_f ? (float)f : (float)v;
    else ((int64_t *)dst)[i] = is_f ? (int64_t)f : v;
  }
}

int64_t data_shape_nelem(int rank, const int64_t *dims) {
  int64_t n = 1;
  for (int i = 0; i < rank; i++) n *= dims[i];
  return n;
}

/* Element count, or -1 if a dim is negative or the bytes pass the cap. */
int64_t data_shape_nelem_checked(int rank, const int64_t *dims, size_t elem_size) {
  uint64_t n = 1, cap = max_bytes / (elem_size ? elem_size : 1);
  for (int i = 0; i < rank; i++) {
    if (dims[i] < 0) return -1;
    if (dims[i] == 0) n = 0;
  }
  if (n == 0) return 0;
  for (int i = 0; i < rank; i++) {
    if ((uint64_t)dims[i] > cap / n) return -1;
    n *= (uint64_t)dims[i];
  }
  return (int64_t)n;
}

int data_read_file(const char *path, unsigned char **buf, size_t *len, uint64_t cap, char *err,
                   size_t errlen) {
  *buf = NULL;
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return data_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
    fclose(f);
    return data_errf(err, errlen, "%s: not a regular file", path);
  }
  if ((uint64_t)st.st_size > cap) {
    fclose(f);
    return data_errf(err, errlen, "%s: %lld bytes, over the data limit of %llu bytes", path,
                     (long long)st.st_size, (unsigned long long)cap);
  }
  size_t n = (size_t)st.st_size;
  unsigned char *b = malloc(n ? n : 1);
  if (!b) {
    fclose(f);
    return data_errf(err, errlen, "%s: out of memory reading %zu bytes", path, n);
  }
  size_t got = fread(b, 1, n, f);
  int bad = ferror(f);
  fclose(f);
  if (got != n || bad) {
    free(b);
    return data_errf(err, errlen, "%s: read error (%zu of %zu bytes)", path, got, n);
  }
  *buf = b;
  *len = n;
  return 0;
}

int data_check_labels(Dataset *d, int64_t declared, const char *what, char *err, size_t errlen) {
  char name[1300];
  if (d->tg.dtype != DDT_I64) {
    d->num_classes = 0;
    return 0;
  }
  int64_t limit = declared > 0 ? declared : DATA_MAX_LABEL + 1;
  int64_t per = (int64_t)(d->tg_bytes / 8), total = d->n * per, maxl = -1;
  const int64_t *t = (const int64_t *)d->targets;
  for (int64_t i = 0; i < total; i++) {
    int64_t v = t[i];
    if (v == DATA_IGNORE) continue;
    if (v < 0 || v >= limit) {
      if (d->tg_pb) {
        snprintf(name, sizeof name, "%s/%lld/target_0.pb", d->tg_file, (long long)(i / per));
        what = name;
      } else if (d->tg_file[0]) {
        what = d->tg_file;
      }
      if (declared > 0)
        return data_errf(err, errlen, "%s: label %lld of example %lld is out of range for %lld classes",
                         what, (long long)v, (long long)(i / per), (long long)declared);
      return data_errf(err, errlen, "%s: label %lld of example %lld is out of range (labels are 0..%lld, or -100 to ignore)",
                       what, (long long)v, (long long)(i / per), DATA_MAX_LABEL);
    }
    if (v > maxl) maxl = v;
  }
  d->num_classes = declared > 0 ? declared : maxl + 1;
  return 0;
}

/* --- spec parsing -------------------------------------------------------- */

static int ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

Dataset *data_open(const char *spec, char *err, size_t errlen) {
  if (err && errlen) err[0] = 0;
  if (!spec || !*spec) {
    data_errf(err, errlen, "empty data spec (idx:DIR, text:PATH:mlm:SEQ, npy:X.npy,Y.npy, pb:DIR)");
    return NULL;
  }
  char *s = strdup(spec);
  Dataset *d = calloc(1, sizeof *d);
  if (!s || !d) {
    free(s);
    free(d);
    data_errf(err, errlen, "%s: out of memory", spec);
    return NULL;
  }
  int rc = -1;
  int64_t classes = 0;
  char *body;
  /* optional :classes=N suffix */
  char *c = strrchr(s, ':');
  if (c && strncmp(c + 1, "classes=", 8) == 0 && strncmp(s, "text:", 5) != 0) {
    char *e;
    errno = 0;
    long long v = strtoll(c + 9, &e, 10);
    if (errno || *e || e == c + 9 || v <= 0 || v > DATA_MAX_LABEL + 1) {
      data_errf(err, errlen, "%s: bad class count '%s'", spec, c + 9);
      goto out;
    }
    classes = v;
    *c = 0;
  }
  if (strncmp(s, "idx:", 4) == 0) {
    body = s + 4;
    int test = 0;
    if (ends_with(body, ":test")) { test = 1; body[strlen(body) - 5] = 0; }
    else if (ends_with(body, ":train")) body[strlen(body) - 6] = 0;
    if (!*body) { data_errf(err, errlen, "%s: idx needs a directory", spec); goto out; }
    rc = data_open_idx(d, body, test, err, errlen);
  } else if (strncmp(s, "text:", 5) == 0) {
    body = s + 5;
    char *a = strrchr(body, ':');
    if (!a) { data_errf(err, errlen, "%s: expected text:PATH[,PATH...]:mlm|causal:SEQ", spec); goto out; }
    *a = 0;
    char *seqs = a + 1, *b = strrchr(body, ':');
    if (!b) { data_errf(err, errlen, "%s: expected text:PATH[,PATH...]:mlm|causal:SEQ", spec); goto out; }
    *b = 0;
    const char *mode = b + 1;
    int mlm;
    if (strcmp(mode, "mlm") == 0) mlm = 1;
    else if (strcmp(mode, "causal") == 0) mlm = 0;
    else { data_errf(err, errlen, "%s: text mode '%s' is not mlm or causal", spec, mode); goto out; }
    char *e;
    errno = 0;
    long long seq = strtoll(seqs, &e, 10);
    if (errno || *e || e == seqs || seq < 1 || seq > (1 << 20)) {
      data_errf(err, errlen, "%s: bad sequence length '%s' (1..%d)", spec, seqs, 1 << 20);
      goto out;
    }
    if (!*body) { data_errf(err, errlen, "%s: text needs a path", spec); goto out; }
    rc = data_open_text(d, body, mlm, seq, err, errlen);
  } else if (strncmp(s, "npy:", 4) == 0) {
    body = s + 4;
    char *comma = strchr(body, ',');
    if (!comma || !comma[1] || comma == body) {
      data_errf(err, errlen, "%s: expected npy:INPUTS.npy,TARGETS.npy", spec);
      goto out;
    }
    *comma = 0;
    rc = data_open_npy(d, body, comma + 1, err, errlen);
  } else if (strncmp(s, "pb:", 3) == 0) {
    body = s + 3;
    if (!*body) { data_errf(err, errlen, "%s: pb needs a directory", spec); goto out; }
    rc = data_open_pb(d, body, err, errlen);
  } else {
    data_errf(err, errlen, "%s: unknown data source (idx:DIR, text:PATH:mlm:SEQ, npy:X.npy,Y.npy, pb:DIR)", spec);
    goto out;
  }
  if (!rc && d->kind == DS_TENSOR) {
    /* Name the target file in label errors. */
    const char *what = spec;
    rc = data_check_labels(d, classes, what, err, errlen);
  }
out:
  free(s);
  if (rc) {
    data_close(d);
    return NULL;
  }
  return d;
}

void data_close(Dataset *d) {
  if (!d) return;
  free(d->inputs);
  free(d->targets);
  free(d->text);
  free(d);
}

int64_t data_count(const Dataset *d) { return d ? d->n : 0; }
DataShape data_input_shape(const Dataset *d) { return d->in; }
DataShape data_target_shape(const Dataset *d) { return d->tg; }
int64_t data_num_classes(const Dataset *d) { return d ? d->num_classes : 0; }

/* --- random numbers ------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/* A hash of a few words (each mixed through splitmix64). */
static uint64_t mix(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  uint64_t x = a;
  uint64_t h = splitmix64(&x);
  x = h ^ b; h = splitmix64(&x);
  x = h ^ c; h = splitmix64(&x);
  x = h ^ d; h = splitmix64(&x);
  return h;
}

typedef struct { uint64_t s[4]; } Xoshiro;

static void xo_seed(Xoshiro *r, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xo_next(Xoshiro *r) {
  uint64_t *s = r->s;
  uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return out;
}

/* Uniform in [0, n), by rejection (no modulo bias). */
static uint64_t xo_below(Xoshiro *r, uint64_t n) {
  uint64_t lim = UINT64_MAX - UINT64_MAX % n;
  for (;;) {
    uint64_t v = xo_next(r);
    if (v < lim) return v % n;
  }
}

static void shuffle(int64_t *a, int64_t n, uint64_t seed) {
  Xoshiro r;
  xo_seed(&r, seed);
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)xo_below(&r, (uint64_t)i + 1);
    int64_t t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
}

/* --- examples ------------------------------------------------------------ */

enum { SALT_SPLIT = 1, SALT_EPOCH, SALT_MASK_TRAIN, SALT_MASK_EVAL };

static void fill_example(const Dataset *d, int64_t idx, unsigned char *in, unsigned char *tg,
                         uint64_t mask_salt) {
  if (d->kind == DS_TENSOR) {
    if (in) memcpy(in, d->inputs + (size_t)idx * d->in_bytes, d->in_bytes);
    if (tg) memcpy(tg, d->targets + (size_t)idx * d->tg_bytes, d->tg_bytes);
    return;
  }
  int64_t seq = d->seq;
  const unsigned char *t = d->text + (size_t)idx * (size_t)seq;
  int64_t *x = (int64_t *)in, *y = (int64_t *)tg;
  if (d->kind == DS_TEXT_CAUSAL) {
    for (int64_t j = 0; j < seq; j++) {
      if (x) x[j] = t[j];
      if (y) y[j] = t[j + 1];
    }
    return;
  }
  /* MLM: 15% of positions chosen; of those 80% MASK, 10% a random byte,
   * 10% kept. All from a hash of (salt, example, position). */
  const uint64_t p15 = 644245094ULL; /* 0.15 * 2^32 */
  for (int64_t j = 0; j < seq; j++) {
    uint64_t h = mix(mask_salt, (uint64_t)idx, (uint64_t)j, 0x6D6C6DULL);
    int64_t orig = t[j], xin = orig, yt = DATA_IGNORE;
    if ((h >> 32) < p15) {
      uint64_t r = (h & 0xFFFFFFFFULL) % 10;
      yt = orig;
      if (r < 8) xin = DATA_MASK_TOKEN;
      else if (r == 8) xin = (int64_t)((h >> 8) & 0xFF);
    }
    if (x) x[j] = xin;
    if (y) y[j] = yt;
  }
}

int data_example(const Dataset *d, int64_t i, void *input, void *target) {
  if (!d || i < 0 || i >= d->n) return -1;
  fill_example(d, i, input, target, mix(0, SALT_MASK_EVAL, 0, 0));
  return 0;
}

/* --- sampler ------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* The order of epoch e: the training set, sorted, shuffled by (seed, e). */
static void epoch_order(Sampler *s) {
  qsort(s->order, (size_t)s->ntrain, sizeof *s->order, cmp_i64);
  if (!s->sequential) shuffle(s->order, s->ntrain, mix(s->seed, SALT_EPOCH, (uint64_t)s->epoch, 0));
}

void sampler_sequential(Sampler *s) {
  s->sequential = 1;
  epoch_order(s);
}

int sampler_init(Sampler *s, Dataset *d, uint64_t seed, double eval_fraction) {
  memset(s, 0, sizeof *s);
  if (!d || d->n <= 0 || !(eval_fraction >= 0 && eval_fraction < 1)) return -1;
  int64_t n = d->n, neval = (int64_t)(eval_fraction * (double)n);
  if (neval < 0) neval = 0;
  if (neval >= n) return -1;
  int64_t *perm = malloc((size_t)n * sizeof *perm);
  if (!perm) return -1;
  for (int64_t i = 0; i < n; i++) perm[i] = i;
  shuffle(perm, n, mix(seed, SALT_SPLIT, 0, 0));
  s->d = d;
  s->seed = seed;
  s->ntrain = n - neval;
  s->neval = neval;
  s->order = malloc((size_t)s->ntrain * sizeof *s->order);
  s->eval_idx = malloc((size_t)(neval ? neval : 1) * sizeof *s->eval_idx);
  if (!s->order || !s->eval_idx) {
    free(perm);
    sampler_free(s);
    return -1;
  }
  memcpy(s->order, perm, (size_t)s->ntrain * sizeof *perm);
  memcpy(s->eval_idx, perm + s->ntrain, (size_t)neval * sizeof *perm);
  qsort(s->eval_idx, (size_t)neval, sizeof *s->eval_idx, cmp_i64);
  free(perm);
  s->epoch = 0;
  s->pos = 0;
  epoch_order(s);
  return 0;
}

int sampler_init_eval(Sampler *s, Dataset *d) {
  memset(s, 0, sizeof *s);
  if (!d || d->n <= 0) return -1;
  s->d = d;
  s->neval = d->n;
  s->order = malloc(sizeof *s->order);
  s->eval_idx = malloc((size_t)d->n * sizeof *s->eval_idx);
  if (!s->order || !s->eval_idx) {
    sampler_free(s);
    return -1;
  }
  for (int64_t i = 0; i < d->n; i++) s->eval_idx[i] = i;
  return 0;
}

void sampler_free(Sampler *s) {
  if (!s) return;
  free(s->order);
  free(s->eval_idx);
  s->order = s->eval_idx = NULL;
  s->ntrain = s->neval = 0;
}

void sampler_seek(Sampler *s, int64_t epoch, int64_t pos) {
  if (!s->order || s->ntrain <= 0) return;
  if (epoch < 0) epoch = 0;
  if (pos < 0) pos = 0;
  epoch += pos / s->ntrain;
  pos %= s->ntrain;
  s->epoch = epoch;
  epoch_order(s);
  s->pos = pos;
}

void sampler_next_part(Sampler *s, int64_t batch, int64_t lo, int64_t count, void *inputs, void *targets) {
  if (!s->order || s->ntrain <= 0) return;
  const Dataset *d = s->d;
  unsigned char *in = inputs, *tg = targets;
  for (int64_t b = 0; b < batch; b++) {
    if (s->pos >= s->ntrain) {
      s->epoch++;
      s->pos = 0;
      epoch_order(s);
    }
    int64_t idx = s->order[s->pos++];
    if (b < lo || b >= lo + count) continue;
    fill_example(d, idx, in ? in + (size_t)(b - lo) * d->in_bytes : NULL,
                 tg ? tg + (size_t)(b - lo) * d->tg_bytes : NULL,
                 mix(s->seed, SALT_MASK_TRAIN, (uint64_t)s->epoch, 0));
  }
}

/* One process's batch: every example of the draw. */
void sampler_next(Sampler *s, int64_t batch, void *inputs, void *targets) {
  sampler_next_part(s, batch, 0, batch, inputs, targets);
}

int64_t sampler_eval_batch(Sampler *s, int64_t k, int64_t batch, void *inputs, void *targets) {
  if (!s->eval_idx || batch <= 0 || k < 0 || k > s->neval / batch) return 0;
  int64_t start = k * batch;
  if (start >= s->neval) return 0;
  int64_t n = s->neval - start < batch ? s->neval - start : batch;
  const Dataset *d = s->d;
  unsigned char *in = inputs, *tg = targets;
  uint64_t salt = mix(s->seed, SALT_MASK_EVAL, 0, 0);
  for (int64_t b = 0; b < n; b++)
    fill_example(d, s->eval_idx[start + b], in ? in + (size_t)b * d->in_bytes : NULL,
                 tg ? tg + (size_t)b * d->tg_bytes : NULL, salt);
  return n;
}
