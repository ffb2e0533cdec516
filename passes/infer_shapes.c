/* infer_shapes.c: one walk in topological order that gives every value its
 * dtype and static shape, and folds nodes whose inputs are all known at
 * compile time (the Shape/Gather/Concat/Unsqueeze chains of PyTorch
 * exports). Folding reuses the op's own lowering and the kernel
 * interpreter, so it can never disagree with generated code about what an
 * op means. */
#include "matc_internal.h"

#include <stdlib.h>
#include <string.h>

/* Larger constant results are computed at run time instead. */
#define FOLD_MAX_ELEMS (1 << 20)

static int foldable_input(Graph *g, int v) {
  if (v < 0) return 1;
  Value *x = &g->vals[v];
  if (x->kind == V_CONST) return 1;
  /* Integer initializers are shapes and indices, never trained. */
  return x->kind == V_PARAM && !dt_is_float(x->dt);
}

/* Folds node i when its work fits what is left of the budget; else leaves
 * it to run time (undoing its lowering). */
static int fold_node(Graph *g, int i) {
  Node *n = &g->nodes[i];
  int k0 = g->nkernels, v0 = g->nvals;
  int rc = op_table[n->op].lower(g, i);
  if (rc) return rc;
  n = &g->nodes[i];
  double cost = kernels_cost(g, k0, g->nkernels);
  if (g->fold_ops + cost > MATC_MAX_FOLD_OPS) {
    g->nkernels = k0;
    g->nvals = v0;
    for (int j = 0; j < n->nout; j++)
      if (n->out[j] >= 0) {
        g->vals[n->out[j]].alias_of = -1;
        g->vals[n->out[j]].alias_off = 0;
      }
    return MATC_OK;
  }
  g->fold_ops += cost;
  void **ptrs = calloc(g->nvals, sizeof(void *));
  for (int j = 0; j < n->nin; j++)
    if (n->in[j] >= 0) ptrs[n->in[j]] = g->vals[n->in[j]].data->data;
  for (int j = 0; j < n->nout; j++) {
    int o = n->out[j];
    if (o < 0) continue;
    Value *v = &g->vals[o];
    Tensor *t = arena_alloc(g->arena, sizeof(Tensor));
    t->dt = v->dt;
    t->rank = v->rank;
    memcpy(t->dims, v->dims, sizeof t->dims);
    if (v->alias_of >= 0) {
      Value *src = &g->vals[v->alias_of];
      t->data = (char *)src->data->data + v->alias_off * dt_size(src->dt);
      v->alias_of = -1;
      v->alias_off = 0;
    } else {
      size_t bytes = (size_t)value_nelem(v) * dt_size(v->dt);
      t->data = arena_alloc(g->arena, bytes ? bytes : 1);
    }
    ptrs[o] = t->data;
    v->data = t;
  }
  /* Values the lowering added: tables it filled, scratch values it needs
   * (Softmax's row maxima...), then views of other values (Einsum's
   * reshaped operands). */
  for (int v = v0; v < g->nvals; v++) {
    Value *x = &g->vals[v];
    if (x->alias_of >= 0 || ptrs[v]) continue;
    size_t bytes = (size_t)value_nelem(x) * dt_size(x->dt);
    ptrs[v] = x->data ? x->data->data : arena_alloc(g->arena, bytes ? bytes : 1);
  }
  for (int v = v0; v < g->nvals; v++) {
    Value *x = &g->vals[v];
    if (x->alias_of >= 0 && ptrs[x->alias_of])
      ptrs[v] = (char *)ptrs[x->alias_of] + x->alias_off * dt_size(g->vals[x->alias_of].dt);
  }
  rc = kernels_interpret(g, k0, g->nkernels, ptrs);
  free(ptrs);
  g->nkernels = k0;
  if (rc) return rc;
  for (int j = 0; j < n->nout; j++)
    if (n->out[j] >= 0) g->vals[n->out[j]].kind = V_CONST;
  n->dead = 1;
  return MATC_OK;
}

/* Shape-like ints attributes hold at most one entry per dimension (pads:
 * two; split: one per output). */
static int check_attr_lengths(Graph *g, int node) {
  static const char *per_dim[] = {"shape", "axes", "perm", "starts", "ends", "steps", "kernel_shape",
                                  "strides", "dilations", "output_shape", "output_padding", "in_shape"};
  const Node *n = &g->nodes[node];
  for (int a = 0; a < n->nattr; a++) {
    const Attr *at = &n->attr[a];
    if (at->type != A_INTS) continue;
    int max = -1;
    for (size_t k = 0; k < sizeof per_dim / sizeof *per_dim; k++)
      if (strcmp(at->name, per_dim[k]) == 0) max = MATC_MAX_RANK;
    if (!strcmp(at->name, "pads") || !strcmp(at->name, "paddings")) max = 2 * MATC_MAX_RANK;
    if (!strcmp(at->name, "split")) max = MATC_MAX_NODE_IO;
    if (max >= 0 && at->n > max)
      return fail(g, node, -1, "attribute '%s' has %d entries, over the limit of %d (rank at most %d)",
                  at->name, at->n, max, MATC_MAX_RANK);
  }
  return MATC_OK;
}

int infer_shapes(Graph *g) {
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = &g->nodes[i];
    if (n->dead) continue;
    if (n->domain && strcmp(n->domain, "ai.onnx.preview.training") == 0 &&
        strcmp(n->op_type, "Gradient") == 0) {
      int rc = expand_gradient(g, i);
      if (rc) return rc;
      continue;
    }
    if (n->domain && *n->domain && strcmp(n->domain, "ai.onnx") != 0)
      return unsupported(g, i, -1, "op domain '%s' is not supported", n->domain);
    if (n->op < 0)
      return unsupported(g, i, -1, "op type '%s' is not supported", n->op_type);
    /* matc's ops may leave out later outputs (MaxPool's indices), not the first. */
    if (n->nout < 1) return fail(g, i, -1, "the node has no output");
    if (n->out[0] < 0) return unsupported(g, i, -1, "a node without its first output is not supported");
    for (int j = 0; j < n->nin; j++) {
      int v = n->in[j];
      if (v < 0) continue;
      if (g->vals[v].rank < 0)
        return fail(g, i, j, "the input's shape is unknown");
      if (!dt_supported(g->vals[v].dt))
        return unsupported(g, i, j, "data type %s is not supported", dt_name(g->vals[v].dt));
    }
    int rc = check_attr_lengths(g, i);
    if (rc) return rc;
    rc = op_table[n->op].infer(g, i);
    if (rc) return rc;
    for (int j = 0; j < n->nout; j++) {
      int v = n->out[j];
      if (v < 0) continue;
      Value *x = &g->vals[v];
      if (x->rank < 0) return fail(g, i, -1, "shape inference left output %d unknown", j);
      for (int d = 0; d < x->rank; d++)
        if (x->dims[d] < 0) return fail(g, i, -1, "output %d has a negative dimension", j);
      if (shape_nelem_checked(x->rank, x->dims) < 0) {
        char sh[256];
        return fail(g, i, -1, "output %d of shape %s passes the limit of %lld elements "
                    "(2^40)", j, shape_str(x->rank, x->dims, sh, sizeof sh), (long long)MATC_MAX_ELEMS);
      }
      if (!dt_supported(x->dt))
        return unsupported(g, i, -1, "output %d has data type %s, not supported", j,
                           dt_name(x->dt));
    }
    if (n->dead) continue;                 /* the op resolved itself (Constant, Shape) */
    if (op_table[n->op].flags & (OPF_NOFOLD | OPF_EFFECT)) continue;
    int all = 1;
    for (int j = 0; j < n->nin && all; j++) all = foldable_input(g, n->in[j]);
    /* Dims count as at least 1: lowering sizes per-axis tables by them,
     * even when another dim is 0. */
    for (int j = 0; j < n->nout && all; j++) {
      if (n->out[j] < 0) continue;
      const Value *o = &g->vals[n->out[j]];
      int64_t ext = 1;
      for (int d = 0; d < o->rank && ext >= 0; d++) ext = dim_mul(ext, o->dims[d] ? o->dims[d] : 1);
      if (ext < 0 || ext > FOLD_MAX_ELEMS) all = 0;
    }
    if (all) {
      rc = fold_node(g, i);
      if (rc) return rc;
    }
  }
  return MATC_OK;
}
