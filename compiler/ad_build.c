/* ad_build.c: the builders gradient rules write the backward pass with.
 * Each appends one ordinary IR node (so backward code goes through the
 * same lowering, fusion and code generation as forward code), follows the
 * canonical opset AD_OPSET, and infers its output at once. */
#include "matc_internal.h"

#include <stdio.h>
#include <string.h>

int ad_needs(AD *ad, int node, int input) {
  int v = ad->g->nodes[node].in[input];
  return v >= 0 && ad->needs[v];
}

int ad_node_n(AD *ad, const char *op, int nin, const int *in, int nattr, const Attr *attr,
              int nout, int *out) {
  Graph *g = ad->g;
  if (ad->status) return -1;
  for (int i = 0; i < nin; i++) MATC_ASSERT(in[i] >= -1 && in[i] < g->nvals);
  int outs[8];
  MATC_ASSERT(nout <= 8);
  const char *fwd = ad->node >= 0 ? g->nodes[ad->node].name : "";
  for (int j = 0; j < nout; j++) {
    char name[512];
    snprintf(name, sizeof name, "grad/%s/%s_%d", fwd, op, g->nvals);
    outs[j] = graph_add_value(g, name);
  }
  char nname[512];
  snprintf(nname, sizeof nname, "grad/%s/%s", fwd, op);
  int id = graph_add_node(g, op, nname, nin, in, nout, outs);
  Node *n = &g->nodes[id];
  MATC_ASSERT(n->op >= 0);
  n->opset = AD_OPSET;
  n->domain = "";
  n->nattr = nattr;
  n->attr = arena_alloc(g->arena, sizeof(Attr) * (nattr + 1));
  for (int i = 0; i < nattr; i++) n->attr[i] = attr[i];
  int rc = op_table[n->op].infer(g, id);
  if (rc) {
    ad->status = rc;
    return -1;
  }
  for (int j = 0; j < nout; j++) {
    MATC_ASSERT(g->vals[outs[j]].rank >= 0);
    if (out) out[j] = outs[j];
  }
  return nout ? outs[0] : 0;
}

int ad_node(AD *ad, const char *op, int nin, const int *in, int nattr, const Attr *attr) {
  return ad_node_n(ad, op, nin, in, nattr, attr, 1, NULL);
}

Attr ad_attr_i(const char *name, int64_t v) {
  Attr a = {0};
  a.name = name;
  a.type = A_INT;
  a.i = v;
  return a;
}

Attr ad_attr_f(const char *name, float v) {
  Attr a = {0};
  a.name = name;
  a.type = A_FLOAT;
  a.f = v;
  return a;
}

Attr ad_attr_s(const char *name, const char *s) {
  Attr a = {0};
  a.name = name;
  a.type = A_STRING;
  a.s = s;
  return a;
}

Attr ad_attr_ints(AD *ad, const char *name, int n, const int64_t *v) {
  Attr a = {0};
  a.name = name;
  a.type = A_INTS;
  a.n = n;
  a.ints = arena_alloc(ad->g->arena, sizeof(int64_t) * (n + 1));
  for (int i = 0; i < n; i++) a.ints[i] = v[i];
  return a;
}

static int const_tensor(AD *ad, Tensor *t) {
  Graph *g = ad->g;
  char name[64];
  snprintf(name, sizeof name, "grad/const_%d", g->nvals);
  int v = graph_add_value(g, name);
  g->vals[v].kind = V_CONST;
  g->vals[v].data = t;
  value_set(&g->vals[v], t->dt, t->rank, t->dims);
  return v;
}

int ad_const(AD *ad, DType dt, double x) {
  if (ad->status) return -1;
  Tensor *t = arena_alloc(ad->g->arena, sizeof *t);
  t->dt = dt;
  t->rank = 0;
  t->data = arena_alloc(ad->g->arena, 8);
  if (dt == DT_F32) *(float *)t->data = (float)x;
  else if (dt == DT_F64) *(double *)t->data = x;
  else if (dt == DT_I64) *(int64_t *)t->data = (int64_t)x;
  else if (dt == DT_I32) *(int32_t *)t->data = (int32_t)x;
  else MATC_ASSERT(0);
  return const_tensor(ad, t);
}

int ad_const_ints(AD *ad, int n, const int64_t *v) {
  if (ad->status) return -1;
  Tensor *t = arena_alloc(ad->g->arena, sizeof *t);
  t->dt = DT_I64;
  t->rank = 1;
  t->dims[0] = n;
  t->data = arena_alloc(ad->g->arena, sizeof(int64_t) * (n + 1));
  memcpy(t->data, v, sizeof(int64_t) * n);
  return const_tensor(ad, t);
}

static int bin(AD *ad, const char *op, int a, int b) {
  if (a < 0 || b < 0) return -1;
  return ad_node(ad, op, 2, (int[]){a, b}, 0, NULL);
}

int ad_add(AD *ad, int a, int b) { return bin(ad, "Add", a, b); }
int ad_sub(AD *ad, int a, int b) { return bin(ad, "Sub", a, b); }
int ad_mul(AD *ad, int a, int b) { return bin(ad, "Mul", a, b); }
int ad_div(AD *ad, int a, int b) { return bin(ad, "Div", a, b); }
int ad_matmul(AD *ad, int a, int b) { return bin(ad, "MatMul", a, b); }

int ad_unary(AD *ad, const char *op, int a) {
  if (a < 0) return -1;
  return ad_node(ad, op, 1, &a, 0, NULL);
}

int ad_neg(AD *ad, int a) { return ad_unary(ad, "Neg", a); }

int ad_scale(AD *ad, int a, double s) {
  if (a < 0) return -1;
  return ad_mul(ad, a, ad_const(ad, ad->g->vals[a].dt, s));
}

int ad_transpose(AD *ad, int x, const int64_t *perm) {
  if (x < 0) return -1;
  Attr p = ad_attr_ints(ad, "perm", ad->g->vals[x].rank, perm);
  return ad_node(ad, "Transpose", 1, &x, 1, &p);
}

int ad_swap_last(AD *ad, int x) {
  if (x < 0) return -1;
  int r = ad->g->vals[x].rank;
  int64_t perm[MATC_MAX_RANK];
  for (int i = 0; i < r; i++) perm[i] = i;
  perm[r - 2] = r - 1;
  perm[r - 1] = r - 2;
  return ad_transpose(ad, x, perm);
}

int ad_reshape(AD *ad, int x, int rank, const int64_t *dims) {
  if (x < 0) return -1;
  int s = ad_const_ints(ad, rank, dims);
  return ad_node(ad, "Reshape", 2, (int[]){x, s}, 0, NULL);
}

int ad_reduce_sum(AD *ad, int x, int naxes, const int64_t *axes, int keepdims) {
  if (x < 0) return -1;
  Attr a[2] = {ad_attr_ints(ad, "axes", naxes, axes), ad_attr_i("keepdims", keepdims)};
  return ad_node(ad, "ReduceSum", 1, &x, 2, a);
}

int ad_sum_to(AD *ad, int grad, int like) {
  if (grad < 0) return -1;
  Graph *g = ad->g;
  Value *gv = &g->vals[grad], *lv = &g->vals[like];
  int same = gv->rank == lv->rank;
  for (int i = 0; same && i < gv->rank; i++) same = gv->dims[i] == lv->dims[i];
  if (same) return grad;
  int64_t axes[MATC_MAX_RANK];
  int na = 0, lead = gv->rank - lv->rank;
  MATC_ASSERT(lead >= 0);
  for (int i = 0; i < gv->rank; i++)
    if (i < lead || (lv->dims[i - lead] == 1 && gv->dims[i] != 1)) axes[na++] = i;
  int64_t dims[MATC_MAX_RANK];
  int rank = lv->rank;
  for (int i = 0; i < rank; i++) dims[i] = lv->dims[i];
  int r = na ? ad_reduce_sum(ad, grad, na, axes, 1) : grad;
  return ad_reshape(ad, r, rank, dims);
}

int ad_zeros_like(AD *ad, int like) {
  if (ad->status) return -1;
  Value *l = &ad->g->vals[like];
  int shape = ad_const_ints(ad, l->rank, l->dims);
  Attr v = {0};
  v.name = "value";
  v.type = A_TENSOR;
  v.t = arena_alloc(ad->g->arena, sizeof(Tensor));
  v.t->dt = l->dt;
  v.t->rank = 1;
  v.t->dims[0] = 1;
  v.t->data = arena_alloc(ad->g->arena, 8);
  return ad_node(ad, "ConstantOfShape", 1, &shape, 1, &v);
}
