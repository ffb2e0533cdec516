/* build_probe.c: the mNTK probe graph (MAT.md, "What matc computes" 2).
 *
 * From a shape-inferred forward graph bound to a probe batch of n samples
 * and its modules, appends each sample's scalar output (its own loss: the
 * training loss computed per sample) and one backward pass of their sum
 * with respect to the outputs of the probe sites (the Gemm/MatMul/Conv
 * nodes that hold module weights). Samples do not interact in the forward
 * pass (BatchNormalization stays in inference mode here, Dropout is off),
 * so the gradient of sum_i loss_i w.r.t. the site output, restricted to
 * sample i's rows, is exactly sample i's. The graph's outputs are each
 * site node's data input x and output gradient dy; runtime/mntk.c turns
 * them into Gram matrices. No parameter gradient is computed, and nothing
 * below the lowest site is differentiated. */
#include "matc_internal.h"

#include <stdlib.h>
#include <string.h>

/* How `node` uses `param` as a linear weight: the input index holding the
 * data x, and the param axis that indexes output features. 0 when the node
 * is not a site for param. */
static int weight_use(Graph *g, int node, int param, int *x_in, int *out_axis) {
  Node *n = &g->nodes[node];
  if (n->dead || n->nin < 2) return 0;
  int w = n->in[1];
  if (n->op == OP_Gemm && w == param && !attr_i(n, "transA", 0)) {
    *x_in = 0;
    *out_axis = attr_i(n, "transB", 0) ? 0 : 1;
    return 1;
  }
  if (n->op == OP_Conv && w == param && g->vals[param].rank == 4) {
    *x_in = 0;
    *out_axis = 0;
    return 1;
  }
  if (n->op == OP_MatMul && w == param && g->vals[param].rank == 3) {
    *x_in = 0;                   /* stacked experts [E, K, N] */
    *out_axis = 2;
    return 1;
  }
  if (n->op == OP_MatMul && g->vals[param].rank == 2) {
    if (w == param) {
      *x_in = 0;
      *out_axis = 1;
      return 1;
    }
    /* nn.Linear on 3-D inputs exports as MatMul(x, Transpose(W)). */
    int p = w >= 0 ? g->vals[w].producer : -1;
    if (p >= 0 && g->nodes[p].op == OP_Transpose && g->nodes[p].in[0] == param) {
      int64_t perm[2];
      int np = attr_ints(&g->nodes[p], "perm", perm, 2);
      if (np < 0 || (np == 2 && perm[0] == 1 && perm[1] == 0)) {
        *x_in = 0;
        *out_axis = 0;
        return 1;
      }
    }
  }
  return 0;
}

/* Is slice b (a rank-1 parameter) the bias added to node's output? */
static int is_bias_of(Graph *g, int node, int param) {
  Node *n = &g->nodes[node];
  if ((n->op == OP_Gemm || n->op == OP_Conv) && n->nin > 2 && n->in[2] == param) return 1;
  if (n->op != OP_MatMul) return 0;
  int y = n->out[0];
  for (int i = 0; i < g->nnodes; i++) {
    Node *a = &g->nodes[i];
    if (a->dead || a->op != OP_Add || a->nin != 2) continue;
    if ((a->in[0] == y && a->in[1] == param) || (a->in[1] == y && a->in[0] == param)) return 1;
  }
  return 0;
}

int find_probe_sites(Graph *g, Module *m) {
  if (m->nsites) return MATC_OK;
  ProbeSite *sites = arena_alloc(g->arena, sizeof(ProbeSite) * (4 * m->nslices + 4));
  int ns = 0;
  for (int s = 0; s < m->nslices; s++) {
    ParamSlice *ps = &m->slices[s];
    for (int i = 0; i < g->nnodes && ns < 4 * m->nslices + 4; i++) {
      int x_in, out_axis;
      if (!weight_use(g, i, ps->param, &x_in, &out_axis)) continue;
      ProbeSite *site = &sites[ns++];
      site->node = i;
      site->weight = s;
      site->bias = -1;
      int whole = ps->axis < 0 || (ps->begin == 0 && ps->end == g->vals[ps->param].dims[ps->axis]);
      site->slice_out = whole || ps->axis == out_axis;
      site->begin = whole ? 0 : ps->begin;
      site->end = whole ? 0 : ps->end;
      if (!site->slice_out && g->nodes[i].op == OP_Conv && ps->axis != 1) {
        return unsupported(g, i, 1, "module '%s': a conv weight slice along axis %d (only output filters, "
                           "axis 0, or input channels, axis 1, are probed)", m->name, ps->axis);
      }
      if (!site->slice_out) continue;        /* a row slice (input features): its bias is not its own */
      for (int b = 0; b < m->nslices; b++) {
        ParamSlice *bs = &m->slices[b];
        if (g->vals[bs->param].rank != 1 || !is_bias_of(g, i, bs->param)) continue;
        int bwhole = bs->axis < 0 || (bs->begin == 0 && bs->end == g->vals[bs->param].dims[0]);
        if (whole ? bwhole : (bs->begin == site->begin && bs->end == site->end)) site->bias = b;
      }
    }
  }
  m->sites = sites;
  m->nsites = ns;
  return MATC_OK;
}

/* sum_i loss_i, where loss_i is sample i's share of the training loss:
 * cross-entropy over the last axis (targets equal to ignore_index skipped)
 * averaged over the sample's valid targets, or MSE over the sample's
 * elements. */
static int per_sample_loss_sum(AD *ad, const TrainConfig *cfg, int logits, ProbeGraph *pg) {
  Graph *g = ad->g;
  Value y = g->vals[logits];
  LossKind kind = cfg->loss;
  if (kind == LOSS_AUTO) {
    if (y.rank == 0) kind = LOSS_OUTPUT;
    else kind = dt_is_float(cfg->target_dt) ? LOSS_MSE : LOSS_CROSS_ENTROPY;
  }
  if (kind == LOSS_OUTPUT)
    return unsupported(g, -1, -1, "the mNTK probe needs one loss per sample, but the model's output '%s' is "
                       "already a scalar loss", y.name);
  int64_t dims[MATC_MAX_RANK];
  dims[0] = y.dims[0];
  for (int i = 0; i < cfg->target_rank; i++) dims[i + 1] = cfg->target_dims[i];
  pg->target = graph_add_value(g, "target");
  g->vals[pg->target].kind = V_INPUT;
  value_set(&g->vals[pg->target], cfg->target_dt, cfg->target_rank + 1, dims);
  int64_t all[MATC_MAX_RANK];
  for (int i = 0; i < MATC_MAX_RANK; i++) all[i] = i;
  if (kind == LOSS_MSE) {
    if (y.rank != cfg->target_rank + 1)
      return fail(g, -1, -1, "MSE target rank %d does not match output '%s' rank %d", cfg->target_rank + 1,
                  y.name, y.rank);
    int t = pg->target;
    if (cfg->target_dt != y.dt) t = ad_node(ad, "CastLike", 2, (int[]){t, logits}, 0, NULL);
    int d = ad_sub(ad, logits, t);
    int sum = ad_reduce_sum(ad, ad_mul(ad, d, d), y.rank, all, 0);
    pg->total = ad_scale(ad, sum, 1.0 / (double)(value_nelem(&y) / y.dims[0]));
    return ad->status;
  }
  if (y.rank != cfg->target_rank + 2)
    return fail(g, -1, -1, "cross-entropy needs the output '%s' to have one more dim (classes) than the target "
                "(rank %d vs %d)", y.name, y.rank, cfg->target_rank + 1);
  int x = logits;
  if (y.rank > 2) {
    int64_t perm[MATC_MAX_RANK];
    perm[0] = 0;
    perm[1] = y.rank - 1;
    for (int i = 2; i < y.rank; i++) perm[i] = i - 1;
    x = ad_transpose(ad, x, perm);
  }
  Attr a[2] = {ad_attr_s("reduction", "none"), ad_attr_i("ignore_index", cfg->ignore_index)};
  int l = ad_node(ad, "SoftmaxCrossEntropyLoss", 2, (int[]){x, pg->target}, 2, a);   /* [n, positions] */
  if (cfg->target_rank > 0) {
    /* Each sample's mean over its valid positions: weight 1 / max(count, 1). */
    Attr to = ad_attr_i("to", y.dt);
    int valid = ad_node(ad, "Not", 1,
                        (int[]){ad_node(ad, "Equal", 2, (int[]){pg->target, ad_const(ad, cfg->target_dt,
                                                                                      (double)cfg->ignore_index)},
                                        0, NULL)}, 0, NULL);
    int cnt = ad_reduce_sum(ad, ad_node(ad, "Cast", 1, &valid, 1, &to), cfg->target_rank, all + 1, 1);
    int w = ad_unary(ad, "Reciprocal", ad_node(ad, "Max", 2, (int[]){cnt, ad_const(ad, y.dt, 1.0)}, 0, NULL));
    l = ad_mul(ad, l, w);
  }
  pg->total = ad_reduce_sum(ad, l, cfg->target_rank + 1, all, 0);
  return ad->status;
}

/* BatchNormalization exported in training mode normalises with batch
 * statistics, which couple the samples: the probe runs it in inference
 * mode, on the stored running statistics. */
static int bn_inference_mode(Graph *g) {
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = &g->nodes[i];
    if (n->dead || n->op != OP_BatchNormalization || !attr_i(n, "training_mode", 0)) continue;
    for (int a = 0; a < n->nattr; a++)
      if (!strcmp(n->attr[a].name, "training_mode")) n->attr[a].i = 0;
    for (int j = 1; j < n->nout; j++)
      if (n->out[j] >= 0 && g->vals[n->out[j]].nuses)
        return unsupported(g, i, -1, "the probe runs BatchNormalization in inference mode, but this node's "
                           "running statistics output %d is used", j);
    n->nout = 1;
    int rc = op_table[n->op].infer(g, i);
    if (rc) return rc;
  }
  return MATC_OK;
}

/* Rademacher mode: output r is sum_i <logits_i, v_r>, with the vector
 * v_r (an input [1, logits dims but the first]) shared by all samples,
 * so that the mean over r of the Grams estimates the logit-trace NTK. */
static int rademacher_outputs(AD *ad, int logits, int nvec, ProbeGraph *pg) {
  Graph *g = ad->g;
  Value y = g->vals[logits];
  if (!dt_is_float(y.dt) || y.rank < 1)
    return fail(g, -1, -1, "Rademacher probe outputs need float logits with a sample axis ('%s')", y.name);
  int64_t dims[MATC_MAX_RANK], all[MATC_MAX_RANK];
  memcpy(dims, y.dims, sizeof dims);
  dims[0] = 1;
  for (int i = 0; i < MATC_MAX_RANK; i++) all[i] = i;
  for (int r = 0; r < nvec; r++) {
    char name[64];
    snprintf(name, sizeof name, "matc.probe_vector%d", r);
    int v = graph_add_value(g, name);
    g->vals[v].kind = V_INPUT;
    value_set(&g->vals[v], y.dt, y.rank, dims);
    pg->vectors[r] = v;
    pg->totals[r] = ad_reduce_sum(ad, ad_mul(ad, logits, v), y.rank, all, 0);
  }
  return ad->status;
}

int build_probe(Graph *g, const TrainConfig *cfg, int nvec, ProbeGraph *pg) {
  memset(pg, 0, sizeof *pg);
  int rc0 = bn_inference_mode(g);
  if (rc0) return rc0;
  pg->n = g->vals[g->outputs[0]].dims[0];
  pg->target = -1;
  pg->nvec = nvec > 0 ? nvec : 1;
  pg->vectors = arena_alloc(g->arena, sizeof(int) * pg->nvec);
  pg->totals = arena_alloc(g->arena, sizeof(int) * pg->nvec);
  AD ad = {g, NULL, -1, MATC_OK};
  int rc = nvec > 0 ? rademacher_outputs(&ad, g->outputs[0], nvec, pg) : per_sample_loss_sum(&ad, cfg, g->outputs[0], pg);
  if (rc) return rc;
  if (nvec <= 0) pg->totals[0] = pg->total, pg->vectors[0] = -1;
  else pg->total = pg->totals[0];
  int nn = g->nnodes;
  pg->dy_stride = nn;
  pg->x = arena_alloc(g->arena, sizeof(int) * (nn + 1));
  pg->dy = arena_alloc(g->arena, sizeof(int) * ((size_t)pg->nvec * nn + 1));
  for (int i = 0; i < nn; i++) pg->x[i] = -1;
  for (int i = 0; i < pg->nvec * nn; i++) pg->dy[i] = -1;
  int *wrt = arena_alloc(g->arena, sizeof(int) * (nn + 1)), *grads = arena_alloc(g->arena, sizeof(int) * (nn + 1));
  int *site_node = arena_alloc(g->arena, sizeof(int) * (nn + 1)), nw = 0;
  for (int k = 0; k < g->nmodules; k++) {
    Module *m = &g->modules[k];
    if ((rc = find_probe_sites(g, m))) return rc;
    for (int s = 0; s < m->nsites; s++) {
      int node = m->sites[s].node;
      if (node < 0 || node >= nn) return fail(g, -1, -1, "module '%s': probe site %d names no node", m->name, s);
      if (pg->x[node] >= 0) continue;
      Node *n = &g->nodes[node];
      int param = m->slices[m->sites[s].weight].param, x_in, out_axis;
      if (!weight_use(g, node, param, &x_in, &out_axis))
        return unsupported(g, node, 1, "module '%s': the probe reads Gemm(transA=0), MatMul(x, W) and 2-D Conv "
                           "sites, and this node does not use '%s' as such a weight", m->name, g->vals[param].name);
      if (n->op == OP_Conv && attr_i(n, "group", 1) != 1)
        return unsupported(g, node, 1, "module '%s': grouped convolution sites are not probed", m->name);
      pg->x[node] = n->in[x_in];
      site_node[nw] = node;
      wrt[nw++] = n->out[0];
    }
  }
  if (nw == 0) return fail(g, -1, -1, "the mNTK probe has no site: no module has a Gemm, MatMul or Conv weight");
  g->outputs = arena_alloc(g->arena, sizeof(int) * ((size_t)(pg->nvec + 1) * nw + pg->nvec + 1));
  g->noutputs = 0;
  for (int r = 0; r < pg->nvec; r++) {
    /* One backward pass per scalar output (per vector in Rademacher mode). */
    int seed = ad_const(&ad, g->vals[pg->totals[r]].dt, 1.0);
    if ((rc = ad.status) || (rc = autodiff(g, 1, &pg->totals[r], &seed, nw, wrt, grads))) return rc;
    g->outputs[g->noutputs++] = pg->totals[r];
    for (int i = 0; i < nw; i++) {
      pg->dy[(size_t)r * nn + site_node[i]] = grads[i];
      int pair[2] = {pg->x[site_node[i]], grads[i]};
      for (int j = 0; j < 2; j++) {
        int dup = 0;
        for (int o = 0; o < g->noutputs; o++) dup |= g->outputs[o] == pair[j];
        if (!dup) g->outputs[g->noutputs++] = pair[j];
      }
    }
  }
  for (int i = 0; i < g->noutputs; i++) g->vals[g->outputs[i]].is_output = 1;
  return MATC_OK;
}
