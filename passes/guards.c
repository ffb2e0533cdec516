/* guards.c: MAT guard predicates on the training step (MAT.md section 5).
 *
 * Module k is active when byte k of the DT_U8 [nmodules] graph input
 * `matc.guards` is nonzero; the runtime writes the bytes between steps, so
 * freezing and thawing never recompiles. This pass runs after
 * build_train_step and before lowering. It gives every node a predicate:
 * the set of modules whose work needs the node (it runs iff one of them is
 * active), or "always".
 *
 *   - Sinks: the step's outputs (loss, logits) are always needed, so the
 *     whole forward pass is unconditional. The Assign writing a parameter
 *     or its optimizer state needs the parameter's modules; a parameter in
 *     no module (embeddings, norms, BatchNormalization statistics) is
 *     always-on.
 *   - Every other node is needed by the union of what its consumers need
 *     (one backward sweep). So a weight gradient runs only for its
 *     module, and a dX path only when some active module (or always-on
 *     parameter) below it needs it: everything below the lowest active
 *     module is skipped when nothing always-on is below it.
 *   - A parameter cut into several modules (column slices of Q/K/V, row
 *     slices of the output projection, stacked experts) gets a split plan:
 *     its optimizer nodes (elementwise, parameter-shaped) and the chain
 *     producing its gradient (Add, a keepdims ReduceSum, a Reshape view,
 *     the dW MatMul) are marked with the axis of their output that follows
 *     the parameter's sliced axis. guard_kernels then splits their kernels
 *     per slice, each under its own module, so a frozen head's slice of the
 *     dW GEMM and of the update is really not computed.
 *   - Global-norm clipping: each parameter's ReduceSumSquare term is
 *     guarded by that parameter's modules (not by everything the norm
 *     feeds), so a frozen gradient is not computed and counts as zero.
 *   - stop mode: the nodes that carry a site's gradient to its data input
 *     (the site's grad-rule nodes downstream of its weight) run only when
 *     the site's modules are active; the gradient they would have added is
 *     zero when skipped (MAT.md's `stop`). weights mode keeps every other
 *     module's gradient exact. For a weight cut into heads the cut is per
 *     head: plan_heads (passes/guard_heads.c) splits the attention
 *     backward and the dX GEMMs of a layer per head, so a frozen head's
 *     share is neither computed nor added (stop_mode 2 keeps the layer's
 *     union instead: the reference in tests).
 *
 * Skipped work leaves its output unwritten; guard_kernels adds a zeroing
 * kernel wherever a reader can run while the writer is skipped (clipping
 * reading a frozen gradient, a stop-mode gradient sum), so readers see
 * zero, never garbage. */
#include "guards.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- sets */

typedef struct {
  int nwords;
  uint64_t *bits;      /* n sets of nwords words */
  char *always;        /* per set */
} Sets;

static uint64_t *set_of(Sets *s, int i) { return s->bits + (size_t)i * s->nwords; }

static int sets_new(Sets *s, int n, int nmodules) {
  s->nwords = (nmodules + 63) / 64;
  s->bits = calloc((size_t)n * s->nwords + 1, sizeof(uint64_t));
  s->always = calloc((size_t)n + 1, 1);
  return s->bits && s->always ? MATC_OK : MATC_ERR;
}

static void sets_free(Sets *s) {
  free(s->bits);
  free(s->always);
}

/* dst |= src */
static void set_or(Sets *d, int i, Sets *s, int j) {
  d->always[i] |= s->always[j];
  uint64_t *a = set_of(d, i), *b = set_of(s, j);
  for (int w = 0; w < d->nwords; w++) a[w] |= b[w];
}

static int set_empty(Sets *s, int i) {
  if (s->always[i]) return 0;
  uint64_t *a = set_of(s, i);
  for (int w = 0; w < s->nwords; w++)
    if (a[w]) return 0;
  return 1;
}

/* The predicate id of a set: interned in the Guards table. */
int guards_intern(Guards *gd, const uint64_t *bits, int always, int negate) {
  if (always) return 0;
  for (int p = 1; p < gd->npreds; p++) {
    if (gd->negate[p] != negate) continue;
    if (memcmp(gd->sets + (size_t)p * gd->nwords, bits, sizeof(uint64_t) * gd->nwords) == 0) return p;
  }
  if (gd->npreds == gd->cappreds) {
    int cap = gd->cappreds ? 2 * gd->cappreds : 64;
    uint64_t *sets = arena_alloc(gd->arena, sizeof(uint64_t) * gd->nwords * cap);
    char *neg = arena_alloc(gd->arena, (size_t)cap);
    if (gd->npreds) {
      memcpy(sets, gd->sets, sizeof(uint64_t) * gd->nwords * gd->npreds);
      memcpy(neg, gd->negate, (size_t)gd->npreds);
    }
    gd->sets = sets, gd->negate = neg, gd->cappreds = cap;
  }
  int p = gd->npreds++;
  memcpy(gd->sets + (size_t)p * gd->nwords, bits, sizeof(uint64_t) * gd->nwords);
  gd->negate[p] = (char)negate;
  return p;
}

int guard_pred_runs(const Graph *g, int pred, const uint8_t *guards) {
  const Guards *gd = g->guards;
  if (!gd || pred <= 0) return 1;
  const uint64_t *b = gd->sets + (size_t)pred * gd->nwords;
  int any = 0;
  for (int m = 0; m < g->nmodules && !any; m++)
    if ((b[m / 64] >> (m % 64)) & 1) any = guards[m] != 0;
  return gd->negate[pred] ? !any : any;
}

int guard_pred_negated(const Graph *g, int pred) {
  return g->guards && pred > 0 && g->guards->negate[pred];
}

int guard_pred_implies(const Graph *g, int a, int b) {
  const Guards *gd = g->guards;
  if (b == 0 || a == b) return 1;
  if (!gd || a == 0 || gd->negate[a] || gd->negate[b]) return 0;
  const uint64_t *x = gd->sets + (size_t)a * gd->nwords, *y = gd->sets + (size_t)b * gd->nwords;
  for (int w = 0; w < gd->nwords; w++)
    if (x[w] & ~y[w]) return 0;
  return 1;
}

const char *guard_pred_str(const Graph *g, int pred, char *buf, size_t len) {
  const Guards *gd = g->guards;
  if (!gd || pred <= 0) {
    snprintf(buf, len, "always");
    return buf;
  }
  const uint64_t *b = gd->sets + (size_t)pred * gd->nwords;
  size_t o = (size_t)snprintf(buf, len, "%s{", gd->negate[pred] ? "!" : "");
  int first = 1;
  for (int m = 0; m < g->nmodules && o < len; m++) {
    if (!((b[m / 64] >> (m % 64)) & 1)) continue;
    o += (size_t)snprintf(buf + o, len - o, "%s%d", first ? "" : ",", m);
    first = 0;
  }
  if (o < len) snprintf(buf + o, len - o, "}");
  return buf;
}

/* ---------------------------------------------------------------- parameters */

/* How a trained parameter maps onto modules. */
typedef struct {
  int nent;
  int axis;              /* the sliced axis, -1 when whole */
  int whole;             /* some module takes the whole tensor */
  int mixed;             /* slices on different axes or overlapping: treat as whole */
  int64_t b[64], e[64];
  int mod[64];
} ParamMods;

/* Sorts the slices of one parameter by begin (insertion sort: few). */
static void sort_slices(ParamMods *pm) {
  for (int i = 1; i < pm->nent; i++)
    for (int j = i; j > 0 && pm->b[j] < pm->b[j - 1]; j--) {
      int64_t tb = pm->b[j], te = pm->e[j];
      int tm = pm->mod[j];
      pm->b[j] = pm->b[j - 1], pm->e[j] = pm->e[j - 1], pm->mod[j] = pm->mod[j - 1];
      pm->b[j - 1] = tb, pm->e[j - 1] = te, pm->mod[j - 1] = tm;
    }
}

/* The parameter a state value belongs to: "<param>.momentum" etc. */
static int state_owner(Graph *g, int v) {
  const char *name = g->vals[v].name;
  const char *dot = strrchr(name, '.');
  if (!dot) return -1;
  char buf[512];
  size_t n = (size_t)(dot - name);
  if (n >= sizeof buf) return -1;
  memcpy(buf, name, n);
  buf[n] = 0;
  if (strcmp(dot, ".momentum") && strcmp(dot, ".adam_m") && strcmp(dot, ".adam_v")) return -1;
  return graph_find_value(g, buf);
}

static int same_dims(const Value *a, const Value *b) {
  if (a->rank != b->rank) return 0;
  for (int i = 0; i < a->rank; i++)
    if (a->dims[i] != b->dims[i]) return 0;
  return 1;
}

/* ---------------------------------------------------------------- split plans */

typedef struct {
  Graph *g;
  Guards *gd;
  int split;             /* index into gd->splits */
  const Value *p;        /* the parameter */
  int axis;
} Planner;

static void mark(Planner *pl, int node, int axis) {
  Guards *gd = pl->gd;
  if (gd->node_split[node] >= 0) return;
  gd->node_split[node] = pl->split;
  gd->node_axis[node] = axis;
}

/* The chain producing the gradient: value v, whose `axis` follows the
 * parameter's sliced one. Stops (the rest runs whole, under the union of
 * the slices' modules) at anything it cannot follow. */
static void plan_grad_chain(Planner *pl, int v, int axis) {
  Graph *g = pl->g;
  int node = g->vals[v].producer;
  if (node < 0 || g->nodes[node].dead || pl->gd->node_split[node] >= 0) return;
  Node *n = &g->nodes[node];
  if (n->nout < 1 || n->out[0] != v) return;
  Value *y = &g->vals[v];
  if (axis < 0 || axis >= y->rank || y->dims[axis] != pl->p->dims[pl->axis]) return;
  switch (n->op) {
  case OP_MatMul:
    if (axis == y->rank - 1 || (axis == y->rank - 2 && y->rank >= 2)) mark(pl, node, axis);
    return;
  case OP_Add:
    mark(pl, node, axis);
    for (int j = 0; j < 2; j++)
      if (same_dims(&g->vals[n->in[j]], y)) plan_grad_chain(pl, n->in[j], axis);
    return;
  case OP_ReduceSum: {
    Value *x = &g->vals[n->in[0]];
    if (x->rank != y->rank || x->dims[axis] != y->dims[axis]) return;
    mark(pl, node, axis);
    plan_grad_chain(pl, n->in[0], axis);
    return;
  }
  case OP_Reshape: case OP_Identity: case OP_Squeeze: case OP_Unsqueeze: {
    /* A view that only adds or drops leading unit dims. */
    Value *x = &g->vals[n->in[0]];
    int lead = x->rank - y->rank;
    if (lead < -axis) return;
    for (int i = 0; i < x->rank; i++) {
      int j = i - lead;
      int64_t want = j < 0 ? 1 : y->dims[j];
      if (j < 0 ? x->dims[i] != 1 : x->dims[i] != want) return;
    }
    if (lead < 0) {
      for (int j = 0; j < -lead; j++)
        if (y->dims[j] != 1) return;
    }
    plan_grad_chain(pl, n->in[0], axis + lead);
    return;
  }
  default:
    return;
  }
}

/* Is node an optimizer step on the parameter: elementwise, shaped like it,
 * reading only parameter-shaped values and scalars? */
static int optimizer_node(Planner *pl, int node) {
  Graph *g = pl->g;
  Node *n = &g->nodes[node];
  if (n->dead || n->nout != 1 || !(op_table[n->op].flags & OPF_ELEMENTWISE)) return 0;
  if (!same_dims(&g->vals[n->out[0]], pl->p)) return 0;
  for (int j = 0; j < n->nin; j++) {
    if (n->in[j] < 0) continue;
    Value *x = &g->vals[n->in[j]];
    if (!same_dims(x, pl->p) && value_nelem(x) != 1) return 0;
  }
  return 1;
}

static void plan_optimizer(Planner *pl, int node) {
  Graph *g = pl->g;
  Node *n = &g->nodes[node];
  mark(pl, node, pl->axis);
  for (int j = 0; j < n->nin; j++) {
    int v = n->in[j];
    if (v < 0 || !same_dims(&g->vals[v], pl->p) || g->vals[v].kind != V_ACT) continue;
    int pn = g->vals[v].producer;
    if (pn < 0 || pl->gd->node_split[pn] >= 0) continue;
    if (optimizer_node(pl, pn)) plan_optimizer(pl, pn);
    else plan_grad_chain(pl, v, pl->axis);
  }
}

/* ---------------------------------------------------------------- the pass */

/* The nodes a stop-mode site cuts: its grad-rule nodes ("grad/<site>/...")
 * downstream of its weight, except the fan-in Add autodiff appends under
 * the same name (it also carries other nodes' gradients). */
static void stop_nodes(Graph *g, int site, int weight, int nfwd, char *cut) {
  char prefix[600];
  snprintf(prefix, sizeof prefix, "grad/%s/", g->nodes[site].name);
  size_t pl = strlen(prefix);
  char *down = calloc(g->nvals, 1);
  char *group = calloc(g->nvals, 1);
  down[weight] = 1;
  for (int i = nfwd; i < g->nnodes; i++) {
    Node *n = &g->nodes[i];
    if (n->dead || strncmp(n->name, prefix, pl) != 0) continue;
    int reads_w = 0, outside = 0;
    for (int j = 0; j < n->nin; j++) {
      int v = n->in[j];
      if (v < 0) continue;
      if (down[v]) reads_w = 1;
      else if (g->vals[v].kind == V_ACT && !group[v] && g->vals[v].producer >= nfwd) outside = 1;
    }
    for (int j = 0; j < n->nout; j++)
      if (n->out[j] >= 0) group[n->out[j]] = 1;
    if (!reads_w || (n->op == OP_Add && outside)) continue;
    cut[i] = 1;
    for (int j = 0; j < n->nout; j++)
      if (n->out[j] >= 0) down[n->out[j]] = 1;
  }
  free(down);
  free(group);
}

int insert_guards(Graph *g, const TrainStep *ts, int stop_mode) {
  if (g->nmodules <= 0) return MATC_OK;
  int M = g->nmodules, nv = g->nvals, nn = g->nnodes;
  /* The guard input, all ones at the start. */
  int gv = graph_add_value(g, "matc.guards");
  Value *gval = &g->vals[gv];
  gval->kind = V_INPUT;
  int64_t gdims[1] = {M};
  value_set(gval, DT_U8, 1, gdims);
  gval->data = tensor_new(g->arena, DT_U8, 1, gdims);
  memset(gval->data->data, 1, (size_t)M);
  g->guard_value = gv;
  nv = g->nvals;

  Guards *gd = arena_alloc(g->arena, sizeof *gd);
  gd->arena = g->arena;
  gd->nwords = (M + 63) / 64;
  gd->stop_mode = stop_mode;
  uint64_t *zero = calloc(gd->nwords, sizeof(uint64_t));
  guards_intern(gd, zero, 0, 0);          /* id 0: always (its set unused) */
  free(zero);
  gd->nnodes = nn;
  gd->node_pred = arena_alloc(g->arena, sizeof(int) * (nn + 1));
  gd->node_split = arena_alloc(g->arena, sizeof(int) * (nn + 1));
  gd->node_axis = arena_alloc(g->arena, sizeof(int) * (nn + 1));
  for (int i = 0; i < nn; i++) gd->node_split[i] = -1;

  /* Parameter -> modules. */
  char *trained = calloc(nv, 1);
  for (int i = 0; i < ts->nparams; i++) trained[ts->params[i]] = 1;
  ParamMods *pm = calloc(nv, sizeof *pm);
  for (int v = 0; v < nv; v++) pm[v].axis = -1;
  for (int k = 0; k < M; k++) {
    Module *m = &g->modules[k];
    for (int s = 0; s < m->nslices; s++) {
      ParamSlice sl = m->slices[s];
      if (sl.param < 0 || sl.param >= nv || !trained[sl.param]) continue;
      ParamMods *q = &pm[sl.param];
      Value *p = &g->vals[sl.param];
      int whole = sl.axis < 0 || sl.axis >= p->rank ||
                  (sl.begin <= 0 && sl.end >= p->dims[sl.axis]);
      if (q->nent == 64) { q->mixed = 1; continue; }
      q->mod[q->nent] = k;
      q->b[q->nent] = whole ? 0 : sl.begin;
      q->e[q->nent] = whole ? 0 : sl.end;
      q->nent++;
      if (whole) q->whole = 1;
      else if (q->axis >= 0 && q->axis != sl.axis) q->mixed = 1;
      else q->axis = sl.axis;
    }
  }

  /* The predicate of each parameter's Assign: the union of its modules,
   * always when some part of it is in no module. */
  Sets ps;
  sets_new(&ps, nv, M);
  for (int v = 0; v < nv; v++) {
    if (!trained[v]) continue;
    ParamMods *q = &pm[v];
    if (q->nent == 0) { ps.always[v] = 1; continue; }
    for (int i = 0; i < q->nent; i++) set_of(&ps, v)[q->mod[i] / 64] |= 1ull << (q->mod[i] % 64);
    if (q->whole || q->mixed) continue;
    sort_slices(q);
    int64_t at = 0;
    for (int i = 0; i < q->nent; i++) {
      if (q->b[i] < at) q->mixed = 1;              /* overlapping slices */
      if (q->b[i] > at) ps.always[v] = 1;          /* a gap nobody owns */
      if (q->e[i] > at) at = q->e[i];
    }
    if (at < g->vals[v].dims[q->axis]) ps.always[v] = 1;
  }

  /* Split plans for parameters cut into several slices. */
  gd->capsplits = 4 * ts->nparams + 16;        /* parameter splits, then head splits */
  gd->splits = arena_alloc(g->arena, sizeof(GuardSplit) * gd->capsplits);
  for (int i = 0; i < ts->nparams; i++) {
    int v = ts->params[i];
    ParamMods *q = &pm[v];
    if (q->nent < 2 || q->whole || q->mixed) continue;
    Value *p = &g->vals[v];
    GuardSplit *sp = &gd->splits[gd->nsplits];
    sp->param = v;
    sp->axis = q->axis;
    sp->block = -1;
    sp->nranges = 0;
    int cap = 2 * q->nent + 2;
    sp->begin = arena_alloc(g->arena, sizeof(int64_t) * cap);
    sp->end = arena_alloc(g->arena, sizeof(int64_t) * cap);
    sp->pred = arena_alloc(g->arena, sizeof(int) * cap);
    uint64_t *bits = calloc(gd->nwords, sizeof(uint64_t));
    int64_t at = 0, dim = p->dims[q->axis];
    for (int s = 0; s <= q->nent; s++) {
      int64_t b = s < q->nent ? q->b[s] : dim;
      if (b > at) {                                /* a gap: always-on */
        sp->begin[sp->nranges] = at, sp->end[sp->nranges] = b, sp->pred[sp->nranges++] = 0;
      }
      if (s == q->nent) break;
      memset(bits, 0, sizeof(uint64_t) * gd->nwords);
      bits[q->mod[s] / 64] |= 1ull << (q->mod[s] % 64);
      sp->begin[sp->nranges] = q->b[s], sp->end[sp->nranges] = q->e[s];
      sp->pred[sp->nranges++] = guards_intern(gd, bits, 0, 0);
      at = q->e[s];
    }
    free(bits);
    Planner pl = {g, gd, gd->nsplits, p, q->axis};
    for (int j = 0; j < nn; j++) {
      Node *n = &g->nodes[j];
      if (n->dead || n->op != OP_Assign) continue;
      int dst = n->in[0];
      if (dst != v && state_owner(g, dst) != v) continue;
      mark(&pl, j, q->axis);
      int src = n->in[1];
      int pn = g->vals[src].producer;
      if (pn >= 0 && gd->node_split[pn] < 0) {
        if (optimizer_node(&pl, pn)) plan_optimizer(&pl, pn);
        else plan_grad_chain(&pl, src, q->axis);
      }
    }
    gd->nsplits++;
  }

  /* Stop mode: the sites whose input gradient the site's modules gate. */
  char *cut = calloc(nn + 1, 1);
  int *cut_param = malloc(sizeof(int) * (nn + 1));
  int nfwd = nn;
  for (int i = 0; i < nn; i++)
    if (strncmp(g->nodes[i].name, "grad/", 5) == 0) { nfwd = i; break; }
  if (stop_mode) {
    for (int i = 0; i < nfwd; i++) {
      Node *n = &g->nodes[i];
      if (n->dead || n->nin < 2 || (n->op != OP_MatMul && n->op != OP_Gemm && n->op != OP_Conv)) continue;
      int w = n->in[1];
      if (w < 0 || !trained[w] || ps.always[w]) continue;
      char *c = calloc(nn + 1, 1);
      stop_nodes(g, i, w, nfwd, c);
      for (int j = 0; j < nn; j++)
        if (c[j]) cut[j] = 1, cut_param[j] = w;
      free(c);
    }
  }

  /* Global-norm clipping sums ReduceSumSquare(grad_i) over the trained
   * parameters in order (build_train_step). Each term is guarded by its
   * own parameter's modules instead of by everything the norm feeds, so
   * a frozen gradient is neither computed nor counted: its term is zero
   * (guard_kernels zeroes it), as if the parameter were not trained. */
  int *clip_owner = malloc(sizeof(int) * (nn + 1));
  int nclip = 0;
  for (int i = 0; i < nn; i++) {
    clip_owner[i] = -1;
    Node *n = &g->nodes[i];
    if (!n->dead && n->op == OP_ReduceSumSquare && strcmp(n->name, "grad//ReduceSumSquare") == 0) {
      if (nclip < ts->nparams) clip_owner[i] = ts->params[nclip];
      nclip++;
    }
  }
  if (nclip != ts->nparams)
    for (int i = 0; i < nn; i++) clip_owner[i] = -1;   /* not the pattern this expects */

  /* One backward sweep: what every node's consumers need. */
  Sets vs, ns;
  sets_new(&vs, nv, M);
  sets_new(&ns, 1, M);
  for (int i = 0; i < g->noutputs; i++) vs.always[g->outputs[i]] = 1;
  for (int i = nn - 1; i >= 0; i--) {
    Node *n = &g->nodes[i];
    if (n->dead) continue;
    memset(ns.bits, 0, sizeof(uint64_t) * ns.nwords);
    ns.always[0] = 0;
    if (n->op == OP_Assign) {
      int dst = n->in[0], owner = trained[dst] ? dst : state_owner(g, dst);
      if (owner >= 0 && trained[owner]) set_or(&ns, 0, &ps, owner);
      else ns.always[0] = 1;                       /* BatchNormalization statistics */
    } else if (n->op >= 0 && (op_table[n->op].flags & OPF_EFFECT)) {
      ns.always[0] = 1;
    }
    for (int j = 0; j < n->nout; j++)
      if (n->out[j] >= 0) set_or(&ns, 0, &vs, n->out[j]);
    if (clip_owner[i] >= 0 && !set_empty(&ns, 0)) {
      memset(ns.bits, 0, sizeof(uint64_t) * ns.nwords);
      ns.always[0] = 0;
      set_or(&ns, 0, &ps, clip_owner[i]);
    }
    if (cut[i] && !set_empty(&ns, 0)) {
      /* Runs when the site's modules are active (a superset of "and
       * something below needs it" unless everything does). */
      ns.always[0] = 0;
      memcpy(ns.bits, set_of(&ps, cut_param[i]), sizeof(uint64_t) * ns.nwords);
    }
    gd->node_pred[i] = set_empty(&ns, 0) ? -1 : guards_intern(gd, ns.bits, ns.always[0], 0);
    for (int j = 0; j < n->nin; j++)
      if (n->in[j] >= 0) set_or(&vs, n->in[j], &ns, 0);
  }
  /* A node nothing needs: eliminate_dead removes it; never guard it. */
  for (int i = 0; i < nn; i++)
    if (gd->node_pred[i] < 0) gd->node_pred[i] = 0;
  if (stop_mode == 1) plan_heads(g, gd, nfwd);
  sets_free(&vs);
  sets_free(&ns);
  sets_free(&ps);
  free(cut);
  free(cut_param);
  free(clip_owner);
  free(pm);
  free(trained);
  g->guards = gd;
  return MATC_OK;
}
