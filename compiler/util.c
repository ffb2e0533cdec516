/* util.c: arena allocation, diagnostics, data types, tensors, attributes,
 * shapes. Everything here is small and shared by every pass. */
#include "matc_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- arena */

typedef struct Block {
  struct Block *next;
  size_t used, cap;
  _Alignas(16) unsigned char mem[];
} Block;

struct Arena {
  Block *head;
};

Arena *arena_new(void) {
  Arena *a = calloc(1, sizeof *a);
  if (!a) matc_die(__FILE__, __LINE__, "out of memory");
  return a;
}

void arena_free(Arena *a) {
  if (!a) return;
  for (Block *b = a->head, *n; b; b = n) {
    n = b->next;
    free(b);
  }
  free(a);
}

void *arena_alloc(Arena *a, size_t n) {
  n = (n + 15) & ~(size_t)15;
  if (!a->head || a->head->cap - a->head->used < n) {
    size_t cap = n > (1u << 20) ? n : (1u << 20);
    Block *b = malloc(sizeof *b + cap);
    if (!b) matc_die(__FILE__, __LINE__, "out of memory");
    b->next = a->head;
    b->used = 0;
    b->cap = cap;
    a->head = b;
  }
  void *p = a->head->mem + a->head->used;
  a->head->used += n;
  memset(p, 0, n);
  return p;
}

char *arena_strdup(Arena *a, const char *s) {
  if (!s) return NULL;
  size_t n = strlen(s) + 1;
  char *p = arena_alloc(a, n);
  memcpy(p, s, n);
  return p;
}

void matc_die(const char *file, int line, const char *what) {
  fprintf(stderr, "matc: internal error at %s:%d: %s\n", file, line, what);
  abort();
}

/* ---------------------------------------------------------------- diagnostics */

static int vreport(Graph *g, int node, int input, const char *fmt, va_list ap) {
  char msg[1024];
  vsnprintf(msg, sizeof msg, fmt, ap);
  const char *file = g->path ? g->path : "<model>";
  if (node >= 0 && node < g->nnodes) {
    Node *n = &g->nodes[node];
    if (input >= 0 && input < n->nin) {
      const char *iname = n->in[input] >= 0 ? g->vals[n->in[input]].name : "";
      snprintf(g->err, sizeof g->err, "%s: node '%s' (%s), input %d '%s': %s", file,
               n->name, n->op_type, input, iname, msg);
    } else {
      snprintf(g->err, sizeof g->err, "%s: node '%s' (%s): %s", file, n->name,
               n->op_type, msg);
    }
  } else {
    snprintf(g->err, sizeof g->err, "%s: %s", file, msg);
  }
  return MATC_ERR;
}

int fail(Graph *g, int node, int input, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(g, node, input, fmt, ap);
  va_end(ap);
  g->unsupported = 0;
  return MATC_ERR;
}

int unsupported(Graph *g, int node, int input, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(g, node, input, fmt, ap);
  va_end(ap);
  g->unsupported = 1;
  return MATC_UNSUPPORTED;
}

/* ---------------------------------------------------------------- data types */

int dt_size(DType t) {
  switch (t) {
  case DT_F32: case DT_I32: case DT_U32: return 4;
  case DT_F64: case DT_I64: case DT_U64: return 8;
  case DT_U8: case DT_I8: case DT_BOOL: return 1;
  case DT_U16: case DT_I16: case DT_F16: case DT_BF16: return 2;
  default: return 0;
  }
}

int dt_supported(DType t) {
  switch (t) {
  case DT_F32: case DT_F64: case DT_I64: case DT_I32: case DT_I16: case DT_I8:
  case DT_U8: case DT_U16: case DT_U32: case DT_U64: case DT_BOOL:
    return 1;
  default:
    return 0;
  }
}

int dt_is_float(DType t) { return t == DT_F32 || t == DT_F64 || t == DT_F16 || t == DT_BF16; }
int dt_is_signed(DType t) { return t == DT_I8 || t == DT_I16 || t == DT_I32 || t == DT_I64; }

const char *dt_name(DType t) {
  switch (t) {
  case DT_F32: return "float32";
  case DT_F64: return "float64";
  case DT_F16: return "float16";
  case DT_BF16: return "bfloat16";
  case DT_I64: return "int64";
  case DT_I32: return "int32";
  case DT_I16: return "int16";
  case DT_I8: return "int8";
  case DT_U8: return "uint8";
  case DT_U16: return "uint16";
  case DT_U32: return "uint32";
  case DT_U64: return "uint64";
  case DT_BOOL: return "bool";
  case DT_STRING: return "string";
  default: return "undefined";
  }
}

/* ---------------------------------------------------------------- tensors */

int64_t shape_nelem(int rank, const int64_t *dims) {
  for (int i = 0; i < rank; i++)
    if (dims[i] == 0) return 0;          /* [2^40, 2^40, 0] is empty, not an overflow */
  int64_t n = 1;
  for (int i = 0; i < rank; i++) n *= dims[i];
  return n;
}

const char *shape_str(int rank, const int64_t *dims, char *buf, size_t n) {
  size_t k = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < rank && k < n; i++)
    k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? "," : "", (long long)dims[i]);
  if (k < n) snprintf(buf + k, n - k, "]");
  return buf;
}

int64_t shape_nelem_checked(int rank, const int64_t *dims) {
  int64_t n = 1;
  for (int i = 0; i < rank; i++) {
    if (dims[i] < 0 || dims[i] > MATC_MAX_ELEMS) return -1;
    if (dims[i] == 0) n = 0;
  }
  if (n == 0) return 0;
  for (int i = 0; i < rank; i++) {
    if (dims[i] > MATC_MAX_ELEMS / n) return -1;
    n *= dims[i];
  }
  return n;
}

int64_t tensor_nelem(const Tensor *t) { return shape_nelem(t->rank, t->dims); }

Tensor *tensor_new(Arena *a, DType dt, int rank, const int64_t *dims) {
  Tensor *t = arena_alloc(a, sizeof *t);
  t->dt = dt;
  t->rank = rank;
  for (int i = 0; i < rank; i++) t->dims[i] = dims[i];
  size_t bytes = (size_t)shape_nelem(rank, dims) * dt_size(dt);
  t->data = arena_alloc(a, bytes ? bytes : 1);
  return t;
}

double tensor_get_f(const Tensor *t, int64_t i) {
  switch (t->dt) {
  case DT_F32: return ((const float *)t->data)[i];
  case DT_F64: return ((const double *)t->data)[i];
  default: return (double)tensor_get_i(t, i);
  }
}

int64_t tensor_get_i(const Tensor *t, int64_t i) {
  switch (t->dt) {
  case DT_I64: return ((const int64_t *)t->data)[i];
  case DT_I32: return ((const int32_t *)t->data)[i];
  case DT_I16: return ((const int16_t *)t->data)[i];
  case DT_I8: return ((const int8_t *)t->data)[i];
  case DT_U8: case DT_BOOL: return ((const uint8_t *)t->data)[i];
  case DT_U16: return ((const uint16_t *)t->data)[i];
  case DT_U32: return ((const uint32_t *)t->data)[i];
  case DT_U64: return (int64_t)((const uint64_t *)t->data)[i];
  case DT_F32: return f2i_sat(((const float *)t->data)[i]);
  case DT_F64: return f2i_sat(((const double *)t->data)[i]);
  default: return 0;
  }
}

void shape_strides(int rank, const int64_t *dims, int64_t *strides) {
  int64_t s = 1;
  for (int i = rank - 1; i >= 0; i--) {
    strides[i] = s;
    s *= dims[i];
  }
}

/* ---------------------------------------------------------------- attributes */

const Attr *attr_get(const Node *n, const char *name) {
  for (int i = 0; i < n->nattr; i++)
    if (strcmp(n->attr[i].name, name) == 0) return &n->attr[i];
  return NULL;
}

int64_t attr_i(const Node *n, const char *name, int64_t dflt) {
  const Attr *a = attr_get(n, name);
  return a && a->type == A_INT ? a->i : dflt;
}

float attr_f(const Node *n, const char *name, float dflt) {
  const Attr *a = attr_get(n, name);
  if (a && a->type == A_FLOAT) return a->f;
  if (a && a->type == A_INT) return (float)a->i;
  return dflt;
}

const char *attr_s(const Node *n, const char *name, const char *dflt) {
  const Attr *a = attr_get(n, name);
  return a && a->type == A_STRING ? a->s : dflt;
}

int attr_ints(const Node *n, const char *name, int64_t *out, int max) {
  const Attr *a = attr_get(n, name);
  if (!a || a->type != A_INTS) return -1;
  int c = a->n < max ? a->n : max;     /* infer_shapes refuses longer shape attributes */
  for (int i = 0; i < c; i++) out[i] = a->ints[i];
  return c;
}

/* ---------------------------------------------------------------- shapes */

int value_nelem_known(const Value *v) { return v->rank >= 0; }
int64_t value_nelem(const Value *v) { return shape_nelem(v->rank, v->dims); }

void value_set(Value *v, DType dt, int rank, const int64_t *dims) {
  v->dt = dt;
  v->rank = rank;
  for (int i = 0; i < rank; i++) v->dims[i] = dims[i];
}

int broadcast_shapes(Graph *g, int node, int ra, const int64_t *a, int rb,
                     const int64_t *b, int *rout, int64_t *out) {
  int r = ra > rb ? ra : rb;
  int64_t tmp[MATC_MAX_RANK];
  for (int i = 0; i < r; i++) {
    int ia = i - (r - ra), ib = i - (r - rb);
    int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
    if (da == db || db == 1) tmp[i] = da;
    else if (da == 1) tmp[i] = db;
    else
      return fail(g, node, -1, "shapes do not broadcast: dim %d is %lld vs %lld", i,
                  (long long)da, (long long)db);
  }
  for (int i = 0; i < r; i++) out[i] = tmp[i];
  *rout = r;
  return MATC_OK;
}

int norm_axis(int64_t axis, int rank) {
  if (axis < 0) axis += rank;
  if (axis < 0 || axis >= rank) return -1;
  return (int)axis;
}

Tensor *known_value(Graph *g, int v) {
  if (v < 0) return NULL;
  return g->vals[v].data;
}
