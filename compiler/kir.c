/* kir.c: the kernel IR: builders for op lowerings, a printer, and an
 * interpreter used for constant folding (and as a second opinion on the
 * code generator in tests). */
#include "matc_internal.h"
#include "../runtime/rt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- builders */

static Kernel *k_add(Graph *g, int node) {
  if (g->nkernels == g->capkernels) {
    int c = g->capkernels ? g->capkernels * 2 : 64;
    Kernel *k = realloc(g->kernels, sizeof(Kernel) * c);
    if (!k) matc_die(__FILE__, __LINE__, "out of memory");
    g->kernels = k;
    g->capkernels = c;
  }
  Kernel *k = &g->kernels[g->nkernels++];
  memset(k, 0, sizeof *k);
  k->node = node;
  k->out = -1;
  return k;
}

int value_scratch(Graph *g, int node, const char *what, DType dt, int rank, const int64_t *dims) {
  char name[256];
  snprintf(name, sizeof name, "%s/%s", g->nodes[node].name, what);
  int v = graph_add_value(g, name);
  value_set(&g->vals[v], dt, rank, dims);
  g->vals[v].kind = V_ACT;
  g->vals[v].producer = node;
  return v;
}

Kernel *k_loop(Graph *g, int node, int out, int nvar, const int64_t *ext) {
  MATC_ASSERT(nvar <= KMAX_VARS);
  Kernel *k = k_add(g, node);
  k->kind = K_LOOP;
  k->out = out;
  k->out_dt = g->vals[out].dt;
  k->nvar = nvar;
  for (int i = 0; i < nvar; i++) k->ext[i] = ext[i];
  return k;
}

Kernel *k_elementwise(Graph *g, int node, int out) {
  Value *v = &g->vals[out];
  Kernel *k = k_loop(g, node, out, v->rank, v->dims);
  shape_strides(v->rank, v->dims, k->out_stride);
  return k;
}

Kernel *k_extern(Graph *g, int node, int fn) {
  Kernel *k = k_add(g, node);
  k->kind = K_EXTERN;
  k->ext_fn = fn;
  return k;
}

void k_arg(Kernel *k, int val, int64_t off) {
  MATC_ASSERT(k->nargs < KMAX_EXT_ARGS);
  k->args[k->nargs] = val;
  k->argoff[k->nargs] = off;
  k->nargs++;
}

static Expr *e_new(Graph *g, ExprKind kind, DType dt) {
  Expr *e = arena_alloc(g->arena, sizeof *e);
  e->kind = kind;
  e->dt = dt;
  return e;
}

Expr *e_const(Graph *g, DType dt, double v) {
  Expr *e = e_new(g, EX_CONST, dt);
  e->f = v;
  e->i = f2i_sat(v);
  return e;
}

Expr *e_consti(Graph *g, DType dt, int64_t v) {
  Expr *e = e_new(g, EX_CONST, dt);
  e->f = (double)v;
  e->i = v;
  return e;
}

Expr *e_index(Graph *g, int var) {
  Expr *e = e_new(g, EX_INDEX, DT_I64);
  e->var = var;
  return e;
}

static int un_is_predicate(int op) {
  return op == U_ISNAN || op == U_ISINF || op == U_ISPOSINF || op == U_ISNEGINF;
}

Expr *e_un(Graph *g, int op, Expr *a) {
  Expr *e = e_new(g, EX_UN, un_is_predicate(op) ? DT_BOOL : a->dt);
  e->op = op;
  e->a = a;
  return e;
}

static int bin_is_compare(int op) {
  return op == B_EQ || op == B_NE || op == B_LT || op == B_LE || op == B_GT || op == B_GE;
}

Expr *e_bin(Graph *g, int op, Expr *a, Expr *b) {
  MATC_ASSERT(a->dt == b->dt);
  Expr *e = e_new(g, EX_BIN, bin_is_compare(op) ? DT_BOOL : a->dt);
  e->op = op;
  e->a = a;
  e->b = b;
  return e;
}

Expr *e_sel(Graph *g, Expr *c, Expr *a, Expr *b) {
  MATC_ASSERT(a->dt == b->dt && c->dt == DT_BOOL);
  Expr *e = e_new(g, EX_SEL, a->dt);
  e->a = a;
  e->b = b;
  e->c = c;
  return e;
}

Expr *e_cast(Graph *g, DType dt, Expr *a) {
  if (a->dt == dt) return a;
  Expr *e = e_new(g, EX_CAST, dt);
  e->a = a;
  return e;
}

Expr *e_acc(Graph *g, DType dt) { return e_new(g, EX_ACC, dt); }

Expr *e_load(Graph *g, int val, int64_t off, const int64_t *stride, int nvar) {
  Expr *e = e_new(g, EX_LOAD, g->vals[val].dt);
  e->val = val;
  e->off = off;
  for (int i = 0; i < nvar; i++) e->stride[i] = stride[i];
  return e;
}

Expr *e_load_bcast(Graph *g, int val, int rank) {
  Value *v = &g->vals[val];
  int64_t vs[MATC_MAX_RANK], st[KMAX_VARS] = {0};
  shape_strides(v->rank, v->dims, vs);
  for (int i = 0; i < v->rank; i++) {
    int var = rank - v->rank + i;
    MATC_ASSERT(var >= 0);
    st[var] = v->dims[i] == 1 ? 0 : vs[i];
  }
  return e_load(g, val, 0, st, rank);
}

void e_load_dyn(Expr *load, Expr *dyn, int64_t dstride) {
  MATC_ASSERT(load->kind == EX_LOAD && load->ndyn < KMAX_DYN && dyn->dt == DT_I64);
  load->dyn[load->ndyn] = dyn;
  load->dstride[load->ndyn] = dstride;
  load->ndyn++;
}

Expr *expr_copy(Graph *g, Expr *e) {
  if (!e) return NULL;
  Expr *c = arena_alloc(g->arena, sizeof *c);
  *c = *e;
  c->a = expr_copy(g, e->a);
  c->b = expr_copy(g, e->b);
  c->c = expr_copy(g, e->c);
  for (int d = 0; d < e->ndyn; d++) c->dyn[d] = expr_copy(g, e->dyn[d]);
  return c;
}

int expr_size(const Expr *e) {
  if (!e) return 0;
  int n = 1 + expr_size(e->a) + expr_size(e->b) + expr_size(e->c);
  for (int d = 0; d < e->ndyn; d++) n += expr_size(e->dyn[d]);
  return n;
}

/* ---------------------------------------------------------------- printer */

static const char *un_names[] = {
#define X(n) #n,
    MATC_UNARY_OPS(X)
#undef X
};
static const char *bin_names[] = {
#define X(n) #n,
    MATC_BINARY_OPS(X)
#undef X
};
static const char *ext_names[] = {
#define X(n, fn) #n,
    MATC_EXTERNS(X)
#undef X
};

static void expr_dump(Graph *g, Expr *e, FILE *f) {
  switch (e->kind) {
  case EX_CONST:
    if (dt_is_float(e->dt)) fprintf(f, "%g", e->f);
    else fprintf(f, "%lld", (long long)e->i);
    break;
  case EX_INDEX: fprintf(f, "i%d", e->var); break;
  case EX_ACC: fputs("acc", f); break;
  case EX_LOAD:
    fprintf(f, "%%%d[%lld", e->val, (long long)e->off);
    for (int i = 0; i < KMAX_VARS; i++)
      if (e->stride[i]) fprintf(f, "+%lld*i%d", (long long)e->stride[i], i);
    for (int i = 0; i < e->ndyn; i++) {
      fprintf(f, "+%lld*(", (long long)e->dstride[i]);
      expr_dump(g, e->dyn[i], f);
      fputc(')', f);
    }
    fputc(']', f);
    break;
  case EX_UN: fprintf(f, "%s(", un_names[e->op]); expr_dump(g, e->a, f); fputc(')', f); break;
  case EX_BIN:
    fprintf(f, "%s(", bin_names[e->op]);
    expr_dump(g, e->a, f);
    fputs(", ", f);
    expr_dump(g, e->b, f);
    fputc(')', f);
    break;
  case EX_SEL:
    fputs("sel(", f);
    expr_dump(g, e->c, f);
    fputs(", ", f);
    expr_dump(g, e->a, f);
    fputs(", ", f);
    expr_dump(g, e->b, f);
    fputc(')', f);
    break;
  case EX_CAST: fprintf(f, "%s(", dt_name(e->dt)); expr_dump(g, e->a, f); fputc(')', f); break;
  }
}

void kernels_dump(Graph *g, FILE *f) {
  static const char *red[] = {"", "sum", "prod", "max", "min", "argmax", "argmin"};
  for (int i = 0; i < g->nkernels; i++) {
    Kernel *k = &g->kernels[i];
    if (k->dead) continue;
    const char *nn = k->node >= 0 ? g->nodes[k->node].name : "";
    if (k->pred > 0) {
      char buf[256];
      fprintf(f, "  if %s", guard_pred_str(g, k->pred, buf, sizeof buf));
    }
    if (k->kind == K_EXTERN) {
      fprintf(f, "  k%d (%s): extern %s(", i, nn, ext_names[k->ext_fn]);
      for (int j = 0; j < k->nargs; j++) fprintf(f, "%s%%%d", j ? ", " : "", k->args[j]);
      fputs(")\n", f);
      continue;
    }
    fprintf(f, "  k%d (%s): for", i, nn);
    for (int j = 0; j < k->nvar + k->nred; j++)
      fprintf(f, " i%d<%lld%s", j, (long long)k->ext[j], j >= k->nvar ? "r" : "");
    fprintf(f, ": %%%d[%lld", k->out, (long long)k->out_off);
    for (int j = 0; j < k->nvar; j++)
      if (k->out_stride[j]) fprintf(f, "+%lld*i%d", (long long)k->out_stride[j], j);
    fprintf(f, "] = %s ", red[k->red]);
    expr_dump(g, k->body, f);
    if (k->post) {
      fputs(" then ", f);
      expr_dump(g, k->post, f);
    }
    fputc('\n', f);
  }
}

/* ---------------------------------------------------------------- interpreter */

typedef struct {
  double f;
  int64_t i;
} Scalar;

static Scalar load_elem(DType dt, const void *p, int64_t idx) {
  Scalar s = {0, 0};
  switch (dt) {
  case DT_F32: s.f = ((const float *)p)[idx]; break;
  case DT_F64: s.f = ((const double *)p)[idx]; break;
  case DT_I64: s.i = ((const int64_t *)p)[idx]; break;
  case DT_I32: s.i = ((const int32_t *)p)[idx]; break;
  case DT_I16: s.i = ((const int16_t *)p)[idx]; break;
  case DT_I8: s.i = ((const int8_t *)p)[idx]; break;
  case DT_U8: s.i = ((const uint8_t *)p)[idx]; break;
  case DT_BOOL: s.i = ((const uint8_t *)p)[idx] != 0; break;
  case DT_U16: s.i = ((const uint16_t *)p)[idx]; break;
  case DT_U32: s.i = ((const uint32_t *)p)[idx]; break;
  case DT_U64: s.i = (int64_t)((const uint64_t *)p)[idx]; break;
  default: MATC_ASSERT(0);
  }
  return s;
}

static void store_elem(DType dt, void *p, int64_t idx, Scalar s) {
  switch (dt) {
  case DT_F32: ((float *)p)[idx] = (float)s.f; break;
  case DT_F64: ((double *)p)[idx] = s.f; break;
  case DT_I64: ((int64_t *)p)[idx] = s.i; break;
  case DT_I32: ((int32_t *)p)[idx] = (int32_t)s.i; break;
  case DT_I16: ((int16_t *)p)[idx] = (int16_t)s.i; break;
  case DT_I8: ((int8_t *)p)[idx] = (int8_t)s.i; break;
  case DT_U8: ((uint8_t *)p)[idx] = (uint8_t)s.i; break;
  case DT_BOOL: ((uint8_t *)p)[idx] = s.i != 0; break;
  case DT_U16: ((uint16_t *)p)[idx] = (uint16_t)s.i; break;
  case DT_U32: ((uint32_t *)p)[idx] = (uint32_t)s.i; break;
  case DT_U64: ((uint64_t *)p)[idx] = (uint64_t)s.i; break;
  default: MATC_ASSERT(0);
  }
}

/* Integer results wrap to the width of their type, as in generated code. */
static int64_t wrap_int(DType dt, int64_t v) {
  switch (dt) {
  case DT_I32: return (int32_t)v;
  case DT_I16: return (int16_t)v;
  case DT_I8: return (int8_t)v;
  case DT_U8: return (uint8_t)v;
  case DT_U16: return (uint16_t)v;
  case DT_U32: return (uint32_t)v;
  case DT_BOOL: return v != 0;
  default: return v;
  }
}

typedef struct {
  Graph *g;
  void **ptrs;
  const int64_t *vars;
  Scalar acc;
} Env;

static Scalar eval(Env *env, Expr *e);

static Scalar eval_un(int op, DType dt, DType adt, Scalar a) {
  Scalar r = {0, 0};
  if (dt_is_float(adt)) {
    double x = a.f, y = 0;
    switch (op) {
    case U_NEG: y = -x; break;
    case U_ABS: y = fabs(x); break;
    case U_EXP: y = exp(x); break;
    case U_LOG: y = log(x); break;
    case U_SQRT: y = sqrt(x); break;
    case U_RECIP: y = 1.0 / x; break;
    case U_TANH: y = tanh(x); break;
    case U_ERF: y = erf(x); break;
    case U_SIGMOID: y = 1.0 / (1.0 + exp(-x)); break;
    case U_SIN: y = sin(x); break;
    case U_COS: y = cos(x); break;
    case U_TAN: y = tan(x); break;
    case U_ASIN: y = asin(x); break;
    case U_ACOS: y = acos(x); break;
    case U_ATAN: y = atan(x); break;
    case U_SINH: y = sinh(x); break;
    case U_COSH: y = cosh(x); break;
    case U_ASINH: y = asinh(x); break;
    case U_ACOSH: y = acosh(x); break;
    case U_ATANH: y = atanh(x); break;
    case U_FLOOR: y = floor(x); break;
    case U_CEIL: y = ceil(x); break;
    case U_ROUND: y = nearbyint(x); break;
    case U_SIGN: y = x > 0 ? 1 : x < 0 ? -1 : 0; break;
    case U_SOFTPLUS: y = x > 20 ? x : log1p(exp(x)); break;
    case U_ISNAN: r.i = isnan(x); return r;
    case U_ISINF: r.i = isinf(x) != 0; return r;
    case U_ISPOSINF: r.i = isinf(x) && x > 0; return r;
    case U_ISNEGINF: r.i = isinf(x) && x < 0; return r;
    default: MATC_ASSERT(0);
    }
    r.f = dt == DT_F32 ? (double)(float)y : y;
    return r;
  }
  int64_t x = a.i, y = 0;
  switch (op) {
  case U_NEG: y = -x; break;
  case U_ABS: y = x < 0 ? -x : x; break;
  case U_SIGN: y = x > 0 ? 1 : x < 0 ? -1 : 0; break;
  case U_NOT: y = !x; break;
  case U_BITNOT: y = ~x; break;
  case U_ISNAN: case U_ISINF: case U_ISPOSINF: case U_ISNEGINF: y = 0; break;
  default: MATC_ASSERT(0);
  }
  r.i = wrap_int(dt, y);
  return r;
}

static Scalar eval_bin(int op, DType adt, Scalar a, Scalar b) {
  Scalar r = {0, 0};
  if (dt_is_float(adt)) {
    double x = a.f, y = b.f, z = 0;
    switch (op) {
    case B_ADD: z = x + y; break;
    case B_SUB: z = x - y; break;
    case B_MUL: z = x * y; break;
    case B_DIV: z = x / y; break;
    case B_MAX: z = isnan(x) || isnan(y) ? NAN : (x > y ? x : y); break;
    case B_MIN: z = isnan(x) || isnan(y) ? NAN : (x < y ? x : y); break;
    case B_POW: z = pow(x, y); break;
    case B_FMOD: z = fmod(x, y); break;
    case B_EQ: r.i = x == y; return r;
    case B_NE: r.i = x != y; return r;
    case B_LT: r.i = x < y; return r;
    case B_LE: r.i = x <= y; return r;
    case B_GT: r.i = x > y; return r;
    case B_GE: r.i = x >= y; return r;
    default: MATC_ASSERT(0);
    }
    r.f = adt == DT_F32 ? (double)(float)z : z;
    return r;
  }
  int sgn = dt_is_signed(adt);
  int64_t x = a.i, y = b.i, z = 0;
  uint64_t ux = (uint64_t)x, uy = (uint64_t)y;
  switch (op) {
  case B_ADD: z = (int64_t)(ux + uy); break;
  case B_SUB: z = (int64_t)(ux - uy); break;
  case B_MUL: z = (int64_t)(ux * uy); break;
  /* INT64_MIN / -1 overflows in C: wrap it, as the hardware's result would. */
  case B_DIV: z = y == 0 ? 0 : sgn ? (y == -1 ? (int64_t)(0 - ux) : x / y) : (int64_t)(ux / uy); break;
  case B_MAX: z = sgn ? (x > y ? x : y) : (int64_t)(ux > uy ? ux : uy); break;
  case B_MIN: z = sgn ? (x < y ? x : y) : (int64_t)(ux < uy ? ux : uy); break;
  case B_POW: {          /* by squaring, wrapping (y <= 0 gives 1) */
    uint64_t p = 1, b = ux;
    for (uint64_t e = y > 0 ? uy : 0; e; e >>= 1) {
      if (e & 1) p *= b;
      b *= b;
    }
    z = (int64_t)p;
    break;
  }
  case B_FMOD: z = y == 0 || (sgn && y == -1) ? 0 : sgn ? x % y : (int64_t)(ux % uy); break;
  case B_IMOD: {
    if (y == 0 || (sgn && y == -1)) { z = 0; break; }
    if (!sgn) { z = (int64_t)(ux % uy); break; }
    z = x % y;
    if (z != 0 && ((z < 0) != (y < 0))) z += y;
    break;
  }
  case B_AND: z = x && y; break;
  case B_OR: z = x || y; break;
  case B_XOR: z = (!!x) ^ (!!y); break;
  case B_HASH: {
    uint64_t s = ux + uy * 0x9E3779B97F4A7C15ull;
    s = (s ^ (s >> 30)) * 0xBF58476D1CE4E5B9ull;
    s = (s ^ (s >> 27)) * 0x94D049BB133111EBull;
    z = (int64_t)(s ^ (s >> 31));
    break;
  }
  case B_BITAND: z = x & y; break;
  case B_BITOR: z = x | y; break;
  case B_BITXOR: z = x ^ y; break;
  case B_SHL: case B_SHR: {
    /* Shifts act on the type's own width, operands taken as unsigned. */
    int bits = dt_size(adt) * 8;
    uint64_t mask = bits == 64 ? ~0ull : (1ull << bits) - 1;
    uint64_t sx = ux & mask, sy = uy & mask;
    z = sy >= (uint64_t)bits ? 0 : (int64_t)(op == B_SHL ? sx << sy : sx >> sy);
    break;
  }
  case B_EQ: r.i = x == y; return r;
  case B_NE: r.i = x != y; return r;
  case B_LT: r.i = sgn ? x < y : ux < uy; return r;
  case B_LE: r.i = sgn ? x <= y : ux <= uy; return r;
  case B_GT: r.i = sgn ? x > y : ux > uy; return r;
  case B_GE: r.i = sgn ? x >= y : ux >= uy; return r;
  default: MATC_ASSERT(0);
  }
  r.i = wrap_int(adt, z);
  return r;
}

static Scalar eval_cast(DType to, DType from, Scalar a) {
  Scalar r = {0, 0};
  if (dt_is_float(to)) {
    r.f = dt_is_float(from) ? a.f
          : (from == DT_U64 ? (double)(uint64_t)a.i : (double)a.i);
    if (to == DT_F32) r.f = (float)r.f;
  } else if (to == DT_BOOL) {
    r.i = dt_is_float(from) ? a.f != 0 : a.i != 0;
  } else if (dt_is_float(from)) {
    /* float -> int conversion of NaN/out of range is undefined in C; clamp. */
    double x = a.f;
    if (isnan(x)) x = 0;
    if (x > 9.2e18) x = 9.2e18;
    if (x < -9.2e18) x = -9.2e18;
    r.i = wrap_int(to, (int64_t)x);
  } else {
    r.i = wrap_int(to, a.i);
  }
  return r;
}

static int64_t load_index(Env *env, Expr *e) {
  int64_t idx = e->off;
  for (int v = 0; v < KMAX_VARS; v++) idx += e->stride[v] * env->vars[v];
  for (int d = 0; d < e->ndyn; d++) idx += e->dstride[d] * eval(env, e->dyn[d]).i;
  return idx;
}

static Scalar eval(Env *env, Expr *e) {
  Scalar r = {0, 0};
  switch (e->kind) {
  case EX_CONST: r.f = e->f; r.i = e->i; return r;
  case EX_INDEX: r.i = env->vars[e->var]; return r;
  case EX_ACC: return env->acc;
  case EX_LOAD: {
    void *p = env->ptrs[e->val];
    MATC_ASSERT(p);
    return load_elem(env->g->vals[e->val].dt, p, load_index(env, e));
  }
  case EX_UN: return eval_un(e->op, e->dt, e->a->dt, eval(env, e->a));
  case EX_BIN: return eval_bin(e->op, e->a->dt, eval(env, e->a), eval(env, e->b));
  case EX_SEL: return eval(env, e->c).i ? eval(env, e->a) : eval(env, e->b);
  case EX_CAST: return eval_cast(e->dt, e->a->dt, eval(env, e->a));
  }
  return r;
}

static Scalar red_init(ReduceKind red, DType dt) {
  Scalar s = {0, 0};
  int f = dt_is_float(dt);
  switch (red) {
  case R_PROD: s.f = 1; s.i = 1; break;
  case R_MAX: case R_ARGMAX: s.f = -INFINITY; s.i = dt_is_signed(dt) ? INT64_MIN : 0; break;
  case R_MIN: case R_ARGMIN: s.f = INFINITY; s.i = dt_is_signed(dt) ? INT64_MAX : -1; break;
  default: break;
  }
  (void)f;
  return s;
}

static void run_loop(Graph *g, Kernel *k, void **ptrs) {
  int nv = k->nvar, nr = k->nred;
  int64_t vars[KMAX_VARS] = {0};
  int64_t total = shape_nelem(nv, k->ext);
  int64_t rtotal = shape_nelem(nr, k->ext + nv);
  Env env = {g, ptrs, vars, {0, 0}};
  DType bdt = k->body->dt;
  void *out = ptrs[k->out];
  MATC_ASSERT(out);
  for (int64_t p = 0; p < total; p++) {
    int64_t rem = p;
    for (int v = nv - 1; v >= 0; v--) {
      vars[v] = rem % k->ext[v];
      rem /= k->ext[v];
    }
    int64_t oidx = k->out_off;
    for (int v = 0; v < nv; v++) oidx += k->out_stride[v] * vars[v];
    Scalar val;
    if (k->red == R_NONE) {
      val = eval(&env, k->body);
    } else {
      Scalar acc = red_init(k->red, bdt);
      int64_t best = 0;
      for (int64_t q = 0; q < rtotal; q++) {
        int64_t rq = q;
        for (int v = nv + nr - 1; v >= nv; v--) {
          vars[v] = rq % k->ext[v];
          rq /= k->ext[v];
        }
        Scalar x = eval(&env, k->body);
        int fl = dt_is_float(bdt);
        int sgn = dt_is_signed(bdt);
        switch (k->red) {
        case R_SUM: if (fl) acc.f += x.f; else acc.i += x.i; break;
        case R_PROD: if (fl) acc.f *= x.f; else acc.i *= x.i; break;
        case R_MAX:
          if (fl) acc.f = (x.f > acc.f || isnan(x.f)) ? x.f : acc.f;
          else acc.i = (sgn ? x.i > acc.i : (uint64_t)x.i > (uint64_t)acc.i) ? x.i : acc.i;
          break;
        case R_MIN:
          if (fl) acc.f = (x.f < acc.f || isnan(x.f)) ? x.f : acc.f;
          else acc.i = (sgn ? x.i < acc.i : (uint64_t)x.i < (uint64_t)acc.i) ? x.i : acc.i;
          break;
        case R_ARGMAX: case R_ARGMIN: {
          int better;
          if (fl) better = k->red == R_ARGMAX ? x.f > acc.f : x.f < acc.f;
          else better = k->red == R_ARGMAX ? x.i > acc.i : x.i < acc.i;
          if (q == 0 || better) { acc = x; best = q; }
          break;
        }
        default: MATC_ASSERT(0);
        }
        if (bdt == DT_F32) acc.f = (float)acc.f;
      }
      if (k->red == R_ARGMAX || k->red == R_ARGMIN) {
        acc.i = best;
        acc.f = (double)best;
      }
      env.acc = acc;
      val = k->post ? eval(&env, k->post) : acc;
    }
    store_elem(k->out_dt, out, oidx, val);
  }
}

typedef void (*ExternFn)(void **ptrs, const int64_t *params);
static const ExternFn extern_fns[] = {
#define X(n, fn) fn,
    MATC_EXTERNS(X)
#undef X
};

int kernels_interpret(Graph *g, int k0, int k1, void **ptrs) {
  for (int i = k0; i < k1; i++) {
    Kernel *k = &g->kernels[i];
    if (k->dead) continue;
    /* MAT guards: the guard bytes are an input like any other. */
    if (k->pred > 0 && g->guard_value >= 0 && !guard_pred_runs(g, k->pred, ptrs[g->guard_value])) continue;
    if (k->kind == K_LOOP) {
      run_loop(g, k, ptrs);
    } else {
      void *args[KMAX_EXT_ARGS];
      for (int j = 0; j < k->nargs; j++)
        args[j] = (char *)ptrs[k->args[j]] + k->argoff[j] * dt_size(g->vals[k->args[j]].dt);
      extern_fns[k->ext_fn](args, k->p);
    }
  }
  return MATC_OK;
}

/* ---------------------------------------------------------------- FLOPs */

static int64_t expr_ops(const Expr *e) {
  if (!e) return 0;
  int64_t n = (e->kind == EX_UN || e->kind == EX_BIN || e->kind == EX_SEL) ? 1 : 0;
  if (e->kind == EX_LOAD)
    for (int d = 0; d < e->ndyn; d++) n += expr_ops(e->dyn[d]);
  return n + expr_ops(e->a) + expr_ops(e->b) + expr_ops(e->c);
}

/* Floating-point (and integer) operations one run of the kernels
 * executes, counted from the kernels themselves: 2 M N K per GEMM, and
 * for a loop kernel its iterations times the operations of its body (plus
 * the accumulation of a reduction, plus its post expression per output).
 * Copies count zero. */
static double kernel_flops(const Kernel *k) {
  if (k->kind == K_EXTERN) {
    if (k->ext_fn != EXT_gemm) return 0;
    double b = 1;
    for (int l = 0; l < k->p[GEMM_NB]; l++) b *= (double)k->p[GEMM_BATCH + 4 * l];
    return 2.0 * b * k->p[GEMM_M] * k->p[GEMM_N] * k->p[GEMM_K];
  }
  double outer = 1, inner = 1;
  for (int v = 0; v < k->nvar; v++) outer *= (double)k->ext[v];
  for (int v = k->nvar; v < k->nvar + k->nred; v++) inner *= (double)k->ext[v];
  double body = (double)expr_ops(k->body) + (k->red != R_NONE ? 1 : 0);
  return outer * inner * body + outer * (double)expr_ops(k->post);
}

int expr_loads(const Graph *g, const Expr *e, int root) {
  if (!e) return 0;
  if (e->kind == EX_LOAD) {
    if (value_root(g, e->val) == root) return 1;
    for (int d = 0; d < e->ndyn; d++)
      if (expr_loads(g, e->dyn[d], root)) return 1;
  }
  return expr_loads(g, e->a, root) || expr_loads(g, e->b, root) || expr_loads(g, e->c, root);
}

/* Where a loop kernel's first element goes, in elements of its output's
 * root storage. */
static int64_t store_base(const Graph *g, const Kernel *k) {
  int64_t off = k->out_off;
  for (int v = k->out; g->vals[v].alias_of >= 0; v = g->vals[v].alias_of) off += g->vals[v].alias_off;
  return off;
}

/* Whether d = sum_v c_v * s[v] for some integers |c_v| < e[v]: whether two
 * stores of one stride pattern, d elements apart, can hit the same element.
 * s[] is sorted by decreasing size and positive, so each step keeps only
 * the c_v that leave a remainder the smaller strides can still cover:
 * one or two candidates when the strides nest, as a layout's do. Past
 * *budget candidates it answers yes (cannot tell). */
static int stride_hits(int64_t d, const int64_t *s, const int64_t *e, int n, int *budget) {
  if (n == 0) return d == 0;
  int64_t rest = 0;
  for (int v = 1; v < n; v++) rest += (e[v] - 1) * s[v];
  int64_t lo = d - rest, hi = d + rest;
  int64_t c0 = lo >= 0 ? (lo + s[0] - 1) / s[0] : -(-lo / s[0]);
  int64_t c1 = hi >= 0 ? hi / s[0] : -((-hi + s[0] - 1) / s[0]);
  if (c0 < -(e[0] - 1)) c0 = -(e[0] - 1);
  if (c1 > e[0] - 1) c1 = e[0] - 1;
  for (int64_t c = c0; c <= c1; c++) {
    if (--*budget < 0 || stride_hits(d - c * s[0], s + 1, e + 1, n - 1, budget)) return 1;
  }
  return 0;
}

/* Whether two loop kernels with the same vars and output strides (a and b)
 * can store to one element. */
static int stores_overlap(const Graph *g, const Kernel *a, const Kernel *b) {
  int64_t s[KMAX_VARS], e[KMAX_VARS];
  int n = 0;
  for (int v = 0; v < a->nvar; v++) {
    int64_t st = a->out_stride[v] < 0 ? -a->out_stride[v] : a->out_stride[v];
    if (st == 0 || a->ext[v] <= 1) continue;
    int i = n++;
    for (; i > 0 && s[i - 1] < st; i--) {
      s[i] = s[i - 1];
      e[i] = e[i - 1];
    }
    s[i] = st;
    e[i] = a->ext[v];
  }
  int budget = 4096;
  return stride_hits(store_base(g, b) - store_base(g, a), s, e, n, &budget);
}

int kernel_joins(Graph *g, const int *run, int n, int j) {
  const Kernel *k0 = &g->kernels[run[0]], *kj = &g->kernels[j];
  if (!kj->join || kj->kind != K_LOOP || k0->kind != K_LOOP || kj->dead) return 0;
  if (k0->nred || kj->nred || k0->red != R_NONE || kj->red != R_NONE || !k0->nvar) return 0;
  if (kj->nvar != k0->nvar || kj->pred != k0->pred || kj->no_unroll != k0->no_unroll ||
      kj->out_dt != k0->out_dt || value_root(g, kj->out) != value_root(g, k0->out))
    return 0;
  for (int v = 0; v < k0->nvar; v++)
    if (kj->ext[v] != k0->ext[v] || kj->out_stride[v] != k0->out_stride[v]) return 0;
  int root = value_root(g, k0->out);
  if (expr_loads(g, kj->body, root)) return 0;
  /* One iteration stores every member's element before the next
   * iteration starts, so members must store to disjoint elements: checked
   * here, not left to the lowering's word (Winograd's tile points fill
   * blocks of their own; its output points interleave within rows). */
  for (int m = 0; m < n; m++) {
    if (stores_overlap(g, &g->kernels[run[m]], kj)) return 0;
    if (expr_loads(g, g->kernels[run[m]].body, root)) return 0;
  }
  return 1;
}

/* What interpreting kernels k0..k1-1 costs, in scalar operations: like
 * kernel_flops, but every loop iteration and every element an extern
 * kernel touches counts at least once (constant folding's budget). */
double kernels_cost(Graph *g, int k0, int k1) {
  double total = 0;
  for (int i = k0; i < k1; i++) {
    const Kernel *k = &g->kernels[i];
    if (k->dead) continue;
    if (k->kind == K_EXTERN) {
      total += kernel_flops(k);
      for (int j = 0; j < k->nargs; j++) total += (double)value_nelem(&g->vals[k->args[j]]);
      continue;
    }
    double outer = 1, inner = 1;
    for (int v = 0; v < k->nvar; v++) outer *= (double)k->ext[v];
    for (int v = k->nvar; v < k->nvar + k->nred; v++) inner *= (double)k->ext[v];
    total += outer * inner * (1.0 + (double)expr_ops(k->body)) + outer * (1.0 + (double)expr_ops(k->post));
  }
  return total;
}

double kernels_flops(Graph *g) {
  double total = 0;
  for (int i = 0; i < g->nkernels; i++)
    if (!g->kernels[i].dead) total += kernel_flops(&g->kernels[i]);
  return total;
}

/* MAT guards: only the kernels whose predicate holds under `guards`. */
double kernels_flops_guarded(Graph *g, const uint8_t *guards) {
  double total = 0;
  for (int i = 0; i < g->nkernels; i++) {
    Kernel *k = &g->kernels[i];
    if (!k->dead && guard_pred_runs(g, k->pred, guards)) total += kernel_flops(k);
  }
  return total;
}
