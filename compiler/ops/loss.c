/* loss.c: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.
 *
 * Both see the input as X [N, C, D] (D = product of the trailing dims) and
 * the target as T [N, D]. Per element:
 *   l[n,d] = valid ? -X[n, t, d] * w[t] : 0,  t = T[n,d], w = weight or 1,
 *   valid  = t != ignore_index
 * and reduction 'none' keeps l, 'sum' adds it up, 'mean' divides the sum by
 * the sum of the weights of the valid elements (the count, unweighted).
 * SoftmaxCrossEntropyLoss first computes log-softmax over C (max-shifted)
 * into its optional second output or a scratch value. Targets out of range
 * are clamped for the load, so no read leaves the tensor. */
#include "../matc_internal.h"

#include <string.h>

typedef struct {
  int64_t N, C, D;
  int has_ii;
  int64_t ii;
  const char *reduction;
} LossShape;

static int loss_shape(Graph *g, int node, LossShape *s) {
  Node *n = &g->nodes[node];
  if (n->nin < 2 || n->in[0] < 0 || n->in[1] < 0) return fail(g, node, -1, "needs input and target");
  Value *x = &g->vals[n->in[0]], *t = &g->vals[n->in[1]];
  if (x->dt != DT_F32 && x->dt != DT_F64)
    return unsupported(g, node, 0, "%s on %s is not supported", n->op_type, dt_name(x->dt));
  if (t->dt != DT_I64 && t->dt != DT_I32) return fail(g, node, 1, "target must be int32 or int64");
  if (x->rank < 2) return fail(g, node, 0, "input must have rank >= 2 ([N, C, ...])");
  if (t->rank != x->rank - 1 || t->dims[0] != x->dims[0])
    return fail(g, node, 1, "target shape must be [N, d1, ...] of input [N, C, d1, ...]");
  for (int i = 1; i < t->rank; i++)
    if (t->dims[i] != x->dims[i + 1]) return fail(g, node, 1, "target dim %d does not match input dim %d", i, i + 1);
  s->N = x->dims[0];
  s->C = x->dims[1];
  s->D = shape_nelem(x->rank - 2, x->dims + 2);
  const Attr *ii = attr_get(n, "ignore_index");
  s->has_ii = ii != NULL;
  s->ii = ii ? ii->i : 0;
  s->reduction = attr_s(n, "reduction", "mean");
  if (strcmp(s->reduction, "mean") && strcmp(s->reduction, "sum") && strcmp(s->reduction, "none"))
    return fail(g, node, -1, "unknown reduction '%s'", s->reduction);
  if (n->nin > 2 && n->in[2] >= 0) {
    Value *w = &g->vals[n->in[2]];
    if (w->rank != 1 || w->dims[0] != s->C || w->dt != x->dt)
      return fail(g, node, 2, "weight must be [C] with the input's data type");
  }
  return MATC_OK;
}

int infer_nll(Graph *g, int node) {
  LossShape s;
  int rc = loss_shape(g, node, &s);
  if (rc) return rc;
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]], *t = &g->vals[n->in[1]];
  if (strcmp(s.reduction, "none") == 0) value_set(&g->vals[n->out[0]], x->dt, t->rank, t->dims);
  else value_set(&g->vals[n->out[0]], x->dt, 0, NULL);
  if (n->op == OP_SoftmaxCrossEntropyLoss && n->nout > 1 && n->out[1] >= 0)
    value_set(&g->vals[n->out[1]], x->dt, x->rank, x->dims);
  return MATC_OK;
}

/* log_softmax over C of X [N, C, D] into lp. */
static void emit_log_softmax(Graph *g, int node, int xv, int lp, LossShape *s) {
  DType dt = g->vals[xv].dt;
  int64_t nd[2] = {s->N, s->D};
  int m = value_scratch(g, node, "max", dt, 2, nd);
  int ls = value_scratch(g, node, "logsum", dt, 2, nd);
  int64_t xr[KMAX_VARS] = {s->C * s->D, 1, s->D};  /* vars n, d, reduction c */
  int64_t rs[KMAX_VARS] = {s->D, 1};
  Kernel *k = k_loop(g, node, m, 2, nd);
  shape_strides(2, nd, k->out_stride);
  k->nred = 1;
  k->ext[2] = s->C;
  k->red = R_MAX;
  k->body = e_load(g, xv, 0, xr, 3);
  k = k_loop(g, node, ls, 2, nd);
  shape_strides(2, nd, k->out_stride);
  k->nred = 1;
  k->ext[2] = s->C;
  k->red = R_SUM;
  k->body = e_un(g, U_EXP, e_bin(g, B_SUB, e_load(g, xv, 0, xr, 3), e_load(g, m, 0, rs, 2)));
  k->post = e_un(g, U_LOG, e_acc(g, dt));
  int64_t full[3] = {s->N, s->C, s->D};
  int64_t xf[KMAX_VARS] = {s->C * s->D, s->D, 1}, rf[KMAX_VARS] = {s->D, 0, 1};
  k = k_loop(g, node, lp, 3, full);
  shape_strides(3, full, k->out_stride);
  k->body = e_bin(g, B_SUB, e_bin(g, B_SUB, e_load(g, xv, 0, xf, 3), e_load(g, m, 0, rf, 3)),
                  e_load(g, ls, 0, rf, 3));
}

/* The weighted loss (want_weight = 0) or the weight of element (n, d)
 * (want_weight = 1), with vars 0 = n and 1 = d. */
static Expr *element(Graph *g, int node, int xv, LossShape *s, int want_weight) {
  Node *n = &g->nodes[node];
  DType dt = g->vals[xv].dt;
  int64_t ts[KMAX_VARS] = {s->D, 1};
  Expr *t = e_cast(g, DT_I64, e_load(g, n->in[1], 0, ts, 2));
  Expr *tc = e_bin(g, B_MIN, e_bin(g, B_MAX, t, e_consti(g, DT_I64, 0)), e_consti(g, DT_I64, s->C - 1));
  Expr *w = e_const(g, dt, 1);
  if (n->nin > 2 && n->in[2] >= 0) {
    w = e_load(g, n->in[2], 0, (int64_t[KMAX_VARS]){0}, 0);
    e_load_dyn(w, tc, 1);
  }
  Expr *v = w;
  if (!want_weight) {
    int64_t xs[KMAX_VARS] = {s->C * s->D, 1};
    Expr *x = e_load(g, xv, 0, xs, 2);
    e_load_dyn(x, tc, s->D);
    v = e_bin(g, B_MUL, e_un(g, U_NEG, x), w);
  }
  if (!s->has_ii) return v;
  Expr *valid = e_bin(g, B_NE, t, e_consti(g, DT_I64, s->ii));
  return e_sel(g, valid, v, e_const(g, dt, 0));
}

int lower_nll(Graph *g, int node) {
  Node *n = &g->nodes[node];
  LossShape s;
  int rc = loss_shape(g, node, &s);
  if (rc) return rc;
  int xv = n->in[0];
  DType dt = g->vals[xv].dt;
  if (n->op == OP_SoftmaxCrossEntropyLoss) {
    Value *x = &g->vals[xv];
    int lp = n->nout > 1 && n->out[1] >= 0 ? n->out[1] : value_scratch(g, node, "log_prob", dt, x->rank, x->dims);
    emit_log_softmax(g, node, xv, lp, &s);
    xv = lp;
  }
  int64_t nd[2] = {s.N, s.D};
  int out = n->out[0];
  if (strcmp(s.reduction, "none") == 0) {
    Kernel *k = k_loop(g, node, out, 2, nd);
    shape_strides(2, nd, k->out_stride);
    k->body = element(g, node, xv, &s, 0);
    return MATC_OK;
  }
  int mean = strcmp(s.reduction, "mean") == 0;
  int sum = mean ? value_scratch(g, node, "sum", dt, 0, NULL) : out;
  Kernel *k = k_loop(g, node, sum, 0, NULL);
  k->nred = 2;
  k->ext[0] = s.N;
  k->ext[1] = s.D;
  k->red = R_SUM;
  k->body = element(g, node, xv, &s, 0);
  if (!mean) return MATC_OK;
  int wsum = value_scratch(g, node, "weight_sum", dt, 0, NULL);
  k = k_loop(g, node, wsum, 0, NULL);
  k->nred = 2;
  k->ext[0] = s.N;
  k->ext[1] = s.D;
  k->red = R_SUM;
  k->body = element(g, node, xv, &s, 1);
  k = k_loop(g, node, out, 0, NULL);
  k->body = e_bin(g, B_DIV, e_load(g, sum, 0, (int64_t[KMAX_VARS]){0}, 0),
                  e_load(g, wsum, 0, (int64_t[KMAX_VARS]){0}, 0));
  return MATC_OK;
}

/* ---------------------------------------------------------------- gradients
 * With M[n,c,d] = (t[n,d] == c and t != ignore_index) as a float mask and
 * w the weights (1 without), the loss is a weighted sum over M:
 *   none: dX = -M w dy[n,d]     sum: dX = -M w dy     mean: dX = -M w dy / W
 * where W = sum(M w), the mean's divisor. For the weights,
 *   dw[c] = -sum_{n,d} M g (X + L)  (mean: g = dy / W, L the loss value;
 *   otherwise g = dy and no L term, as W is then no divisor).
 * SoftmaxCrossEntropyLoss applies this to its log-probabilities P and
 * takes it through log-softmax: dx = G - exp(P) sum_c G, G the gradient
 * at P plus any gradient of its log_prob output. Everything is
 * elementwise or a reduction, so it fuses; M is a comparison in those
 * kernels, never a one-hot tensor in memory. */

static int cast_to(AD *ad, int v, DType dt) {
  Attr to = ad_attr_i("to", dt);
  return ad_node(ad, "Cast", 1, &v, 1, &to);
}

int grad_nll(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  LossShape s;
  int rc = loss_shape(g, node, &s);
  if (rc) return rc;
  int xv = n.in[0], tv = n.in[1], wv = n.nin > 2 ? n.in[2] : -1;
  int sce = n.op == OP_SoftmaxCrossEntropyLoss;
  Value vx = g->vals[xv], vt = g->vals[tv];
  DType dt = vx.dt;
  int r = vx.rank;
  /* the target as [N, 1, d...] against a class index [1, C, 1...] */
  int64_t td[MATC_MAX_RANK], cd[MATC_MAX_RANK];
  for (int i = 0; i < r; i++) {
    td[i] = i == 0 ? s.N : i == 1 ? 1 : vt.dims[i - 1];
    cd[i] = i == 1 ? s.C : 1;
  }
  int t = ad_reshape(ad, vt.dt == DT_I64 ? tv : cast_to(ad, tv, DT_I64), r, td);
  int cls = ad_node(ad, "Range", 3, (int[]){ad_const(ad, DT_I64, 0), ad_const(ad, DT_I64, (double)s.C),
                                            ad_const(ad, DT_I64, 1)}, 0, NULL);
  int c = ad_reshape(ad, cls, r, cd);
  int hit = ad_node(ad, "Equal", 2, (int[]){t, c}, 0, NULL);
  if (s.has_ii) {
    int ign = ad_node(ad, "Equal", 2, (int[]){t, ad_const(ad, DT_I64, (double)s.ii)}, 0, NULL);
    hit = ad_node(ad, "And", 2, (int[]){hit, ad_unary(ad, "Not", ign)}, 0, NULL);
  }
  int m = cast_to(ad, hit, dt);
  int wr = wv >= 0 ? ad_reshape(ad, wv, r, cd) : -1;
  int mw = wr >= 0 ? ad_mul(ad, m, wr) : m;
  int mean = strcmp(s.reduction, "mean") == 0, none = strcmp(s.reduction, "none") == 0;
  int gd = -1;                                        /* g, broadcast against X */
  if (dy[0] >= 0) {
    gd = none ? ad_reshape(ad, dy[0], r, td) : dy[0];
    if (mean) gd = ad_div(ad, gd, ad_node(ad, "ReduceSum", 1, &mw, 1, (Attr[]){ad_attr_i("keepdims", 0)}));
  }
  /* P: X itself, or the log-probabilities SCE computed (or recomputes) */
  int p = xv;
  if (sce) {
    Attr ax = ad_attr_i("axis", 1);
    p = n.nout > 1 && n.out[1] >= 0 ? n.out[1] : ad_node(ad, "LogSoftmax", 1, &xv, 1, &ax);
  }
  if (ad_needs(ad, node, 0)) {
    /* mw is [N, C, d...] already (target against class index), so is gp */
    int gp = gd >= 0 ? ad_neg(ad, ad_mul(ad, mw, gd)) : -1;
    if (sce) {
      if (n.nout > 1 && n.out[1] >= 0 && dy[1] >= 0) gp = gp >= 0 ? ad_add(ad, gp, dy[1]) : dy[1];
      int sum = ad_reduce_sum(ad, gp, 1, (int64_t[]){1}, 1);
      gp = ad_sub(ad, gp, ad_mul(ad, ad_unary(ad, "Exp", p), sum));
    }
    dx[0] = gp;
  }
  if (wv >= 0 && ad_needs(ad, node, 2) && gd >= 0) {
    int px = mean ? ad_add(ad, p, n.out[0]) : p;
    int64_t axes[MATC_MAX_RANK];
    int na = 0;
    for (int i = 0; i < r; i++)
      if (i != 1) axes[na++] = i;
    dx[2] = ad_neg(ad, ad_reduce_sum(ad, ad_mul(ad, ad_mul(ad, m, gd), px), na, axes, 0));
  }
  return MATC_OK;
}
