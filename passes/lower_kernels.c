/* lower_kernels.c: turns every live node into kernels, in order. Views
 * (Reshape, Squeeze...) emit nothing and only alias their input. */
#include "matc_internal.h"

int lower_kernels(Graph *g) {
  g->nkernels = 0;
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = &g->nodes[i];
    if (n->dead) continue;
    int rc = op_table[n->op].lower(g, i);
    if (rc) return rc;
  }
  /* Collapse alias chains so every view points at a value that owns its
   * storage. */
  for (int v = 0; v < g->nvals; v++) {
    Value *x = &g->vals[v];
    while (x->alias_of >= 0 && g->vals[x->alias_of].alias_of >= 0) {
      Value *y = &g->vals[x->alias_of];
      x->alias_off += y->alias_off;
      x->alias_of = y->alias_of;
    }
  }
  return MATC_OK;
}
