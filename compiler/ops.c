/* ops.c: the op table, built from ops.def. */
#include "matc_internal.h"

#include <string.h>

#define OP(name, infer, lower, grad, flags) \
  int infer(Graph *g, int node); int lower(Graph *g, int node); \
  int grad(AD *ad, int node, const int *dy, int *dx);
#include "ops.def"
#undef OP

const OpInfo op_table[OP_COUNT] = {
#define OP(name, infer, lower, grad, flags) {#name, infer, lower, grad, flags},
#include "ops.def"
#undef OP
};

int op_lookup(const char *op_type) {
  for (int i = 0; i < OP_COUNT; i++)
    if (strcmp(op_table[i].name, op_type) == 0) return i;
  return -1;
}

/* The gradient rule of ops that have none: autodiff reports the node. */
int grad_none(AD *ad, int node, const int *dy, int *dx) {
  (void)dy;
  (void)dx;
  Node *n = &ad->g->nodes[node];
  for (int i = 0; i < n->nin; i++)
    if (ad_needs(ad, node, i))
      return unsupported(ad->g, node, i, "matc has no gradient rule for %s, and this input needs "
                         "a gradient (it depends on a trained initializer)", n->op_type);
  return unsupported(ad->g, node, -1, "matc has no gradient rule for %s", n->op_type);
}

/* For ops that always resolve during shape inference (Constant, Shape):
 * reaching lowering means a pass broke that promise. */
int lower_never(Graph *g, int node) {
  return fail(g, node, -1, "internal error: this op should have been folded");
}
