/* data_npy.c: NPY arrays (format versions 1-3, little-endian or byte
 * types, C order). The first dimension indexes examples; floating arrays
 * load as float32, integer ones as int64. */
#include "data_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
  int dt;                   /* source dtype (ONNX code) */
  int rank;
  int64_t dims[9];
  uint64_t data_off;        /* where the data starts */
} NpyHeader;

static const char *skip_ws(const char *p) {
  while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
  return p;
}

/* Finds 'key' (quoted with ' or ") in the dict text and returns the
 * position after its colon. */
static const char *find_key(const char *h, const char *key) {
  size_t kl = strlen(key);
  for (const char *p = h; (p = strpbrk(p, "'\"")); p++) {
    char q = *p;
    if (strncmp(p + 1, key, kl) == 0 && p[1 + kl] == q) {
      const char *c = skip_ws(p + 2 + kl);
      if (*c == ':') return skip_ws(c + 1);
    }
  }
  return NULL;
}

static int parse_descr(const char *p, int *dt, char *msg, size_t ml) {
  if (*p != '\'' && *p != '"') { snprintf(msg, ml, "'descr' is not a string"); return -1; }
  char q = *p++;
  const char *e = strchr(p, q);
  if (!e || e - p > 16) { snprintf(msg, ml, "bad 'descr'"); return -1; }
  char s[20];
  memcpy(s, p, (size_t)(e - p));
  s[e - p] = 0;
  if (s[0] == '>' && strcmp(s + 1, "u1") && strcmp(s + 1, "i1") && strcmp(s + 1, "b1")) {
    snprintf(msg, ml, "dtype '%s' is big-endian, which is not supported", s);
    return -1;
  }
  const char *t = (s[0] == '<' || s[0] == '|' || s[0] == '=' || s[0] == '>') ? s + 1 : s;
  static const struct { const char *n; int dt; } tab[] = {
    {"f4", DDT_F32}, {"f8", DDT_F64}, {"i8", DDT_I64}, {"i4", DDT_I32}, {"u1", DDT_U8},
    {"i1", DDT_I8}, {"i2", DDT_I16}, {"u2", DDT_U16}, {"b1", DDT_BOOL},
  };
  for (size_t i = 0; i < sizeof tab / sizeof *tab; i++)
    if (strcmp(t, tab[i].n) == 0) { *dt = tab[i].dt; return 0; }
  snprintf(msg, ml, "dtype '%s' is not supported (float32, float64, int64, int32, uint8, int8, int16, uint16, bool)", s);
  return -1;
}

static int parse_shape(const char *p, NpyHeader *h, char *msg, size_t ml) {
  if (*p != '(') { snprintf(msg, ml, "'shape' is not a tuple"); return -1; }
  p = skip_ws(p + 1);
  h->rank = 0;
  while (*p != ')') {
    if (h->rank == 9) { snprintf(msg, ml, "'shape' has more than 9 dimensions, over the limit (examples and rank 8)"); return -1; }
    if (*p < '0' || *p > '9') { snprintf(msg, ml, "bad 'shape' entry"); return -1; }
    int64_t v = 0;
    while (*p >= '0' && *p <= '9') {
      if (v > (INT64_MAX - 9) / 10) { snprintf(msg, ml, "'shape' entry too large"); return -1; }
      v = v * 10 + (*p++ - '0');
    }
    if (*p == 'L') p++;
    h->dims[h->rank++] = v;
    p = skip_ws(p);
    if (*p == ',') p = skip_ws(p + 1);
    else if (*p != ')') { snprintf(msg, ml, "bad 'shape' tuple"); return -1; }
  }
  return 0;
}

/* Reads and checks the header of an open file of `size` bytes. */
static int read_header(FILE *f, const char *path, uint64_t size, NpyHeader *h, char *err, size_t errlen) {
  unsigned char pre[12];
  size_t got = fread(pre, 1, 10, f);
  if (got < 10) return data_errf(err, errlen, "%s: truncated (%zu bytes, not an NPY file)", path, got);
  if (memcmp(pre, "\x93NUMPY", 6))
    return data_errf(err, errlen, "%s: bad magic number (not an NPY file)", path);
  int major = pre[6];
  uint64_t hlen, off;
  if (major == 1) {
    hlen = pre[8] | (uint64_t)pre[9] << 8;
    off = 10;
  } else if (major == 2 || major == 3) {
    if (fread(pre + 10, 1, 2, f) < 2) return data_errf(err, errlen, "%s: truncated NPY header", path);
    hlen = pre[8] | (uint64_t)pre[9] << 8 | (uint64_t)pre[10] << 16 | (uint64_t)pre[11] << 24;
    off = 12;
  } else {
    return data_errf(err, errlen, "%s: NPY format version %d is not supported", path, major);
  }
  if (hlen > (1u << 20)) return data_errf(err, errlen, "%s: bad NPY header: length %llu is implausible", path, (unsigned long long)hlen);
  if (off + hlen > size) return data_errf(err, errlen, "%s: truncated NPY header (%llu bytes declared, file has %llu)", path,
                                          (unsigned long long)hlen, (unsigned long long)(size - off));
  char *txt = malloc(hlen + 1);
  if (!txt) return data_errf(err, errlen, "%s: out of memory", path);
  if (fread(txt, 1, hlen, f) != hlen) { free(txt); return data_errf(err, errlen, "%s: truncated NPY header", path); }
  txt[hlen] = 0;
  char msg[200] = "";
  int rc = -1;
  const char *p = skip_ws(txt), *v;
  if (strlen(txt) != hlen) snprintf(msg, sizeof msg, "NUL byte in the header");
  else if (*p != '{') snprintf(msg, sizeof msg, "the header is not a dict");
  else if (!strchr(p, '}')) snprintf(msg, sizeof msg, "the header dict is not closed");
  else if (!(v = find_key(p, "descr"))) snprintf(msg, sizeof msg, "no 'descr'");
  else if (parse_descr(v, &h->dt, msg, sizeof msg)) {}
  else if (!(v = find_key(p, "fortran_order"))) snprintf(msg, sizeof msg, "no 'fortran_order'");
  else if (strncmp(v, "True", 4) == 0) snprintf(msg, sizeof msg, "Fortran-order arrays are not supported (save with C order)");
  else if (strncmp(v, "False", 5) != 0) snprintf(msg, sizeof msg, "bad 'fortran_order'");
  else if (!(v = find_key(p, "shape"))) snprintf(msg, sizeof msg, "no 'shape'");
  else if (parse_shape(v, h, msg, sizeof msg)) {}
  else rc = 0;
  free(txt);
  if (rc) return data_errf(err, errlen, "%s: bad NPY header: %s", path, msg);
  h->data_off = off + hlen;
  return 0;
}

/* Loads one array: *out gets n * (example elements) converted values. */
static int load_array(const char *path, uint64_t budget, DataShape *shape, int64_t *count,
                      unsigned char **out, uint64_t *out_bytes, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) return data_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  int rc = -1;
  unsigned char *dst = NULL, *chunk = NULL;
  if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
    data_errf(err, errlen, "%s: not a regular file", path);
    goto out;
  }
  NpyHeader h;
  if (read_header(f, path, (uint64_t)st.st_size, &h, err, errlen)) goto out;
  if (h.rank < 1) { data_errf(err, errlen, "%s: a 0-d array has no example dimension", path); goto out; }
  if (h.dims[0] == 0) { data_errf(err, errlen, "%s: no examples (shape[0] is 0)", path); goto out; }
  int es = data_dt_size(h.dt);
  int odt = data_dt_is_float(h.dt) ? DDT_F32 : DDT_I64, oes = odt == DDT_F32 ? 4 : 8;
  int64_t n = data_shape_nelem_checked(h.rank, h.dims, (size_t)oes);
  if (n < 0 || (uint64_t)n * (uint64_t)oes > budget) {
    data_errf(err, errlen, "%s: the array needs more than the data limit of %llu bytes", path,
              (unsigned long long)data_max_bytes());
    goto out;
  }
  if (n == 0) { data_errf(err, errlen, "%s: examples are empty (a 0 in the shape)", path); goto out; }
  uint64_t want = (uint64_t)n * (uint64_t)es, have = (uint64_t)st.st_size - h.data_off;
  if (have < want) {
    data_errf(err, errlen, "%s: truncated: the shape needs %llu data bytes, the file holds %llu", path,
              (unsigned long long)want, (unsigned long long)have);
    goto out;
  }
  if (have > want) {
    data_errf(err, errlen, "%s: %llu bytes past the data the header describes", path,
              (unsigned long long)(have - want));
    goto out;
  }
  dst = malloc((size_t)n * (size_t)oes);
  size_t cel = (1u << 20) / (size_t)es;
  chunk = malloc(cel * (size_t)es);
  if (!dst || !chunk) { data_errf(err, errlen, "%s: out of memory", path); goto out; }
  for (int64_t i = 0; i < n;) {
    size_t k = (size_t)(n - i) < cel ? (size_t)(n - i) : cel;
    if (fread(chunk, (size_t)es, k, f) != k) { data_errf(err, errlen, "%s: read error", path); goto out; }
    data_convert_le(chunk, h.dt, k, dst + (size_t)i * (size_t)oes, odt);
    i += (int64_t)k;
  }
  shape->dtype = odt;
  shape->rank = h.rank - 1;
  for (int i = 1; i < h.rank; i++) shape->dims[i - 1] = h.dims[i];
  *count = h.dims[0];
  *out = dst;
  *out_bytes = (uint64_t)n * (uint64_t)oes;
  dst = NULL;
  rc = 0;
out:
  free(dst);
  free(chunk);
  fclose(f);
  return rc;
}

int data_open_npy(Dataset *d, const char *inputs, const char *targets, char *err, size_t errlen) {
  int64_t ni, nt;
  uint64_t bi, bt;
  if (load_array(inputs, data_max_bytes(), &d->in, &ni, &d->inputs, &bi, err, errlen)) return -1;
  if (load_array(targets, data_max_bytes() - bi, &d->tg, &nt, &d->targets, &bt, err, errlen)) return -1;
  if (ni != nt)
    return data_errf(err, errlen, "%s: %lld examples, but %s has %lld", targets, (long long)nt, inputs,
                     (long long)ni);
  d->kind = DS_TENSOR;
  d->n = ni;
  d->in_bytes = (size_t)(bi / (uint64_t)ni);
  d->tg_bytes = (size_t)(bt / (uint64_t)nt);
  snprintf(d->tg_file, sizeof d->tg_file, "%s", targets);
  return 0;
}
