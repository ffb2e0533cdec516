/* autodiff.c: reverse-mode differentiation, graph to graph.
 *
 * Given outputs y_i and seeds s_i (the cotangents), appends to the graph
 * the nodes that compute d/dw sum_i <y_i, s_i> for each requested w. The
 * backward pass is written in ordinary ops by each op's grad rule (the
 * op table's grad column), so it is lowered, fused and compiled like the
 * forward pass.
 *
 * Only values that depend on some w and reach some y carry gradients
 * (`needs`); rules skip every input that does not need one, so the input
 * gradient of the first layer, of indices, shapes and masks is never
 * computed. Fan-in (a value used by several nodes) is summed here, in one
 * place; every gradient's shape is checked against its value's. */
#include "matc_internal.h"

#include <stdlib.h>
#include <string.h>

static int same_shape(Value *a, Value *b) {
  if (a->rank != b->rank) return 0;
  for (int i = 0; i < a->rank; i++)
    if (a->dims[i] != b->dims[i]) return 0;
  return 1;
}

int autodiff(Graph *g, int nouts, const int *outs, const int *seeds, int nwrt, const int *wrt,
             int *grads) {
  int nv = g->nvals, nfwd = g->nnodes;
  AD ad = {g, calloc(nv, 1), -1, MATC_OK};
  char *dep = calloc(nv, 1), *reach = calloc(nv, 1);
  int rc = MATC_OK;

  /* Which values depend on a w (forward), and which reach a y (backward). */
  for (int j = 0; j < nwrt; j++) dep[wrt[j]] = 1;
  for (int i = 0; i < nfwd; i++) {
    Node *n = &g->nodes[i];
    if (n->dead) continue;
    int any = 0;
    for (int k = 0; k < n->nin; k++) any |= n->in[k] >= 0 && dep[n->in[k]];
    if (any)
      for (int k = 0; k < n->nout; k++)
        if (n->out[k] >= 0) dep[n->out[k]] = 1;
  }
  for (int j = 0; j < nouts; j++) reach[outs[j]] = 1;
  for (int i = nfwd - 1; i >= 0; i--) {
    Node *n = &g->nodes[i];
    if (n->dead) continue;
    int any = 0;
    for (int k = 0; k < n->nout; k++) any |= n->out[k] >= 0 && reach[n->out[k]];
    if (any)
      for (int k = 0; k < n->nin; k++)
        if (n->in[k] >= 0) reach[n->in[k]] = 1;
  }
  for (int v = 0; v < nv; v++) ad.needs[v] = dep[v] && reach[v] && dt_is_float(g->vals[v].dt);

  /* gsum[v]: the gradient accumulated so far for v, -1 while none. */
  int *gsum = malloc(sizeof(int) * (nv + 1));
  for (int v = 0; v < nv; v++) gsum[v] = -1;
  for (int j = 0; j < nouts; j++) {
    int y = outs[j];
    if (!ad.needs[y]) continue;
    gsum[y] = gsum[y] < 0 ? seeds[j] : ad_add(&ad, gsum[y], seeds[j]);
  }

  for (int i = nfwd - 1; i >= 0 && !ad.status; i--) {
    Node *n = &g->nodes[i];
    if (n->dead) continue;
    int dy[64], dx[64], have = 0, want = 0;
    for (int k = 0; k < n->nout; k++) {
      dy[k] = n->out[k] >= 0 && ad.needs[n->out[k]] ? gsum[n->out[k]] : -1;
      have |= dy[k] >= 0;
    }
    for (int k = 0; k < n->nin; k++) {
      dx[k] = -1;
      want |= n->in[k] >= 0 && ad.needs[n->in[k]];
    }
    if (!have || !want) continue;
    ad.node = i;
    rc = op_table[n->op].grad(&ad, i, dy, dx);
    if (rc || ad.status) {
      rc = rc ? rc : ad.status;
      break;
    }
    /* The rule, and ad_add below, may grow (move) g->nodes: keep the
     * node's inputs, not the node. */
    int nin = g->nodes[i].nin;
    const int *in = g->nodes[i].in;
    for (int k = 0; k < nin; k++) {
      int x = in[k];
      if (x < 0 || dx[k] < 0 || !ad.needs[x]) continue;
      if (!same_shape(&g->vals[dx[k]], &g->vals[x]) || g->vals[dx[k]].dt != g->vals[x].dt) {
        rc = fail(g, i, k, "internal error: the gradient rule made a %s gradient of rank %d "
                  "for a %s value of rank %d", dt_name(g->vals[dx[k]].dt), g->vals[dx[k]].rank,
                  dt_name(g->vals[x].dt), g->vals[x].rank);
        break;
      }
      gsum[x] = gsum[x] < 0 ? dx[k] : ad_add(&ad, gsum[x], dx[k]);
    }
    if (rc) break;
  }
  ad.node = -1;
  for (int j = 0; j < nwrt && !rc && !ad.status; j++)
    grads[j] = gsum[wrt[j]] >= 0 ? gsum[wrt[j]] : ad_zeros_like(&ad, wrt[j]);
  if (!rc && ad.status) rc = ad.status;
  free(gsum);
  free(dep);
  free(reach);
  free(ad.needs);
  return rc;
}

/* The training-domain Gradient op (ai.onnx.preview.training): outputs the
 * gradients of the value named by `y` (seeded with ones) with respect to
 * the values named by `xs`. Expanded in place during shape inference: the
 * backward nodes are appended and Identity nodes carry the results into
 * the Gradient node's outputs. */
int expand_gradient(Graph *g, int node) {
  Node *n = &g->nodes[node];
  const Attr *xs = attr_get(n, "xs");
  const char *yname = attr_s(n, "y", NULL);
  if (!xs || xs->type != A_STRINGS || !yname) return fail(g, node, -1, "Gradient needs 'xs' and 'y'");
  if (xs->n != n->nout) return fail(g, node, -1, "Gradient has %d xs but %d outputs", xs->n, n->nout);
  int y = graph_find_value(g, yname);
  if (y < 0 || g->vals[y].rank < 0) return fail(g, node, -1, "y '%s' is not a value computed before", yname);
  if (g->vals[y].dt != DT_F32 && g->vals[y].dt != DT_F64)
    return fail(g, node, -1, "y '%s' is %s, not float32 or float64", yname, dt_name(g->vals[y].dt));
  int wrt[64], grads[64], outs[64];
  for (int i = 0; i < xs->n; i++) {
    wrt[i] = graph_find_value(g, xs->strings[i]);
    if (wrt[i] < 0 || !dt_is_float(g->vals[wrt[i]].dt))
      return fail(g, node, -1, "xs '%s' is not a float value of the graph", xs->strings[i]);
    outs[i] = n->out[i];
  }
  Value *yv = &g->vals[y];
  Tensor *one = arena_alloc(g->arena, sizeof *one);
  one->dt = yv->dt;
  one->rank = yv->rank;
  for (int d = 0; d < yv->rank; d++) one->dims[d] = yv->dims[d];
  int64_t cnt = value_nelem(yv);
  one->data = arena_alloc(g->arena, (size_t)(cnt ? cnt : 1) * dt_size(yv->dt));
  for (int64_t k = 0; k < cnt; k++) {
    if (yv->dt == DT_F64) ((double *)one->data)[k] = 1;
    else ((float *)one->data)[k] = 1;
  }
  int seed = graph_add_value(g, "gradient/seed");
  g->vals[seed].kind = V_CONST;
  g->vals[seed].data = one;
  value_set(&g->vals[seed], one->dt, one->rank, one->dims);
  int nx = xs->n;
  g->nodes[node].dead = 1;
  int rc = autodiff(g, 1, &y, &seed, nx, wrt, grads);
  if (rc) return rc;
  for (int i = 0; i < nx; i++) {
    if (outs[i] < 0) continue;
    int id = graph_add_node(g, "Identity", "gradient/out", 1, &grads[i], 1, &outs[i]);
    g->nodes[id].opset = AD_OPSET;
  }
  return MATC_OK;
}
