/* layout_index.c: ops that address their input through run-time index
 * values: Gather, GatherElements, GatherND, OneHot, ReverseSequence, the
 * Scatter family, and the ops whose output shape depends on values
 * (NonZero, Compress, Unique). Every index read at run time is normalised
 * (negative counts from the end) and clamped before it addresses a load,
 * so a bad index gives a wrong element, never a wild read. */
#include "layout.h"
#include "../../runtime/rt.h"

#include <string.h>

static int check_index_type(Graph *g, int node, int j) {
  DType dt = g->vals[g->nodes[node].in[j]].dt;
  if (dt != DT_I32 && dt != DT_I64) return fail(g, node, j, "indices must be int32 or int64");
  return MATC_OK;
}

/* ---------------------------------------------------------------- Gather */

int infer_gather(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (layout_need_inputs(g, node, 2) || check_index_type(g, node, 1)) return MATC_ERR;
  Value *x = &g->vals[n->in[0]], *ix = &g->vals[n->in[1]];
  int axis = norm_axis(attr_i(n, "axis", 0), x->rank);
  if (axis < 0) return fail(g, node, -1, "axis is out of range for rank %d", x->rank);
  int r = x->rank - 1 + ix->rank;
  if (r > MATC_MAX_RANK) return fail(g, node, -1, "output rank %d is over the limit", r);
  if (x->dims[axis] == 0 && value_nelem(ix) > 0) return fail(g, node, 0, "gathers from an empty axis");
  int64_t d[MATC_MAX_RANK];
  int k = 0;
  for (int i = 0; i < axis; i++) d[k++] = x->dims[i];
  for (int i = 0; i < ix->rank; i++) d[k++] = ix->dims[i];
  for (int i = axis + 1; i < x->rank; i++) d[k++] = x->dims[i];
  value_set(&g->vals[n->out[0]], x->dt, r, d);
  return MATC_OK;
}

/* Three loops whatever the ranks: [outer, index, inner]. The innermost
 * copies a contiguous row (an embedding vector) with unit stride. */
int lower_gather(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]], *ix = &g->vals[n->in[1]];
  int axis = norm_axis(attr_i(n, "axis", 0), x->rank);
  int64_t outer = shape_nelem(axis, x->dims), D = x->dims[axis];
  int64_t inner = shape_nelem(x->rank - axis - 1, x->dims + axis + 1), ni = value_nelem(ix);
  LoopNest l = {.nset = 3};   /* output, data, indices */
  loop_dim(&l, outer, (int64_t[]){ni * inner, D * inner, 0});
  loop_dim(&l, ni, (int64_t[]){inner, 0, 1});
  loop_dim(&l, inner, (int64_t[]){1, 1, 0});
  if (l.empty) return MATC_OK;
  Kernel *k = loop_kernel(g, node, &l, n->out[0], 0);
  Expr *idx = index_norm_clamp(g, loop_load(g, &l, 2, n->in[1], 0), D);
  k->body = loop_load(g, &l, 1, n->in[0], 0);
  e_load_dyn(k->body, idx, inner);
  return MATC_OK;
}

int infer_gather_elements(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (layout_need_inputs(g, node, 2) || check_index_type(g, node, 1)) return MATC_ERR;
  Value *x = &g->vals[n->in[0]], *ix = &g->vals[n->in[1]];
  int axis = norm_axis(attr_i(n, "axis", 0), x->rank);
  if (axis < 0) return fail(g, node, -1, "axis is out of range for rank %d", x->rank);
  if (ix->rank != x->rank) return fail(g, node, 1, "indices must have the data's rank");
  for (int i = 0; i < x->rank; i++)
    if (i != axis && ix->dims[i] > x->dims[i]) return fail(g, node, 1, "indices dim %d exceeds the data's", i);
  if (x->dims[axis] == 0 && value_nelem(ix) > 0) return fail(g, node, 0, "gathers from an empty axis");
  value_set(&g->vals[n->out[0]], x->dt, ix->rank, ix->dims);
  return MATC_OK;
}

int lower_gather_elements(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]], *ix = &g->vals[n->in[1]];
  int axis = norm_axis(attr_i(n, "axis", 0), x->rank);
  int64_t xs[MATC_MAX_RANK], is[MATC_MAX_RANK];
  shape_strides(x->rank, x->dims, xs);
  shape_strides(ix->rank, ix->dims, is);
  LoopNest l = {.nset = 3};   /* output, data, indices */
  for (int i = 0; i < ix->rank; i++)
    loop_dim(&l, ix->dims[i], (int64_t[]){is[i], i == axis ? 0 : xs[i], is[i]});
  loop_merge(&l);
  if (l.empty) return MATC_OK;
  Kernel *k = loop_kernel(g, node, &l, n->out[0], 0);
  Expr *idx = index_norm_clamp(g, loop_load(g, &l, 2, n->in[1], 0), x->dims[axis]);
  k->body = loop_load(g, &l, 1, n->in[0], 0);
  e_load_dyn(k->body, idx, xs[axis]);
  return MATC_OK;
}

int infer_gather_nd(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (layout_need_inputs(g, node, 2)) return MATC_ERR;
  if (g->vals[n->in[1]].dt != DT_I64) return fail(g, node, 1, "indices must be int64");
  Value *x = &g->vals[n->in[0]], *ix = &g->vals[n->in[1]];
  int b = (int)attr_i(n, "batch_dims", 0), q = ix->rank;
  if (q < 1 || b < 0 || b >= q || b > x->rank) return fail(g, node, -1, "bad batch_dims or indices rank");
  int64_t k = ix->dims[q - 1];
  if (b + k > x->rank) return fail(g, node, 1, "index tuples are longer than the data's rank");
  for (int i = 0; i < b; i++)
    if (ix->dims[i] != x->dims[i]) return fail(g, node, 1, "batch dim %d differs from the data's", i);
  int r = q - 1 + x->rank - b - (int)k;
  if (r > MATC_MAX_RANK) return fail(g, node, -1, "output rank %d is over the limit", r);
  int64_t d[MATC_MAX_RANK];
  memcpy(d, ix->dims, sizeof(int64_t) * (q - 1));
  for (int i = b + (int)k; i < x->rank; i++) d[q - 1 + i - b - k] = x->dims[i];
  value_set(&g->vals[n->out[0]], x->dt, r, d);
  return MATC_OK;
}

/* Output vars: the index tuple's position, then the data's trailing dims.
 * The k index entries become one summed, clamped offset term. */
int lower_gather_nd(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]], *ix = &g->vals[n->in[1]];
  int b = (int)attr_i(n, "batch_dims", 0), q = ix->rank, k = (int)ix->dims[q - 1];
  int r = g->vals[n->out[0]].rank;
  int64_t xs[MATC_MAX_RANK], is[MATC_MAX_RANK], st[KMAX_VARS] = {0}, ist[KMAX_VARS] = {0};
  shape_strides(x->rank, x->dims, xs);
  shape_strides(q, ix->dims, is);
  for (int v = 0; v < b; v++) st[v] = xs[v];
  for (int v = q - 1; v < r; v++) st[v] = xs[b + k + v - (q - 1)];
  for (int v = 0; v < q - 1; v++) ist[v] = is[v];
  Expr *off = e_consti(g, DT_I64, 0);
  for (int j = 0; j < k; j++) {
    Expr *e = index_norm_clamp(g, e_load(g, n->in[1], j, ist, r), x->dims[b + j]);
    off = e_bin(g, B_ADD, off, e_bin(g, B_MUL, e, e_consti(g, DT_I64, xs[b + j])));
  }
  Kernel *kn = k_elementwise(g, node, n->out[0]);
  kn->body = e_load(g, n->in[0], 0, st, r);
  e_load_dyn(kn->body, off, 1);
  return MATC_OK;
}

/* ---------------------------------------------------------------- OneHot, ReverseSequence */

int infer_one_hot(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (layout_need_inputs(g, node, 3)) return MATC_ERR;
  Value *ix = &g->vals[n->in[0]], *vals = &g->vals[n->in[2]];
  Tensor *dt = known_value(g, n->in[1]);
  if (!dt) return unsupported(g, node, 1, "the output's shape depends on this run-time depth");
  if (tensor_nelem(dt) != 1) return fail(g, node, 1, "depth must be one value");
  if (value_nelem(vals) != 2) return fail(g, node, 2, "values must be [off, on]");
  int64_t depth = f2i_sat(tensor_get_f(dt, 0));
  if (depth < 0) return fail(g, node, 1, "depth is negative");
  int r = ix->rank + 1;
  if (r > MATC_MAX_RANK) return fail(g, node, -1, "output rank %d is over the limit", r);
  int axis = norm_axis(attr_i(n, "axis", -1), r);
  if (axis < 0) return fail(g, node, -1, "axis is out of range");
  int64_t d[MATC_MAX_RANK];
  for (int i = 0, j = 0; i < r; i++) d[i] = i == axis ? depth : ix->dims[j++];
  value_set(&g->vals[n->out[0]], vals->dt, r, d);
  return MATC_OK;
}

int lower_one_hot(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *ix = &g->vals[n->in[0]], *o = &g->vals[n->out[0]];
  int r = o->rank, axis = norm_axis(attr_i(n, "axis", -1), r);
  int64_t depth = o->dims[axis], is[MATC_MAX_RANK], st[KMAX_VARS] = {0}, z[KMAX_VARS] = {0};
  shape_strides(ix->rank, ix->dims, is);
  for (int v = 0, j = 0; v < r; v++)
    if (v != axis) st[v] = is[j++];
  Expr *i = e_load(g, n->in[0], 0, st, r);
  i = e_cast(g, DT_I64, i);   /* float indices truncate */
  Expr *zero = e_consti(g, DT_I64, 0);
  i = e_sel(g, e_bin(g, B_LT, i, zero), e_bin(g, B_ADD, i, e_consti(g, DT_I64, depth)), i);
  Expr *hit = e_bin(g, B_EQ, i, e_index(g, axis));
  Kernel *k = k_elementwise(g, node, n->out[0]);
  k->body = e_sel(g, hit, e_load(g, n->in[2], 1, z, 0), e_load(g, n->in[2], 0, z, 0));
  return MATC_OK;
}

int infer_reverse_sequence(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (layout_need_inputs(g, node, 2)) return MATC_ERR;
  Value *x = &g->vals[n->in[0]], *lens = &g->vals[n->in[1]];
  int ta = (int)attr_i(n, "time_axis", 0), ba = (int)attr_i(n, "batch_axis", 1);
  if (x->rank < 2 || (ta != 0 && ta != 1) || (ba != 0 && ba != 1) || ta == ba)
    return fail(g, node, -1, "needs rank >= 2 and time/batch axes 0 and 1");
  if (lens->rank != 1 || lens->dims[0] != x->dims[ba])
    return fail(g, node, 1, "sequence_lens must have one entry per batch element");
  if (lens->dt != DT_I64 && lens->dt != DT_I32) return fail(g, node, 1, "sequence_lens must be integers");
  value_set(&g->vals[n->out[0]], x->dt, x->rank, x->dims);
  return MATC_OK;
}

/* out[t, b] = x[t < len[b] ? len[b] - 1 - t : t, b] */
int lower_reverse_sequence(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int ta = (int)attr_i(n, "time_axis", 0), ba = (int)attr_i(n, "batch_axis", 1);
  int64_t xs[MATC_MAX_RANK], st[KMAX_VARS] = {0}, ls[KMAX_VARS] = {0};
  shape_strides(x->rank, x->dims, xs);
  for (int i = 0; i < x->rank; i++) st[i] = i == ta ? 0 : xs[i];
  ls[ba] = 1;
  Expr *len = e_cast(g, DT_I64, e_load(g, n->in[1], 0, ls, x->rank));
  Expr *t = e_index(g, ta);
  Expr *rev = e_bin(g, B_SUB, e_bin(g, B_SUB, len, e_consti(g, DT_I64, 1)), t);
  Expr *src = index_norm_clamp(g, e_sel(g, e_bin(g, B_LT, t, len), rev, t), x->dims[ta]);
  Kernel *k = k_elementwise(g, node, n->out[0]);
  k->body = e_load(g, n->in[0], 0, st, x->rank);
  e_load_dyn(k->body, src, xs[ta]);
  return MATC_OK;
}

/* ---------------------------------------------------------------- Scatter */

static int scatter_reduction(Graph *g, int node, int64_t *red) {
  const char *r = attr_s(&g->nodes[node], "reduction", "none");
  *red = !strcmp(r, "none") ? SCAT_NONE : !strcmp(r, "add") ? SCAT_ADD : !strcmp(r, "mul") ? SCAT_MUL
         : !strcmp(r, "max") ? SCAT_MAX : !strcmp(r, "min") ? SCAT_MIN : -1;
  if (*red < 0) return fail(g, node, -1, "unknown reduction '%s'", r);
  return MATC_OK;
}

/* Scatter (opset 9-10) is ScatterElements without reduction. */
int infer_scatter_elements(Graph *g, int node) {
  Node *n = &g->nodes[node];
  int64_t red;
  if (layout_need_inputs(g, node, 3) || check_index_type(g, node, 1) || scatter_reduction(g, node, &red))
    return MATC_ERR;
  Value *x = &g->vals[n->in[0]], *ix = &g->vals[n->in[1]], *u = &g->vals[n->in[2]];
  int axis = norm_axis(attr_i(n, "axis", 0), x->rank);
  if (axis < 0) return fail(g, node, -1, "axis is out of range");
  if (u->dt != x->dt) return fail(g, node, 2, "data type does not match the data's");
  if (ix->rank != x->rank || u->rank != x->rank) return fail(g, node, 1, "ranks differ");
  for (int i = 0; i < x->rank; i++) {
    if (u->dims[i] != ix->dims[i]) return fail(g, node, 2, "updates and indices differ in shape");
    if (i != axis && ix->dims[i] > x->dims[i]) return fail(g, node, 1, "indices dim %d exceeds the data's", i);
  }
  value_set(&g->vals[n->out[0]], x->dt, x->rank, x->dims);
  return MATC_OK;
}

/* A copy of the data, then the runtime writes the updates in order. */
static Kernel *scatter_base(Graph *g, int node, int fn) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int64_t xs[MATC_MAX_RANK];
  shape_strides(x->rank, x->dims, xs);
  emit_copy(g, node, n->out[0], 0, xs, n->in[0], 0, xs, x->rank, x->dims);
  Kernel *k = k_extern(g, node, fn);
  k_arg(k, n->out[0], 0);
  k_arg(k, n->in[1], 0);
  k_arg(k, n->in[2], 0);
  return k;
}

int lower_scatter_elements(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]], *ix = &g->vals[n->in[1]];
  Kernel *k = scatter_base(g, node, EXT_scatter_elements);
  k->np = SCAT_NPARAMS;
  k->p[SCAT_DT] = x->dt;
  if (scatter_reduction(g, node, &k->p[SCAT_RED])) return MATC_ERR;
  k->p[SCAT_IDX64] = ix->dt == DT_I64;
  k->p[SCAT_RANK] = x->rank;
  k->p[SCAT_AXIS] = norm_axis(attr_i(n, "axis", 0), x->rank);
  for (int i = 0; i < x->rank; i++) {
    k->p[SCAT_DIMS + i] = x->dims[i];
    k->p[SCAT_DIMS + SCAT_MAX_RANK + i] = ix->dims[i];
  }
  return MATC_OK;
}

int infer_scatter_nd(Graph *g, int node) {
  Node *n = &g->nodes[node];
  int64_t red;
  if (layout_need_inputs(g, node, 3) || scatter_reduction(g, node, &red)) return MATC_ERR;
  Value *x = &g->vals[n->in[0]], *ix = &g->vals[n->in[1]], *u = &g->vals[n->in[2]];
  if (ix->dt != DT_I64) return fail(g, node, 1, "indices must be int64");
  if (u->dt != x->dt) return fail(g, node, 2, "data type does not match the data's");
  int q = ix->rank;
  if (q < 1 || ix->dims[q - 1] > x->rank) return fail(g, node, 1, "bad indices shape");
  int k = (int)ix->dims[q - 1];
  int ur = q - 1 + x->rank - k;
  int ok = u->rank == ur;
  for (int i = 0; ok && i < q - 1; i++) ok = u->dims[i] == ix->dims[i];
  for (int i = q - 1; ok && i < ur; i++) ok = u->dims[i] == x->dims[k + i - (q - 1)];
  if (!ok) return fail(g, node, 2, "updates shape does not match indices and data");
  value_set(&g->vals[n->out[0]], x->dt, x->rank, x->dims);
  return MATC_OK;
}

int lower_scatter_nd(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]], *ix = &g->vals[n->in[1]];
  int q = ix->rank, kk = (int)ix->dims[q - 1];
  Kernel *k = scatter_base(g, node, EXT_scatter_nd);
  k->np = SCND_NPARAMS;
  k->p[SCND_DT] = x->dt;
  if (scatter_reduction(g, node, &k->p[SCND_RED])) return MATC_ERR;
  k->p[SCND_IDX64] = 1;
  k->p[SCND_K] = kk;
  k->p[SCND_N] = shape_nelem(q - 1, ix->dims);
  k->p[SCND_SLICE] = shape_nelem(x->rank - kk, x->dims + kk);
  for (int i = 0; i < kk; i++) k->p[SCND_DIMS + i] = x->dims[i];
  return MATC_OK;
}

/* ---------------------------------------------------------------- value-dependent shapes */

/* Only true constants count here, not bound graph inputs: the output's
 * shape is fixed into the compiled code. */
static Tensor *const_value(Graph *g, int v) {
  if (v < 0) return NULL;
  Value *x = &g->vals[v];
  return x->kind == V_CONST || x->kind == V_PARAM ? x->data : NULL;
}

int infer_nonzero(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (layout_need_inputs(g, node, 1)) return MATC_ERR;
  Tensor *t = const_value(g, n->in[0]);
  if (!t) return unsupported(g, node, 0, "the output shape of NonZero depends on run-time values");
  int64_t cnt = 0, total = tensor_nelem(t), d[2] = {t->rank, 0};
  for (int64_t i = 0; i < total; i++) cnt += tensor_get_f(t, i) != 0;
  d[1] = cnt;
  Tensor *o = layout_new_tensor(g, DT_I64, 2, d);
  int64_t *p = o->data, ts[MATC_MAX_RANK];
  shape_strides(t->rank, t->dims, ts);
  for (int64_t i = 0, j = 0; i < total; i++) {
    if (tensor_get_f(t, i) == 0) continue;
    for (int a = 0; a < t->rank; a++) p[a * cnt + j] = i / ts[a] % t->dims[a];
    j++;
  }
  return layout_resolve_const(g, node, o);
}

/* Compress with a constant condition: the kept positions are known, so it
 * is a copy of each run of consecutive kept slices. */
static int compress_params(Graph *g, int node, int *axis, int64_t *len) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  Tensor *c = const_value(g, n->in[1]);
  if (!c) return unsupported(g, node, 1, "the output shape of Compress depends on this run-time condition");
  const Attr *a = attr_get(n, "axis");
  *axis = a ? norm_axis(a->i, x->rank) : -1;
  if (a && *axis < 0) return fail(g, node, -1, "axis is out of range");
  int64_t dim = a ? x->dims[*axis] : value_nelem(x), cnt = 0;
  for (int64_t i = 0; i < tensor_nelem(c); i++) {
    if (!tensor_get_i(c, i)) continue;
    if (i >= dim) return fail(g, node, 1, "condition selects past the end of the axis");
    cnt++;
  }
  *len = cnt;
  return MATC_OK;
}

int infer_compress(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (layout_need_inputs(g, node, 2)) return MATC_ERR;
  Value *x = &g->vals[n->in[0]];
  int axis;
  int64_t len, d[MATC_MAX_RANK];
  int rc = compress_params(g, node, &axis, &len);
  if (rc) return rc;
  if (axis < 0) {
    value_set(&g->vals[n->out[0]], x->dt, 1, &len);
    return MATC_OK;
  }
  memcpy(d, x->dims, sizeof d);
  d[axis] = len;
  value_set(&g->vals[n->out[0]], x->dt, x->rank, d);
  return MATC_OK;
}

int lower_compress(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  Tensor *c = const_value(g, n->in[1]);
  int axis;
  int64_t len;
  int rc = compress_params(g, node, &axis, &len);
  if (rc) return rc;
  int r = axis < 0 ? 1 : x->rank;
  int64_t dims[MATC_MAX_RANK], xs[MATC_MAX_RANK], os[MATC_MAX_RANK], ext[MATC_MAX_RANK];
  if (axis < 0) dims[0] = value_nelem(x), axis = 0;
  else memcpy(dims, x->dims, sizeof dims);
  shape_strides(r, dims, xs);
  memcpy(ext, dims, sizeof ext);
  ext[axis] = len;
  shape_strides(r, ext, os);
  int64_t nc = tensor_nelem(c), at = 0;
  for (int64_t i = 0; i < nc;) {
    if (!tensor_get_i(c, i)) { i++; continue; }
    int64_t j = i;
    while (j < nc && tensor_get_i(c, j)) j++;
    ext[axis] = j - i;
    emit_copy(g, node, n->out[0], at * os[axis], os, n->in[0], i * xs[axis], xs, r, ext);
    at += j - i;
    i = j;
  }
  return MATC_OK;
}

int infer_unique(Graph *g, int node) {
  return unsupported(g, node, 0, "the output shape of Unique depends on the input values");
}

int lower_unique(Graph *g, int node) { return infer_unique(g, node); }

/* ---------------------------------------------------------------- gradients */

/* Scatter-add of dy's index rows into zeros, by one ScatterND with
 * reduction add: indices flattened to [N, 1], dy's index dims moved to
 * the front and flattened to N (free when axis is 0, the embedding case:
 * one pass over dy, one row add per index). */
int layout_gather_grad(AD *ad, int dy, int idx, int axis, int rank, const int64_t *dims) {
  Graph *g = ad->g;
  if (dy < 0 || idx < 0) return -1;
  Value iv = g->vals[idx], dv = g->vals[dy];
  int q = iv.rank;
  int64_t N = value_nelem(&iv);
  if (iv.dt != DT_I64) {
    Attr to = ad_attr_i("to", DT_I64);
    idx = ad_node(ad, "Cast", 1, &idx, 1, &to);
  }
  idx = ad_reshape(ad, idx, 2, (int64_t[]){N, 1});
  int u = dy;
  if (axis > 0) {
    int64_t perm[MATC_MAX_RANK];
    int k = 0;
    for (int i = 0; i < q; i++) perm[k++] = axis + i;
    for (int i = 0; i < dv.rank; i++)
      if (i < axis || i >= axis + q) perm[k++] = i;
    u = ad_transpose(ad, u, perm);
  }
  int64_t ud[MATC_MAX_RANK], zd[MATC_MAX_RANK];
  ud[0] = N;
  zd[0] = dims[axis];
  for (int i = 0, k = 1; i < rank; i++)
    if (i != axis) ud[k] = zd[k] = dims[i], k++;
  u = ad_reshape(ad, u, rank, ud);
  Attr red = ad_attr_s("reduction", "add");
  int s = ad_node(ad, "ScatterND", 3, (int[]){layout_zeros(ad, dv.dt, rank, zd), idx, u}, 1, &red);
  if (axis > 0) {
    int64_t perm[MATC_MAX_RANK];
    for (int i = 0; i < rank; i++) perm[i] = i < axis ? i + 1 : i == axis ? 0 : i;
    s = ad_transpose(ad, s, perm);
  }
  return s;
}

int grad_gather(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  Value x = g->vals[n.in[0]];
  int axis = norm_axis(attr_i(&n, "axis", 0), x.rank);
  dx[0] = layout_gather_grad(ad, dy[0], n.in[1], axis, x.rank, x.dims);
  return MATC_OK;
}

/* GatherElements: scatter-add dy back through the same indices. */
int grad_gather_elements(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  Value x = g->vals[n.in[0]];
  Attr a[2] = {ad_attr_i("axis", norm_axis(attr_i(&n, "axis", 0), x.rank)), ad_attr_s("reduction", "add")};
  int in[3] = {layout_zeros(ad, x.dt, x.rank, x.dims), n.in[1], dy[0]};
  dx[0] = ad_node(ad, "ScatterElements", 3, in, 2, a);
  return MATC_OK;
}

int grad_gather_nd(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  Value x = g->vals[n.in[0]];
  if (attr_i(&n, "batch_dims", 0) != 0)
    return unsupported(g, node, -1, "the gradient of GatherND with batch_dims is not supported");
  Attr red = ad_attr_s("reduction", "add");
  int in[3] = {layout_zeros(ad, x.dt, x.rank, x.dims), n.in[1], dy[0]};
  dx[0] = ad_node(ad, "ScatterND", 3, in, 1, &red);
  return MATC_OK;
}

/* ReverseSequence is its own inverse. */
int grad_reverse_sequence(AD *ad, int node, const int *dy, int *dx) {
  Node n = ad->g->nodes[node];
  Attr a[2] = {ad_attr_i("time_axis", attr_i(&n, "time_axis", 0)),
               ad_attr_i("batch_axis", attr_i(&n, "batch_axis", 1))};
  dx[0] = ad_node(ad, "ReverseSequence", 2, (int[]){dy[0], n.in[1]}, 2, a);
  return MATC_OK;
}

/* Scatter without reduction: the data's gradient is dy with the written
 * positions zeroed, the updates' is dy read at them (a duplicate index
 * writes once but each duplicate gets dy, as in other frameworks). With
 * reduction add the data's gradient is dy itself. */
int grad_scatter(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  const char *red = attr_s(&n, "reduction", "none");
  int nd = n.op == OP_ScatterND, add = !strcmp(red, "add");
  if (!add && strcmp(red, "none"))
    return unsupported(g, node, -1, "the gradient of a scatter with reduction '%s' is not supported", red);
  int axis = norm_axis(attr_i(&n, "axis", 0), g->vals[n.in[0]].rank);
  Attr ax = ad_attr_i("axis", axis);
  if (ad_needs(ad, node, 0)) {
    if (add) {
      dx[0] = dy[0];
    } else {
      int in[3] = {dy[0], n.in[1], ad_zeros_like(ad, n.in[2])};
      dx[0] = ad_node(ad, nd ? "ScatterND" : "ScatterElements", 3, in, nd ? 0 : 1, &ax);
    }
  }
  if (ad_needs(ad, node, 2))
    dx[2] = ad_node(ad, nd ? "GatherND" : "GatherElements", 2, (int[]){dy[0], n.in[1]}, nd ? 0 : 1, &ax);
  return MATC_OK;
}

/* Compress with a constant condition is a Gather of the kept positions. */
int grad_compress(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  Value x = g->vals[n.in[0]];
  Tensor *c = const_value(g, n.in[1]);
  int axis;
  int64_t len;
  int rc = compress_params(g, node, &axis, &len);
  if (rc) return rc;
  int64_t *kept = arena_alloc(g->arena, sizeof(int64_t) * (len + 1)), k = 0;
  for (int64_t i = 0; i < tensor_nelem(c); i++)
    if (tensor_get_i(c, i)) kept[k++] = i;
  int idx = ad_const_ints(ad, (int)len, kept);
  if (axis >= 0) {
    dx[0] = layout_gather_grad(ad, dy[0], idx, axis, x.rank, x.dims);
  } else {
    int64_t total = value_nelem(&x);
    dx[0] = ad_reshape(ad, layout_gather_grad(ad, dy[0], idx, 0, 1, &total), x.rank, x.dims);
  }
  return MATC_OK;
}
