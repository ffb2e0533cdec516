/* train.c: Assign(dst, src) copies src into dst's storage: how a training
 * step writes updated parameters and optimizer state back in place. The
 * graph stays SSA everywhere else; build_train_step orders every Assign
 * after every read of its destination. */
#include "../matc_internal.h"

int infer_assign(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (n->nin != 2 || n->in[0] < 0 || n->in[1] < 0) return fail(g, node, -1, "Assign needs dst and src");
  Value *d = &g->vals[n->in[0]], *s = &g->vals[n->in[1]];
  if (d->dt != s->dt || d->rank != s->rank || value_nelem(d) != value_nelem(s))
    return fail(g, node, 1, "Assign source does not match the destination's type and shape");
  if (d->kind != V_PARAM) return fail(g, node, 0, "Assign writes only parameters and optimizer state");
  return MATC_OK;
}

int lower_assign(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Kernel *k = k_elementwise(g, node, n->in[0]);
  k->body = e_load_bcast(g, n->in[1], g->vals[n->in[0]].rank);
  return MATC_OK;
}
