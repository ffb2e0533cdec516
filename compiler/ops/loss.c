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
