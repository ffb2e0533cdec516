/* merge_loops.c: simplifies each loop kernel's iteration space before code
 * generation. Vars of extent 1 are dropped, and adjacent vars that every
 * access walks contiguously (stride[v] == stride[v+1] * ext[v+1]) become
 * one var. An elementwise op on [8,128,256] becomes one loop of 262144
 * iterations: longer inner loops for the vectorizer, and an outer loop the
 * thread pool can split evenly. */
#include "matc_internal.h"

#include <string.h>

typedef struct {
  int a, b;            /* merge var b into var a (b == a + 1) */
  int64_t ext_b;
  int ok;
} Check;

/* Visits every load (and the INDEX uses) of an expression tree. */
static void check_expr(Expr *e, Check *c) {
  if (!e || !c->ok) return;
  if (e->kind == EX_INDEX && (e->var == c->a || e->var == c->b)) c->ok = 0;
  if (e->kind == EX_LOAD) {
    if (e->stride[c->a] != e->stride[c->b] * c->ext_b) c->ok = 0;
    for (int d = 0; d < e->ndyn; d++) check_expr(e->dyn[d], c);
  }
  check_expr(e->a, c);
  check_expr(e->b, c);
  check_expr(e->c, c);
}

static int uses_var(Expr *e, int v) {
  if (!e) return 0;
  if (e->kind == EX_INDEX && e->var == v) return 1;
  if (e->kind == EX_LOAD)
    for (int d = 0; d < e->ndyn; d++)
      if (uses_var(e->dyn[d], v)) return 1;
  return uses_var(e->a, v) || uses_var(e->b, v) || uses_var(e->c, v);
}

/* Removes var v from an expression: strides shift down, INDEX renumbers.
 * When merging (into >= 0), var `into` takes v's stride. */
static void drop_var(Expr *e, int v, int into) {
  if (!e) return;
  if (e->kind == EX_INDEX && e->var > v) e->var--;
  if (e->kind == EX_LOAD) {
    if (into >= 0) e->stride[into] = e->stride[v];
    for (int x = v; x < KMAX_VARS - 1; x++) e->stride[x] = e->stride[x + 1];
    e->stride[KMAX_VARS - 1] = 0;
    for (int d = 0; d < e->ndyn; d++) drop_var(e->dyn[d], v, into);
  }
  drop_var(e->a, v, into);
  drop_var(e->b, v, into);
  drop_var(e->c, v, into);
}

static void remove_var(Kernel *k, int v, int into) {
  if (into >= 0) {
    k->ext[into] *= k->ext[v];
    k->out_stride[into] = k->out_stride[v];
  }
  drop_var(k->body, v, into);
  drop_var(k->post, v, into);
  int n = k->nvar + k->nred;
  for (int x = v; x < n - 1; x++) {
    k->ext[x] = k->ext[x + 1];
    k->out_stride[x] = k->out_stride[x + 1];
  }
  k->ext[n - 1] = 0;
  k->out_stride[n - 1] = 0;
  if (v < k->nvar) k->nvar--;
  else k->nred--;
}

static void simplify(Kernel *k) {
  /* Drop extent-1 vars nobody indexes (keep one outer var for the pool). */
  for (int v = k->nvar + k->nred - 1; v >= 0; v--) {
    if (k->ext[v] != 1 || uses_var(k->body, v) || uses_var(k->post, v)) continue;
    if (v < k->nvar && k->nvar == 1) continue;
    if (v >= k->nvar && k->nred == 1) continue;
    remove_var(k, v, -1);
  }
  for (int changed = 1; changed;) {
    changed = 0;
    for (int v = 0; v + 1 < k->nvar + k->nred; v++) {
      if (v + 1 == k->nvar) continue;          /* never merge output with reduction */
      Check c = {v, v + 1, k->ext[v + 1], 1};
      check_expr(k->body, &c);
      check_expr(k->post, &c);
      if (v + 1 < k->nvar && k->out_stride[v] != k->out_stride[v + 1] * k->ext[v + 1]) c.ok = 0;
      if (!c.ok) continue;
      remove_var(k, v + 1, v);
      changed = 1;
      break;
    }
  }
}

int merge_loops(Graph *g) {
  for (int i = 0; i < g->nkernels; i++) {
    Kernel *k = &g->kernels[i];
    if (k->dead || k->kind != K_LOOP) continue;
    /* Bodies were copied by fusion; copy again in case fusion was off. */
    k->body = expr_copy(g, k->body);
    k->post = expr_copy(g, k->post);
    simplify(k);
  }
  return MATC_OK;
}
