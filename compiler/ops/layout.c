/* layout.c: ops that move or reinterpret data. Views (Reshape, Flatten,
 * Squeeze, Unsqueeze) cost nothing: the output aliases the input, which is
 * always stored contiguously. Transpose, Slice, Concat and friends are
 * loop kernels whose loads have permuted or offset strides. */
#include "../matc_internal.h"

#include <string.h>

static Tensor *new_tensor(Graph *g, DType dt, int rank, const int64_t *dims) {
  Tensor *t = arena_alloc(g->arena, sizeof *t);
  t->dt = dt;
  t->rank = rank;
  for (int i = 0; i < rank; i++) t->dims[i] = dims[i];
  size_t bytes = (size_t)shape_nelem(rank, dims) * dt_size(dt);
  t->data = arena_alloc(g->arena, bytes ? bytes : 1);
  return t;
}

/* Makes output 0 a compile-time constant and retires the node. */
static int resolve_const(Graph *g, int node, Tensor *t) {
  Node *n = &g->nodes[node];
  Value *o = &g->vals[n->out[0]];
  value_set(o, t->dt, t->rank, t->dims);
  o->data = t;
  o->kind = V_CONST;
  n->dead = 1;
  return MATC_OK;
}

int infer_constant(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (n->nattr < 1) return fail(g, node, -1, "Constant has no value attribute");
  const Attr *a = &n->attr[0];
  Tensor *t;
  switch (a->type) {
  case A_TENSOR: t = a->t; break;
  case A_FLOAT: t = new_tensor(g, DT_F32, 0, NULL); *(float *)t->data = a->f; break;
  case A_INT: t = new_tensor(g, DT_I64, 0, NULL); *(int64_t *)t->data = a->i; break;
  case A_FLOATS: {
    int64_t d = a->n;
    t = new_tensor(g, DT_F32, 1, &d);
    memcpy(t->data, a->floats, sizeof(float) * a->n);
    break;
  }
  case A_INTS: {
    int64_t d = a->n;
    t = new_tensor(g, DT_I64, 1, &d);
    memcpy(t->data, a->ints, sizeof(int64_t) * a->n);
    break;
  }
  default:
    return unsupported(g, node, -1, "Constant attribute '%s' of this kind is not supported", a->name);
  }
  return resolve_const(g, node, t);
}

/* Shape and Size are always known: shapes are static after bind_inputs. */
int infer_shape_op(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int64_t r = x->rank;
  int64_t start = attr_i(n, "start", 0), end = attr_i(n, "end", r);
  if (start < 0) start += r;
  if (end < 0) end += r;
  if (start < 0) start = 0;
  if (end > r) end = r;
  int64_t len = end > start ? end - start : 0;
  Tensor *t = new_tensor(g, DT_I64, 1, &len);
  for (int64_t i = 0; i < len; i++) ((int64_t *)t->data)[i] = x->dims[start + i];
  return resolve_const(g, node, t);
}

int infer_size_op(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Tensor *t = new_tensor(g, DT_I64, 0, NULL);
  *(int64_t *)t->data = value_nelem(&g->vals[n->in[0]]);
  return resolve_const(g, node, t);
}

static int set_view_shape(Graph *g, int node, int rank, const int64_t *dims) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  if (shape_nelem(rank, dims) != value_nelem(x))
    return fail(g, node, 0, "cannot reshape %lld elements into %lld", (long long)value_nelem(x),
                (long long)shape_nelem(rank, dims));
  value_set(&g->vals[n->out[0]], x->dt, rank, dims);
  return MATC_OK;
}

int infer_reshape(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int64_t dims[MATC_MAX_RANK];
  int rank;
  if (n->nin < 2) {   /* opset < 5: shape attribute */
    rank = attr_ints(n, "shape", dims, MATC_MAX_RANK);
    if (rank < 0) return fail(g, node, -1, "shape is missing");
  } else {
    Tensor *s = known_value(g, n->in[1]);
    if (!s) return unsupported(g, node, 1, "the target shape must be known at compile time");
    rank = (int)tensor_nelem(s);
    if (rank > MATC_MAX_RANK) return fail(g, node, 1, "rank %d is over the limit", rank);
    for (int i = 0; i < rank; i++) dims[i] = tensor_get_i(s, i);
  }
  int allowzero = (int)attr_i(n, "allowzero", 0);
  int infer_at = -1;
  int64_t known = 1;
  for (int i = 0; i < rank; i++) {
    if (dims[i] == 0 && !allowzero) {
      if (i >= x->rank) return fail(g, node, 1, "dimension %d copies a missing input dim", i);
      dims[i] = x->dims[i];
    }
    if (dims[i] == -1) {
      if (infer_at >= 0) return fail(g, node, 1, "more than one -1 in the shape");
      infer_at = i;
    } else if (dims[i] < 0) {
      return fail(g, node, 1, "negative dimension %lld", (long long)dims[i]);
    } else {
      known *= dims[i];
    }
  }
  if (infer_at >= 0) {
    if (known == 0 || value_nelem(x) % known)
      return fail(g, node, 1, "cannot infer the -1 dimension");
    dims[infer_at] = value_nelem(x) / known;
  }
  return set_view_shape(g, node, rank, dims);
}

int infer_flatten(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int axis = (int)attr_i(n, "axis", 1);
  if (axis < 0) axis += x->rank;
  if (axis < 0 || axis > x->rank) return fail(g, node, -1, "axis %d out of range", axis);
  int64_t d[2] = {shape_nelem(axis, x->dims), shape_nelem(x->rank - axis, x->dims + axis)};
  return set_view_shape(g, node, 2, d);
}

/* Squeeze/Unsqueeze axes: an input from opset 13, an attribute before. */
static int get_axes(Graph *g, int node, int64_t *axes, int *naxes) {
  Node *n = &g->nodes[node];
  if (n->nin >= 2 && n->in[1] >= 0) {
    Tensor *t = known_value(g, n->in[1]);
    if (!t) return unsupported(g, node, 1, "axes must be known at compile time");
    *naxes = (int)tensor_nelem(t);
    if (*naxes > MATC_MAX_RANK) return fail(g, node, 1, "too many axes");
    for (int i = 0; i < *naxes; i++) axes[i] = tensor_get_i(t, i);
    return MATC_OK;
  }
  *naxes = attr_ints(n, "axes", axes, MATC_MAX_RANK);
  if (*naxes > MATC_MAX_RANK) return fail(g, node, -1, "too many axes");
  return MATC_OK;
}

int infer_squeeze(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int64_t axes[MATC_MAX_RANK];
  int na;
  if (get_axes(g, node, axes, &na)) return MATC_ERR;
  char drop[MATC_MAX_RANK] = {0};
  if (na < 0) {
    for (int i = 0; i < x->rank; i++) drop[i] = x->dims[i] == 1;
  } else {
    for (int i = 0; i < na; i++) {
      int a = norm_axis(axes[i], x->rank);
      if (a < 0) return fail(g, node, -1, "axis %lld out of range", (long long)axes[i]);
      if (x->dims[a] != 1) return fail(g, node, 0, "cannot squeeze dimension %d of size %lld", a,
                                       (long long)x->dims[a]);
      drop[a] = 1;
    }
  }
  int64_t d[MATC_MAX_RANK];
  int r = 0;
  for (int i = 0; i < x->rank; i++)
    if (!drop[i]) d[r++] = x->dims[i];
  return set_view_shape(g, node, r, d);
}

int infer_unsqueeze(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int64_t axes[MATC_MAX_RANK];
  int na;
  if (get_axes(g, node, axes, &na)) return MATC_ERR;
  if (na < 0) return fail(g, node, -1, "axes are missing");
  int r = x->rank + na;
  if (r > MATC_MAX_RANK) return fail(g, node, -1, "rank %d is over the limit", r);
  char ins[MATC_MAX_RANK] = {0};
  for (int i = 0; i < na; i++) {
    int a = norm_axis(axes[i], r);
    if (a < 0 || ins[a]) return fail(g, node, -1, "bad axis %lld", (long long)axes[i]);
    ins[a] = 1;
  }
  int64_t d[MATC_MAX_RANK];
  for (int i = 0, j = 0; i < r; i++) d[i] = ins[i] ? 1 : x->dims[j++];
  return set_view_shape(g, node, r, d);
}

int lower_view(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *o = &g->vals[n->out[0]];
  o->alias_of = n->in[0];
  o->alias_off = 0;
  return MATC_OK;
}

static int get_perm(Graph *g, int node, int rank, int *perm) {
  Node *n = &g->nodes[node];
  int64_t p[MATC_MAX_RANK];
  int np = attr_ints(n, "perm", p, MATC_MAX_RANK);
  if (np < 0) {
    for (int i = 0; i < rank; i++) perm[i] = rank - 1 - i;
    return MATC_OK;
  }
  if (np != rank) return fail(g, node, -1, "perm has %d entries for rank %d", np, rank);
  char seen[MATC_MAX_RANK] = {0};
  for (int i = 0; i < rank; i++) {
    if (p[i] < 0 || p[i] >= rank || seen[p[i]]) return fail(g, node, -1, "perm is not a permutation");
    seen[p[i]] = 1;
    perm[i] = (int)p[i];
  }
  return MATC_OK;
}

int infer_transpose(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int perm[MATC_MAX_RANK];
  if (get_perm(g, node, x->rank, perm)) return MATC_ERR;
  int64_t d[MATC_MAX_RANK];
  for (int i = 0; i < x->rank; i++) d[i] = x->dims[perm[i]];
  value_set(&g->vals[n->out[0]], x->dt, x->rank, d);
  return MATC_OK;
}

int lower_transpose(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int perm[MATC_MAX_RANK];
  if (get_perm(g, node, x->rank, perm)) return MATC_ERR;
  int64_t xs[MATC_MAX_RANK], st[KMAX_VARS] = {0};
  shape_strides(x->rank, x->dims, xs);
  for (int i = 0; i < x->rank; i++) st[i] = xs[perm[i]];
  Kernel *k = k_elementwise(g, node, n->out[0]);
  k->body = e_load(g, n->in[0], 0, st, x->rank);
  return MATC_OK;
}
