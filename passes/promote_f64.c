/* promote_f64.c: turns every float32 tensor of a graph into float64 (for
 * gradient checking by finite differences): parameters, constants, inputs
 * and their bound data, Cast targets, ConstantOfShape and Constant values.
 * Runs before shape inference; everything after it sees a float64 graph
 * and generates the same code with a different element type. */
#include "matc_internal.h"

static Tensor *to_f64(Graph *g, Tensor *t) {
  if (!t || t->dt != DT_F32) return t;
  Tensor *r = arena_alloc(g->arena, sizeof *r);
  *r = *t;
  r->dt = DT_F64;
  int64_t n = tensor_nelem(t);
  r->data = arena_alloc(g->arena, sizeof(double) * (n ? n : 1));
  for (int64_t i = 0; i < n; i++) ((double *)r->data)[i] = ((float *)t->data)[i];
  return r;
}

int promote_f64(Graph *g) {
  for (int v = 0; v < g->nvals; v++) {
    Value *x = &g->vals[v];
    if (x->data) x->data = to_f64(g, x->data);
    if (x->dt == DT_F32) x->dt = DT_F64;
  }
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = &g->nodes[i];
    for (int a = 0; a < n->nattr; a++) {
      Attr *at = &n->attr[a];
      if (at->type == A_TENSOR) at->t = to_f64(g, at->t);
      if (n->op == OP_Cast && at->type == A_INT && at->i == DT_F32 && at->name[0] == 't') at->i = DT_F64;
    }
  }
  return MATC_OK;
}
