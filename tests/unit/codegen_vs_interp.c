/* codegen_vs_interp.c: every unary and binary kernel op, on every dtype it
 * applies to, computed twice: by LLVM-generated code and by the kernel
 * interpreter (which constant folding uses). They must agree; a
 * disagreement would make folded and run-time results differ. The
 * interpreter computes with C's math library in double precision, so
 * agreement also anchors the generated code to libm. Reductions (sum with
 * a post expression, max, min, argmax, argmin) are checked the same way. */
#include "../../compiler/exec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define N 67   /* odd, to exercise vector remainders */

static int failures, checks;

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

static double sample(int i, int which, DType dt) {
  /* Values that cover negatives, zero, fractions and (for ints) larger
   * magnitudes; kept in the domain of most functions. */
  double v = ((i * 37 + which * 11) % 23 - 11) * (dt_is_float(dt) ? 0.173 : 1.0);
  if (!dt_is_signed(dt) && !dt_is_float(dt)) v = fabs(v);
  if (dt == DT_BOOL) v = (i + which) % 3 == 0;
  return v;
}

static void fill(Tensor *t, int which) {
  for (int i = 0; i < N; i++) {
    double v = sample(i, which, t->dt);
    switch (t->dt) {
    case DT_F32: ((float *)t->data)[i] = (float)v; break;
    case DT_F64: ((double *)t->data)[i] = v; break;
    case DT_I32: ((int32_t *)t->data)[i] = (int32_t)v; break;
    case DT_I64: ((int64_t *)t->data)[i] = (int64_t)v; break;
    case DT_U8: case DT_BOOL: ((uint8_t *)t->data)[i] = (uint8_t)v; break;
    default: abort();
    }
  }
}

/* Builds a graph with inputs a, b ([N] of dt) and one kernel computing
 * `body(a, b)` into output y; runs JIT and interpreter; compares. */
typedef Expr *(*BodyFn)(Graph *g, Expr *a, Expr *b, int op);

static void run_case(const char *what, DType dt, DType out_dt, int op, BodyFn body, ReduceKind red) {
  Graph *g = graph_new("<unit>");
  int a = graph_add_value(g, "a"), b = graph_add_value(g, "b"), y = graph_add_value(g, "y");
  int64_t n = N;
  Tensor ta = {dt, 1, {N}, calloc(N, 8)}, tb = {dt, 1, {N}, calloc(N, 8)};
  fill(&ta, 0);
  fill(&tb, 1);
  for (int v = 0; v < 2; v++) {
    Value *x = &g->vals[v];
    x->kind = V_CONST;
    value_set(x, dt, 1, &n);
    x->data = v == 0 ? &ta : &tb;
  }
  int64_t one = 1;
  int scalar_out = red != R_NONE;
  value_set(&g->vals[y], out_dt, 1, scalar_out ? &one : &n);
  g->vals[y].kind = V_ACT;
  int node = graph_add_node(g, "Unit", "unit", 2, (int[]){a, b}, 1, &y);
  g->nodes[node].op = 0;
  Kernel *k;
  if (!scalar_out) {
    k = k_elementwise(g, node, y);
    int64_t s[1] = {1};
    k->body = body(g, e_load(g, a, 0, s, 1), e_load(g, b, 0, s, 1), op);
  } else {
    k = k_loop(g, node, y, 1, &one);
    k->nred = 1;
    k->ext[1] = N;
    int64_t s[2] = {0, 1};
    k->body = e_load(g, a, 0, s, 2);
    k->red = red;
    if (red == R_SUM) k->post = e_bin(g, B_MUL, e_acc(g, dt), e_const(g, dt, 0.5));
  }
  if (!scalar_out) k->body = e_cast(g, out_dt, k->body);

  void *want = calloc(N, 8);
  void **ptrs = calloc(g->nvals, sizeof(void *));
  ptrs[a] = ta.data;
  ptrs[b] = tb.data;
  ptrs[y] = want;
  kernels_interpret(g, 0, g->nkernels, ptrs);

  Jit *jit;
  MatcEntryFn entry;
  void *got = calloc(N, 8);
  ptrs[y] = got;
  if (jit_compile(g, &jit, &entry)) {
    printf("FAIL %s %s: %s\n", what, dt_name(dt), g->err);
    failures++;
    return;
  }
  entry(ptrs);
  Tensor tw = {out_dt, 1, {scalar_out ? 1 : N}, want}, tg = {out_dt, 1, {scalar_out ? 1 : N}, got};
  for (int i = 0; i < (scalar_out ? 1 : N); i++) {
    double w = tensor_get_f(&tw, i), h = tensor_get_f(&tg, i);
    int same = (isnan(w) && isnan(h)) || w == h ||
               (dt_is_float(out_dt) && fabs(w - h) <= 4e-7 * fabs(w) + 1e-30) ||
               (isinf(w) && isinf(h) && (w > 0) == (h > 0));
    checks++;
    if (!same) {
      printf("FAIL %s %s [%d]: jit %.9g interp %.9g (a=%g b=%g)\n", what, dt_name(dt), i, h, w,
             tensor_get_f(&ta, i), tensor_get_f(&tb, i));
      failures++;
      break;
    }
  }
  jit_free(jit);
  free(want);
  free(got);
  free(ptrs);
  free(ta.data);
  free(tb.data);
  graph_free(g);
}

static Expr *un_body(Graph *g, Expr *a, Expr *b, int op) { return e_un(g, op, a); }
static Expr *bin_body(Graph *g, Expr *a, Expr *b, int op) { return e_bin(g, op, a, b); }
static Expr *sel_body(Graph *g, Expr *a, Expr *b, int op) {
  return e_sel(g, e_bin(g, B_LT, a, b), a, e_bin(g, B_MUL, a, b));
}
static Expr *cast_body(Graph *g, Expr *a, Expr *b, int to) { return e_cast(g, (DType)to, a); }

static int un_ok(int op, DType dt) {
  if (dt_is_float(dt)) return op != U_NOT && op != U_BITNOT;
  if (dt == DT_BOOL) return op == U_NOT;
  return op == U_NEG || op == U_ABS || op == U_SIGN || op == U_BITNOT;
}

static int bin_ok(int op, DType dt) {
  if (op == B_HASH) return dt == DT_I64;
  int logic = op == B_AND || op == B_OR || op == B_XOR;
  int bits = op == B_SHL || op == B_SHR || op == B_BITAND || op == B_BITOR || op == B_BITXOR;
  if (dt == DT_BOOL) return logic;
  if (dt_is_float(dt)) return !logic && !bits && op != B_IMOD;
  return !logic && op != B_POW;
}

static int is_cmp(int op) { return op >= B_EQ && op <= B_GE; }

/* The float32 exp/erf/tanh/sigmoid in generated code are polynomial
 * approximations (they vectorize; libm would not). Sweep them over
 * [-100, 100] against the interpreter's double-precision libm result:
 * within 4 float ulps relative, or 1e-7 absolute near zero. */
static void sweep(int op) {
  enum { M = 20001 };
  Graph *g = graph_new("<unit>");
  int a = graph_add_value(g, "a"), y = graph_add_value(g, "y");
  int64_t n = M;
  float *in = malloc(sizeof(float) * M), *got = malloc(sizeof(float) * M), *want = malloc(sizeof(float) * M);
  for (int i = 0; i < M; i++) in[i] = (float)(-100.0 + i * 0.01);
  Tensor ta = {DT_F32, 1, {M}, in};
  g->vals[a].kind = V_CONST;
  value_set(&g->vals[a], DT_F32, 1, &n);
  g->vals[a].data = &ta;
  value_set(&g->vals[y], DT_F32, 1, &n);
  int node = graph_add_node(g, "Unit", "unit", 1, &a, 1, &y);
  Kernel *k = k_elementwise(g, node, y);
  k->body = e_un(g, op, e_load(g, a, 0, (int64_t[]){1}, 1));
  void *ptrs[2] = {in, want};
  kernels_interpret(g, 0, 1, ptrs);
  Jit *jit;
  MatcEntryFn entry;
  if (jit_compile(g, &jit, &entry)) {
    printf("FAIL sweep %s: %s\n", un_names[op], g->err);
    failures++;
    return;
  }
  ptrs[1] = got;
  entry(ptrs);
  double worst = 0;
  int bad = -1;
  for (int i = 0; i < M; i++) {
    double w = want[i], h = got[i];
    checks++;
    if (w == h || (isinf(w) && w == h)) continue;
    double err = fabs(w - h), rel = err / fabs(w);
    if (rel > worst && fabs(w) > 1e-30) worst = rel;
    if (rel > 4 * 1.19e-7 && err > 1e-7 && bad < 0) bad = i;
  }
  if (bad >= 0) {
    printf("FAIL sweep %s at x=%.9g: jit %.9g, libm %.9g\n", un_names[op], in[bad], got[bad], want[bad]);
    failures++;
  } else {
    printf("ok   sweep %s: worst relative error %.3g\n", un_names[op], worst);
  }
  jit_free(jit);
  free(in);
  free(got);
  free(want);
  graph_free(g);
}

int main(void) {
  sweep(U_EXP);
  sweep(U_ERF);
  sweep(U_TANH);
  sweep(U_SIGMOID);
  DType types[] = {DT_F32, DT_F64, DT_I32, DT_I64, DT_U8, DT_BOOL};
  for (unsigned t = 0; t < sizeof types / sizeof *types; t++) {
    DType dt = types[t];
    char what[64];
    for (int op = 0; op < U_COUNT; op++) {
      if (!un_ok(op, dt)) continue;
      int pred = op == U_ISNAN || op == U_ISINF || op == U_ISPOSINF || op == U_ISNEGINF;
      snprintf(what, sizeof what, "unary %s", un_names[op]);
      run_case(what, dt, pred ? DT_BOOL : dt, op, un_body, R_NONE);
    }
    for (int op = 0; op < B_COUNT; op++) {
      if (!bin_ok(op, dt)) continue;
      snprintf(what, sizeof what, "binary %s", bin_names[op]);
      run_case(what, dt, is_cmp(op) ? DT_BOOL : dt, op, bin_body, R_NONE);
    }
    if (dt != DT_BOOL) run_case("select", dt, dt, 0, sel_body, R_NONE);
    for (unsigned u = 0; u < sizeof types / sizeof *types; u++) {
      snprintf(what, sizeof what, "cast to %s", dt_name(types[u]));
      run_case(what, dt, types[u], types[u], cast_body, R_NONE);
    }
    if (dt != DT_BOOL) {
      run_case("reduce sum*0.5", dt, dt, 0, un_body, R_SUM);
      run_case("reduce max", dt, dt, 0, un_body, R_MAX);
      run_case("reduce min", dt, dt, 0, un_body, R_MIN);
      run_case("reduce argmax", dt, DT_I64, 0, un_body, R_ARGMAX);
      run_case("reduce argmin", dt, DT_I64, 0, un_body, R_ARGMIN);
    }
  }
  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures ? 1 : 0;
}
