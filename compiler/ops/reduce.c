/* reduce.c: reductions (ReduceSum...ReduceLogSumExp), ArgMax/ArgMin, the
 * softmax family (Softmax, LogSoftmax, Hardmax), CumSum and TopK.
 *
 * A reduction is one loop kernel: the kept axes are its output vars, the
 * reduced axes its reduction vars. Ops that need a reduced value before
 * they can reduce again (LogSumExp, Softmax: subtract the max first, for
 * numerical stability) write small scratch tensors: values the lowering
 * adds to the graph, produced by the node, so exec allocates them. */
#include "../matc_internal.h"
#include "../../runtime/rt.h"

#include <stdio.h>

/* ---------------------------------------------------------------- helpers */

static int need_float(Graph *g, int node) {
  DType dt = g->vals[g->nodes[node].in[0]].dt;
  if (dt != DT_F32 && dt != DT_F64)
    return unsupported(g, node, 0, "%s on %s is not supported (float32 and float64 are)",
                       g->nodes[node].op_type, dt_name(dt));
  return MATC_OK;
}

static int need_input(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (n->nin < 1 || n->in[0] < 0) return fail(g, node, -1, "input is missing");
  return MATC_OK;
}

/* ---------------------------------------------------------------- Reduce* */

/* Which axes of X the node reduces. Axes are an attribute, or from opset
 * 13 (ReduceSum) / 18 (the others) an optional input. No axes means all
 * of them, unless noop_with_empty_axes says the op is the identity
 * (*noop = 1). */
static int reduce_axes(Graph *g, int node, char *red, int *noop) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int64_t axes[MATC_MAX_RANK];
  int na = 0;
  if (n->nin >= 2 && n->in[1] >= 0) {
    Tensor *t = known_value(g, n->in[1]);
    if (!t) return unsupported(g, node, 1, "axes must be known at compile time");
    na = (int)tensor_nelem(t);
    if (na > MATC_MAX_RANK) return fail(g, node, 1, "too many axes");
    for (int i = 0; i < na; i++) axes[i] = tensor_get_i(t, i);
  } else {
    na = attr_ints(n, "axes", axes, MATC_MAX_RANK);
    if (na > MATC_MAX_RANK) return fail(g, node, -1, "too many axes");
    if (na < 0) na = 0;
  }
  *noop = na == 0 && attr_i(n, "noop_with_empty_axes", 0);
  for (int i = 0; i < x->rank; i++) red[i] = na == 0 && !*noop;
  for (int i = 0; i < na; i++) {
    int a = norm_axis(axes[i], x->rank);
    if (a < 0) return fail(g, node, -1, "axis %lld out of range", (long long)axes[i]);
    red[a] = 1;
  }
  return MATC_OK;
}

int infer_reduce(Graph *g, int node) {
  if (need_input(g, node)) return MATC_ERR;
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  char red[MATC_MAX_RANK];
  int noop;
  int rc = reduce_axes(g, node, red, &noop);
  if (rc) return rc;
  int keep = (int)attr_i(n, "keepdims", 1);
  int64_t d[MATC_MAX_RANK];
  int r = 0;
  for (int i = 0; i < x->rank; i++) {
    if (!red[i]) d[r++] = x->dims[i];
    else if (keep) d[r++] = 1;
  }
  value_set(&g->vals[n->out[0]], x->dt, r, d);
  return MATC_OK;
}

/* A loop kernel reducing X over the axes marked in red: kept axes are
 * vars 0..nvar-1 (out's layout, with or without keepdims), reduced axes
 * follow. *xl is X's load at the current point. */
static Kernel *reduce_kernel(Graph *g, int node, int xv, const char *red, int out,
                             ReduceKind rk, Expr **xl) {
  Value *x = &g->vals[xv];
  int64_t xs[MATC_MAX_RANK], ext[KMAX_VARS], st[KMAX_VARS] = {0};
  shape_strides(x->rank, x->dims, xs);
  int nv = 0, nr = 0;
  for (int i = 0; i < x->rank; i++)
    if (!red[i]) { ext[nv] = x->dims[i]; st[nv] = xs[i]; nv++; }
  for (int i = 0; i < x->rank; i++)
    if (red[i]) { ext[nv + nr] = x->dims[i]; st[nv + nr] = xs[i]; nr++; }
  Kernel *k = k_loop(g, node, out, nv, ext);
  shape_strides(nv, ext, k->out_stride);
  k->nred = nr;
  for (int i = 0; i < nr; i++) k->ext[nv + i] = ext[nv + i];
  k->red = rk;
  *xl = e_load(g, xv, 0, st, nv + nr);
  return k;
}

int lower_reduce(Graph *g, int node) {
  Node *n = &g->nodes[node];
  int xv = n->in[0], out = n->out[0];
  char red[MATC_MAX_RANK];
  int noop;
  int rc = reduce_axes(g, node, red, &noop);
  if (rc) return rc;
  Value *x = &g->vals[xv];
  DType dt = x->dt;
  if (noop) {
    Kernel *k = k_elementwise(g, node, out);
    k->body = e_load_bcast(g, xv, x->rank);
    return MATC_OK;
  }
  int64_t count = 1;
  for (int i = 0; i < x->rank; i++)
    if (red[i]) count *= x->dims[i];
  /* log and sqrt of integers are computed in double, then truncated. */
  DType ct = dt_is_float(dt) ? dt : DT_F64;
  Expr *xl;
  Kernel *k;
  switch (n->op) {
  case OP_ReduceSum: k = reduce_kernel(g, node, xv, red, out, R_SUM, &xl); k->body = xl; break;
  case OP_ReduceProd: k = reduce_kernel(g, node, xv, red, out, R_PROD, &xl); k->body = xl; break;
  case OP_ReduceMax: k = reduce_kernel(g, node, xv, red, out, R_MAX, &xl); k->body = xl; break;
  case OP_ReduceMin: k = reduce_kernel(g, node, xv, red, out, R_MIN, &xl); k->body = xl; break;
  case OP_ReduceMean:
    k = reduce_kernel(g, node, xv, red, out, R_SUM, &xl);
    k->body = xl;
    k->post = e_bin(g, B_DIV, e_acc(g, dt), e_const(g, dt, (double)count));
    break;
  case OP_ReduceL1:
    k = reduce_kernel(g, node, xv, red, out, R_SUM, &xl);
    k->body = e_un(g, U_ABS, xl);
    break;
  case OP_ReduceSumSquare: case OP_ReduceL2:
    k = reduce_kernel(g, node, xv, red, out, R_SUM, &xl);
    k->body = e_bin(g, B_MUL, xl, xl);
    if (n->op == OP_ReduceL2)
      k->post = e_cast(g, dt, e_un(g, U_SQRT, e_cast(g, ct, e_acc(g, dt))));
    break;
  case OP_ReduceLogSum:
    k = reduce_kernel(g, node, xv, red, out, R_SUM, &xl);
    k->body = xl;
    k->post = e_cast(g, dt, e_un(g, U_LOG, e_cast(g, ct, e_acc(g, dt))));
    break;
  case OP_ReduceLogSumExp: {
    /* m = max x; y = m + log(sum exp(x - m)): exp never overflows. */
    Value *o = &g->vals[out];
    int m = value_scratch(g, node, "max", dt, o->rank, o->dims);
    k = reduce_kernel(g, node, xv, red, m, R_MAX, &xl);
    k->body = xl;
    k = reduce_kernel(g, node, xv, red, out, R_SUM, &xl);
    int64_t ms[KMAX_VARS] = {0};
    shape_strides(k->nvar, k->ext, ms);
    Expr *ml = e_cast(g, ct, e_load(g, m, 0, ms, k->nvar));
    /* An all -inf row has max -inf: subtract 0 there, not -inf (NaN). */
    if (dt_is_float(dt)) {
      Expr *fin = e_bin(g, B_GT, ml, e_const(g, ct, -1.0 / 0.0));
      ml = e_sel(g, fin, ml, e_const(g, ct, 0));
    }
    k->body = e_un(g, U_EXP, e_bin(g, B_SUB, e_cast(g, ct, xl), ml));
    k->post = e_cast(g, dt, e_bin(g, B_ADD, ml, e_un(g, U_LOG, e_acc(g, ct))));
    break;
  }
  default: return fail(g, node, -1, "internal error: not a reduction");
  }
  return MATC_OK;
}

/* ---------------------------------------------------------------- ArgMax, ArgMin */

static int arg_axis(Graph *g, int node, int *axis) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int64_t a = attr_i(n, "axis", 0);
  *axis = norm_axis(a, x->rank);
  if (*axis < 0) return fail(g, node, -1, "axis %lld out of range", (long long)a);
  return MATC_OK;
}

int infer_argmax(Graph *g, int node) {
  if (need_input(g, node)) return MATC_ERR;
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int axis;
  if (arg_axis(g, node, &axis)) return MATC_ERR;
  int keep = (int)attr_i(n, "keepdims", 1);
  int64_t d[MATC_MAX_RANK];
  int r = 0;
  for (int i = 0; i < x->rank; i++) {
    if (i != axis) d[r++] = x->dims[i];
    else if (keep) d[r++] = 1;
  }
  value_set(&g->vals[n->out[0]], DT_I64, r, d);
  return MATC_OK;
}

int lower_argmax(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int axis;
  if (arg_axis(g, node, &axis)) return MATC_ERR;
  char red[MATC_MAX_RANK] = {0};
  red[axis] = 1;
  Expr *xl;
  Kernel *k = reduce_kernel(g, node, n->in[0], red, n->out[0],
                            n->op == OP_ArgMax ? R_ARGMAX : R_ARGMIN, &xl);
  k->body = xl;
  if (attr_i(n, "select_last_index", 0)) {
    /* The kernel keeps the first best; walk the axis backwards so the
     * first it sees is the last, and map the index back. */
    int64_t len = x->dims[axis], s = xl->stride[k->nvar];
    xl->off += (len - 1) * s;
    xl->stride[k->nvar] = -s;
    k->post = e_bin(g, B_SUB, e_consti(g, DT_I64, len - 1), e_acc(g, DT_I64));
  }
  return MATC_OK;
}

/* ---------------------------------------------------------------- Softmax family */

/* X seen as [outer, len, inner] with the op's axis as len. Before opset
 * 13 the op flattens X to 2-D at axis (inner = 1); from 13 it works on
 * the one axis. */
static int softmax_dims(Graph *g, int node, int64_t *outer, int64_t *len, int64_t *inner) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  int legacy = NODE_OPSET(g, n) < 13;
  int64_t a = attr_i(n, "axis", legacy ? 1 : -1);
  if (a < 0) a += x->rank;
  if (a < 0 || a > x->rank || (!legacy && a == x->rank) || x->rank == 0)
    return fail(g, node, -1, "axis %lld out of range for rank %d", (long long)attr_i(n, "axis", 0),
                x->rank);
  int ax = (int)a;
  *outer = shape_nelem(ax, x->dims);
  if (legacy) {
    *len = shape_nelem(x->rank - ax, x->dims + ax);
    *inner = 1;
  } else {
    *len = x->dims[ax];
    *inner = shape_nelem(x->rank - ax - 1, x->dims + ax + 1);
  }
  return MATC_OK;
}

int infer_softmax(Graph *g, int node) {
  if (need_input(g, node)) return MATC_ERR;
  if (need_float(g, node)) return MATC_UNSUPPORTED;
  int64_t o, l, i;
  if (softmax_dims(g, node, &o, &l, &i)) return MATC_ERR;
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  value_set(&g->vals[n->out[0]], x->dt, x->rank, x->dims);
  return MATC_OK;
}

int lower_softmax(Graph *g, int node) {
  Node *n = &g->nodes[node];
  int xv = n->in[0], out = n->out[0];
  DType dt = g->vals[xv].dt;
  int64_t outer, len, inner;
  if (softmax_dims(g, node, &outer, &len, &inner)) return MATC_ERR;
  int64_t rd[2] = {outer, inner}, full[3] = {outer, len, inner};
  /* Row statistics: vars (outer, inner), reduction var over the axis. */
  int64_t xr[KMAX_VARS] = {len * inner, 1, inner}, rs[KMAX_VARS] = {inner, 1};
  /* Final pass: vars (outer, axis, inner). */
  int64_t xf[KMAX_VARS] = {len * inner, inner, 1}, rf[KMAX_VARS] = {inner, 0, 1};

  if (n->op == OP_Hardmax) {
    /* 1 at the first maximum of each row, 0 elsewhere. */
    int am = value_scratch(g, node, "argmax", DT_I64, 2, rd);
    Kernel *k = k_loop(g, node, am, 2, rd);
    shape_strides(2, rd, k->out_stride);
    k->nred = 1;
    k->ext[2] = len;
    k->red = R_ARGMAX;
    k->body = e_load(g, xv, 0, xr, 3);
    k = k_loop(g, node, out, 3, full);
    shape_strides(3, full, k->out_stride);
    Expr *hit = e_bin(g, B_EQ, e_index(g, 1), e_load(g, am, 0, rf, 3));
    k->body = e_sel(g, hit, e_const(g, dt, 1), e_const(g, dt, 0));
    return MATC_OK;
  }

  /* m = max over the row; s = sum exp(x - m) (LogSoftmax stores log s). */
  int m = value_scratch(g, node, "max", dt, 2, rd);
  int s = value_scratch(g, node, n->op == OP_Softmax ? "sum" : "logsum", dt, 2, rd);
  Kernel *k = k_loop(g, node, m, 2, rd);
  shape_strides(2, rd, k->out_stride);
  k->nred = 1;
  k->ext[2] = len;
  k->red = R_MAX;
  k->body = e_load(g, xv, 0, xr, 3);

  k = k_loop(g, node, s, 2, rd);
  shape_strides(2, rd, k->out_stride);
  k->nred = 1;
  k->ext[2] = len;
  k->red = R_SUM;
  k->body = e_un(g, U_EXP, e_bin(g, B_SUB, e_load(g, xv, 0, xr, 3), e_load(g, m, 0, rs, 2)));
  if (n->op == OP_LogSoftmax) k->post = e_un(g, U_LOG, e_acc(g, dt));
  else k->post = e_un(g, U_RECIP, e_acc(g, dt));

  k = k_loop(g, node, out, 3, full);
  shape_strides(3, full, k->out_stride);
  Expr *d = e_bin(g, B_SUB, e_load(g, xv, 0, xf, 3), e_load(g, m, 0, rf, 3));
  Expr *sl = e_load(g, s, 0, rf, 3);
  if (n->op == OP_LogSoftmax) k->body = e_bin(g, B_SUB, d, sl);
  else k->body = e_bin(g, B_MUL, e_un(g, U_EXP, d), sl);
  return MATC_OK;
}

/* ---------------------------------------------------------------- CumSum */

static int cumsum_axis(Graph *g, int node, int *axis) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  if (n->nin < 2 || n->in[1] < 0) return fail(g, node, -1, "axis input is missing");
  Tensor *t = known_value(g, n->in[1]);
  if (!t) return unsupported(g, node, 1, "axis must be known at compile time");
  if (tensor_nelem(t) != 1) return fail(g, node, 1, "axis must be a scalar");
  int64_t a = tensor_get_i(t, 0);
  *axis = norm_axis(a, x->rank);
  if (*axis < 0) return fail(g, node, 1, "axis %lld out of range", (long long)a);
  return MATC_OK;
}

int infer_cumsum(Graph *g, int node) {
  if (need_input(g, node)) return MATC_ERR;
  int axis;
  int rc = cumsum_axis(g, node, &axis);
  if (rc) return rc;
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  value_set(&g->vals[n->out[0]], x->dt, x->rank, x->dims);
  return MATC_OK;
}

/* y[.., j, ..] = sum over r of x[.., r, ..] where r is before j (or after,
 * reversed; j itself unless exclusive): one masked reduction over the
 * whole axis. Quadratic in the axis length, which is fine for the short
 * axes (sequence positions) models use CumSum on, and keeps it a loop
 * kernel. */
int lower_cumsum(Graph *g, int node) {
  Node *n = &g->nodes[node];
  int xv = n->in[0], axis;
  if (cumsum_axis(g, node, &axis)) return MATC_ERR;
  Value *x = &g->vals[xv];
  int r = x->rank;
  int64_t xs[MATC_MAX_RANK], st[KMAX_VARS] = {0};
  shape_strides(r, x->dims, xs);
  for (int i = 0; i < r; i++) st[i] = i == axis ? 0 : xs[i];
  st[r] = xs[axis];
  Kernel *k = k_elementwise(g, node, n->out[0]);
  k->nred = 1;
  k->ext[r] = x->dims[axis];
  k->red = R_SUM;
  int excl = (int)attr_i(n, "exclusive", 0), rev = (int)attr_i(n, "reverse", 0);
  int op = rev ? (excl ? B_GT : B_GE) : (excl ? B_LT : B_LE);
  Expr *in = e_bin(g, op, e_index(g, r), e_index(g, axis));
  k->body = e_sel(g, in, e_load(g, xv, 0, st, r + 1), e_const(g, x->dt, 0));
  return MATC_OK;
}

/* ---------------------------------------------------------------- TopK */

static int topk_params(Graph *g, int node, int *axis, int64_t *k) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  if (NODE_OPSET(g, n) >= 10) {
    if (n->nin < 2 || n->in[1] < 0) return fail(g, node, -1, "input K is missing");
    Tensor *t = known_value(g, n->in[1]);
    if (!t) return unsupported(g, node, 1, "K must be known at compile time");
    if (tensor_nelem(t) != 1) return fail(g, node, 1, "K must hold one value");
    *k = tensor_get_i(t, 0);
  } else {
    const Attr *a = attr_get(n, "k");
    if (!a) return fail(g, node, -1, "attribute 'k' is missing");
    *k = a->i;
  }
  int64_t a = attr_i(n, "axis", -1);
  *axis = norm_axis(a, x->rank);
  if (*axis < 0) return fail(g, node, -1, "axis %lld out of range", (long long)a);
  if (*k < 0 || *k > x->dims[*axis])
    return fail(g, node, 1, "K=%lld is outside [0, %lld]", (long long)*k, (long long)x->dims[*axis]);
  return MATC_OK;
}

int infer_topk(Graph *g, int node) {
  if (need_input(g, node)) return MATC_ERR;
  if (need_float(g, node)) return MATC_UNSUPPORTED;
  Node *n = &g->nodes[node];
  if (n->nout < 2) return fail(g, node, -1, "needs two outputs");
  int axis;
  int64_t k;
  int rc = topk_params(g, node, &axis, &k);
  if (rc) return rc;
  Value *x = &g->vals[n->in[0]];
  int64_t d[MATC_MAX_RANK];
  for (int i = 0; i < x->rank; i++) d[i] = i == axis ? k : x->dims[i];
  if (n->out[0] >= 0) value_set(&g->vals[n->out[0]], x->dt, x->rank, d);
  if (n->out[1] >= 0) value_set(&g->vals[n->out[1]], DT_I64, x->rank, d);
  return MATC_OK;
}

/* The runtime's matc_rt_topk; both outputs are always written, so an
 * absent one gets scratch storage. Results are always sorted, which
 * sorted=0 (any order) allows. */
int lower_topk(Graph *g, int node) {
  Node *n = &g->nodes[node];
  int axis;
  int64_t kk;
  if (topk_params(g, node, &axis, &kk)) return MATC_ERR;
  Value *x = &g->vals[n->in[0]];
  int64_t d[MATC_MAX_RANK];
  for (int i = 0; i < x->rank; i++) d[i] = i == axis ? kk : x->dims[i];
  DType dt = x->dt;
  int xr = x->rank;
  int64_t outer = shape_nelem(axis, x->dims), len = x->dims[axis];
  int64_t inner = shape_nelem(xr - axis - 1, x->dims + axis + 1);
  int vals = n->out[0] >= 0 ? n->out[0] : value_scratch(g, node, "values", dt, xr, d);
  int idx = n->out[1] >= 0 ? n->out[1] : value_scratch(g, node, "indices", DT_I64, xr, d);
  Kernel *k = k_extern(g, node, EXT_topk);
  k_arg(k, n->in[0], 0);
  k_arg(k, vals, 0);
  k_arg(k, idx, 0);
  k->np = TOPK_NPARAMS;
  k->p[TOPK_DT] = dt;
  k->p[TOPK_OUTER] = outer;
  k->p[TOPK_N] = len;
  k->p[TOPK_INNER] = inner;
  k->p[TOPK_K] = kk;
  k->p[TOPK_LARGEST] = attr_i(n, "largest", 1) != 0;
  return MATC_OK;
}

/* ---------------------------------------------------------------- gradients
 * Written in ops (so they fuse like forward code). A reduction's dy and y
 * are first reshaped to x's rank with 1 at the reduced axes (a view), so
 * numpy broadcasting spreads them over what was reduced. */

static int grad_expand(AD *ad, int v, int like) {
  Value l = ad->g->vals[like];
  return ad_node(ad, "Expand", 2, (int[]){v, ad_const_ints(ad, l.rank, l.dims)}, 0, NULL);
}

/* v reshaped to rank r with dims kd, unless it already has that rank. */
static int keep_rank(AD *ad, int v, int r, const int64_t *kd) {
  return ad->g->vals[v].rank == r ? v : ad_reshape(ad, v, r, kd);
}

/* ReduceMax/Min send the gradient to the elements equal to the result;
 * ties split it evenly (as PyTorch's amax/amin do), so the gradient is a
 * valid subgradient and sums to dy. ReduceProd uses y / x (x must not be
 * 0); ReduceL2 uses x / y (y must not be 0). */
int grad_reduce(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  int x = n.in[0];
  Value vx = g->vals[x];
  DType dt = vx.dt;
  char red[MATC_MAX_RANK];
  int noop;
  int rc = reduce_axes(g, node, red, &noop);
  if (rc) return rc;
  if (noop) { dx[0] = dy[0]; return MATC_OK; }       /* the forward copies x */
  int64_t kd[MATC_MAX_RANK], axes[MATC_MAX_RANK], count = 1;
  int na = 0;
  for (int i = 0; i < vx.rank; i++) {
    kd[i] = red[i] ? 1 : vx.dims[i];
    if (red[i]) { count *= vx.dims[i]; axes[na++] = i; }
  }
  int d = keep_rank(ad, dy[0], vx.rank, kd), y = keep_rank(ad, n.out[0], vx.rank, kd);
  int r;
  switch (n.op) {
  case OP_ReduceSum: r = grad_expand(ad, d, x); break;
  case OP_ReduceMean: r = grad_expand(ad, ad_scale(ad, d, 1.0 / (double)count), x); break;
  case OP_ReduceSumSquare: r = ad_mul(ad, ad_scale(ad, x, 2.0), d); break;
  case OP_ReduceL1: r = ad_mul(ad, ad_unary(ad, "Sign", x), d); break;
  case OP_ReduceL2: r = ad_mul(ad, x, ad_div(ad, d, y)); break;
  case OP_ReduceLogSum: r = grad_expand(ad, ad_div(ad, d, ad_unary(ad, "Exp", y)), x); break;
  case OP_ReduceLogSumExp:                           /* softmax of x times dy */
    r = ad_mul(ad, d, ad_unary(ad, "Exp", ad_sub(ad, x, y)));
    break;
  case OP_ReduceProd: r = ad_mul(ad, d, ad_div(ad, y, x)); break;
  case OP_ReduceMax: case OP_ReduceMin: {
    int eq = ad_node(ad, "Equal", 2, (int[]){x, y}, 0, NULL);
    Attr to = ad_attr_i("to", dt);
    int mask = ad_node(ad, "Cast", 1, &eq, 1, &to);
    int cnt = ad_reduce_sum(ad, mask, na, axes, 1);
    r = ad_mul(ad, mask, ad_div(ad, d, cnt));
    break;
  }
  default: return grad_none(ad, node, dy, dx);
  }
  dx[0] = r;
  return MATC_OK;
}

/* Softmax: dx = y (dy - sum(dy y)); LogSoftmax: dx = dy - exp(y) sum(dy),
 * sums over the op's axes with keepdims (before opset 13: every axis from
 * `axis` on, as the op flattens x to 2-D there). Hardmax is piecewise
 * constant: zero. */
int grad_softmax(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  int x = n.in[0], y = n.out[0], d = dy[0];
  if (n.op == OP_Hardmax) { dx[0] = ad_zeros_like(ad, x); return MATC_OK; }
  int64_t outer, len, inner;
  if (softmax_dims(g, node, &outer, &len, &inner)) return MATC_ERR;
  int rank = g->vals[x].rank, legacy = NODE_OPSET(g, &n) < 13;
  int64_t ax = attr_i(&n, "axis", legacy ? 1 : -1);
  if (ax < 0) ax += rank;                          /* softmax_dims checked it */
  int64_t axes[MATC_MAX_RANK];
  int na = 0;
  for (int64_t i = ax; i < (legacy ? rank : ax + 1); i++) axes[na++] = i;
  if (na == 0) {      /* legacy axis == rank: one-element rows, constant y */
    dx[0] = ad_zeros_like(ad, x);
    return MATC_OK;
  }
  if (n.op == OP_Softmax) {
    int s = ad_reduce_sum(ad, ad_mul(ad, d, y), na, axes, 1);
    dx[0] = ad_mul(ad, y, ad_sub(ad, d, s));
  } else {
    int s = ad_reduce_sum(ad, d, na, axes, 1);
    dx[0] = ad_sub(ad, d, ad_mul(ad, ad_unary(ad, "Exp", y), s));
  }
  return MATC_OK;
}

/* The transpose of a cumulative sum is the cumulative sum the other way. */
int grad_cumsum(AD *ad, int node, const int *dy, int *dx) {
  Node n = ad->g->nodes[node];
  Attr a[2] = {ad_attr_i("exclusive", attr_i(&n, "exclusive", 0)),
               ad_attr_i("reverse", !attr_i(&n, "reverse", 0))};
  dx[0] = ad_node(ad, "CumSum", 2, (int[]){dy[0], n.in[1]}, 2, a);
  return MATC_OK;
}

/* TopK values: dy goes back to where each value came from (indices are
 * distinct along the axis, so the scatter never collides). */
int grad_topk(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  if (dy[0] < 0) return MATC_OK;
  int axis;
  int64_t k;
  if (topk_params(g, node, &axis, &k)) return MATC_ERR;
  int idx = n.out[1];
  if (idx < 0) {                        /* indices unused by the forward graph */
    int outs[2];
    Attr a[2] = {ad_attr_i("axis", axis), ad_attr_i("largest", attr_i(&n, "largest", 1))};
    ad_node_n(ad, "TopK", 2, (int[]){n.in[0], ad_const_ints(ad, 1, &k)}, 2, a, 2, outs);
    idx = ad->status ? -1 : outs[1];
    if (idx < 0) return MATC_OK;
  }
  Attr ax = ad_attr_i("axis", axis);
  dx[0] = ad_node(ad, "ScatterElements", 3, (int[]){ad_zeros_like(ad, n.in[0]), idx, dy[0]}, 1, &ax);
  return MATC_OK;
}
