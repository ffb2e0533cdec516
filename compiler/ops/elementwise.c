/* elementwise.c: unary, binary, variadic and select ops. Each op is an
 * expression over its (broadcast) inputs at one output point: build_elem
 * says which, and every op shares one lowering, so fusion sees them all
 * the same way. */
#include "../matc_internal.h"

/* ---------------------------------------------------------------- inference */

static int check_same_dtype(Graph *g, int node, int first, int last) {
  Node *n = &g->nodes[node];
  DType dt = g->vals[n->in[first]].dt;
  for (int j = first + 1; j <= last; j++)
    if (n->in[j] >= 0 && g->vals[n->in[j]].dt != dt)
      return fail(g, node, j, "data type %s does not match input %d's %s",
                  dt_name(g->vals[n->in[j]].dt), first, dt_name(dt));
  return MATC_OK;
}

static int need_inputs(Graph *g, int node, int min) {
  Node *n = &g->nodes[node];
  if (n->nin < min) return fail(g, node, -1, "needs %d inputs, has %d", min, n->nin);
  for (int j = 0; j < min; j++)
    if (n->in[j] < 0) return fail(g, node, j, "required input is missing");
  return MATC_OK;
}

int infer_same(Graph *g, int node) {
  if (need_inputs(g, node, 1)) return MATC_ERR;
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  value_set(&g->vals[n->out[0]], x->dt, x->rank, x->dims);
  return MATC_OK;
}

int infer_bool_same(Graph *g, int node) {
  if (infer_same(g, node)) return MATC_ERR;
  g->vals[g->nodes[node].out[0]].dt = DT_BOOL;
  return MATC_OK;
}

static int infer_broadcast(Graph *g, int node, int first, DType out_dt) {
  Node *n = &g->nodes[node];
  int r = 0;
  int64_t d[MATC_MAX_RANK];
  for (int j = first; j < n->nin; j++) {
    if (n->in[j] < 0) continue;
    Value *x = &g->vals[n->in[j]];
    if (broadcast_shapes(g, node, r, d, x->rank, x->dims, &r, d)) return MATC_ERR;
  }
  value_set(&g->vals[n->out[0]], out_dt, r, d);
  return MATC_OK;
}

/* Before opset 7, PRelu's slope was not broadcast numpy-style: a 1-D slope
 * of size C applied along axis 1 (PyTorch's per-channel PReLU exports). */
static int prelu_channel_slope(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]], *s = &g->vals[n->in[1]];
  return NODE_OPSET(g, n) < 7 && x->rank >= 2 && s->rank == 1 && s->dims[0] > 1 &&
         s->dims[0] == x->dims[1];
}

int infer_binary(Graph *g, int node) {
  if (need_inputs(g, node, 2)) return MATC_ERR;
  Node *n = &g->nodes[node];
  /* Pow's exponent may have its own type; everything else must match. */
  if (n->op != OP_Pow && check_same_dtype(g, node, 0, 1)) return MATC_ERR;
  if (n->op == OP_PRelu) {
    /* The slope broadcasts to X (unidirectionally). */
    Value *x = &g->vals[n->in[0]];
    if (prelu_channel_slope(g, node)) {
      value_set(&g->vals[n->out[0]], x->dt, x->rank, x->dims);
      return MATC_OK;
    }
    if (infer_broadcast(g, node, 0, x->dt)) return MATC_ERR;
    Value *o = &g->vals[n->out[0]];
    if (o->rank != x->rank || shape_nelem(o->rank, o->dims) != value_nelem(x))
      return fail(g, node, 1, "slope does not broadcast to X");
    return MATC_OK;
  }
  return infer_broadcast(g, node, 0, g->vals[n->in[0]].dt);
}

int infer_compare(Graph *g, int node) {
  if (need_inputs(g, node, 2) || check_same_dtype(g, node, 0, 1)) return MATC_ERR;
  return infer_broadcast(g, node, 0, DT_BOOL);
}

int infer_variadic(Graph *g, int node) {
  if (need_inputs(g, node, 1)) return MATC_ERR;
  Node *n = &g->nodes[node];
  if (check_same_dtype(g, node, 0, n->nin - 1)) return MATC_ERR;
  return infer_broadcast(g, node, 0, g->vals[n->in[0]].dt);
}

int infer_where(Graph *g, int node) {
  if (need_inputs(g, node, 3)) return MATC_ERR;
  Node *n = &g->nodes[node];
  if (g->vals[n->in[0]].dt != DT_BOOL) return fail(g, node, 0, "condition must be bool");
  if (check_same_dtype(g, node, 1, 2)) return MATC_ERR;
  return infer_broadcast(g, node, 0, g->vals[n->in[1]].dt);
}

int infer_clip(Graph *g, int node) {
  if (need_inputs(g, node, 1)) return MATC_ERR;
  Node *n = &g->nodes[node];
  for (int j = 1; j < n->nin && j < 3; j++) {
    if (n->in[j] < 0) continue;
    if (value_nelem(&g->vals[n->in[j]]) != 1) return fail(g, node, j, "must be a scalar");
    if (g->vals[n->in[j]].dt != g->vals[n->in[0]].dt)
      return fail(g, node, j, "data type does not match the input's");
  }
  return infer_same(g, node);
}

int infer_cast(Graph *g, int node) {
  if (need_inputs(g, node, 1)) return MATC_ERR;
  Node *n = &g->nodes[node];
  Value *x = &g->vals[n->in[0]];
  DType to;
  if (n->op == OP_CastLike) {
    if (need_inputs(g, node, 2)) return MATC_ERR;
    to = g->vals[n->in[1]].dt;
  } else {
    const Attr *a = attr_get(n, "to");
    if (!a) return fail(g, node, -1, "attribute 'to' is missing");
    to = (DType)a->i;
  }
  if (!dt_supported(to)) return unsupported(g, node, -1, "cast to %s is not supported", dt_name(to));
  value_set(&g->vals[n->out[0]], to, x->rank, x->dims);
  return MATC_OK;
}

/* Dropout. In inference (the default, and always before opset 12) it is
 * the identity and its mask is all true. In training mode (opset 12+,
 * training_mode input true) each element is kept with probability
 * 1 - ratio and scaled by 1 / (1 - ratio). The keep decision is a hash of
 * (seed, element index), where seed mixes the node's 'seed' attribute with
 * the graph's run-time seed input (graph_rng_seed), so the backward pass
 * recomputes exactly the forward mask and each training step draws anew. */
static int dropout_params(Graph *g, int node, int *training, double *ratio) {
  Node *n = &g->nodes[node];
  *training = 0;
  *ratio = attr_f(n, "ratio", 0.5f);
  if (n->nin >= 2 && n->in[1] >= 0) {
    Tensor *r = known_value(g, n->in[1]);
    if (!r) return unsupported(g, node, 1, "the dropout ratio must be a constant");
    *ratio = tensor_get_f(r, 0);
  }
  if (n->nin >= 3 && n->in[2] >= 0) {
    Tensor *t = known_value(g, n->in[2]);
    if (!t) return unsupported(g, node, 2, "training_mode must be a constant");
    *training = tensor_get_i(t, 0) != 0;
  }
  if (*ratio < 0 || *ratio > 1) return fail(g, node, 1, "ratio %g is not in [0, 1]", *ratio);
  return MATC_OK;
}

int infer_dropout(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (infer_same(g, node)) return MATC_ERR;
  int training;
  double ratio;
  int rc = dropout_params(g, node, &training, &ratio);
  if (rc) return rc;
  if (training && !dt_is_float(g->vals[n->in[0]].dt))
    return unsupported(g, node, 0, "training-mode Dropout on %s", dt_name(g->vals[n->in[0]].dt));
  if (n->nout > 1 && n->out[1] >= 0) {
    Value *x = &g->vals[n->in[0]];
    value_set(&g->vals[n->out[1]], DT_BOOL, x->rank, x->dims);
  }
  return MATC_OK;
}

/* ---------------------------------------------------------------- lowering */

static Expr *cf(Graph *g, Expr *like, double v) { return e_const(g, like->dt, v); }

/* The value of an elementwise op at one point, from its inputs' values. */
static Expr *build_elem(Graph *g, int node, Expr **in, int nin) {
  Node *n = &g->nodes[node];
  Expr *x = in[0];
  switch (n->op) {
  case OP_Abs: return e_un(g, U_ABS, x);
  case OP_Neg: return e_un(g, U_NEG, x);
  case OP_Exp: return e_un(g, U_EXP, x);
  case OP_Log: return e_un(g, U_LOG, x);
  case OP_Sqrt: return e_un(g, U_SQRT, x);
  case OP_Reciprocal: return e_un(g, U_RECIP, x);
  case OP_Tanh: return e_un(g, U_TANH, x);
  case OP_Erf: return e_un(g, U_ERF, x);
  case OP_Sigmoid: return e_un(g, U_SIGMOID, x);
  case OP_Sin: return e_un(g, U_SIN, x);
  case OP_Cos: return e_un(g, U_COS, x);
  case OP_Tan: return e_un(g, U_TAN, x);
  case OP_Asin: return e_un(g, U_ASIN, x);
  case OP_Acos: return e_un(g, U_ACOS, x);
  case OP_Atan: return e_un(g, U_ATAN, x);
  case OP_Sinh: return e_un(g, U_SINH, x);
  case OP_Cosh: return e_un(g, U_COSH, x);
  case OP_Asinh: return e_un(g, U_ASINH, x);
  case OP_Acosh: return e_un(g, U_ACOSH, x);
  case OP_Atanh: return e_un(g, U_ATANH, x);
  case OP_Floor: return e_un(g, U_FLOOR, x);
  case OP_Ceil: return e_un(g, U_CEIL, x);
  case OP_Round: return e_un(g, U_ROUND, x);
  case OP_Sign: return e_un(g, U_SIGN, x);
  case OP_Not: return e_un(g, U_NOT, x);
  case OP_IsNaN: return e_un(g, U_ISNAN, x);
  case OP_IsInf: {
    int pos = (int)attr_i(n, "detect_positive", 1), neg = (int)attr_i(n, "detect_negative", 1);
    if (pos && neg) return e_un(g, U_ISINF, x);
    if (pos) return e_un(g, U_ISPOSINF, x);
    if (neg) return e_un(g, U_ISNEGINF, x);
    return e_consti(g, DT_BOOL, 0);
  }
  case OP_Softplus: return e_un(g, U_SOFTPLUS, x);
  case OP_Softsign: return e_bin(g, B_DIV, x, e_bin(g, B_ADD, cf(g, x, 1), e_un(g, U_ABS, x)));
  case OP_Relu: return e_bin(g, B_MAX, x, cf(g, x, 0));
  case OP_LeakyRelu: {
    Expr *a = cf(g, x, attr_f(n, "alpha", 0.01f));
    return e_sel(g, e_bin(g, B_LT, x, cf(g, x, 0)), e_bin(g, B_MUL, a, x), x);
  }
  case OP_Elu: case OP_Celu: {
    double alpha = attr_f(n, "alpha", 1.0f);
    Expr *xs = n->op == OP_Celu ? e_bin(g, B_DIV, x, cf(g, x, alpha)) : x;
    Expr *neg = e_bin(g, B_MUL, cf(g, x, alpha), e_bin(g, B_SUB, e_un(g, U_EXP, xs), cf(g, x, 1)));
    if (n->op == OP_Celu)
      return e_bin(g, B_ADD, e_bin(g, B_MAX, x, cf(g, x, 0)), e_bin(g, B_MIN, neg, cf(g, x, 0)));
    return e_sel(g, e_bin(g, B_LT, x, cf(g, x, 0)), neg, x);
  }
  case OP_Selu: {
    Expr *alpha = cf(g, x, attr_f(n, "alpha", 1.67326319217681884765625f));
    Expr *gamma = cf(g, x, attr_f(n, "gamma", 1.05070102214813232421875f));
    Expr *neg = e_bin(g, B_SUB, e_bin(g, B_MUL, alpha, e_un(g, U_EXP, x)), alpha);
    return e_bin(g, B_MUL, gamma, e_sel(g, e_bin(g, B_LE, x, cf(g, x, 0)), neg, x));
  }
  case OP_HardSigmoid: case OP_HardSwish: {
    double alpha = n->op == OP_HardSwish ? 1.0 / 6 : attr_f(n, "alpha", 0.2f);
    double beta = n->op == OP_HardSwish ? 0.5 : attr_f(n, "beta", 0.5f);
    Expr *y = e_bin(g, B_ADD, e_bin(g, B_MUL, cf(g, x, alpha), x), cf(g, x, beta));
    y = e_bin(g, B_MIN, e_bin(g, B_MAX, y, cf(g, x, 0)), cf(g, x, 1));
    return n->op == OP_HardSwish ? e_bin(g, B_MUL, x, y) : y;
  }
  case OP_ThresholdedRelu:
    return e_sel(g, e_bin(g, B_GT, x, cf(g, x, attr_f(n, "alpha", 1.0f))), x, cf(g, x, 0));
  case OP_Shrink: {
    double bias = attr_f(n, "bias", 0), lambd = attr_f(n, "lambd", 0.5f);
    Expr *lo = e_bin(g, B_ADD, x, cf(g, x, bias)), *hi = e_bin(g, B_SUB, x, cf(g, x, bias));
    Expr *pos = e_sel(g, e_bin(g, B_GT, x, cf(g, x, lambd)), hi, cf(g, x, 0));
    return e_sel(g, e_bin(g, B_LT, x, cf(g, x, -lambd)), lo, pos);
  }
  case OP_Add: return e_bin(g, B_ADD, x, in[1]);
  case OP_Sub: return e_bin(g, B_SUB, x, in[1]);
  case OP_Mul: return e_bin(g, B_MUL, x, in[1]);
  case OP_Div: return e_bin(g, B_DIV, x, in[1]);
  case OP_Pow: {
    /* Small constant exponents (x^2 in every decomposed LayerNorm) become
     * multiplies or a square root: pow() is a libm call that blocks
     * vectorization. */
    Tensor *ex = known_value(g, n->in[1]);
    if (dt_is_float(x->dt) && ex && tensor_nelem(ex) == 1) {
      double p = tensor_get_f(ex, 0);
      if (p == 1) return x;
      if (p == 2) return e_bin(g, B_MUL, x, x);
      if (p == 3) return e_bin(g, B_MUL, e_bin(g, B_MUL, x, x), x);
      if (p == 0.5) return e_un(g, U_SQRT, x);
      if (p == -1) return e_un(g, U_RECIP, x);
    }
    if (dt_is_float(x->dt)) return e_bin(g, B_POW, x, e_cast(g, x->dt, in[1]));
    Expr *p = e_bin(g, B_POW, e_cast(g, DT_F64, x), e_cast(g, DT_F64, in[1]));
    return e_cast(g, x->dt, p);
  }
  case OP_Mod: {
    int fm = (int)attr_i(n, "fmod", 0);
    if (dt_is_float(x->dt) && !fm) return NULL;   /* rejected in lower_elementwise */
    return e_bin(g, fm ? B_FMOD : B_IMOD, x, in[1]);
  }
  case OP_And: return e_bin(g, B_AND, x, in[1]);
  case OP_Or: return e_bin(g, B_OR, x, in[1]);
  case OP_Xor: return e_bin(g, B_XOR, x, in[1]);
  case OP_BitShift: {
    const char *d = attr_s(n, "direction", "");
    return e_bin(g, d[0] == 'L' ? B_SHL : B_SHR, x, in[1]);
  }
  case OP_PRelu: return e_sel(g, e_bin(g, B_LT, x, cf(g, x, 0)), e_bin(g, B_MUL, in[1], x), x);
  case OP_Equal: return e_bin(g, B_EQ, x, in[1]);
  case OP_Less: return e_bin(g, B_LT, x, in[1]);
  case OP_LessOrEqual: return e_bin(g, B_LE, x, in[1]);
  case OP_Greater: return e_bin(g, B_GT, x, in[1]);
  case OP_GreaterOrEqual: return e_bin(g, B_GE, x, in[1]);
  case OP_Max: case OP_Min: case OP_Sum: case OP_Mean: {
    int bop = n->op == OP_Max ? B_MAX : n->op == OP_Min ? B_MIN : B_ADD;
    Expr *acc = x;
    for (int j = 1; j < nin; j++) acc = e_bin(g, bop, acc, in[j]);
    if (n->op == OP_Mean) acc = e_bin(g, B_DIV, acc, cf(g, acc, nin));
    return acc;
  }
  case OP_Where: return e_sel(g, in[0], in[1], in[2]);
  case OP_Clip: {
    Expr *y = x;
    if (NODE_OPSET(g, n) < 11 || (nin == 1 && attr_get(n, "min"))) {
      const Attr *lo = attr_get(n, "min"), *hi = attr_get(n, "max");
      if (lo) y = e_bin(g, B_MAX, y, cf(g, x, lo->f));
      if (hi) y = e_bin(g, B_MIN, y, cf(g, x, hi->f));
      return y;
    }
    if (nin > 1 && in[1]) y = e_bin(g, B_MAX, y, in[1]);
    if (nin > 2 && in[2]) y = e_bin(g, B_MIN, y, in[2]);
    return y;
  }
  case OP_Cast: case OP_CastLike: return e_cast(g, g->vals[n->out[0]].dt, x);
  default: return NULL;
  }
}

int lower_elementwise(Graph *g, int node) {
  Node *n = &g->nodes[node];
  int out = n->out[0];
  int rank = g->vals[out].rank;
  Expr *in[64] = {0};
  int nin = n->op == OP_CastLike ? 1 : n->nin;
  for (int j = 0; j < nin; j++) {
    if (n->in[j] < 0) continue;
    Value *v = &g->vals[n->in[j]];
    /* Clip's min/max are scalars: load element 0 everywhere. */
    in[j] = v->rank <= rank ? e_load_bcast(g, n->in[j], rank)
                            : e_load(g, n->in[j], 0, (int64_t[KMAX_VARS]){0}, 0);
  }
  if (n->op == OP_PRelu && prelu_channel_slope(g, node)) {
    int64_t st[KMAX_VARS] = {0, 1};
    in[1] = e_load(g, n->in[1], 0, st, rank);
  }
  if (n->op == OP_Mod && dt_is_float(g->vals[n->in[0]].dt) && !attr_i(n, "fmod", 0))
    return fail(g, node, -1, "Mod on floats needs fmod=1");
  Expr *body = build_elem(g, node, in, nin);
  if (!body) return unsupported(g, node, -1, "no elementwise lowering for %s", n->op_type);
  Kernel *k = k_elementwise(g, node, out);
  k->body = e_cast(g, g->vals[out].dt, body);
  return MATC_OK;
}

int lower_view_identity(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *o = &g->vals[n->out[0]];
  o->alias_of = n->in[0];
  o->alias_off = 0;
  return MATC_OK;
}

/* keep = uniform(hash(seed, index)) >= ratio, for the kernel's vars 0..rank-1 */
static Expr *dropout_keep(Graph *g, int node, int rank, const int64_t *dims, double ratio) {
  Node *n = &g->nodes[node];
  int64_t st[MATC_MAX_RANK];
  shape_strides(rank, dims, st);
  Expr *idx = e_consti(g, DT_I64, 0);
  for (int i = 0; i < rank; i++)
    idx = e_bin(g, B_ADD, idx, e_bin(g, B_MUL, e_index(g, i), e_consti(g, DT_I64, st[i])));
  int sv = graph_rng_seed(g);
  Expr *seed = e_bin(g, B_ADD, e_load(g, sv, 0, (int64_t[KMAX_VARS]){0}, 0),
                     e_consti(g, DT_I64, attr_i(n, "seed", 0) * 1000003));
  Expr *h = e_bin(g, B_HASH, seed, idx);
  /* the top 53 bits as a double in [0, 1) */
  Expr *u = e_bin(g, B_MUL, e_cast(g, DT_F64, e_bin(g, B_SHR, h, e_consti(g, DT_I64, 11))),
                  e_const(g, DT_F64, 1.0 / 9007199254740992.0));
  return e_bin(g, B_GE, u, e_const(g, DT_F64, ratio));
}

int lower_dropout(Graph *g, int node) {
  Node *n = &g->nodes[node];
  int training;
  double ratio;
  int rc = dropout_params(g, node, &training, &ratio);
  if (rc) return rc;
  Value *x = &g->vals[n->in[0]];
  if (!training || ratio == 0) {
    if (lower_view_identity(g, node)) return MATC_ERR;
    if (n->nout > 1 && n->out[1] >= 0) {
      Kernel *k = k_elementwise(g, node, n->out[1]);
      k->body = e_consti(g, DT_BOOL, 1);
    }
    return MATC_OK;
  }
  g->uses_rng = 1;
  Kernel *k = k_elementwise(g, node, n->out[0]);
  Expr *keep = dropout_keep(g, node, x->rank, x->dims, ratio);
  Expr *xv = e_load_bcast(g, n->in[0], x->rank);
  Expr *zero = e_const(g, x->dt, 0);
  k->body = ratio >= 1 ? zero : e_sel(g, keep, e_bin(g, B_MUL, xv, e_const(g, x->dt, 1.0 / (1.0 - ratio))), zero);
  if (n->nout > 1 && n->out[1] >= 0) {
    k = k_elementwise(g, node, n->out[1]);
    k->body = ratio >= 1 ? e_consti(g, DT_BOOL, 0) : dropout_keep(g, node, x->rank, x->dims, ratio);
  }
  return MATC_OK;
}

/* ---------------------------------------------------------------- gradients
 * dx = dy * f'(x), written in ops; broadcast inputs get their gradient
 * summed back to their own shape (ad_sum_to). */

int grad_binary(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  int a = n.in[0], b = n.in[1], y = n.out[0], d = dy[0];
  switch (n.op) {
  case OP_Add:
    if (ad_needs(ad, node, 0)) dx[0] = ad_sum_to(ad, d, a);
    if (ad_needs(ad, node, 1)) dx[1] = ad_sum_to(ad, d, b);
    break;
  case OP_Sub:
    if (ad_needs(ad, node, 0)) dx[0] = ad_sum_to(ad, d, a);
    if (ad_needs(ad, node, 1)) dx[1] = ad_sum_to(ad, ad_neg(ad, d), b);
    break;
  case OP_Mul:
    if (ad_needs(ad, node, 0)) dx[0] = ad_sum_to(ad, ad_mul(ad, d, b), a);
    if (ad_needs(ad, node, 1)) dx[1] = ad_sum_to(ad, ad_mul(ad, d, a), b);
    break;
  case OP_Div:
    /* y = a / b: da = dy / b, db = -dy * y / b */
    if (ad_needs(ad, node, 0)) dx[0] = ad_sum_to(ad, ad_div(ad, d, b), a);
    if (ad_needs(ad, node, 1)) dx[1] = ad_sum_to(ad, ad_neg(ad, ad_div(ad, ad_mul(ad, d, y), b)), b);
    break;
  case OP_Pow: {
    /* y = a^b: da = dy * b * a^(b-1), db = dy * y * log(a) */
    if (ad_needs(ad, node, 0)) {
      Tensor *e = known_value(g, b);
      int t;
      if (e && tensor_nelem(e) == 1 && tensor_get_f(e, 0) == 2) {
        t = ad_scale(ad, a, 2.0);
      } else {
        /* b * a^(b-1), not b * y / a, which fails at a = 0 */
        int bb = g->vals[b].dt == g->vals[a].dt ? b : ad_node(ad, "CastLike", 2, (int[]){b, a}, 0, NULL);
        int bm1 = ad_sub(ad, bb, ad_const(ad, g->vals[a].dt, 1));
        t = ad_mul(ad, bb, ad_node(ad, "Pow", 2, (int[]){a, bm1}, 0, NULL));
      }
      dx[0] = ad_sum_to(ad, ad_mul(ad, d, t), a);
    }
    if (ad_needs(ad, node, 1))
      dx[1] = ad_sum_to(ad, ad_mul(ad, ad_mul(ad, d, y), ad_unary(ad, "Log", a)), b);
    break;
  }
  case OP_Mod: {
    /* fmod: y = a - trunc(a / b) b, so da = dy, db = -trunc(a / b) dy */
    if (!dt_is_float(g->vals[a].dt)) return MATC_OK;
    if (ad_needs(ad, node, 0)) dx[0] = ad_sum_to(ad, d, a);
    if (ad_needs(ad, node, 1)) {
      int q = ad_div(ad, a, b);
      int neg = ad_node(ad, "Less", 2, (int[]){q, ad_const(ad, g->vals[a].dt, 0)}, 0, NULL);
      int t = ad_node(ad, "Where", 3, (int[]){neg, ad_unary(ad, "Ceil", q), ad_unary(ad, "Floor", q)}, 0, NULL);
      dx[1] = ad_sum_to(ad, ad_neg(ad, ad_mul(ad, d, t)), b);
    }
    break;
  }
  case OP_PRelu: {
    /* y = a < 0 ? b*a : a */
    int neg = ad_node(ad, "Less", 2, (int[]){a, ad_const(ad, g->vals[a].dt, 0)}, 0, NULL);
    if (ad_needs(ad, node, 0))
      dx[0] = ad_node(ad, "Where", 3, (int[]){neg, ad_mul(ad, d, b), d}, 0, NULL);
    if (ad_needs(ad, node, 1))
      dx[1] = ad_sum_to(ad, ad_node(ad, "Where", 3, (int[]){neg, ad_mul(ad, d, a), ad_zeros_like(ad, d)}, 0, NULL), b);
    break;
  }
  default:
    return grad_none(ad, node, dy, dx);
  }
  return MATC_OK;
}

int grad_unary(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  int x = n.in[0], y = n.out[0], d = dy[0];
  DType dt = g->vals[x].dt;
  int r;
  switch (n.op) {
  case OP_Neg: r = ad_neg(ad, d); break;
  case OP_Identity: r = d; break;
  case OP_Exp: r = ad_mul(ad, d, y); break;
  case OP_Log: r = ad_div(ad, d, x); break;
  case OP_Sqrt: r = ad_div(ad, d, ad_scale(ad, y, 2.0)); break;
  case OP_Reciprocal: r = ad_neg(ad, ad_mul(ad, d, ad_mul(ad, y, y))); break;
  case OP_Tanh: /* 1 - y^2 */
    r = ad_mul(ad, d, ad_sub(ad, ad_const(ad, dt, 1), ad_mul(ad, y, y)));
    break;
  case OP_Sigmoid: /* y (1 - y) */
    r = ad_mul(ad, d, ad_mul(ad, y, ad_sub(ad, ad_const(ad, dt, 1), y)));
    break;
  case OP_Erf: /* 2/sqrt(pi) exp(-x^2) */
    r = ad_mul(ad, d, ad_scale(ad, ad_unary(ad, "Exp", ad_neg(ad, ad_mul(ad, x, x))), 1.1283791670955126));
    break;
  case OP_Abs: r = ad_mul(ad, d, ad_unary(ad, "Sign", x)); break;
  case OP_Sin: r = ad_mul(ad, d, ad_unary(ad, "Cos", x)); break;
  case OP_Cos: r = ad_neg(ad, ad_mul(ad, d, ad_unary(ad, "Sin", x))); break;
  case OP_Softplus: r = ad_mul(ad, d, ad_unary(ad, "Sigmoid", x)); break;
  case OP_Relu: case OP_LeakyRelu: {
    /* Relu's mask reads its output (y > 0 exactly where x > 0), so x
     * need not outlive the forward pass: a BatchNormalization or bias add
     * feeding it then fuses into it instead of writing x for the backward. */
    int pos = ad_node(ad, "Greater", 2, (int[]){n.op == OP_Relu ? y : x, ad_const(ad, dt, 0)}, 0, NULL);
    int other = n.op == OP_Relu ? ad_zeros_like(ad, d) : ad_scale(ad, d, attr_f(&n, "alpha", 0.01f));
    r = ad_node(ad, "Where", 3, (int[]){pos, d, other}, 0, NULL);
    break;
  }
  case OP_Floor: case OP_Ceil: case OP_Round: case OP_Sign:
    r = ad_zeros_like(ad, x);
    break;
  case OP_Tan: r = ad_mul(ad, d, ad_add(ad, ad_const(ad, dt, 1), ad_mul(ad, y, y))); break;
  case OP_Asin: case OP_Acos: { /* +-1 / sqrt(1 - x^2) */
    int s = ad_unary(ad, "Sqrt", ad_sub(ad, ad_const(ad, dt, 1), ad_mul(ad, x, x)));
    r = ad_div(ad, n.op == OP_Asin ? d : ad_neg(ad, d), s);
    break;
  }
  case OP_Atan: r = ad_div(ad, d, ad_add(ad, ad_const(ad, dt, 1), ad_mul(ad, x, x))); break;
  case OP_Sinh: r = ad_mul(ad, d, ad_unary(ad, "Cosh", x)); break;
  case OP_Cosh: r = ad_mul(ad, d, ad_unary(ad, "Sinh", x)); break;
  case OP_Asinh: case OP_Acosh: { /* 1 / sqrt(x^2 +- 1) */
    int c = ad_const(ad, dt, n.op == OP_Asinh ? 1 : -1);
    r = ad_div(ad, d, ad_unary(ad, "Sqrt", ad_add(ad, ad_mul(ad, x, x), c)));
    break;
  }
  case OP_Atanh: r = ad_div(ad, d, ad_sub(ad, ad_const(ad, dt, 1), ad_mul(ad, x, x))); break;
  case OP_Softsign: { /* 1 / (1 + |x|)^2 */
    int t = ad_add(ad, ad_const(ad, dt, 1), ad_unary(ad, "Abs", x));
    r = ad_div(ad, d, ad_mul(ad, t, t));
    break;
  }
  case OP_Elu: case OP_Selu: case OP_Celu: {
    /* x > 0: 1 (Selu: gamma); else alpha e^x = y + alpha (Selu: y + gamma
     * alpha; Celu: e^(x / alpha)) */
    double alpha = attr_f(&n, "alpha", n.op == OP_Selu ? 1.67326319217681884765625f : 1.0f);
    double gamma = n.op == OP_Selu ? attr_f(&n, "gamma", 1.05070102214813232421875f) : 1.0;
    int pos = ad_node(ad, "Greater", 2, (int[]){x, ad_const(ad, dt, 0)}, 0, NULL);
    int neg = n.op == OP_Celu ? ad_unary(ad, "Exp", ad_scale(ad, x, 1.0 / alpha))
                              : ad_add(ad, y, ad_const(ad, dt, gamma * alpha));
    int slope = ad_node(ad, "Where", 3, (int[]){pos, ad_const(ad, dt, gamma), neg}, 0, NULL);
    r = ad_mul(ad, d, slope);
    break;
  }
  case OP_HardSigmoid: case OP_HardSwish: {
    /* inside 0 < alpha x + beta < 1 the sigmoid part has slope alpha */
    double alpha = n.op == OP_HardSwish ? 1.0 / 6 : attr_f(&n, "alpha", 0.2f);
    double beta = n.op == OP_HardSwish ? 0.5 : attr_f(&n, "beta", 0.5f);
    int t = ad_add(ad, ad_scale(ad, x, alpha), ad_const(ad, dt, beta));
    int in = ad_node(ad, "And", 2, (int[]){ad_node(ad, "Greater", 2, (int[]){t, ad_const(ad, dt, 0)}, 0, NULL),
                                           ad_node(ad, "Less", 2, (int[]){t, ad_const(ad, dt, 1)}, 0, NULL)}, 0, NULL);
    int hs_slope = ad_node(ad, "Where", 3, (int[]){in, ad_const(ad, dt, alpha), ad_const(ad, dt, 0)}, 0, NULL);
    if (n.op == OP_HardSigmoid) {
      r = ad_mul(ad, d, hs_slope);
    } else { /* y = x hs(x): hs(x) + x hs'(x) */
      int hs = ad_node(ad, "HardSigmoid", 1, &x, 2, (Attr[]){ad_attr_f("alpha", (float)alpha), ad_attr_f("beta", (float)beta)});
      r = ad_mul(ad, d, ad_add(ad, hs, ad_mul(ad, x, hs_slope)));
    }
    break;
  }
  case OP_ThresholdedRelu: case OP_Shrink: {
    /* slope 1 where the op passes x through (shifted by bias), else 0 */
    int pass;
    if (n.op == OP_ThresholdedRelu) {
      pass = ad_node(ad, "Greater", 2, (int[]){x, ad_const(ad, dt, attr_f(&n, "alpha", 1.0f))}, 0, NULL);
    } else {
      double l = attr_f(&n, "lambd", 0.5f);
      pass = ad_node(ad, "Or", 2, (int[]){ad_node(ad, "Less", 2, (int[]){x, ad_const(ad, dt, -l)}, 0, NULL),
                                          ad_node(ad, "Greater", 2, (int[]){x, ad_const(ad, dt, l)}, 0, NULL)}, 0, NULL);
    }
    r = ad_node(ad, "Where", 3, (int[]){pass, d, ad_zeros_like(ad, d)}, 0, NULL);
    break;
  }
  case OP_Dropout: {
    /* The same Dropout applied to dy: the same mask (hash of the same seed
     * and element index) and the same scale; the identity in inference. */
    int in[3] = {d, n.nin > 1 ? n.in[1] : -1, n.nin > 2 ? n.in[2] : -1};
    Attr seed = ad_attr_i("seed", attr_i(&n, "seed", 0));
    int nin = in[2] >= 0 ? 3 : in[1] >= 0 ? 2 : 1;
    r = ad_node(ad, "Dropout", nin, in, 1, &seed);
    break;
  }
  case OP_Cast: case OP_CastLike:
    if (!dt_is_float(dt)) return MATC_OK;
    r = ad_node(ad, "CastLike", 2, (int[]){d, x}, 0, NULL);
    break;
  case OP_Clip: {
    /* dy flows to x where min <= x <= max, to min where x < min, to max
     * where x > max (bounds given as inputs may be trained). */
    Tensor *lo = n.nin > 1 && n.in[1] >= 0 ? known_value(g, n.in[1]) : NULL;
    Tensor *hi = n.nin > 2 && n.in[2] >= 0 ? known_value(g, n.in[2]) : NULL;
    const Attr *alo = attr_get(&n, "min"), *ahi = attr_get(&n, "max");
    int lov = n.nin > 1 && n.in[1] >= 0 ? n.in[1] : ad_const(ad, dt, lo ? tensor_get_f(lo, 0) : alo ? alo->f : -1.0 / 0.0);
    int hiv = n.nin > 2 && n.in[2] >= 0 ? n.in[2] : ad_const(ad, dt, hi ? tensor_get_f(hi, 0) : ahi ? ahi->f : 1.0 / 0.0);
    int below = ad_node(ad, "Less", 2, (int[]){x, lov}, 0, NULL);
    int above = ad_node(ad, "Greater", 2, (int[]){x, hiv}, 0, NULL);
    int zero = ad_zeros_like(ad, d);
    if (n.nin > 1 && n.in[1] >= 0 && ad_needs(ad, node, 1))
      dx[1] = ad_sum_to(ad, ad_node(ad, "Where", 3, (int[]){below, d, zero}, 0, NULL), n.in[1]);
    if (n.nin > 2 && n.in[2] >= 0 && ad_needs(ad, node, 2))
      dx[2] = ad_sum_to(ad, ad_node(ad, "Where", 3, (int[]){above, d, zero}, 0, NULL), n.in[2]);
    int out = ad_node(ad, "Or", 2, (int[]){below, above}, 0, NULL);
    r = ad_node(ad, "Where", 3, (int[]){out, zero, d}, 0, NULL);
    if (!ad_needs(ad, node, 0)) return MATC_OK;
    break;
  }
  default:
    return grad_none(ad, node, dy, dx);
  }
  dx[0] = r;
  return MATC_OK;
}

/* Where(c, a, b): the gradient goes to a where c holds, else to b. */
int grad_where(AD *ad, int node, const int *dy, int *dx) {
  Node n = ad->g->nodes[node];
  int zero = ad_zeros_like(ad, dy[0]);
  if (ad_needs(ad, node, 1))
    dx[1] = ad_sum_to(ad, ad_node(ad, "Where", 3, (int[]){n.in[0], dy[0], zero}, 0, NULL), n.in[1]);
  if (ad_needs(ad, node, 2))
    dx[2] = ad_sum_to(ad, ad_node(ad, "Where", 3, (int[]){n.in[0], zero, dy[0]}, 0, NULL), n.in[2]);
  return MATC_OK;
}

/* Sum, Mean, Max, Min over several inputs. */
int grad_variadic(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  for (int k = 0; k < n.nin; k++) {
    if (!ad_needs(ad, node, k)) continue;
    int d = dy[0];
    if (n.op == OP_Mean) d = ad_scale(ad, d, 1.0 / n.nin);
    if (n.op == OP_Max || n.op == OP_Min) {
      /* to the input equal to the result (ties: each gets it) */
      int eq = ad_node(ad, "Equal", 2, (int[]){n.in[k], n.out[0]}, 0, NULL);
      d = ad_node(ad, "Where", 3, (int[]){eq, d, ad_zeros_like(ad, d)}, 0, NULL);
    }
    dx[k] = ad_sum_to(ad, d, n.in[k]);
  }
  return MATC_OK;
}
