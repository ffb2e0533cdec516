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
  return g->opset < 7 && x->rank >= 2 && s->rank == 1 && s->dims[0] > 1 &&
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

/* Inference-mode Dropout is the identity; its optional mask is all true.
 * Training-mode Dropout (training_mode input true) comes with the
 * training issue. */
int infer_dropout(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (infer_same(g, node)) return MATC_ERR;
  if (n->nin >= 3 && n->in[2] >= 0) {
    Tensor *t = known_value(g, n->in[2]);
    if (!t) return unsupported(g, node, 2, "training_mode must be a constant");
    if (tensor_get_i(t, 0)) return unsupported(g, node, 2, "training-mode Dropout is not supported yet");
  }
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
    if (g->opset < 11 || (nin == 1 && attr_get(n, "min"))) {
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

int lower_dropout(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (lower_view_identity(g, node)) return MATC_ERR;
  if (n->nout > 1 && n->out[1] >= 0) {
    Kernel *k = k_elementwise(g, node, n->out[1]);
    k->body = e_consti(g, DT_BOOL, 1);
  }
  return MATC_OK;
}
