/* layout.c: ops that move or reinterpret data. Views (Reshape, Flatten,
 * Squeeze, Unsqueeze) cost nothing: the output aliases the input, which is
 * always stored contiguously. Transpose, Slice, Concat and friends are
 * loop kernels whose loads have permuted or offset strides. */
#include "layout.h"

#include <math.h>
#include <string.h>

Tensor *layout_new_tensor(Graph *g, DType dt, int rank, const int64_t *dims) {
  return tensor_new(g->arena, dt, rank, dims);
}

int layout_resolve_const(Graph *g, int node, Tensor *t) {
  Node *n = &g->nodes[node];
  Value *o = &g->vals[n->out[0]];
  value_set(o, t->dt, t->rank, t->dims);
  o->data = t;
  o->kind = V_CONST;
  n->dead = 1;
  return MATC_OK;
}

/* ---------------------------------------------------------------- helpers */

void loop_dim(LoopNest *l, int64_t ext, const int64_t *st) {
  if (ext == 0) l->empty = 1;
  if (ext == 1) return;
  MATC_ASSERT(l->n < KMAX_VARS && l->nset <= LOOP_SETS);
  l->ext[l->n] = ext;
  for (int s = 0; s < l->nset; s++) l->st[s][l->n] = st[s];
  l->n++;
}

void loop_merge(LoopNest *l) {
  int m = 0;
  for (int i = 0; i < l->n; i++) {
    int join = m > 0;
    for (int s = 0; s < l->nset && join; s++)
      join = l->st[s][m - 1] == l->st[s][i] * l->ext[i];
    if (join) {
      l->ext[m - 1] *= l->ext[i];
      for (int s = 0; s < l->nset; s++) l->st[s][m - 1] = l->st[s][i];
    } else {
      l->ext[m] = l->ext[i];
      for (int s = 0; s < l->nset; s++) l->st[s][m] = l->st[s][i];
      m++;
    }
  }
  l->n = m;
}

Kernel *loop_kernel(Graph *g, int node, const LoopNest *l, int out, int64_t out_off) {
  Kernel *k = k_loop(g, node, out, l->n, l->ext);
  k->out_off = out_off;
  for (int v = 0; v < l->n; v++) k->out_stride[v] = l->st[0][v];
  return k;
}

Expr *loop_load(Graph *g, const LoopNest *l, int set, int val, int64_t off) {
  return e_load(g, val, off, l->st[set], l->n);
}

static void copy_nest(LoopNest *l, const int64_t *ost, const int64_t *ist, int rank,
                      const int64_t *ext) {
  memset(l, 0, sizeof *l);
  l->nset = 2;
  for (int i = 0; i < rank; i++) loop_dim(l, ext[i], (int64_t[]){ost[i], ist[i]});
  loop_merge(l);
}

void emit_copy(Graph *g, int node, int out, int64_t ooff, const int64_t *ost, int in,
               int64_t ioff, const int64_t *ist, int rank, const int64_t *ext) {
  LoopNest l;
  copy_nest(&l, ost, ist, rank, ext);
  if (l.empty) return;
  Kernel *k = loop_kernel(g, node, &l, out, ooff);
  k->body = loop_load(g, &l, 1, in, ioff);
}

void copy_or_view(Graph *g, int node, int out, int in, int64_t ioff, const int64_t *ist) {
  Value *o = &g->vals[out];
  int64_t ost[MATC_MAX_RANK];
  shape_strides(o->rank, o->dims, ost);
  LoopNest l;
  copy_nest(&l, ost, ist, o->rank, o->dims);
  if (!l.empty && (l.n == 0 || (l.n == 1 && l.st[1][0] == 1))) {
    o->alias_of = in;
    o->alias_off = ioff;
    return;
  }
  emit_copy(g, node, out, 0, ost, in, ioff, ist, o->rank, o->dims);
}

int known_ints(Graph *g, int node, int j, int64_t *out, int max, int *n) {
  Tensor *t = known_value(g, g->nodes[node].in[j]);
  if (!t) return unsupported(g, node, j, "this input must be known at compile time");
  int64_t cnt = tensor_nelem(t);
  if (cnt > max) return fail(g, node, j, "has %lld entries, at most %d expected", (long long)cnt, max);
  for (int64_t i = 0; i < cnt; i++) out[i] = tensor_get_i(t, i);
  *n = (int)cnt;
  return MATC_OK;
}

Expr *index_norm_clamp(Graph *g, Expr *idx, int64_t dim) {
  Expr *zero = e_consti(g, DT_I64, 0);
  idx = e_cast(g, DT_I64, idx);
  idx = e_sel(g, e_bin(g, B_LT, idx, zero), e_bin(g, B_ADD, idx, e_consti(g, DT_I64, dim)), idx);
  idx = e_bin(g, B_MIN, idx, e_consti(g, DT_I64, dim > 0 ? dim - 1 : 0));
  return e_bin(g, B_MAX, idx, zero);
}

int layout_need_inputs(Graph *g, int node, int min) {
  Node *n = &g->nodes[node];
  if (n->nin < min) return fail(g, node, -1, "needs %d inputs, has %d", min, n->nin);
  for (int j = 0; j < min; j++)
    if (n->in[j] < 0) return fail(g, node, j, "required input is missing");
  return MATC_OK;
}

/* ---------------------------------------------------------------- shapes and views */

int infer_constant(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (n->nattr < 1) return fail(g, node, -1, "Constant has no value attribute");
  const Attr *a = &n->attr[0];
  Tensor *t;
  switch (a->type) {
  case A_TENSOR: t = a->t; break;
  case A_FLOAT: t = layout_new_tensor(g, DT_F32, 0, NULL); *(float *)t->data = a->f; break;
  case A_INT: t = layout_new_tensor(g, DT_I64, 0, NULL); *(int64_t *)t->data = a->i; break;
  case A_FLOATS: {
    int64_t d = a->n;
    t = layout_new_tensor(g, DT_F32, 1, &d);
    memcpy(t->data, a->floats, sizeof(float) * a->n);
    break;
  }
  case A_INTS: {
    int64_t d = a->n;
    t = layout_new_tensor(g, DT_I64, 1, &d);
    memcpy(t->data, a->ints, sizeof(int64_t) * a->n);
    break;
  }
  default:
    return unsupported(g, node, -1, "Constant attribute '%s' of this kind is not supported", a->name);
  }
  return layout_resolve_const(g, node, t);
}

/* Shape and Size are always known: shapes are static after bind_inputs. */
int infer_shape_op(Graph *g, int node) {
  if (layout_need_inputs(g, node, 1)) return MATC_ERR;
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int64_t r = x->rank;
  int64_t start = attr_i(n, "start", 0), end = attr_i(n, "end", r);
  if (start < 0) start += r;
  if (end < 0) end += r;
  if (start < 0) start = 0;
  if (end > r) end = r;
  int64_t len = end > start ? end - start : 0;
  Tensor *t = layout_new_tensor(g, DT_I64, 1, &len);
  for (int64_t i = 0; i < len; i++) ((int64_t *)t->data)[i] = x->dims[start + i];
  return layout_resolve_const(g, node, t);
}

int infer_size_op(Graph *g, int node) {
  if (layout_need_inputs(g, node, 1)) return MATC_ERR;
  Node *n = &g->nodes[node];
  Tensor *t = layout_new_tensor(g, DT_I64, 0, NULL);
  *(int64_t *)t->data = value_nelem(&g->vals[n->in[0]]);
  return layout_resolve_const(g, node, t);
}

static int set_view_shape(Graph *g, int node, int rank, const int64_t *dims) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int64_t ne = shape_nelem_checked(rank, dims);
  if (ne != value_nelem(x)) {
    char sh[256];
    return fail(g, node, 0, "cannot reshape %lld elements into %s", (long long)value_nelem(x),
                shape_str(rank, dims, sh, sizeof sh));
  }
  value_set(&g->vals[n->out[0]], x->dt, rank, dims);
  return MATC_OK;
}

int infer_reshape(Graph *g, int node) {
  if (layout_need_inputs(g, node, 1)) return MATC_ERR;
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
    if (tensor_nelem(s) > MATC_MAX_RANK)
      return fail(g, node, 1, "rank %lld is over the limit of %d", (long long)tensor_nelem(s), MATC_MAX_RANK);
    rank = (int)tensor_nelem(s);
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
    } else if ((known = dim_mul(known, dims[i])) < 0) {
      char sh[256];
      return fail(g, node, 1, "the shape %s passes the limit of %lld elements (2^40)",
                  shape_str(rank, dims, sh, sizeof sh), (long long)MATC_MAX_ELEMS);
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
  if (layout_need_inputs(g, node, 1)) return MATC_ERR;
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
  if (layout_need_inputs(g, node, 1)) return MATC_ERR;
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
  if (layout_need_inputs(g, node, 1)) return MATC_ERR;
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
  if (layout_need_inputs(g, node, 1)) return MATC_ERR;
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
  int64_t xs[MATC_MAX_RANK], st[MATC_MAX_RANK];
  shape_strides(x->rank, x->dims, xs);
  for (int i = 0; i < x->rank; i++) st[i] = xs[perm[i]];
  copy_or_view(g, node, n->out[0], n->in[0], 0, st);
  return MATC_OK;
}

/* ---------------------------------------------------------------- Concat, Split, Slice */

int infer_concat(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (layout_need_inputs(g, node, 1)) return MATC_ERR;
  Value *x = &g->vals[n->in[0]];
  const Attr *aa = attr_get(n, "axis");
  if (!aa && NODE_OPSET(g, n) >= 4) return fail(g, node, -1, "attribute 'axis' is missing");
  int axis = norm_axis(aa ? aa->i : 1, x->rank);   /* Concat-1 defaulted to axis 1 */
  if (axis < 0) return fail(g, node, -1, "axis is out of range for rank %d", x->rank);
  int64_t d[MATC_MAX_RANK];
  memcpy(d, x->dims, sizeof d);
  d[axis] = 0;
  for (int j = 0; j < n->nin; j++) {
    if (n->in[j] < 0) return fail(g, node, j, "required input is missing");
    Value *y = &g->vals[n->in[j]];
    if (y->dt != x->dt) return fail(g, node, j, "data type does not match input 0's");
    if (y->rank != x->rank) return fail(g, node, j, "rank %d differs from input 0's %d", y->rank, x->rank);
    for (int i = 0; i < x->rank; i++)
      if (i != axis && y->dims[i] != x->dims[i])
        return fail(g, node, j, "dimension %d is %lld, input 0 has %lld", i,
                    (long long)y->dims[i], (long long)x->dims[i]);
    d[axis] += y->dims[axis];
  }
  value_set(&g->vals[n->out[0]], x->dt, x->rank, d);
  return MATC_OK;
}

/* One copy kernel per input, each writing its slab of the output. */
int lower_concat(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *o = &g->vals[n->out[0]];
  int axis = norm_axis(attr_i(n, "axis", 1), o->rank);
  int64_t ost[MATC_MAX_RANK], ist[MATC_MAX_RANK], at = 0;
  shape_strides(o->rank, o->dims, ost);
  for (int j = 0; j < n->nin; j++) {
    Value *y = &g->vals[n->in[j]];
    shape_strides(y->rank, y->dims, ist);
    emit_copy(g, node, n->out[0], at * ost[axis], ost, n->in[j], 0, ist, y->rank, y->dims);
    at += y->dims[axis];
  }
  return MATC_OK;
}

/* Split sizes: the 'split' input (opset 13+) or attribute (before), else
 * num_outputs (opset 18: the last part may be smaller), else equal parts. */
static int split_sizes(Graph *g, int node, int *axis, int64_t *sizes) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  *axis = norm_axis(attr_i(n, "axis", 0), x->rank);
  if (*axis < 0) return fail(g, node, -1, "axis is out of range for rank %d", x->rank);
  int64_t d = x->dims[*axis];
  int cnt = -1;
  if (n->nin >= 2 && n->in[1] >= 0) {
    int rc = known_ints(g, node, 1, sizes, n->nout, &cnt);
    if (rc) return rc;
  } else if (attr_get(n, "split")) {
    cnt = attr_ints(n, "split", sizes, n->nout);
  }
  if (cnt >= 0) {
    if (cnt != n->nout) return fail(g, node, -1, "split has %d entries for %d outputs", cnt, n->nout);
    int64_t sum = 0;
    for (int i = 0; i < cnt; i++) {
      if (sizes[i] < 0) return fail(g, node, -1, "negative split size");
      if (sizes[i] > d) return fail(g, node, -1, "split size %lld is larger than the dimension %lld",
                                    (long long)sizes[i], (long long)d);
      sum += sizes[i];            /* at most 64 sizes of at most 2^40 */
    }
    if (sum != d) return fail(g, node, -1, "split sizes add up to %lld, not %lld", (long long)sum, (long long)d);
    return MATC_OK;
  }
  int64_t parts = attr_i(n, "num_outputs", n->nout);
  if (parts < 1) return fail(g, node, -1, "needs at least one output");
  if (parts != n->nout) return fail(g, node, -1, "num_outputs is %lld but there are %d outputs",
                                    (long long)parts, n->nout);
  int64_t chunk = attr_get(n, "num_outputs") ? (d + parts - 1) / parts : d / parts;
  if (!attr_get(n, "num_outputs") && d % parts)
    return fail(g, node, 0, "dimension %lld does not split into %lld equal parts", (long long)d, (long long)parts);
  for (int i = 0; i < n->nout; i++) {
    int64_t left = d - chunk * i;
    sizes[i] = left < 0 ? 0 : left < chunk ? left : chunk;
  }
  return MATC_OK;
}

int infer_split(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (layout_need_inputs(g, node, 1)) return MATC_ERR;
  int64_t *sizes = arena_alloc(g->arena, sizeof(int64_t) * (n->nout + 1));
  int axis, rc = split_sizes(g, node, &axis, sizes);
  if (rc) return rc;
  Value *x = &g->vals[n->in[0]];
  for (int j = 0; j < n->nout; j++) {
    if (n->out[j] < 0) continue;
    int64_t d[MATC_MAX_RANK];
    memcpy(d, x->dims, sizeof d);
    d[axis] = sizes[j];
    value_set(&g->vals[n->out[j]], x->dt, x->rank, d);
  }
  return MATC_OK;
}

int lower_split(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int axis = norm_axis(attr_i(n, "axis", 0), x->rank);
  int64_t xs[MATC_MAX_RANK], at = 0;
  shape_strides(x->rank, x->dims, xs);
  for (int j = 0; j < n->nout; j++) {
    int o = n->out[j];
    if (o >= 0) copy_or_view(g, node, o, n->in[0], at * xs[axis], xs);
    at += o >= 0 ? g->vals[o].dims[axis] : 0;
  }
  return MATC_OK;
}

/* Per data dim: first element, step and count, with numpy's clamping of
 * out-of-range starts and ends. starts/ends/axes were attributes before
 * opset 10, inputs (with steps) after. */
static int slice_params(Graph *g, int node, int64_t *first, int64_t *step, int64_t *len) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int r = x->rank;
  int64_t st[MATC_MAX_RANK], en[MATC_MAX_RANK], ax[MATC_MAX_RANK], sp[MATC_MAX_RANK];
  int ns, ne, na = -1, np = -1, rc;
  if (NODE_OPSET(g, n) < 10) {
    ns = attr_ints(n, "starts", st, MATC_MAX_RANK);
    ne = attr_ints(n, "ends", en, MATC_MAX_RANK);
    na = attr_ints(n, "axes", ax, MATC_MAX_RANK);
    if (ns < 0 || ne < 0) return fail(g, node, -1, "starts and ends are required");
  } else {
    if (layout_need_inputs(g, node, 3)) return MATC_ERR;
    if ((rc = known_ints(g, node, 1, st, MATC_MAX_RANK, &ns))) return rc;
    if ((rc = known_ints(g, node, 2, en, MATC_MAX_RANK, &ne))) return rc;
    if (n->nin > 3 && n->in[3] >= 0 && (rc = known_ints(g, node, 3, ax, MATC_MAX_RANK, &na))) return rc;
    if (n->nin > 4 && n->in[4] >= 0 && (rc = known_ints(g, node, 4, sp, MATC_MAX_RANK, &np))) return rc;
  }
  if (ne != ns || (na >= 0 && na != ns) || (np >= 0 && np != ns))
    return fail(g, node, -1, "starts, ends, axes and steps differ in length");
  for (int i = 0; i < r; i++) first[i] = 0, step[i] = 1, len[i] = x->dims[i];
  char seen[MATC_MAX_RANK] = {0};
  for (int i = 0; i < ns; i++) {
    int a = na >= 0 ? norm_axis(ax[i], r) : i;
    if (a < 0 || a >= r || seen[a]) return fail(g, node, -1, "bad or repeated axis");
    seen[a] = 1;
    int64_t d = x->dims[a], s = st[i], e = en[i], k = np >= 0 ? sp[i] : 1;
    if (k == 0) return fail(g, node, -1, "step is 0");
    if (k == INT64_MIN) k = -INT64_MAX;
    if (s < 0) s += d;
    if (e < 0) e += d;
    if (k > 0) {
      s = s < 0 ? 0 : s > d ? d : s;
      e = e < 0 ? 0 : e > d ? d : e;
      len[a] = e > s ? (e - s - 1) / k + 1 : 0;
    } else {
      s = s < 0 ? -1 : s > d - 1 ? d - 1 : s;
      e = e < 0 ? -1 : e > d - 1 ? d - 1 : e;
      len[a] = s > e ? (s - e - 1) / (-k) + 1 : 0;
    }
    first[a] = len[a] ? s : 0;
    step[a] = k;
  }
  return MATC_OK;
}

int infer_slice(Graph *g, int node) {
  if (layout_need_inputs(g, node, 1)) return MATC_ERR;
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int64_t first[MATC_MAX_RANK], step[MATC_MAX_RANK], len[MATC_MAX_RANK];
  int rc = slice_params(g, node, first, step, len);
  if (rc) return rc;
  value_set(&g->vals[n->out[0]], x->dt, x->rank, len);
  return MATC_OK;
}

int lower_slice(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int64_t first[MATC_MAX_RANK], step[MATC_MAX_RANK], len[MATC_MAX_RANK], xs[MATC_MAX_RANK];
  int rc = slice_params(g, node, first, step, len);
  if (rc) return rc;
  shape_strides(x->rank, x->dims, xs);
  int64_t off = 0;
  for (int i = 0; i < x->rank; i++) {
    off += first[i] * xs[i];
    xs[i] *= step[i];
  }
  copy_or_view(g, node, n->out[0], n->in[0], off, xs);
  return MATC_OK;
}

/* ---------------------------------------------------------------- Expand, Tile, Pad */

int infer_expand(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (layout_need_inputs(g, node, 2)) return MATC_ERR;
  Value *x = &g->vals[n->in[0]];
  int64_t s[MATC_MAX_RANK], d[MATC_MAX_RANK];
  int ns, r, rc;
  if ((rc = known_ints(g, node, 1, s, MATC_MAX_RANK, &ns))) return rc;
  for (int i = 0; i < ns; i++)
    if (s[i] < 0) return fail(g, node, 1, "negative dimension in shape");
  if (broadcast_shapes(g, node, x->rank, x->dims, ns, s, &r, d)) return MATC_ERR;
  value_set(&g->vals[n->out[0]], x->dt, r, d);
  return MATC_OK;
}

int lower_expand(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]], *o = &g->vals[n->out[0]];
  int64_t xs[MATC_MAX_RANK], st[MATC_MAX_RANK] = {0};
  shape_strides(x->rank, x->dims, xs);
  for (int i = 0; i < x->rank; i++)
    st[o->rank - x->rank + i] = x->dims[i] == 1 ? 0 : xs[i];
  copy_or_view(g, node, n->out[0], n->in[0], 0, st);
  return MATC_OK;
}

int infer_tile(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (layout_need_inputs(g, node, 2)) return MATC_ERR;
  if (n->nin > 2) return unsupported(g, node, 2, "Tile-1 (tiles and axis inputs) is not supported");
  Value *x = &g->vals[n->in[0]];
  int64_t rep[MATC_MAX_RANK], d[MATC_MAX_RANK];
  int nr, rc;
  if ((rc = known_ints(g, node, 1, rep, MATC_MAX_RANK, &nr))) return rc;
  if (nr != x->rank) return fail(g, node, 1, "repeats has %d entries for rank %d", nr, x->rank);
  for (int i = 0; i < nr; i++) {
    if (rep[i] < 0) return fail(g, node, 1, "negative repeat");
    if ((d[i] = dim_mul(x->dims[i], rep[i])) < 0)
      return fail(g, node, 1, "repeat %lld of dimension %d passes the limit of 2^40 elements", (long long)rep[i], i);
  }
  value_set(&g->vals[n->out[0]], x->dt, x->rank, d);
  return MATC_OK;
}

/* Each output dim i splits into (repeat, x dim) with x stride 0 on the
 * repeat: an affine loop nest, no modulo. */
int lower_tile(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]], *o = &g->vals[n->out[0]];
  int64_t xs[MATC_MAX_RANK], os[MATC_MAX_RANK];
  shape_strides(x->rank, x->dims, xs);
  shape_strides(o->rank, o->dims, os);
  LoopNest l = {.nset = 2};
  for (int i = 0; i < x->rank; i++) {
    int64_t rep = x->dims[i] ? o->dims[i] / x->dims[i] : 0;
    loop_dim(&l, rep, (int64_t[]){x->dims[i] * os[i], 0});
    loop_dim(&l, x->dims[i], (int64_t[]){os[i], xs[i]});
  }
  loop_merge(&l);
  if (l.empty) return MATC_OK;
  Kernel *k = loop_kernel(g, node, &l, n->out[0], 0);
  k->body = loop_load(g, &l, 1, n->in[0], 0);
  return MATC_OK;
}

/* Pads per dim (begin, end), mode, and the constant (a value id, or -1
 * with *cval from the old 'value' attribute). */
static int pad_params(Graph *g, int node, int64_t *pb, int64_t *pe, int *mode, int *cv, double *cval) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int r = x->rank, np, rc;
  int64_t p[2 * MATC_MAX_RANK], axes[MATC_MAX_RANK];
  const char *m = attr_s(n, "mode", "constant");
  *mode = !strcmp(m, "constant") ? 0 : !strcmp(m, "reflect") ? 1 : !strcmp(m, "edge") ? 2
          : !strcmp(m, "wrap") ? 3 : -1;
  if (*mode < 0) return fail(g, node, -1, "unknown mode '%s'", m);
  *cv = -1;
  *cval = attr_f(n, "value", 0.0f);
  if (NODE_OPSET(g, n) < 11) {
    np = attr_ints(n, NODE_OPSET(g, n) < 2 ? "paddings" : "pads", p, 2 * MATC_MAX_RANK);
    if (np < 0) np = attr_ints(n, "pads", p, 2 * MATC_MAX_RANK);
    if (np < 0) return fail(g, node, -1, "attribute 'pads' is missing");
  } else {
    if (layout_need_inputs(g, node, 2)) return MATC_ERR;
    if ((rc = known_ints(g, node, 1, p, 2 * MATC_MAX_RANK, &np))) return rc;
    if (n->nin > 2 && n->in[2] >= 0) {
      *cv = n->in[2];
      if (g->vals[*cv].dt != x->dt) return fail(g, node, 2, "data type does not match the input's");
      if (value_nelem(&g->vals[*cv]) != 1) return fail(g, node, 2, "must be one value");
    }
  }
  int na = r;
  for (int i = 0; i < r; i++) axes[i] = i;
  if (n->nin > 3 && n->in[3] >= 0 && (rc = known_ints(g, node, 3, axes, MATC_MAX_RANK, &na))) return rc;
  if (np != 2 * na) return fail(g, node, 1, "%d pads for %d axes", np, na);
  for (int i = 0; i < r; i++) pb[i] = pe[i] = 0;
  for (int i = 0; i < na; i++) {
    int a = norm_axis(axes[i], r);
    if (a < 0) return fail(g, node, 3, "axis out of range");
    pb[a] = p[i];
    pe[a] = p[na + i];
    if (pb[a] < -MATC_MAX_ELEMS || pb[a] > MATC_MAX_ELEMS || pe[a] < -MATC_MAX_ELEMS || pe[a] > MATC_MAX_ELEMS)
      return fail(g, node, 1, "pads %lld, %lld of dimension %d are over the limit of 2^40", (long long)pb[a],
                  (long long)pe[a], a);
    if (x->dims[a] + pb[a] + pe[a] < 0) return fail(g, node, 1, "pads remove more than dimension %d", a);
    if (*mode && x->dims[a] == 0 && pb[a] + pe[a] > 0)
      return fail(g, node, 1, "cannot pad an empty dimension in this mode");
  }
  return MATC_OK;
}

int infer_pad(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (layout_need_inputs(g, node, 1)) return MATC_ERR;
  Value *x = &g->vals[n->in[0]];
  int64_t pb[MATC_MAX_RANK], pe[MATC_MAX_RANK], d[MATC_MAX_RANK];
  int mode, cv;
  double cval;
  int rc = pad_params(g, node, pb, pe, &mode, &cv, &cval);
  if (rc) return rc;
  for (int i = 0; i < x->rank; i++) d[i] = x->dims[i] + pb[i] + pe[i];
  value_set(&g->vals[n->out[0]], x->dt, x->rank, d);
  return MATC_OK;
}

/* Source index along one padded dim for reflect, edge and wrap, clamped
 * into the dim so the load stays in bounds whatever the pads. */
static Expr *pad_source(Graph *g, int mode, Expr *i, int64_t before, int64_t d) {
  Expr *j = e_bin(g, B_SUB, i, e_consti(g, DT_I64, before));
  if (mode == 1 && d > 1) {   /* reflect, repeatedly for pads >= d */
    int64_t period = 2 * (d - 1);
    Expr *m = e_bin(g, B_IMOD, j, e_consti(g, DT_I64, period));
    Expr *back = e_bin(g, B_SUB, e_consti(g, DT_I64, period), m);
    j = e_sel(g, e_bin(g, B_LT, m, e_consti(g, DT_I64, d)), m, back);
  } else if (mode == 3) {     /* wrap */
    j = e_bin(g, B_IMOD, j, e_consti(g, DT_I64, d));
  }
  j = e_bin(g, B_MAX, e_bin(g, B_MIN, j, e_consti(g, DT_I64, d - 1)), e_consti(g, DT_I64, 0));
  return j;
}

int lower_pad(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]], *o = &g->vals[n->out[0]];
  int r = x->rank, mode, cv;
  int64_t pb[MATC_MAX_RANK], pe[MATC_MAX_RANK], xs[MATC_MAX_RANK], os[MATC_MAX_RANK];
  double cval;
  int rc = pad_params(g, node, pb, pe, &mode, &cv, &cval);
  if (rc) return rc;
  shape_strides(r, x->dims, xs);
  shape_strides(r, o->dims, os);
  if (mode != 0) {
    /* One pass over the output; padded dims index through pad_source. */
    Kernel *k = k_elementwise(g, node, n->out[0]);
    int64_t st[KMAX_VARS] = {0};
    Expr *dyn = NULL;
    for (int i = 0; i < r; i++) {
      if (!pb[i] && !pe[i]) { st[i] = xs[i]; continue; }
      Expr *t = e_bin(g, B_MUL, pad_source(g, mode, e_index(g, i), pb[i], x->dims[i]),
                      e_consti(g, DT_I64, xs[i]));
      dyn = dyn ? e_bin(g, B_ADD, dyn, t) : t;
    }
    k->body = e_load(g, n->in[0], 0, st, r);
    if (dyn) e_load_dyn(k->body, dyn, 1);
    return MATC_OK;
  }
  /* Constant: fill the output, then copy the kept part of the input over
   * it. Both are plain unit-stride loops. */
  int grows = 0;
  int64_t ext[MATC_MAX_RANK], ioff = 0, ooff = 0;
  for (int i = 0; i < r; i++) {
    grows |= pb[i] > 0 || pe[i] > 0;
    int64_t skip = pb[i] < 0 ? -pb[i] : 0;
    ext[i] = x->dims[i] - skip - (pe[i] < 0 ? -pe[i] : 0);
    ioff += skip * xs[i];
    ooff += (pb[i] > 0 ? pb[i] : 0) * os[i];
  }
  if (grows) {
    LoopNest l = {.nset = 1};
    loop_dim(&l, value_nelem(o), (int64_t[]){1});
    if (!l.empty) {
      Kernel *k = loop_kernel(g, node, &l, n->out[0], 0);
      k->body = cv >= 0 ? e_load(g, cv, 0, (int64_t[KMAX_VARS]){0}, 0) : e_const(g, o->dt, cval);
    }
  }
  emit_copy(g, node, n->out[0], ooff, os, n->in[0], ioff, xs, r, ext);
  return MATC_OK;
}

/* ---------------------------------------------------------------- generators */

int infer_constant_of_shape(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (layout_need_inputs(g, node, 1)) return MATC_ERR;
  int64_t d[MATC_MAX_RANK];
  int r, rc;
  if ((rc = known_ints(g, node, 0, d, MATC_MAX_RANK, &r))) return rc;
  for (int i = 0; i < r; i++)
    if (d[i] < 0) return fail(g, node, 0, "negative dimension");
  const Attr *a = attr_get(n, "value");
  DType dt = a && a->type == A_TENSOR ? a->t->dt : DT_F32;
  if (a && (a->type != A_TENSOR || tensor_nelem(a->t) != 1))
    return fail(g, node, -1, "value must be a one-element tensor");
  if (!dt_supported(dt)) return unsupported(g, node, -1, "value of type %s is not supported", dt_name(dt));
  value_set(&g->vals[n->out[0]], dt, r, d);
  return MATC_OK;
}

int lower_constant_of_shape(Graph *g, int node) {
  Node *n = &g->nodes[node];
  const Attr *a = attr_get(n, "value");
  Value *o = &g->vals[n->out[0]];
  LoopNest l = {.nset = 1};
  loop_dim(&l, value_nelem(o), (int64_t[]){1});
  if (l.empty) return MATC_OK;
  Kernel *k = loop_kernel(g, node, &l, n->out[0], 0);
  if (!a) k->body = e_const(g, o->dt, 0);
  else if (dt_is_float(o->dt)) k->body = e_const(g, o->dt, tensor_get_f(a->t, 0));
  else k->body = e_consti(g, o->dt, tensor_get_i(a->t, 0));
  return MATC_OK;
}

int infer_range(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (layout_need_inputs(g, node, 3)) return MATC_ERR;
  Tensor *t[3];
  for (int j = 0; j < 3; j++) {
    Value *v = &g->vals[n->in[j]];
    if (v->dt != g->vals[n->in[0]].dt) return fail(g, node, j, "data type does not match input 0's");
    if (value_nelem(v) != 1) return fail(g, node, j, "must be a scalar");
    if (!(t[j] = known_value(g, n->in[j])))
      return unsupported(g, node, j, "the output's length depends on this run-time value");
  }
  double start = tensor_get_f(t[0], 0), limit = tensor_get_f(t[1], 0), delta = tensor_get_f(t[2], 0);
  if (delta == 0) return fail(g, node, 2, "delta is 0");
  double cnt = ceil((limit - start) / delta);
  if (!(cnt < 1e12)) return fail(g, node, -1, "the range is too long");
  int64_t len = cnt > 0 ? (int64_t)cnt : 0;
  value_set(&g->vals[n->out[0]], g->vals[n->in[0]].dt, 1, &len);
  return MATC_OK;
}

/* start + i * delta, reading start and delta at run time. */
int lower_range(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *o = &g->vals[n->out[0]];
  Kernel *k = k_elementwise(g, node, n->out[0]);
  int64_t z[KMAX_VARS] = {0};
  Expr *start = e_load(g, n->in[0], 0, z, 1), *delta = e_load(g, n->in[2], 0, z, 1);
  k->body = e_bin(g, B_ADD, start, e_bin(g, B_MUL, e_cast(g, o->dt, e_index(g, 0)), delta));
  return MATC_OK;
}

int infer_trilu(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (layout_need_inputs(g, node, 1)) return MATC_ERR;
  Value *x = &g->vals[n->in[0]];
  if (x->rank < 2) return fail(g, node, 0, "needs rank >= 2");
  if (n->nin > 1 && n->in[1] >= 0 && value_nelem(&g->vals[n->in[1]]) != 1)
    return fail(g, node, 1, "k must be a scalar");
  value_set(&g->vals[n->out[0]], x->dt, x->rank, x->dims);
  return MATC_OK;
}

/* Keeps x where col - row >= k (upper) or <= k (lower), else 0. */
int lower_trilu(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int r = x->rank;
  Expr *k = e_consti(g, DT_I64, 0);
  if (n->nin > 1 && n->in[1] >= 0)
    k = e_cast(g, DT_I64, e_load(g, n->in[1], 0, (int64_t[KMAX_VARS]){0}, 0));
  Expr *diff = e_bin(g, B_SUB, e_index(g, r - 1), e_index(g, r - 2));
  Expr *keep = e_bin(g, attr_i(n, "upper", 1) ? B_GE : B_LE, diff, k);
  Kernel *kn = k_elementwise(g, node, n->out[0]);
  Expr *v = e_load_bcast(g, n->in[0], r);
  kn->body = e_sel(g, keep, v, e_const(g, x->dt, 0));
  return MATC_OK;
}

int infer_eye_like(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (layout_need_inputs(g, node, 1)) return MATC_ERR;
  Value *x = &g->vals[n->in[0]];
  if (x->rank != 2) return fail(g, node, 0, "needs a 2-D input");
  DType dt = (DType)attr_i(n, "dtype", x->dt);
  if (!dt_supported(dt)) return unsupported(g, node, -1, "dtype %s is not supported", dt_name(dt));
  value_set(&g->vals[n->out[0]], dt, 2, x->dims);
  return MATC_OK;
}

int lower_eye_like(Graph *g, int node) {
  Node *n = &g->nodes[node];
  DType dt = g->vals[n->out[0]].dt;
  Expr *diff = e_bin(g, B_SUB, e_index(g, 1), e_index(g, 0));
  Expr *on = e_bin(g, B_EQ, diff, e_consti(g, DT_I64, attr_i(n, "k", 0)));
  Kernel *k = k_elementwise(g, node, n->out[0]);
  k->body = e_sel(g, on, e_consti(g, dt, 1), e_consti(g, dt, 0));
  return MATC_OK;
}

/* ---------------------------------------------------------------- DepthToSpace, SpaceToDepth */

static int block_params(Graph *g, int node, int64_t *b) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  *b = attr_i(n, "blocksize", 0);
  if (*b <= 0) return fail(g, node, -1, "blocksize must be positive");
  if (x->rank != 4) return fail(g, node, 0, "needs a 4-D input");
  return MATC_OK;
}

int infer_depth_space(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (layout_need_inputs(g, node, 1)) return MATC_ERR;
  Value *x = &g->vals[n->in[0]];
  int64_t b, d[4];
  if (block_params(g, node, &b)) return MATC_ERR;
  memcpy(d, x->dims, sizeof d);
  if (n->op == OP_DepthToSpace) {
    if (d[1] % (b * b)) return fail(g, node, 0, "channels do not divide by blocksize^2");
    d[1] /= b * b, d[2] *= b, d[3] *= b;
  } else {
    if (d[2] % b || d[3] % b) return fail(g, node, 0, "height and width must divide by blocksize");
    d[1] *= b * b, d[2] /= b, d[3] /= b;
  }
  value_set(&g->vals[n->out[0]], x->dt, 4, d);
  return MATC_OK;
}

/* Both ops are a reshape to 6-D, a transpose and a reshape back: one copy
 * whose loop dims follow the output, with the input's strides permuted. */
int lower_depth_space(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int64_t b, N = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3];
  if (block_params(g, node, &b)) return MATC_ERR;
  int64_t ext[6], ist[6];
  if (n->op == OP_DepthToSpace) {
    /* out [N, C', H, b1, W, b2]; input channel = b1*b*C' + b2*C' + c' (DCR)
     * or c'*b*b + b1*b + b2 (CRD) */
    int64_t Cp = C / (b * b), hw = H * W;
    int crd = !strcmp(attr_s(n, "mode", "DCR"), "CRD");
    int64_t e[6] = {N, Cp, H, b, W, b};
    int64_t s[6] = {C * hw, crd ? b * b * hw : hw, W, crd ? b * hw : b * Cp * hw, 1,
                    crd ? hw : Cp * hw};
    memcpy(ext, e, sizeof e);
    memcpy(ist, s, sizeof s);
  } else {
    /* out [N, b1, b2, C, H', W']; input (n, c, h'*b + b1, w'*b + b2) */
    int64_t e[6] = {N, b, b, C, H / b, W / b};
    int64_t s[6] = {C * H * W, W, 1, H * W, b * W, b};
    memcpy(ext, e, sizeof e);
    memcpy(ist, s, sizeof s);
  }
  int64_t ost[6];
  shape_strides(6, ext, ost);
  emit_copy(g, node, n->out[0], 0, ost, n->in[0], 0, ist, 6, ext);
  return MATC_OK;
}

/* ---------------------------------------------------------------- gradients */

/* Views: the gradient is dy seen with the input's shape. */
int grad_view(AD *ad, int node, const int *dy, int *dx) {
  Node n = ad->g->nodes[node];
  Value x = ad->g->vals[n.in[0]];
  dx[0] = ad_reshape(ad, dy[0], x.rank, x.dims);
  return MATC_OK;
}

int grad_transpose(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  int rank = g->vals[n.in[0]].rank;
  int perm[MATC_MAX_RANK];
  if (get_perm(g, node, rank, perm)) return MATC_ERR;
  int64_t inv[MATC_MAX_RANK];
  for (int i = 0; i < rank; i++) inv[perm[i]] = i;
  dx[0] = ad_transpose(ad, dy[0], inv);
  return MATC_OK;
}

/* Zeros of a given shape: ConstantOfShape, whose default value is 0. */
int layout_zeros(AD *ad, DType dt, int rank, const int64_t *dims) {
  if (ad->status) return -1;
  int shape = ad_const_ints(ad, rank, dims);
  Attr v = {0};
  v.name = "value";
  v.type = A_TENSOR;
  v.t = arena_alloc(ad->g->arena, sizeof(Tensor));
  v.t->dt = dt;
  v.t->rank = 1;
  v.t->dims[0] = 1;
  v.t->data = arena_alloc(ad->g->arena, 8);
  return ad_node(ad, "ConstantOfShape", 1, &shape, 1, &v);
}

/* x[..., start:end, ...] along one axis. */
static int slice_axis(AD *ad, int x, int axis, int64_t start, int64_t end) {
  if (x < 0) return -1;
  int in[4] = {x, ad_const_ints(ad, 1, &start), ad_const_ints(ad, 1, &end),
               ad_const_ints(ad, 1, (int64_t[]){axis})};
  return ad_node(ad, "Slice", 4, in, 0, NULL);
}

/* Concat: each input gets its slab of dy back. */
int grad_concat(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  int axis = norm_axis(attr_i(&n, "axis", 1), g->vals[n.out[0]].rank);
  int64_t at = 0;
  for (int j = 0; j < n.nin; j++) {
    int64_t len = g->vals[n.in[j]].dims[axis];
    if (ad_needs(ad, node, j)) dx[j] = slice_axis(ad, dy[0], axis, at, at + len);
    at += len;
  }
  return MATC_OK;
}

/* Split: the output gradients concatenated, zeros for outputs without one. */
int grad_split(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  Value x = g->vals[n.in[0]];
  int64_t *sizes = arena_alloc(g->arena, sizeof(int64_t) * (n.nout + 1));
  int axis, rc = split_sizes(g, node, &axis, sizes);
  if (rc) return rc;
  int *parts = arena_alloc(g->arena, sizeof(int) * (n.nout + 1));
  for (int j = 0; j < n.nout; j++) {
    int64_t d[MATC_MAX_RANK];
    memcpy(d, x.dims, sizeof d);
    d[axis] = sizes[j];
    parts[j] = dy[j] >= 0 ? dy[j] : layout_zeros(ad, x.dt, x.rank, d);
  }
  if (n.nout == 1) {
    dx[0] = parts[0];
    return MATC_OK;
  }
  Attr a = ad_attr_i("axis", axis);
  dx[0] = ad_node(ad, "Concat", n.nout, parts, 1, &a);
  return MATC_OK;
}

/* Slice: dy lands where the slice came from, zeros elsewhere. Unit steps
 * are a zero Pad; other steps (negative ones too) the SliceGrad op. */
int grad_slice(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  Value x = g->vals[n.in[0]];
  int r = x.rank;
  int64_t first[MATC_MAX_RANK], step[MATC_MAX_RANK], len[MATC_MAX_RANK];
  int rc = slice_params(g, node, first, step, len);
  if (rc) return rc;
  int unit = 1, empty = 0;
  for (int i = 0; i < r; i++) {
    unit &= step[i] == 1 || len[i] <= 1;
    empty |= len[i] == 0;
  }
  if (empty) {
    dx[0] = layout_zeros(ad, x.dt, r, x.dims);
  } else if (unit) {
    int64_t pads[2 * MATC_MAX_RANK];
    for (int i = 0; i < r; i++) {
      pads[i] = first[i];
      pads[r + i] = x.dims[i] - first[i] - len[i];
    }
    int in[2] = {dy[0], ad_const_ints(ad, 2 * r, pads)};
    dx[0] = ad_node(ad, "Pad", 2, in, 0, NULL);
  } else {
    Attr a[3] = {ad_attr_ints(ad, "starts", r, first), ad_attr_ints(ad, "steps", r, step),
                 ad_attr_ints(ad, "shape", r, x.dims)};
    dx[0] = ad_node(ad, "SliceGrad", 1, &dy[0], 3, a);
  }
  return MATC_OK;
}

/* SliceGrad(dy) (internal): the input gradient of a Slice with per-dim
 * first element `starts` and step `steps` from data of shape `shape`. */
int infer_slice_grad(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *d = &g->vals[n->in[0]];
  int64_t s[MATC_MAX_RANK], k[MATC_MAX_RANK], shape[MATC_MAX_RANK];
  int r = attr_ints(n, "shape", shape, MATC_MAX_RANK);
  if (r != d->rank || attr_ints(n, "starts", s, r) != r || attr_ints(n, "steps", k, r) != r)
    return fail(g, node, -1, "starts, steps and shape must match dy's rank");
  value_set(&g->vals[n->out[0]], d->dt, r, shape);
  return MATC_OK;
}

/* One pass over dx: along each strided dim, position i came from dy
 * element q = (i - first) / step when that divides and q < len. */
int lower_slice_grad(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *d = &g->vals[n->in[0]], *o = &g->vals[n->out[0]];
  int r = o->rank;
  int64_t first[MATC_MAX_RANK], step[MATC_MAX_RANK], ds[MATC_MAX_RANK], st[KMAX_VARS] = {0};
  attr_ints(n, "starts", first, r);
  attr_ints(n, "steps", step, r);
  shape_strides(r, d->dims, ds);
  Kernel *kn = k_elementwise(g, node, n->out[0]);
  if (value_nelem(d) == 0) {
    kn->body = e_const(g, o->dt, 0);
    return MATC_OK;
  }
  Expr *ok = NULL, *dyn = NULL, *zero = e_consti(g, DT_I64, 0);
  for (int i = 0; i < r; i++) {
    int64_t k = step[i], ak = k < 0 ? -k : k, len = d->dims[i];
    if (k == 1 && first[i] == 0 && len == o->dims[i]) {
      st[i] = ds[i];
      continue;
    }
    Expr *f = e_consti(g, DT_I64, first[i]), *t;
    t = k > 0 ? e_bin(g, B_SUB, e_index(g, i), f) : e_bin(g, B_SUB, f, e_index(g, i));
    Expr *c = e_bin(g, B_AND, e_bin(g, B_GE, t, zero),
                    e_bin(g, B_LE, t, e_consti(g, DT_I64, (len - 1) * ak)));
    Expr *q = t;
    if (ak > 1) {
      Expr *m = e_bin(g, B_IMOD, t, e_consti(g, DT_I64, ak));
      c = e_bin(g, B_AND, c, e_bin(g, B_EQ, m, zero));
      q = e_bin(g, B_DIV, t, e_consti(g, DT_I64, ak));
    }
    q = e_bin(g, B_MAX, e_bin(g, B_MIN, q, e_consti(g, DT_I64, len - 1)), zero);
    Expr *term = e_bin(g, B_MUL, q, e_consti(g, DT_I64, ds[i]));
    dyn = dyn ? e_bin(g, B_ADD, dyn, term) : term;
    ok = ok ? e_bin(g, B_AND, ok, c) : c;
  }
  Expr *v = e_load(g, n->in[0], 0, st, r);
  if (dyn) e_load_dyn(v, dyn, 1);
  kn->body = ok ? e_sel(g, ok, v, e_const(g, o->dt, 0)) : v;
  return MATC_OK;
}

/* Expand: the broadcast gradient summed back. */
int grad_expand(AD *ad, int node, const int *dy, int *dx) {
  Node n = ad->g->nodes[node];
  dx[0] = ad_sum_to(ad, dy[0], n.in[0]);
  return MATC_OK;
}

/* Tile: dy seen as [rep0, d0, rep1, d1, ...], summed over the repeats. */
int grad_tile(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  Value x = g->vals[n.in[0]], y = g->vals[n.out[0]];
  int64_t dims[2 * MATC_MAX_RANK], axes[MATC_MAX_RANK];
  int r = 0, na = 0;
  for (int i = 0; i < x.rank; i++) {
    int64_t rep = x.dims[i] ? y.dims[i] / x.dims[i] : 1;
    if (rep != 1) {
      axes[na++] = r;
      dims[r++] = rep;
    }
    dims[r++] = x.dims[i];
  }
  if (!na) {
    dx[0] = dy[0];
    return MATC_OK;
  }
  if (r > MATC_MAX_RANK) return unsupported(g, node, -1, "the gradient of Tile needs rank %d", r);
  dx[0] = ad_reduce_sum(ad, ad_reshape(ad, dy[0], r, dims), na, axes, 0);
  return MATC_OK;
}

/* Pad. Constant mode: dy's middle is dx (zeros where the pads cropped),
 * the rest is the constant's gradient. Reflect, edge and wrap: per padded
 * dim, the output index maps to a source index, so dy's rows are summed
 * into their sources like a Gather's gradient. */
int grad_pad(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  Value x = g->vals[n.in[0]];
  int r = x.rank, mode, cv;
  int64_t pb[MATC_MAX_RANK], pe[MATC_MAX_RANK];
  double cval;
  int rc = pad_params(g, node, pb, pe, &mode, &cv, &cval);
  if (rc) return rc;
  if (mode == 0) {
    int64_t st[MATC_MAX_RANK], en[MATC_MAX_RANK], crop[2 * MATC_MAX_RANK], ax[MATC_MAX_RANK];
    int cropped = 0;
    for (int i = 0; i < r; i++) {
      st[i] = pb[i] > 0 ? pb[i] : 0;
      crop[i] = pb[i] < 0 ? -pb[i] : 0;
      crop[r + i] = pe[i] < 0 ? -pe[i] : 0;
      en[i] = st[i] + x.dims[i] - crop[i] - crop[r + i];
      ax[i] = i;
      cropped |= crop[i] || crop[r + i];
    }
    int in[4] = {dy[0], ad_const_ints(ad, r, st), ad_const_ints(ad, r, en), ad_const_ints(ad, r, ax)};
    int mid = ad_node(ad, "Slice", 4, in, 0, NULL);
    if (ad_needs(ad, node, 0))
      dx[0] = cropped ? ad_node(ad, "Pad", 2, (int[]){mid, ad_const_ints(ad, 2 * r, crop)}, 0, NULL) : mid;
    if (n.nin > 2 && n.in[2] >= 0 && ad_needs(ad, node, 2)) {
      Value c = g->vals[n.in[2]];
      int all = ad_reduce_sum(ad, dy[0], r, ax, 0), kept = ad_reduce_sum(ad, mid, r, ax, 0);
      dx[2] = ad_reshape(ad, ad_sub(ad, all, kept), c.rank, c.dims);
    }
    return MATC_OK;
  }
  if (!ad_needs(ad, node, 0)) return MATC_OK;
  int cur = dy[0];
  int64_t dims[MATC_MAX_RANK];
  memcpy(dims, g->vals[dy[0]].dims, sizeof dims);
  for (int a = 0; a < r; a++) {
    if (!pb[a] && !pe[a]) continue;
    int64_t P = dims[a], d = x.dims[a];
    int64_t *src = arena_alloc(g->arena, sizeof(int64_t) * (P + 1));
    for (int64_t o = 0; o < P; o++) {   /* as pad_source, at compile time */
      int64_t j = o - pb[a];
      if (mode == 1 && d > 1) {
        int64_t period = 2 * (d - 1), m = ((j % period) + period) % period;
        j = m < d ? m : period - m;
      } else if (mode == 3) {
        j = ((j % d) + d) % d;
      }
      src[o] = j < 0 ? 0 : j > d - 1 ? d - 1 : j;
    }
    dims[a] = d;
    cur = layout_gather_grad(ad, cur, ad_const_ints(ad, (int)P, src), a, r, dims);
  }
  dx[0] = cur;
  return MATC_OK;
}

/* DepthToSpace and SpaceToDepth undo each other (DCR mode); CRD's
 * inverse is its reshape-transpose-reshape run backwards. */
int grad_depth_space(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  Value x = g->vals[n.in[0]];
  int64_t b = attr_i(&n, "blocksize", 0);
  if (n.op == OP_DepthToSpace && !strcmp(attr_s(&n, "mode", "DCR"), "CRD")) {
    int64_t N = x.dims[0], C = x.dims[1], H = x.dims[2], W = x.dims[3], Cp = C / (b * b);
    int t = ad_reshape(ad, dy[0], 6, (int64_t[]){N, Cp, H, b, W, b});
    t = ad_transpose(ad, t, (int64_t[]){0, 1, 3, 5, 2, 4});
    dx[0] = ad_reshape(ad, t, 4, x.dims);
    return MATC_OK;
  }
  Attr a = ad_attr_i("blocksize", b);
  dx[0] = ad_node(ad, n.op == OP_DepthToSpace ? "SpaceToDepth" : "DepthToSpace", 1, &dy[0], 1, &a);
  return MATC_OK;
}

/* Trilu keeps a triangle: so does its gradient. */
int grad_trilu(AD *ad, int node, const int *dy, int *dx) {
  Node n = ad->g->nodes[node];
  int in[2] = {dy[0], n.nin > 1 ? n.in[1] : -1};
  Attr a = ad_attr_i("upper", attr_i(&n, "upper", 1));
  dx[0] = ad_node(ad, "Trilu", in[1] >= 0 ? 2 : 1, in, 1, &a);
  return MATC_OK;
}

/* Range y[i] = start + i * delta: dstart = sum dy, ddelta = sum i dy; the
 * limit only sets the length, so it gets none. */
int grad_range(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  Value y = g->vals[n.out[0]];
  int64_t ax = 0;
  if (ad_needs(ad, node, 0))
    dx[0] = ad_reshape(ad, ad_reduce_sum(ad, dy[0], 1, &ax, 0), g->vals[n.in[0]].rank, g->vals[n.in[0]].dims);
  if (ad_needs(ad, node, 2)) {
    int in[3] = {ad_const(ad, y.dt, 0), ad_const(ad, y.dt, (double)y.dims[0]), ad_const(ad, y.dt, 1)};
    int i = ad_node(ad, "Range", 3, in, 0, NULL);
    dx[2] = ad_reshape(ad, ad_reduce_sum(ad, ad_mul(ad, dy[0], i), 1, &ax, 0), g->vals[n.in[2]].rank,
                       g->vals[n.in[2]].dims);
  }
  return MATC_OK;
}

/* Outputs that do not depend on the input's values (EyeLike): no gradient
 * flows, and that is not an error. */
int grad_nothing(AD *ad, int node, const int *dy, int *dx) {
  (void)ad; (void)node; (void)dy; (void)dx;
  return MATC_OK;
}
