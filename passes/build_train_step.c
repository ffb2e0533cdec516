/* build_train_step.c: turns a shape-inferred forward graph into one
 * training step: loss attachment, reverse-mode gradients (autodiff.c),
 * optional global-norm clipping, and the optimizer update (SGD with
 * momentum / Nesterov, or AdamW with decoupled weight decay), written back
 * into the parameters and optimizer state by Assign nodes.
 *
 * Everything is graph ops, so the whole step is one compiled function.
 * The gradients (before clipping) are recorded in g->sync_grad: in a
 * data-parallel run the back end sums them across ranks between the last
 * kernel writing each and the first reading it (insert_allreduce.c).
 * The learning rate and Adam's bias corrections are scalar inputs the
 * runtime sets every step (schedules live in the runtime, not the code).
 * All updated values are computed before the first Assign runs, and
 * fusion never inlines into an Assign, so no kernel reads a parameter
 * after it was overwritten. */
#include "matc_internal.h"

#include <stdlib.h>
#include <string.h>


/* Optimizer state: a zero-initialised tensor shaped like p, kept between
 * steps like a parameter (checkpoints save it). */
static int state_like(Graph *g, int p, const char *what) {
  Value pv = g->vals[p];
  char name[512];
  snprintf(name, sizeof name, "%s.%s", pv.name, what);
  int id = graph_add_value(g, name);
  Value *x = &g->vals[id];
  x->kind = V_PARAM;
  value_set(x, pv.dt, pv.rank, pv.dims);
  Tensor *t = arena_alloc(g->arena, sizeof *t);
  t->dt = pv.dt;
  t->rank = pv.rank;
  memcpy(t->dims, pv.dims, sizeof t->dims);
  size_t bytes = (size_t)value_nelem(&pv) * dt_size(pv.dt);
  t->data = arena_alloc(g->arena, bytes ? bytes : 1);
  x->data = t;
  return id;
}

static int state_of(Graph *g, TrainStep *ts, int p, const char *what) {
  int id = state_like(g, p, what);
  ts->state[ts->nstate++] = id;
  return id;
}

static int attach_loss(AD *ad, const TrainConfig *cfg, TrainStep *ts) {
  Graph *g = ad->g;
  Value y = g->vals[ts->logits];
  LossKind kind = cfg->loss;
  if (kind == LOSS_AUTO) {
    if (y.rank == 0) kind = LOSS_OUTPUT;
    else kind = dt_is_float(cfg->target_dt) ? LOSS_MSE : LOSS_CROSS_ENTROPY;
  }
  if (kind == LOSS_OUTPUT) {
    if (y.rank != 0 || !dt_is_float(y.dt))
      return fail(g, -1, -1, "the model's output '%s' is not a scalar loss", y.name);
    ts->loss = ts->logits;
    return MATC_OK;
  }
  /* The target input: [batch, target dims]. */
  int64_t dims[MATC_MAX_RANK];
  dims[0] = y.dims[0];
  for (int i = 0; i < cfg->target_rank; i++) dims[i + 1] = cfg->target_dims[i];
  ts->target = graph_add_value(g, "target");
  g->vals[ts->target].kind = V_INPUT;
  value_set(&g->vals[ts->target], cfg->target_dt, cfg->target_rank + 1, dims);
  if (kind == LOSS_MSE) {
    if (y.rank != cfg->target_rank + 1)
      return fail(g, -1, -1, "MSE target rank %d does not match output '%s' rank %d",
                  cfg->target_rank + 1, y.name, y.rank);
    int t = ts->target;
    if (cfg->target_dt != y.dt) t = ad_node(ad, "CastLike", 2, (int[]){t, ts->logits}, 0, NULL);
    int d = ad_sub(ad, ts->logits, t);
    Attr k = ad_attr_i("keepdims", 0);
    ts->loss = ad_node(ad, "ReduceMean", 1, (int[]){ad_mul(ad, d, d)}, 1, &k);
    return ad->status;
  }
  /* Cross-entropy over the last axis of the output (classes), every other
   * axis a position: [B, C] or [B, S, C] -> SoftmaxCrossEntropyLoss wants
   * the classes on axis 1. */
  if (y.rank != cfg->target_rank + 2)
    return fail(g, -1, -1, "cross-entropy needs the output '%s' to have one more dim (classes) "
                "than the target (rank %d vs %d)", y.name, y.rank, cfg->target_rank + 1);
  int x = ts->logits;
  if (y.rank > 2) {
    int64_t perm[MATC_MAX_RANK];
    perm[0] = 0;
    perm[1] = y.rank - 1;
    for (int i = 2; i < y.rank; i++) perm[i] = i - 1;
    x = ad_transpose(ad, x, perm);
  }
  int t = ts->target;
  Attr a[2] = {ad_attr_s("reduction", "mean"), ad_attr_i("ignore_index", cfg->ignore_index)};
  ts->loss = ad_node(ad, "SoftmaxCrossEntropyLoss", 2, (int[]){x, t}, 2, a);
  return ad->status;
}

static int frozen(const char *list, const char *name) {
  size_t n = strlen(name);
  for (const char *p = list; p && *p;) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == n && strncmp(p, name, n) == 0) return 1;
    p = e ? e + 1 : NULL;
  }
  return 0;
}

/* Which initializers train: float ones that are used, except the running
 * statistics of BatchNormalization (inputs 3 and 4) and those the user
 * froze (buffers an exporter stored as initializers, such as masks). */
static int collect_params(Graph *g, const char *freeze, int *params) {
  char *stat = calloc(g->nvals, 1), *used = calloc(g->nvals, 1);
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = &g->nodes[i];
    if (n->dead) continue;
    for (int j = 0; j < n->nin; j++)
      if (n->in[j] >= 0) used[n->in[j]] = 1;
    if (n->op == OP_BatchNormalization)
      for (int j = 3; j < 5 && j < n->nin; j++)
        if (n->in[j] >= 0) stat[n->in[j]] = 1;
  }
  int np = 0;
  for (int v = 0; v < g->nvals; v++) {
    Value *x = &g->vals[v];
    if (x->kind == V_PARAM && dt_is_float(x->dt) && used[v] && !stat[v] && !frozen(freeze, x->name))
      params[np++] = v;
  }
  free(stat);
  free(used);
  return np;
}

/* Training uses batch statistics in BatchNormalization (as PyTorch's
 * train mode does): each inference-mode BN becomes a training-mode one
 * whose running mean and variance outputs are assigned back to the stored
 * statistics at the end of the step. Its outputs 3 and 4 keep the batch
 * mean and variance for the backward, which would otherwise compute them
 * again (two passes over the input per layer). */
static int bn_batch_stats(Graph *g, int *dst, int *src, int *na) {
  int nn = g->nnodes;
  for (int i = 0; i < nn; i++) {
    Node *n = &g->nodes[i];
    if (n->dead || n->op != OP_BatchNormalization || n->nin < 5) continue;
    if (NODE_OPSET(g, n) >= 14 && attr_i(n, "training_mode", 0)) continue;
    if (n->in[3] < 0 || n->in[4] < 0 || g->vals[n->in[3]].kind != V_PARAM || g->vals[n->in[4]].kind != V_PARAM)
      continue;
    int *out = arena_alloc(g->arena, sizeof(int) * 5);
    out[0] = n->out[0];
    static const char *what[] = {NULL, "running_mean", "running_var", "batch_mean", "batch_var"};
    for (int j = 1; j < 5; j++) {
      char name[512];
      snprintf(name, sizeof name, "%s/%s", n->name, what[j]);
      out[j] = graph_add_value(g, name);
      g->vals[out[j]].producer = i;
    }
    n = &g->nodes[i];
    n->out = out;
    n->nout = 5;
    Attr *at = arena_alloc(g->arena, sizeof(Attr) * (n->nattr + 1));
    int k = 0;
    for (int a = 0; a < n->nattr; a++)
      if (strcmp(n->attr[a].name, "training_mode") && strcmp(n->attr[a].name, "spatial") &&
          strcmp(n->attr[a].name, "is_test") && strcmp(n->attr[a].name, "consumed_inputs"))
        at[k++] = n->attr[a];
    at[k++] = ad_attr_i("training_mode", 1);
    n->attr = at;
    n->nattr = k;
    n->opset = 15;
    int rc = op_table[OP_BatchNormalization].infer(g, i);
    if (rc) return rc;
    n = &g->nodes[i];
    dst[*na] = n->in[3], src[(*na)++] = n->out[1];
    dst[*na] = n->in[4], src[(*na)++] = n->out[2];
  }
  return MATC_OK;
}

int build_train_step(Graph *g, const TrainConfig *cfg, TrainStep *ts) {
  memset(ts, 0, sizeof *ts);
  int *bn_dst = arena_alloc(g->arena, sizeof(int) * (2 * g->nnodes + 1));
  int *bn_src = arena_alloc(g->arena, sizeof(int) * (2 * g->nnodes + 1));
  int nbn = 0;
  if (!cfg->bn_frozen) {
    int rc = bn_batch_stats(g, bn_dst, bn_src, &nbn);
    if (rc) return rc;
  }
  ts->logits = g->outputs[0];
  ts->target = -1;
  AD ad = {g, NULL, -1, MATC_OK};
  int rc = attach_loss(&ad, cfg, ts);
  if (rc) return rc;
  DType dt = g->vals[ts->loss].dt;
  ts->params = calloc(g->nvals + 1, sizeof(int));
  ts->grads = calloc(g->nvals + 1, sizeof(int));
  ts->state = calloc(2 * (size_t)g->nvals + 1, sizeof(int));
  /* BatchNormalization's running statistics change every step: they are
   * state a checkpoint must keep. */
  for (int i = 0; i < nbn; i++) ts->state[ts->nstate++] = bn_dst[i];
  ts->nparams = collect_params(g, cfg->freeze, ts->params);
  if (ts->nparams == 0) return fail(g, -1, -1, "the model has no trainable parameter (no float initializer, or --freeze names them all)");
  int seed = ad_const(&ad, dt, 1.0);
  rc = autodiff(g, 1, &ts->loss, &seed, ts->nparams, ts->params, ts->grads);
  if (rc) return rc;
  ad.needs = NULL;
  /* Data parallel: these gradients are summed across ranks before
   * anything reads them (passes/insert_allreduce.c; a no-op on one rank). */
  g->nsync = ts->nparams;
  g->sync_param = arena_alloc(g->arena, sizeof(int) * (ts->nparams + 1));
  g->sync_grad = arena_alloc(g->arena, sizeof(int) * (ts->nparams + 1));
  memcpy(g->sync_param, ts->params, sizeof(int) * ts->nparams);
  memcpy(g->sync_grad, ts->grads, sizeof(int) * ts->nparams);

  /* Global-norm clipping: g *= min(1, clip / (|g| + 1e-6)). */
  if (cfg->clip_norm > 0) {
    int total = -1;
    for (int i = 0; i < ts->nparams; i++) {
      Attr k = ad_attr_i("keepdims", 0);
      int s = ad_node(&ad, "ReduceSumSquare", 1, &ts->grads[i], 1, &k);
      total = total < 0 ? s : ad_add(&ad, total, s);
    }
    int norm = ad_add(&ad, ad_unary(&ad, "Sqrt", total), ad_const(&ad, dt, 1e-6));
    int scale = ad_node(&ad, "Min", 2, (int[]){ad_const(&ad, dt, 1.0),
                                                ad_div(&ad, ad_const(&ad, dt, cfg->clip_norm), norm)}, 0, NULL);
    for (int i = 0; i < ts->nparams; i++) ts->grads[i] = ad_mul(&ad, ts->grads[i], scale);
  }

  ts->lr = graph_scalar_input(g, "matc.lr", dt, 0);
  ts->bc1 = graph_scalar_input(g, "matc.bias_correction1", dt, 1);
  ts->bc2 = graph_scalar_input(g, "matc.bias_correction2", dt, 1);
  /* New values first, Assigns after all of them. */
  int *dst = calloc(3 * ts->nparams + nbn + 1, sizeof(int)), *src = calloc(3 * ts->nparams + nbn + 1, sizeof(int));
  int na = 0;
  for (int i = 0; i < nbn; i++) dst[na] = bn_dst[i], src[na++] = bn_src[i];
  for (int i = 0; i < ts->nparams && !ad.status; i++) {
    int p = ts->params[i], gr = ts->grads[i];
    Value pv = g->vals[p];
    /* No weight decay on biases and normalisation scales (rank <= 1). */
    double wd = pv.rank >= 2 ? cfg->weight_decay : 0;
    ts->nparam_elems += value_nelem(&pv);
    if (cfg->optimizer == OPT_SGD) {
      /* PyTorch's SGD: g += wd p; v = mu v + g; step = nesterov ? g + mu v : v */
      if (wd) gr = ad_add(&ad, gr, ad_scale(&ad, p, wd));
      int step = gr;
      if (cfg->momentum) {
        int v = state_of(g, ts, p, "momentum");
        int v2 = ad_add(&ad, ad_scale(&ad, v, cfg->momentum), gr);
        dst[na] = v, src[na++] = v2;
        step = cfg->nesterov ? ad_add(&ad, gr, ad_scale(&ad, v2, cfg->momentum)) : v2;
        ts->nstate_elems += value_nelem(&pv);
      }
      dst[na] = p, src[na++] = ad_sub(&ad, p, ad_mul(&ad, step, ts->lr));
    } else {
      /* AdamW: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
       * p -= lr (m / bc1 / (sqrt(v / bc2) + eps) + wd p) */
      int m = state_of(g, ts, p, "adam_m"), v = state_of(g, ts, p, "adam_v");
      int m2 = ad_add(&ad, ad_scale(&ad, m, cfg->beta1), ad_scale(&ad, gr, 1 - cfg->beta1));
      int v2 = ad_add(&ad, ad_scale(&ad, v, cfg->beta2), ad_scale(&ad, ad_mul(&ad, gr, gr), 1 - cfg->beta2));
      int den = ad_add(&ad, ad_unary(&ad, "Sqrt", ad_div(&ad, v2, ts->bc2)), ad_const(&ad, dt, cfg->eps));
      int upd = ad_div(&ad, ad_div(&ad, m2, ts->bc1), den);
      if (wd) upd = ad_add(&ad, upd, ad_scale(&ad, p, wd));
      dst[na] = m, src[na++] = m2;
      dst[na] = v, src[na++] = v2;
      dst[na] = p, src[na++] = ad_sub(&ad, p, ad_mul(&ad, upd, ts->lr));
      ts->nstate_elems += 2 * value_nelem(&pv);
    }
  }
  for (int i = 0; i < na && !ad.status; i++) ad_node_n(&ad, "Assign", 2, (int[]){dst[i], src[i]}, 0, NULL, 0, NULL);
  free(dst);
  free(src);
  if (ad.status) return ad.status;
  /* The step's outputs: the loss and the model output (for accuracy). */
  g->outputs = arena_alloc(g->arena, sizeof(int) * 2);
  g->outputs[0] = ts->loss;
  g->outputs[1] = ts->logits;
  g->noutputs = 2;
  return MATC_OK;
}
