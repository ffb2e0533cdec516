/* data_pb.c: DIR/<k>/input_0.pb and DIR/<k>/target_0.pb (ONNX TensorProto
 * files), k = 0, 1, ... until DIR/<k> is missing. Each file holds one
 * example; every example must have the same shapes and types. Floating
 * tensors load as float32, integer ones as int64. */
#include "data_internal.h"
#include "onnx.pb-c.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
  unsigned char *buf;
  size_t len, cap;
} Grow;

static int grow_append(Grow *g, const void *p, size_t n) {
  if (g->len + n > g->cap) {
    size_t nc = g->cap ? g->cap : 4096;
    while (nc < g->len + n) nc *= 2;
    unsigned char *nb = realloc(g->buf, nc);
    if (!nb) return -1;
    g->buf = nb;
    g->cap = nc;
  }
  memcpy(g->buf + g->len, p, n);
  g->len += n;
  return 0;
}

/* Reads one TensorProto file and appends its converted elements to g.
 * The first example fixes *shape; later ones must match it. */
static int read_tensor(const char *path, DataShape *shape, int first, Grow *g, uint64_t *used,
                       char *err, size_t errlen) {
  unsigned char *buf;
  size_t len;
  uint64_t cap = data_max_bytes();
  if (cap > (1ULL << 31)) cap = 1ULL << 31;   /* protobuf's own limit */
  if (data_read_file(path, &buf, &len, cap, err, errlen)) return -1;
  Onnx__TensorProto *tp = onnx__tensor_proto__unpack(NULL, len, buf);
  free(buf);
  if (!tp) return data_errf(err, errlen, "%s: not a valid ONNX TensorProto (malformed or truncated)", path);
  int rc = -1;
  int dt = tp->data_type, es = data_dt_size(dt);
  if (!es) {
    data_errf(err, errlen, "%s: tensor data type %d is not supported (float, double, int8..int64, uint8, uint16, bool)", path, dt);
    goto out;
  }
  if (tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL || tp->n_external_data || tp->segment) {
    data_errf(err, errlen, "%s: external or segmented tensor data is not supported", path);
    goto out;
  }
  if (tp->n_dims > 8) {
    data_errf(err, errlen, "%s: rank %zu is over the limit of 8", path, tp->n_dims);
    goto out;
  }
  DataShape s = {0};
  s.dtype = data_dt_is_float(dt) ? DDT_F32 : DDT_I64;
  s.rank = (int)tp->n_dims;
  for (int i = 0; i < s.rank; i++) s.dims[i] = tp->dims[i];
  int oes = s.dtype == DDT_F32 ? 4 : 8;
  for (int i = 0; i < s.rank; i++)
    if (s.dims[i] < 0) {
      data_errf(err, errlen, "%s: dimension %d is negative (%lld)", path, i, (long long)s.dims[i]);
      goto out;
    }
  int64_t n = data_shape_nelem_checked(s.rank, s.dims, (size_t)oes);
  if (n < 0 || (uint64_t)n * (uint64_t)oes > data_max_bytes() - *used) {
    char sh[200];
    size_t k = 0;
    for (int i = 0; i < s.rank && k < sizeof sh; i++)
      k += (size_t)snprintf(sh + k, sizeof sh - k, "%s%lld", i ? "," : "", (long long)s.dims[i]);
    data_errf(err, errlen, "%s: shape [%s] of %s: the data set passes the data limit of %llu bytes", path,
              k ? sh : "", s.dtype == DDT_F32 ? "float32" : "int64", (unsigned long long)data_max_bytes());
    goto out;
  }
  if (n == 0) { data_errf(err, errlen, "%s: the tensor is empty", path); goto out; }
  size_t have;
  if (tp->has_raw_data) have = tp->raw_data.len / (size_t)es;
  else if (dt == DDT_F32) have = tp->n_float_data;
  else if (dt == DDT_F64) have = tp->n_double_data;
  else if (dt == DDT_I64) have = tp->n_int64_data;
  else have = tp->n_int32_data;
  if ((int64_t)have != n || (tp->has_raw_data && tp->raw_data.len != (size_t)n * (size_t)es)) {
    data_errf(err, errlen, "%s: the tensor holds %zu elements but its shape needs %lld", path, have, (long long)n);
    goto out;
  }
  if (first) {
    *shape = s;
  } else if (memcmp(&s, shape, sizeof s)) {
    data_errf(err, errlen, "%s: shape or type differs from example 0's", path);
    goto out;
  }
  unsigned char tmp[8];
  for (int64_t i = 0; i < n; i++) {
    if (s.dtype == DDT_F32) {
      float f;
      if (tp->has_raw_data) data_convert_le(tp->raw_data.data + (size_t)i * (size_t)es, dt, 1, &f, DDT_F32);
      else f = dt == DDT_F32 ? tp->float_data[i] : (float)tp->double_data[i];
      memcpy(tmp, &f, 4);
    } else {
      int64_t v;
      if (tp->has_raw_data) data_convert_le(tp->raw_data.data + (size_t)i * (size_t)es, dt, 1, &v, DDT_I64);
      else if (dt == DDT_I64) v = tp->int64_data[i];
      else if (dt == DDT_U8 || dt == DDT_BOOL) v = (uint8_t)tp->int32_data[i];
      else if (dt == DDT_U16) v = (uint16_t)tp->int32_data[i];
      else if (dt == DDT_I8) v = (int8_t)tp->int32_data[i];
      else if (dt == DDT_I16) v = (int16_t)tp->int32_data[i];
      else v = tp->int32_data[i];
      memcpy(tmp, &v, 8);
    }
    if (grow_append(g, tmp, (size_t)oes)) { data_errf(err, errlen, "%s: out of memory", path); goto out; }
  }
  *used += (uint64_t)n * (uint64_t)oes;
  rc = 0;
out:
  onnx__tensor_proto__free_unpacked(tp, NULL);
  return rc;
}

int data_open_pb(Dataset *d, const char *dir, char *err, size_t errlen) {
  Grow in = {0}, tg = {0};
  uint64_t used = 0;
  size_t pl = strlen(dir) + 64;
  char *p = malloc(pl);
  int rc = -1;
  int64_t k = 0;
  if (!p) return data_errf(err, errlen, "%s: out of memory", dir);
  struct stat st;
  if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
    data_errf(err, errlen, "%s: missing (not a directory)", dir);
    goto out;
  }
  for (;; k++) {
    snprintf(p, pl, "%s/%lld", dir, (long long)k);
    if (stat(p, &st) || !S_ISDIR(st.st_mode)) break;
    snprintf(p, pl, "%s/%lld/input_0.pb", dir, (long long)k);
    if (read_tensor(p, &d->in, k == 0, &in, &used, err, errlen)) goto out;
    snprintf(p, pl, "%s/%lld/target_0.pb", dir, (long long)k);
    if (read_tensor(p, &d->tg, k == 0, &tg, &used, err, errlen)) goto out;
  }
  if (k == 0) {
    data_errf(err, errlen, "%s/0/input_0.pb: missing (no examples in %s)", dir, dir);
    goto out;
  }
  d->kind = DS_TENSOR;
  d->n = k;
  d->inputs = in.buf;
  d->targets = tg.buf;
  in.buf = tg.buf = NULL;
  d->in_bytes = (size_t)data_shape_nelem(d->in.rank, d->in.dims) * (d->in.dtype == DDT_F32 ? 4 : 8);
  d->tg_bytes = (size_t)data_shape_nelem(d->tg.rank, d->tg.dims) * (d->tg.dtype == DDT_F32 ? 4 : 8);
  snprintf(d->tg_file, sizeof d->tg_file, "%s", dir);
  d->tg_pb = 1;
  rc = 0;
out:
  free(in.buf);
  free(tg.buf);
  free(p);
  return rc;
}
