/* checkpoint.c: `matc train --checkpoint DIR` / `--resume DIR` and
 * `--out TRAINED.onnx`.
 *
 * A checkpoint is one file, DIR/checkpoint.matc (little-endian):
 *
 *   "MATCCKPT"                  8-byte magic
 *   u32 version (1)
 *   u32 H                       length of the text header that follows
 *   H bytes of text             "key=value\n" lines: model, fingerprint, initializers,
 *                               optimizer, step, epoch, pos, seed, ntrain, tensors, batch
 *                               (per rank), and ranks (data parallel; absent: 1)
 *   per tensor (tensors of them):
 *     u32 L, L bytes            name
 *     u32 dtype                 ONNX TensorProto.DataType code
 *     u32 rank, i64 dims[rank]
 *     u64 nbytes, nbytes bytes  the data, C order
 *   u64 checksum                FNV-1a 64 of every byte before it
 *   "MATCEND\n"                 8-byte end marker
 *
 * It is written to DIR/checkpoint.matc.tmp, flushed to disk (fsync) and
 * renamed over the previous one (then the directory is synced), so a run
 * killed at any point leaves the previous checkpoint intact. */
#include "cli.h"
#include "onnx.pb-c.h"
#include "../runtime/dp.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CKPT_MAGIC "MATCCKPT"
#define CKPT_END "MATCEND\n"
#define CKPT_VERSION 1u
#define CKPT_FILE "checkpoint.matc"
/* Larger files are refused before they are read into memory. */
#define CKPT_MAX_BYTES (16ULL << 30)

static void errf(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *c = p;
  for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 1099511628211ull;
  return h;
}
#define FNV_INIT 14695981039346656037ull

uint64_t model_fingerprint(const Graph *g, int *ninit) {
  uint64_t h = FNV_INIT;
  int n = 0;
  for (int v = 0; v < g->nvals; v++) {
    const Value *x = &g->vals[v];
    if (x->kind != V_PARAM) continue;
    h = fnv(h, x->name, strlen(x->name) + 1);
    int32_t meta[2] = {(int32_t)x->dt, x->rank};
    h = fnv(h, meta, sizeof meta);
    h = fnv(h, x->dims, sizeof(int64_t) * (x->rank > 0 ? x->rank : 0));
    n++;
  }
  if (ninit) *ninit = n;
  return h;
}

/* ---- atomic writes: PATH.tmp in the same directory, fsync, rename ---- */

typedef struct {
  FILE *f;
  char path[4096], tmp[4200];
  uint64_t hash;
  int failed;
} AtomicFile;

static int af_open(AtomicFile *a, const char *path, char *err, size_t errlen) {
  memset(a, 0, sizeof *a);
  if (strlen(path) >= sizeof a->path) {
    errf(err, errlen, "%s: path too long", path);
    return -1;
  }
  snprintf(a->path, sizeof a->path, "%s", path);
  snprintf(a->tmp, sizeof a->tmp, "%s.tmp", path);
  a->f = fopen(a->tmp, "wb");
  if (!a->f) {
    errf(err, errlen, "%s: cannot write: %s", a->tmp, strerror(errno));
    return -1;
  }
  a->hash = FNV_INIT;
  return 0;
}

static void af_write(AtomicFile *a, const void *p, size_t n) {
  if (a->failed || n == 0) return;
  a->hash = fnv(a->hash, p, n);
  if (fwrite(p, 1, n, a->f) != n) a->failed = errno ? errno : EIO;
}

static void af_abort(AtomicFile *a) {
  if (a->f) fclose(a->f);
  a->f = NULL;
  unlink(a->tmp);
}

static int af_commit(AtomicFile *a, char *err, size_t errlen) {
  if (!a->failed && fflush(a->f) != 0) a->failed = errno;
  if (!a->failed && fsync(fileno(a->f)) != 0) a->failed = errno;
  if (a->failed) {
    errf(err, errlen, "%s: write failed: %s", a->tmp, strerror(a->failed));
    af_abort(a);
    return -1;
  }
  int rc = fclose(a->f);
  a->f = NULL;
  if (rc != 0) {
    errf(err, errlen, "%s: write failed: %s", a->tmp, strerror(errno));
    unlink(a->tmp);
    return -1;
  }
  if (rename(a->tmp, a->path) != 0) {
    errf(err, errlen, "cannot rename %s to %s: %s", a->tmp, a->path, strerror(errno));
    unlink(a->tmp);
    return -1;
  }
  /* Make the rename itself durable. */
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", a->path);
  int fd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
  return 0;
}

/* ---- checkpoints ---- */

static void ckpt_path(const char *dir, char *out, size_t n) {
  struct stat st;
  if (stat(dir, &st) == 0 && S_ISREG(st.st_mode)) snprintf(out, n, "%s", dir);
  else snprintf(out, n, "%s/%s", dir, CKPT_FILE);
}

static int mkdirs(const char *dir, char *err, size_t errlen) {
  char p[4096];
  snprintf(p, sizeof p, "%s", dir);
  for (char *s = p + 1;; s++) {
    if (*s == '/' || *s == 0) {
      char c = *s;
      *s = 0;
      if (mkdir(p, 0777) != 0 && errno != EEXIST) {
        errf(err, errlen, "--checkpoint %s: cannot create %s: %s", dir, p, strerror(errno));
        return -1;
      }
      *s = c;
      if (!c) break;
    }
  }
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    errf(err, errlen, "--checkpoint %s: not a directory", dir);
    return -1;
  }
  return 0;
}

int ckpt_prepare_dir(const char *dir, char *err, size_t errlen) { return mkdirs(dir, err, errlen); }

static void put_u32(AtomicFile *a, uint32_t v) { af_write(a, &v, 4); }
static void put_u64(AtomicFile *a, uint64_t v) { af_write(a, &v, 8); }

int ckpt_save(const char *dir, const CkptMeta *m, Exec *x, const int *vals, int nvals, char *err,
              size_t errlen) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, CKPT_FILE);
  AtomicFile a;
  if (af_open(&a, path, err, errlen)) return -1;
  char model[1024];
  snprintf(model, sizeof model, "%s", m->model);
  for (char *c = model; *c; c++)
    if (*c == '\n' || *c == '\r') *c = '?';
  char hdr[2048];
  int h = snprintf(hdr, sizeof hdr,
                   "model=%s\nfingerprint=%016" PRIx64 "\ninitializers=%d\noptimizer=%s\nstep=%" PRId64
                   "\nepoch=%" PRId64 "\npos=%" PRId64 "\nseed=%" PRId64 "\nntrain=%" PRId64 "\ntensors=%d\n",
                   model, m->fingerprint, m->ninit, m->optimizer, m->step, m->epoch, m->pos, m->seed,
                   m->ntrain, nvals);
  /* The batch per rank, and for a data-parallel run how many ranks
   * (absent: one): resuming keeps the global batch. */
  if (m->batch > 0 && h < (int)sizeof hdr)
    h += snprintf(hdr + h, sizeof hdr - h, "batch=%" PRId64 "\n", m->batch);
  if (m->ranks > 1 && h < (int)sizeof hdr)
    h += snprintf(hdr + h, sizeof hdr - h, "ranks=%" PRId64 "\n", m->ranks);
  af_write(&a, CKPT_MAGIC, 8);
  put_u32(&a, CKPT_VERSION);
  put_u32(&a, (uint32_t)h);
  af_write(&a, hdr, (size_t)h);
  const Graph *g = x->g;
  for (int i = 0; i < nvals; i++) {
    const Value *v = &g->vals[vals[i]];
    uint32_t len = (uint32_t)strlen(v->name);
    put_u32(&a, len);
    af_write(&a, v->name, len);
    put_u32(&a, (uint32_t)v->dt);
    put_u32(&a, (uint32_t)v->rank);
    af_write(&a, v->dims, sizeof(int64_t) * v->rank);
    uint64_t nb = (uint64_t)value_nelem(v) * dt_size(v->dt);
    put_u64(&a, nb);
    af_write(&a, x->bufs[vals[i]], nb);
  }
  uint64_t sum = a.hash;
  put_u64(&a, sum);
  af_write(&a, CKPT_END, 8);
  return af_commit(&a, err, errlen);
}

/* The checkpoint file read into memory: header parsed, checksum checked,
 * tensors located (not yet matched to a graph). */
struct Ckpt {
  char path[4096];
  unsigned char *buf;
  size_t len;
  CkptMeta meta;
  int ntensors;
  size_t first;          /* offset of the first tensor */
};

void ckpt_free(Ckpt *c) {
  if (!c) return;
  free(c->buf);
  free(c);
}

const CkptMeta *ckpt_meta(const Ckpt *c) { return &c->meta; }
const char *ckpt_file(const Ckpt *c) { return c->path; }

static const char *hdr_get(const char *hdr, const char *key, char *out, size_t n) {
  size_t k = strlen(key);
  for (const char *p = hdr; p && *p;) {
    const char *e = strchr(p, '\n');
    if (!e) break;
    if ((size_t)(e - p) > k && strncmp(p, key, k) == 0 && p[k] == '=') {
      size_t l = (size_t)(e - p - k - 1);
      if (l >= n) l = n - 1;
      memcpy(out, p + k + 1, l);
      out[l] = 0;
      return out;
    }
    p = e + 1;
  }
  return NULL;
}

static int hdr_int(const char *hdr, const char *key, int64_t *v) {
  char s[64], *end;
  if (!hdr_get(hdr, key, s, sizeof s) || !*s) return -1;
  errno = 0;
  long long x = strtoll(s, &end, 10);
  if (*end || errno) return -1;
  *v = x;
  return 0;
}

/* Walks the tensor records: on success fills name/len, dt, rank, dims, data,
 * nbytes and advances *off. -1: the record runs past `end`; -2: its rank
 * is over MATC_MAX_RANK. */
typedef struct {
  const char *name;
  uint32_t namelen, dt, rank;
  int64_t dims[MATC_MAX_RANK];
  uint64_t nbytes;
  const unsigned char *data;
} Rec;

static int next_rec(const Ckpt *c, size_t end, size_t *off, Rec *r) {
  const unsigned char *b = c->buf;
  size_t o = *off;
#define NEED(n) do { if ((uint64_t)(n) > end - o) return -1; } while (0)
  NEED(4);
  memcpy(&r->namelen, b + o, 4), o += 4;
  NEED(r->namelen);
  r->name = (const char *)b + o, o += r->namelen;
  NEED(8);
  memcpy(&r->dt, b + o, 4), o += 4;
  memcpy(&r->rank, b + o, 4), o += 4;
  if (r->rank > MATC_MAX_RANK) return -2;
  NEED(8 * (size_t)r->rank);
  memcpy(r->dims, b + o, 8 * (size_t)r->rank), o += 8 * (size_t)r->rank;
  NEED(8);
  memcpy(&r->nbytes, b + o, 8), o += 8;
  NEED(r->nbytes);
  r->data = b + o, o += r->nbytes;
#undef NEED
  *off = o;
  return 0;
}

Ckpt *ckpt_read(const char *dir, char *err, size_t errlen) {
  char path[4096];
  ckpt_path(dir, path, sizeof path);
  struct stat st;
  if (stat(dir, &st) != 0) {
    errf(err, errlen, "--resume %s: no such checkpoint directory: %s", dir, strerror(errno));
    return NULL;
  }
  FILE *f = fopen(path, "rb");
  if (!f) {
    errf(err, errlen, "--resume %s: no checkpoint: %s: %s", dir, path, strerror(errno));
    return NULL;
  }
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    errf(err, errlen, "%s: not a regular file", path);
    fclose(f);
    return NULL;
  }
  if ((uint64_t)st.st_size > CKPT_MAX_BYTES) {
    errf(err, errlen, "%s: the checkpoint is %lld bytes, over the limit of %llu bytes (16 GiB)", path,
         (long long)st.st_size, (unsigned long long)CKPT_MAX_BYTES);
    fclose(f);
    return NULL;
  }
  size_t len = (size_t)st.st_size;
  unsigned char *buf = malloc(len ? len : 1);
  if (!buf || fread(buf, 1, len, f) != len) {
    errf(err, errlen, "%s: cannot read %zu bytes", path, len);
    free(buf);
    fclose(f);
    return NULL;
  }
  fclose(f);
  return ckpt_parse(path, buf, len, err, errlen);
}

Ckpt *ckpt_parse(const char *path, unsigned char *buf, size_t len, char *err, size_t errlen) {
  Ckpt *c = calloc(1, sizeof *c);
  if (!c) {
    free(buf);
    errf(err, errlen, "%s: out of memory", path);
    return NULL;
  }
  snprintf(c->path, sizeof c->path, "%s", path);
  c->buf = buf;
  c->len = len;
  const unsigned char *b = c->buf;
  if (c->len < 16 || memcmp(b, CKPT_MAGIC, 8) != 0) {
    errf(err, errlen, "%s: not a matc checkpoint (%zu bytes, no %s magic)", c->path, c->len, CKPT_MAGIC);
    goto fail;
  }
  uint32_t ver, hl;
  memcpy(&ver, b + 8, 4);
  memcpy(&hl, b + 12, 4);
  if (ver != CKPT_VERSION) {
    errf(err, errlen, "%s: checkpoint format version %u, this matc reads version %u", c->path, ver, CKPT_VERSION);
    goto fail;
  }
  if (c->len < 16 + 16 || (uint64_t)hl > c->len - 32 || memcmp(b + c->len - 8, CKPT_END, 8) != 0) {
    errf(err, errlen, "%s: truncated or damaged checkpoint (%zu bytes, no end marker)", c->path, c->len);
    goto fail;
  }
  uint64_t sum;
  memcpy(&sum, b + c->len - 16, 8);
  if (fnv(FNV_INIT, b, c->len - 16) != sum) {
    errf(err, errlen, "%s: damaged checkpoint (checksum mismatch)", c->path);
    goto fail;
  }
  char *hdr = malloc(hl + 1);
  memcpy(hdr, b + 16, hl);
  hdr[hl] = 0;
  CkptMeta *m = &c->meta;
  int64_t fp_ok = 0, ninit = 0, nt = 0;
  char fp[64];
  if (!hdr_get(hdr, "model", m->model, sizeof m->model) ||
      !hdr_get(hdr, "optimizer", m->optimizer, sizeof m->optimizer) ||
      !hdr_get(hdr, "fingerprint", fp, sizeof fp) || hdr_int(hdr, "initializers", &ninit) ||
      hdr_int(hdr, "step", &m->step) || hdr_int(hdr, "epoch", &m->epoch) || hdr_int(hdr, "pos", &m->pos) ||
      hdr_int(hdr, "seed", &m->seed) || hdr_int(hdr, "ntrain", &m->ntrain) || hdr_int(hdr, "tensors", &nt)) {
    errf(err, errlen, "%s: checkpoint header lacks a field or has a bad value", c->path);
    free(hdr);
    goto fail;
  }
  char *end;
  m->fingerprint = strtoull(fp, &end, 16);
  fp_ok = *fp && !*end;
  if (!fp_ok || nt < 0 || nt > INT32_MAX || m->step < 0 || m->epoch < 0 || m->pos < 0 || ninit < 0 ||
      ninit > INT32_MAX) {
    errf(err, errlen, "%s: checkpoint header has a bad value", c->path);
    free(hdr);
    goto fail;
  }
  m->ninit = (int)ninit;
  m->ranks = 1;
  m->batch = 0;
  if ((hdr_get(hdr, "ranks", fp, sizeof fp) && (hdr_int(hdr, "ranks", &m->ranks) || m->ranks < 1)) ||
      (hdr_get(hdr, "batch", fp, sizeof fp) && (hdr_int(hdr, "batch", &m->batch) || m->batch < 1))) {
    errf(err, errlen, "%s: checkpoint header has a bad value", c->path);
    free(hdr);
    goto fail;
  }
  free(hdr);
  c->ntensors = (int)nt;
  c->first = 16 + hl;
  /* Every record must lie inside the file and end exactly at the checksum. */
  size_t off = c->first, stop = c->len - 16;
  Rec r;
  for (int i = 0; i < c->ntensors; i++) {
    int bad = next_rec(c, stop, &off, &r);
    if (bad == -2) {
      errf(err, errlen, "%s: damaged checkpoint (tensor %d has rank %u, over the limit of %d)", c->path, i,
           r.rank, MATC_MAX_RANK);
      goto fail;
    }
    if (bad) {
      errf(err, errlen, "%s: damaged checkpoint (tensor %d runs past the end)", c->path, i);
      goto fail;
    }
  }
  if (off != stop) {
    errf(err, errlen, "%s: damaged checkpoint (%zu unexpected bytes after the tensors)", c->path, stop - off);
    goto fail;
  }
  return c;
fail:
  ckpt_free(c);
  return NULL;
}

/* Data parallel: rank 0 reads the file and sends its bytes to the other
 * ranks (their machines need no copy of it); each checks them itself. */
Ckpt *ckpt_read_dp(const char *dir, char *err, size_t errlen) {
  if (dp_size() <= 1) return ckpt_read(dir, err, errlen);
  Ckpt *c = NULL;
  int64_t len = -1;
  if (dp_rank() == 0) {
    c = ckpt_read(dir, err, errlen);
    if (c) len = (int64_t)c->len;
  }
  dp_bcast(&len, sizeof len, "sending the checkpoint (its size)");
  if (len < 0) {
    if (dp_rank() != 0) errf(err, errlen, "--resume %s: rank 0 could not read the checkpoint", dir);
    return NULL;
  }
  if (dp_rank() == 0) {
    dp_bcast(c->buf, c->len, "sending the checkpoint");
    return c;
  }
  char path[4096];
  ckpt_path(dir, path, sizeof path);
  unsigned char *buf = malloc(len ? (size_t)len : 1);
  if (!buf) {
    fprintf(stderr, "matc: rank %d: out of memory for a %lld-byte checkpoint\n", dp_rank(), (long long)len);
    dp_abort(1);
  }
  dp_bcast(buf, (size_t)len, "sending the checkpoint");
  return ckpt_parse(path, buf, (size_t)len, err, errlen);
}

int ckpt_check_model(const Ckpt *c, const CkptMeta *want, char *err, size_t errlen) {
  const CkptMeta *m = &c->meta;
  if (m->fingerprint != want->fingerprint) {
    errf(err, errlen, "%s: this checkpoint was written for model %s (%d initializers, fingerprint %016" PRIx64
         "), not for %s (%d initializers, fingerprint %016" PRIx64 "): their initializers' names or shapes differ",
         c->path, m->model, m->ninit, m->fingerprint, want->model, want->ninit, want->fingerprint);
    return -1;
  }
  return 0;
}

int ckpt_restore(const Ckpt *c, Exec *x, const int *vals, int nvals, char *err, size_t errlen) {
  const Graph *g = x->g;
  const unsigned char **src = calloc((size_t)nvals + 1, sizeof *src);
  size_t off = c->first, stop = c->len - 16;
  Rec r;
  int rc = -1;
  for (int i = 0; i < c->ntensors; i++) {
    next_rec(c, stop, &off, &r);         /* checked by ckpt_read */
    int k = -1;
    for (int j = 0; j < nvals; j++) {
      const char *nm = g->vals[vals[j]].name;
      if (strlen(nm) == r.namelen && memcmp(nm, r.name, r.namelen) == 0) { k = j; break; }
    }
    if (k < 0) {
      errf(err, errlen, "%s: tensor '%.*s' is not a parameter or optimizer state of this run (the checkpoint "
           "was written with --optimizer %s; another optimizer, --momentum or --freeze?)", c->path,
           r.namelen > 200 ? 200 : (int)r.namelen, r.name, c->meta.optimizer);
      goto out;
    }
    const Value *v = &g->vals[vals[k]];
    int same = (int)r.dt == (int)v->dt && (int)r.rank == v->rank &&
               memcmp(r.dims, v->dims, sizeof(int64_t) * v->rank) == 0 &&
               r.nbytes == (uint64_t)value_nelem(v) * dt_size(v->dt);
    if (!same) {
      errf(err, errlen, "%s: tensor '%s' has another type or shape in the checkpoint", c->path, v->name);
      goto out;
    }
    if (src[k]) {
      errf(err, errlen, "%s: tensor '%s' appears twice", c->path, v->name);
      goto out;
    }
    src[k] = r.data;
  }
  for (int j = 0; j < nvals; j++)
    if (!src[j]) {
      errf(err, errlen, "%s: the checkpoint lacks tensor '%s' (it was written with --optimizer %s; another "
           "optimizer, --momentum or --freeze?)", c->path, g->vals[vals[j]].name, c->meta.optimizer);
      goto out;
    }
  for (int j = 0; j < nvals; j++) {
    const Value *v = &g->vals[vals[j]];
    memcpy(x->bufs[vals[j]], src[j], (size_t)value_nelem(v) * dt_size(v->dt));
  }
  rc = 0;
out:
  free(src);
  return rc;
}

/* ---- --out TRAINED.onnx ---- */

typedef struct {
  ProtobufCBuffer base;
  AtomicFile *a;
} FileBuffer;

static void fb_append(ProtobufCBuffer *b, size_t len, const uint8_t *data) {
  af_write(((FileBuffer *)b)->a, data, len);
}

int write_trained_onnx(const char *orig, const char *out, Exec *x, const int *vals, int nvals, char *err,
                       size_t errlen) {
  const Graph *g = x->g;
  FILE *f = fopen(orig, "rb");
  if (!f) {
    errf(err, errlen, "%s: cannot open: %s", orig, strerror(errno));
    return -1;
  }
  struct stat st;
  fstat(fileno(f), &st);
  size_t len = (size_t)st.st_size;
  unsigned char *buf = malloc(len ? len : 1);
  size_t got = fread(buf, 1, len, f);
  fclose(f);
  Onnx__ModelProto *m = got == len ? onnx__model_proto__unpack(NULL, len, buf) : NULL;
  free(buf);
  if (!m || !m->graph) {
    errf(err, errlen, "%s: cannot re-read the model", orig);
    if (m) onnx__model_proto__free_unpacked(m, NULL);
    return -1;
  }
  Onnx__GraphProto *gp = m->graph;
  Onnx__TensorProto *saved = calloc(gp->n_initializer + 1, sizeof *saved);
  char *changed = calloc(gp->n_initializer + 1, 1);
  int rc = -1, replaced = 0;
  for (size_t i = 0; i < gp->n_initializer; i++) {
    Onnx__TensorProto *tp = gp->initializer[i];
    int k = -1;
    for (int j = 0; j < nvals && tp->name; j++)
      if (strcmp(g->vals[vals[j]].name, tp->name) == 0) { k = vals[j]; break; }
    if (k < 0) continue;
    const Value *v = &g->vals[k];
    int64_t n = 1;
    for (size_t d = 0; d < tp->n_dims; d++) n *= tp->dims[d];
    if (!tp->has_data_type || (int)tp->data_type != (int)v->dt || n != value_nelem(v)) {
      errf(err, errlen, "%s: initializer '%s' no longer matches the trained tensor", orig, tp->name);
      goto out;
    }
    saved[i] = *tp;
    changed[i] = 1;
    tp->n_float_data = 0, tp->float_data = NULL;
    tp->n_int32_data = 0, tp->int32_data = NULL;
    tp->n_string_data = 0, tp->string_data = NULL;
    tp->n_int64_data = 0, tp->int64_data = NULL;
    tp->n_double_data = 0, tp->double_data = NULL;
    tp->n_uint64_data = 0, tp->uint64_data = NULL;
    tp->n_external_data = 0, tp->external_data = NULL;
    tp->has_data_location = 0;
    tp->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__DEFAULT;
    tp->has_raw_data = 1;
    tp->raw_data.len = (size_t)n * dt_size(v->dt);
    tp->raw_data.data = x->bufs[k];
    replaced++;
  }
  if (replaced != nvals) {
    errf(err, errlen, "%s: only %d of the %d trained tensors are initializers of the model", orig, replaced, nvals);
    goto out;
  }
  AtomicFile a;
  if (af_open(&a, out, err, errlen)) goto out;
  FileBuffer fb = {{fb_append}, &a};
  onnx__model_proto__pack_to_buffer(m, &fb.base);
  rc = af_commit(&a, err, errlen);
out:
  for (size_t i = 0; i < gp->n_initializer; i++)
    if (changed[i]) *gp->initializer[i] = saved[i];
  free(saved);
  free(changed);
  onnx__model_proto__free_unpacked(m, NULL);
  return rc;
}
