/* data_idx.c: IDX files (MNIST / Fashion-MNIST layout), plain or gzipped.
 * Images (unsigned byte, [N, H, W]) become float32 [1, H, W] in [0, 1];
 * labels (unsigned byte, [N]) become int64 scalars. */
#include "data_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

typedef struct {
  gzFile f;
  char path[1100];
} IdxFile;

/* Opens DIR/NAME, else DIR/NAME.gz (gzread reads plain files too). */
static int idx_open(IdxFile *x, const char *dir, const char *name, char *err, size_t errlen) {
  struct stat st;
  snprintf(x->path, sizeof x->path, "%s/%s", dir, name);
  if (stat(x->path, &st)) {
    snprintf(x->path, sizeof x->path, "%s/%s.gz", dir, name);
    if (stat(x->path, &st))
      return data_errf(err, errlen, "%s/%s: missing (nor %s/%s.gz found)", dir, name, dir, name);
  }
  if (!S_ISREG(st.st_mode)) return data_errf(err, errlen, "%s: not a regular file", x->path);
  x->f = gzopen(x->path, "rb");
  if (!x->f) return data_errf(err, errlen, "%s: cannot open: %s", x->path, strerror(errno));
  return 0;
}

/* Reads exactly n bytes; returns bytes read (< n at end of file), -1 on a
 * read / decompression error. */
static int64_t gz_read(gzFile f, void *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    size_t want = n - got > (1u << 30) ? (1u << 30) : n - got;
    int r = gzread(f, (char *)buf + got, (unsigned)want);
    if (r < 0) return -1;
    if (r == 0) break;
    got += (size_t)r;
  }
  return (int64_t)got;
}

static int gz_error(IdxFile *x, char *err, size_t errlen) {
  int code;
  const char *m = gzerror(x->f, &code);
  return data_errf(err, errlen, "%s: read error (%s)", x->path, m && *m ? m : "corrupt gzip data");
}

/* Reads the header: magic 0 0 0x08 ndim, then ndim big-endian u32 dims. */
static int idx_header(IdxFile *x, int want_ndim, int64_t *dims, char *err, size_t errlen) {
  unsigned char h[4];
  int64_t r = gz_read(x->f, h, 4);
  if (r < 0) return gz_error(x, err, errlen);
  if (r < 4) return data_errf(err, errlen, "%s: truncated (%lld-byte file, no IDX header)", x->path, (long long)r);
  if (h[0] || h[1])
    return data_errf(err, errlen, "%s: bad magic number %02x%02x%02x%02x (not an IDX file)", x->path, h[0], h[1], h[2], h[3]);
  if (h[2] != 0x08)
    return data_errf(err, errlen, "%s: IDX element type 0x%02x is not supported (only unsigned bytes, 0x08)", x->path, h[2]);
  if (h[3] != want_ndim)
    return data_errf(err, errlen, "%s: bad magic number %02x%02x%02x%02x: %d dimensions where %d were expected",
                     x->path, h[0], h[1], h[2], h[3], h[3], want_ndim);
  for (int i = 0; i < want_ndim; i++) {
    unsigned char b[4];
    r = gz_read(x->f, b, 4);
    if (r < 0) return gz_error(x, err, errlen);
    if (r < 4) return data_errf(err, errlen, "%s: truncated in the IDX header", x->path);
    dims[i] = (int64_t)((uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]);
  }
  return 0;
}

/* Reads n payload bytes, growing the buffer as data actually arrives, so a
 * header that lies about the size cannot make us allocate it up front. */
static int idx_payload(IdxFile *x, size_t n, unsigned char **out, char *err, size_t errlen) {
  size_t cap = n < (1u << 20) ? n : (1u << 20), got = 0;
  unsigned char *b = malloc(cap ? cap : 1);
  if (!b) return data_errf(err, errlen, "%s: out of memory", x->path);
  while (got < n) {
    if (got == cap) {
      size_t nc = cap * 2 < n ? cap * 2 : n;
      unsigned char *nb = realloc(b, nc);
      if (!nb) { free(b); return data_errf(err, errlen, "%s: out of memory (%zu bytes)", x->path, nc); }
      b = nb;
      cap = nc;
    }
    int64_t r = gz_read(x->f, b + got, cap - got);
    if (r < 0) { free(b); return gz_error(x, err, errlen); }
    got += (size_t)r;
    if (got < cap) break;   /* end of file */
  }
  if (got < n) {
    free(b);
    return data_errf(err, errlen, "%s: truncated: the header promises %zu data bytes, the file holds %zu",
                     x->path, n, got);
  }
  unsigned char extra;
  int64_t r = gz_read(x->f, &extra, 1);
  if (r < 0) { free(b); return gz_error(x, err, errlen); }
  if (r > 0) {
    free(b);
    return data_errf(err, errlen, "%s: longer than its header says (%zu data bytes expected)", x->path, n);
  }
  *out = b;
  return 0;
}

int data_open_idx(Dataset *d, const char *dir, int test, char *err, size_t errlen) {
  const char *pre = test ? "t10k" : "train";
  char iname[64], lname[64];
  snprintf(iname, sizeof iname, "%s-images-idx3-ubyte", pre);
  snprintf(lname, sizeof lname, "%s-labels-idx1-ubyte", pre);
  IdxFile im = {0}, lb = {0};
  unsigned char *pix = NULL, *lab = NULL;
  int rc = -1;
  int64_t idims[3], ldims[1];
  if (idx_open(&im, dir, iname, err, errlen) || idx_header(&im, 3, idims, err, errlen)) goto out;
  if (idx_open(&lb, dir, lname, err, errlen) || idx_header(&lb, 1, ldims, err, errlen)) goto out;
  if (idims[0] != ldims[0]) {
    data_errf(err, errlen, "%s: %lld labels for %lld images in %s", lb.path, (long long)ldims[0],
              (long long)idims[0], im.path);
    goto out;
  }
  if (idims[0] == 0 || idims[1] == 0 || idims[2] == 0) {
    data_errf(err, errlen, "%s: no examples (shape %lld x %lld x %lld)", im.path, (long long)idims[0],
              (long long)idims[1], (long long)idims[2]);
    goto out;
  }
  /* float32 images + int64 labels must fit the cap. */
  int64_t npix = data_shape_nelem_checked(3, idims, 4);
  uint64_t total = npix < 0 ? UINT64_MAX : (uint64_t)npix * 4 + (uint64_t)idims[0] * 8;
  if (npix < 0 || total > data_max_bytes()) {
    data_errf(err, errlen, "%s: %lld images of %lld x %lld need more than the data limit of %llu bytes",
              im.path, (long long)idims[0], (long long)idims[1], (long long)idims[2],
              (unsigned long long)data_max_bytes());
    goto out;
  }
  if (idx_payload(&lb, (size_t)ldims[0], &lab, err, errlen)) goto out;
  if (idx_payload(&im, (size_t)npix, &pix, err, errlen)) goto out;
  d->kind = DS_TENSOR;
  d->n = idims[0];
  d->in.dtype = DDT_F32;
  d->in.rank = 3;
  d->in.dims[0] = 1;
  d->in.dims[1] = idims[1];
  d->in.dims[2] = idims[2];
  d->in_bytes = (size_t)(idims[1] * idims[2]) * 4;
  d->tg.dtype = DDT_I64;
  d->tg.rank = 0;
  d->tg_bytes = 8;
  d->inputs = malloc((size_t)npix * 4);
  d->targets = malloc((size_t)d->n * 8);
  if (!d->inputs || !d->targets) {
    data_errf(err, errlen, "%s: out of memory", im.path);
    goto out;
  }
  float *f = (float *)d->inputs;
  for (int64_t i = 0; i < npix; i++) f[i] = (float)pix[i] / 255.0f;
  int64_t *t = (int64_t *)d->targets;
  for (int64_t i = 0; i < d->n; i++) t[i] = lab[i];
  snprintf(d->tg_file, sizeof d->tg_file, "%s", lb.path);
  rc = 0;
out:
  if (im.f) gzclose(im.f);
  if (lb.f) gzclose(lb.f);
  free(pix);
  free(lab);
  return rc;
}
