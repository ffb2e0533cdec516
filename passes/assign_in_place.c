/* assign_in_place.c: lets an optimizer update write its parameter in place.
 *
 * build_train_step computes every new parameter and optimizer state into a
 * fresh value and copies it back with an Assign at the end of the step, so
 * no kernel can read a parameter after it changed. Most of those copies
 * are not needed: when the kernel P that makes the new value is
 * elementwise and reads the old one only at the element it writes (v' =
 * mu v + g, p' = p - lr v'), and nothing between P and the Assign reads
 * the old value, P can write the destination directly and the Assign goes.
 * Later readers of the new value read the destination instead. That saves
 * a read and a write of every parameter and state tensor per step (mlp:
 * 0.12 of its 1.07 ms step went to these copies).
 *
 * Conditions, all checked: P is the only kernel that writes the new value
 * (a dense value nothing aliases, not a graph output); P covers it
 * elementwise with row-major strides; P reads the destination, if at all,
 * at exactly the element it writes; no other kernel from P to the Assign
 * reads the destination; no extern kernel touches the new value; P and
 * the Assign run under the same MAT guard predicate. MATC_NO_INPLACE=1
 * keeps every Assign (for tests and measurements). */
#include "matc_internal.h"

#include <stdlib.h>
#include <string.h>

/* Whether e loads storage v anywhere but at the kernel's own output
 * element (strides st, offset 0). */
static int reads_elsewhere(Graph *g, Expr *e, int v, const int64_t *st) {
  if (!e) return 0;
  if (e->kind == EX_LOAD) {
    if (value_root(g, e->val) == v) {
      if (e->ndyn || e->off) return 1;
      for (int i = 0; i < KMAX_VARS; i++)
        if (e->stride[i] != st[i]) return 1;
    }
    for (int d = 0; d < e->ndyn; d++)
      if (reads_elsewhere(g, e->dyn[d], v, st)) return 1;
  }
  return reads_elsewhere(g, e->a, v, st) || reads_elsewhere(g, e->b, v, st) || reads_elsewhere(g, e->c, v, st);
}

static void redirect(Expr *e, int from, int to) {
  if (!e) return;
  if (e->kind == EX_LOAD) {
    if (e->val == from) e->val = to;
    for (int d = 0; d < e->ndyn; d++) redirect(e->dyn[d], from, to);
  }
  redirect(e->a, from, to);
  redirect(e->b, from, to);
  redirect(e->c, from, to);
}

static int ext_uses(const Kernel *k, Graph *g, int v) {
  if (k->kind != K_EXTERN) return 0;
  for (int j = 0; j < k->nargs; j++)
    if (value_root(g, k->args[j]) == v) return 1;
  return 0;
}

/* The Assign kernel a (dst = src): P's index, or -1 when P cannot take
 * dst as its output. */
static int producer_in_place(Graph *g, int a, int dst, int src) {
  const Value *s = &g->vals[src];
  if (s->alias_of >= 0 || g->vals[dst].alias_of >= 0) return -1;
  for (int i = 0; i < g->noutputs; i++)
    if (g->outputs[i] == src) return -1;
  for (int v = 0; v < g->nvals; v++)
    if (g->vals[v].alias_of == src) return -1;
  int p = -1;
  for (int i = 0; i < g->nkernels; i++) {
    const Kernel *k = &g->kernels[i];
    if (k->dead) continue;
    if (ext_uses(k, g, src)) return -1;
    if (k->kind == K_LOOP && k->out == src) {
      if (p >= 0) return -1;
      p = i;
    }
  }
  if (p < 0 || p > a) return -1;
  Kernel *k = &g->kernels[p];
  if (k->nred || k->red != R_NONE || k->out_off || k->nvar != s->rank || k->pred != g->kernels[a].pred ||
      k->out_dt != g->vals[dst].dt)
    return -1;
  int64_t st[KMAX_VARS] = {0};
  shape_strides(s->rank, s->dims, st);
  for (int v = 0; v < k->nvar; v++)
    if (k->ext[v] != s->dims[v] || k->out_stride[v] != st[v]) return -1;
  if (reads_elsewhere(g, k->body, dst, st)) return -1;
  for (int i = p + 1; i < a; i++) {
    const Kernel *m = &g->kernels[i];
    if (m->dead) continue;
    if (ext_uses(m, g, dst) || (m->kind == K_LOOP && (expr_loads(g, m->body, dst) || expr_loads(g, m->post, dst))))
      return -1;
  }
  return p;
}

int assign_in_place(Graph *g) {
  const char *off = getenv("MATC_NO_INPLACE");
  if (off && *off && *off != '0') return MATC_OK;
  for (int a = 0; a < g->nkernels; a++) {
    Kernel *ka = &g->kernels[a];
    if (ka->dead || ka->kind != K_LOOP || ka->node < 0 || g->nodes[ka->node].op != OP_Assign) continue;
    Node *n = &g->nodes[ka->node];
    int dst = n->in[0], src = n->in[1];
    const Value *d = &g->vals[dst];
    if (ka->out != dst || !ka->body || ka->body->kind != EX_LOAD || ka->body->val != src ||
        value_nelem(d) != value_nelem(&g->vals[src]) || d->rank != g->vals[src].rank)
      continue;
    int p = producer_in_place(g, a, dst, src);
    if (p < 0) continue;
    g->kernels[p].out = dst;
    ka->dead = 1;
    for (int i = 0; i < g->nkernels; i++)
      if (!g->kernels[i].dead && g->kernels[i].kind == K_LOOP) {
        redirect(g->kernels[i].body, src, dst);
        redirect(g->kernels[i].post, src, dst);
      }
    g->vals[src].fused = 1;   /* no kernel touches it now: no storage */
  }
  return MATC_OK;
}
