/* probe.c: the mNTK probe's C API (probe.h): builds the probe graph
 * (passes/build_probe.c) for n samples, compiles it, and turns each run's
 * site inputs and output gradients into Gram matrices, eigenvalues and
 * traces (runtime/mntk.c). */
#include "probe.h"
#include "../runtime/mntk.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
  int module;
  int xv, *dyv;                   /* probe graph values read each run (dy per backward pass) */
  int64_t x_off, dy_off;          /* element offsets: one expert of a stacked weight */
  MntkSite site;                  /* shapes and slice; x, dy set each run */
} SiteRun;

struct Probe {
  Graph *g;
  Exec *x;
  ProbeGraph pg;
  int64_t n;
  int input;
  size_t in_bytes, tg_bytes;
  int nmod;
  const char **names;
  int nsites;
  SiteRun *sites;
  double *grams, *gall;           /* nmod + 1 Grams of n x n */
  double graph_flops;
  ProbeOptions opt;
  int64_t vec_elems;              /* elements of one Rademacher vector */
  float *user_vectors;            /* probe_set_vectors, or NULL */
  uint64_t runs;
  ProbeStats last;
  char err[512];
};

static double ms_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The same node in the re-imported graph: same index and name, else by name. */
static int map_node(Graph *from, Graph *to, int node) {
  const char *name = from->nodes[node].name;
  if (node < to->nnodes && strcmp(to->nodes[node].name, name) == 0) return node;
  for (int i = 0; i < to->nnodes; i++)
    if (strcmp(to->nodes[i].name, name) == 0) return i;
  return -1;
}

static int copy_modules(Graph *fwd, Graph *g) {
  g->nmodules = fwd->nmodules;
  g->modules = arena_alloc(g->arena, sizeof(Module) * (fwd->nmodules + 1));
  for (int k = 0; k < fwd->nmodules; k++) {
    Module *src = &fwd->modules[k], *m = &g->modules[k];
    *m = *src;
    m->name = arena_strdup(g->arena, src->name);
    m->slices = arena_alloc(g->arena, sizeof(ParamSlice) * (src->nslices + 1));
    for (int s = 0; s < src->nslices; s++) {
      m->slices[s] = src->slices[s];
      m->slices[s].param = graph_find_value(g, fwd->vals[src->slices[s].param].name);
      if (m->slices[s].param < 0 || g->vals[m->slices[s].param].kind != V_PARAM)
        return fail(g, -1, -1, "module '%s': parameter '%s' is not in the probe graph", m->name,
                    fwd->vals[src->slices[s].param].name);
    }
    m->sites = arena_alloc(g->arena, sizeof(ProbeSite) * (src->nsites + 1));
    for (int s = 0; s < src->nsites; s++) {
      m->sites[s] = src->sites[s];
      m->sites[s].node = map_node(fwd, g, src->sites[s].node);
      if (m->sites[s].node < 0)
        return fail(g, -1, -1, "module '%s': probe site node '%s' is not in the probe graph", m->name,
                    fwd->nodes[src->sites[s].node].name);
    }
  }
  return MATC_OK;
}

/* Row blocks before the sample axis in v's row-major layout: the graph
 * bound to n + 1 samples (g2) shows which axis holds the samples (the one
 * that grows from n to n + 1). Views (Reshape, Flatten, Squeeze,
 * Unsqueeze, Identity) keep their input's element order, so a merged
 * [S*B, E] is read through the [S, B, E] it came from. When the axis that
 * grows is a merged one (a*n -> a*(n+1), as [S, B*H, Dh] in PyTorch's
 * multi-head attention), the samples are taken as its major part (what
 * reshaping [B, H] to [B*H] gives), at the deepest such view. -1: not found. */
static int64_t sample_outer(Graph *g, Graph *g2, int v, int64_t n) {
  int64_t merged = -1;
  for (int hops = 0; v >= 0 && hops < 32; hops++) {
    Value *a = &g->vals[v];
    int u = g2 ? graph_find_value(g2, a->name) : -1;
    if (u >= 0 && g2->vals[u].rank == a->rank) {
      Value *b = &g2->vals[u];
      int axis = -1, ndiff = 0;
      for (int d = 0; d < a->rank; d++)
        if (a->dims[d] != b->dims[d]) ndiff++, axis = d;
      int64_t outer = 1;
      for (int d = 0; d < axis; d++) outer *= a->dims[d];
      if (ndiff == 1 && a->dims[axis] == n && b->dims[axis] == n + 1) return outer;
      if (ndiff == 1 && a->dims[axis] % n == 0 && b->dims[axis] % (n + 1) == 0 &&
          a->dims[axis] / n == b->dims[axis] / (n + 1))
        merged = outer;
    }
    if (!g2 && a->rank >= 1 && a->dims[0] % n == 0) return 1;   /* no second graph: assume samples lead */
    int pr = a->producer;
    if (pr < 0) break;
    int op = g->nodes[pr].op;
    if (op != OP_Reshape && op != OP_Flatten && op != OP_Squeeze && op != OP_Unsqueeze && op != OP_Identity) break;
    v = g->nodes[pr].in[0];
  }
  return merged;
}

/* The site's shapes, slice and (for conv) geometry, from the probe graph. */
static int describe_site(Probe *p, Graph *g2, int k, const ProbeSite *ps, int expert, SiteRun *r) {
  Graph *g = p->g;
  Module *m = &g->modules[k];
  Node *nd = &g->nodes[ps->node];
  int64_t n = p->n;
  memset(r, 0, sizeof *r);
  r->module = k;
  r->xv = p->pg.x[ps->node];
  r->dyv = calloc(p->pg.nvec, sizeof(int));
  for (int v = 0; v < p->pg.nvec; v++) r->dyv[v] = p->pg.dy[(size_t)v * p->pg.dy_stride + ps->node];
  Value *xv = &g->vals[r->xv], *dv = &g->vals[r->dyv[0]];
  MntkSite *s = &r->site;
  /* (A stacked expert site reads the layout of y [E, rows, N], as x may be
   * broadcast over the experts.) */
  s->outer = ps->stacked ? -1 : sample_outer(g, g2, r->xv, n);
  if (s->outer < 0) s->outer = sample_outer(g, g2, nd->out[0], n);
  if (s->outer < 0 || (nd->op == OP_Conv && s->outer != 1))
    return unsupported(g, ps->node, 0, "module '%s': cannot tell which axis of the site input '%s' holds the "
                       "samples", m->name, xv->name);
  if (xv->dt != DT_F32 || dv->dt != DT_F32)
    return unsupported(g, ps->node, 0, "module '%s': the probe computes Grams of float32 sites, this one is %s",
                       m->name, dt_name(xv->dt));
  if (nd->op == OP_Conv) {
    if (xv->rank != 4 || dv->rank != 4 || xv->dims[0] != n)
      return unsupported(g, ps->node, 0, "module '%s': only 2-D convolutions are probed", m->name);
    Value *w = &g->vals[nd->in[1]];
    s->conv = 1;
    s->C = xv->dims[1], s->H = xv->dims[2], s->W = xv->dims[3];
    s->KH = w->dims[2], s->KW = w->dims[3];
    s->OH = dv->dims[2], s->OW = dv->dims[3];
    s->nx = s->C * s->KH * s->KW;
    s->ny = dv->dims[1];
    s->tokens = s->OH * s->OW;
    int64_t v[4];
    for (int d = 0; d < 2; d++) s->stride[d] = s->dil[d] = 1, s->pad[d] = 0;
    if (attr_ints(nd, "strides", v, 2) == 2) s->stride[0] = v[0], s->stride[1] = v[1];
    if (attr_ints(nd, "dilations", v, 2) == 2) s->dil[0] = v[0], s->dil[1] = v[1];
    if (attr_ints(nd, "pads", v, 4) == 4) s->pad[0] = v[0], s->pad[1] = v[1];
    const char *ap = attr_s(nd, "auto_pad", "NOTSET");
    if (strncmp(ap, "SAME", 4) == 0) {
      int64_t in[2] = {s->H, s->W}, out[2] = {s->OH, s->OW}, kk[2] = {s->KH, s->KW};
      for (int d = 0; d < 2; d++) {
        int64_t total = (out[d] - 1) * s->stride[d] + (kk[d] - 1) * s->dil[d] + 1 - in[d];
        if (total < 0) total = 0;
        s->pad[d] = strcmp(ap, "SAME_UPPER") == 0 ? total / 2 : total - total / 2;
      }
    } else if (strcmp(ap, "VALID") == 0) {
      s->pad[0] = s->pad[1] = 0;
    }
  } else if (ps->stacked) {
    /* Expert e of x [E or 1, rows, K] @ W [E, K, N] -> y [E, rows, N]:
     * a linear site on the expert's rows. */
    Value *yv = &g->vals[nd->out[0]];
    int64_t E = g->vals[nd->in[1]].dims[0];
    s->nx = xv->dims[xv->rank - 1];
    s->ny = dv->dims[dv->rank - 1];
    int64_t rows = value_nelem(yv) / (E * s->ny), xe = value_nelem(xv);
    if (yv->rank < 3 || yv->dims[yv->rank - 3] != E || (xe != rows * s->nx && xe != E * rows * s->nx) ||
        rows % n || s->outer % E || (rows / n) % (s->outer / E))
      return unsupported(g, ps->node, 0, "module '%s': stacked expert site input %s does not split into %lld "
                         "samples per expert", m->name, xv->name, (long long)n);
    s->outer /= E;
    s->tokens = rows / n;
    r->x_off = xe == rows * s->nx ? 0 : expert * rows * s->nx;
    r->dy_off = expert * rows * s->ny;
  } else {
    s->nx = xv->dims[xv->rank - 1];
    s->ny = dv->dims[dv->rank - 1];
    int64_t xe = value_nelem(xv), de = value_nelem(dv);
    if (s->nx <= 0 || s->ny <= 0 || xe % (n * s->nx) || de != xe / s->nx * s->ny || (xe / (n * s->nx)) % s->outer)
      return unsupported(g, ps->node, 0, "module '%s': site input %s and output gradient %s do not split into "
                         "%lld samples of the same tokens", m->name, xv->name, dv->name, (long long)n);
    s->tokens = xe / (n * s->nx);
  }
  int64_t in_units = s->conv ? s->C : s->nx;
  s->x0 = 0, s->x1 = in_units, s->y0 = 0, s->y1 = s->ny;
  int sliced = ps->end > ps->begin && !ps->stacked;
  if (sliced && ps->slice_out) s->y0 = ps->begin, s->y1 = ps->end;
  if (sliced && !ps->slice_out) s->x0 = ps->begin, s->x1 = ps->end;
  if (s->y1 > s->ny || s->x1 > in_units || s->y0 < 0 || s->x0 < 0)
    return fail(g, ps->node, 1, "module '%s': probe site range [%lld, %lld) is outside the node's %s features",
                m->name, (long long)ps->begin, (long long)ps->end, ps->slice_out ? "output" : "input");
  s->bias = ps->bias >= 0 && (ps->slice_out || ps->stacked);
  return MATC_OK;
}

/* Imports fwd's model into g with every input shaped like fwd's but with
 * n samples, and infers shapes. */
static int load_for(Graph *g, Graph *fwd, int64_t n) {
  int rc = import_onnx(g, fwd->path);
  if (rc) return rc;
  if (g->ninputs < 1 || fwd->ninputs < 1) return fail(g, -1, -1, "the model has no input to probe");
  for (int i = 0; i < g->ninputs && i < fwd->ninputs; i++) {
    Value *v = &g->vals[g->inputs[i]], *f = &fwd->vals[fwd->inputs[i]];
    v->rank = f->rank;
    memcpy(v->dims, f->dims, sizeof v->dims);
    if (v->rank > 0) v->dims[0] = n;
  }
  static const Pass front[] = {{"infer-shapes", infer_shapes}};
  if ((rc = bind_inputs(g, n))) return rc;
  return run_passes(g, front, 1);
}

static int build(Probe *p, Graph *fwd, const TrainConfig *cfg) {
  Graph *g = p->g;
  int rc = load_for(g, fwd, p->n);
  if (rc) return rc;
  p->input = g->inputs[0];
  if (g->noutputs < 1 || g->vals[g->outputs[0]].rank < 1 || g->vals[g->outputs[0]].dims[0] != p->n)
    return fail(g, -1, -1, "the model's first output is not batch-major: the probe needs one row per sample");
  if ((rc = copy_modules(fwd, g)) || (rc = build_probe(g, cfg, p->opt.rademacher, &p->pg))) return rc;
  p->in_bytes = (size_t)value_nelem(&g->vals[p->input]) * dt_size(g->vals[p->input].dt);
  if (p->pg.target >= 0)
    p->tg_bytes = (size_t)value_nelem(&g->vals[p->pg.target]) * dt_size(g->vals[p->pg.target].dt);
  if (p->pg.vectors[0] >= 0) p->vec_elems = value_nelem(&g->vals[p->pg.vectors[0]]);
  /* Site descriptions (modules now all have sites); the same model bound to
   * n + 1 samples tells where the samples are in each site's rows. */
  Graph *g2 = graph_new(fwd->path);
  if (load_for(g2, fwd, p->n + 1)) {
    graph_free(g2);
    g2 = NULL;
  }
  int total = 0;
  for (int k = 0; k < g->nmodules; k++)
    for (int s = 0; s < g->modules[k].nsites; s++) {
      ProbeSite *ps = &g->modules[k].sites[s];
      total += ps->stacked ? (int)(ps->end - ps->begin) : 1;
    }
  p->sites = calloc(total + 1, sizeof *p->sites);
  p->nmod = g->nmodules;
  p->names = calloc(p->nmod + 1, sizeof *p->names);
  for (int k = 0; k < g->nmodules && !rc; k++) {
    p->names[k] = g->modules[k].name;
    for (int s = 0; s < g->modules[k].nsites && !rc; s++) {
      ProbeSite *ps = &g->modules[k].sites[s];
      for (int64_t e = ps->stacked ? ps->begin : 0; e < (ps->stacked ? ps->end : 1) && !rc; e++)
        rc = describe_site(p, g2, k, ps, (int)e, &p->sites[p->nsites++]);
    }
  }
  if (g2) graph_free(g2);
  if (rc) return rc;
  if ((rc = exec_new(g, &p->x))) return rc;
  p->graph_flops = kernels_flops(g);
  p->grams = calloc((size_t)(p->nmod + 1) * p->n * p->n, sizeof(double));
  p->gall = p->grams + (size_t)p->nmod * p->n * p->n;
  return MATC_OK;
}

int probe_new(Graph *fwd, const TrainConfig *cfg, int64_t nsamples, Probe **out) {
  ProbeOptions o = {0, 0};
  return probe_new_opts(fwd, cfg, nsamples, &o, out);
}

int probe_new_opts(Graph *fwd, const TrainConfig *cfg, int64_t nsamples, const ProbeOptions *opt, Probe **out) {
  *out = NULL;
  if (opt->rademacher < 0 || opt->rademacher > 64)
    return fail(fwd, -1, -1, "the probe takes 0 to 64 Rademacher vectors (got %d)", opt->rademacher);
  if (nsamples < 1) return fail(fwd, -1, -1, "the probe needs at least one sample (got %lld)", (long long)nsamples);
  if (fwd->nmodules < 1)
    return fail(fwd, -1, -1, "the probe needs modules: run the partition pass (or fill g->modules) first");
  Probe *p = calloc(1, sizeof *p);
  p->n = nsamples;
  p->opt = *opt;
  p->g = graph_new(fwd->path);
  p->g->verbose = fwd->verbose;
  int rc = build(p, fwd, cfg);
  if (rc) {
    snprintf(fwd->err, sizeof fwd->err, "mNTK probe: %.2000s", p->g->err);
    fwd->unsupported = p->g->unsupported || rc == MATC_UNSUPPORTED;
    probe_free(p);
    return rc;
  }
  *out = p;
  return MATC_OK;
}

void probe_share_params(Probe *p, Graph *train) {
  Graph *g = p->g;
  for (int v = 0; v < g->nvals; v++) {
    Value *val = &g->vals[v];
    if (val->kind != V_PARAM || !val->data) continue;
    int t = graph_find_value(train, val->name);
    if (t < 0 || train->vals[t].kind != V_PARAM || !train->vals[t].data || train->vals[t].dt != val->dt ||
        value_nelem(&train->vals[t]) != value_nelem(val))
      continue;
    val->data = train->vals[t].data;
    p->x->bufs[v] = val->data->data;
  }
  /* Views of parameters (a Reshape of a weight) follow their base. */
  for (int v = 0; v < g->nvals; v++) {
    Value *val = &g->vals[v];
    if (val->alias_of < 0 || !p->x->bufs[val->alias_of]) continue;
    p->x->bufs[v] = (char *)p->x->bufs[val->alias_of] + val->alias_off * dt_size(g->vals[val->alias_of].dt);
  }
}

int probe_run(Probe *p, const void *inputs, const void *targets, double *lambda, double *trace,
              double *lambda_all, double *trace_all, double *flops) {
  int64_t n = p->n, nn = n * n;
  memcpy(p->x->bufs[p->input], inputs, p->in_bytes);
  if (p->pg.target >= 0) memcpy(p->x->bufs[p->pg.target], targets, p->tg_bytes);
  for (int v = 0; v < p->pg.nvec && p->pg.vectors[v] >= 0; v++) {
    float *dst = p->x->bufs[p->pg.vectors[v]];
    if (p->user_vectors) {
      memcpy(dst, p->user_vectors + (size_t)v * p->vec_elems, sizeof(float) * p->vec_elems);
      continue;
    }
    /* Fresh signs every run: splitmix64 of (seed, run, vector, element). */
    for (int64_t e = 0; e < p->vec_elems; e++) {
      uint64_t z = p->opt.seed + 0x9e3779b97f4a7c15ULL * (((p->runs * 65 + (uint64_t)v) << 32) + (uint64_t)e + 1);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      dst[e] = (z ^ (z >> 31)) >> 63 ? 1.0f : -1.0f;
    }
  }
  p->runs++;
  double t0 = ms_now();
  exec_run(p->x);
  double t1 = ms_now(), gf = 0;
  memset(p->grams, 0, sizeof(double) * (p->nmod + 1) * nn);
  p->last.nstructured = p->last.nmaterialised = 0;
  for (int i = 0; i < p->nsites * p->pg.nvec; i++) {
    SiteRun *r = &p->sites[i % p->nsites];
    r->site.x = (const float *)p->x->bufs[r->xv] + r->x_off;
    r->site.dy = (const float *)p->x->bufs[r->dyv[i / p->nsites]] + r->dy_off;
    int how = 0;
    double f = mntk_site_gram(n, &r->site, p->grams + (size_t)r->module * nn, &how);
    if (f < 0) {
      snprintf(p->err, sizeof p->err, "mNTK probe: out of memory forming the Gram of module '%s'",
               p->names[r->module]);
      return MATC_ERR;
    }
    gf += f;
    if (how == MNTK_MATERIALISED) p->last.nmaterialised++;
    else p->last.nstructured++;
  }
  /* Rademacher mode: the mean over the vectors. */
  if (p->pg.nvec > 1)
    for (int64_t e = 0; e < (int64_t)p->nmod * nn; e++) p->grams[e] /= p->pg.nvec;
  for (int k = 0; k < p->nmod; k++)
    for (int64_t e = 0; e < nn; e++) p->gall[e] += p->grams[(size_t)k * nn + e];
  gf += (double)p->nmod * nn;
  for (int k = 0; k <= p->nmod; k++) {
    double lm, tr;
    int info = mntk_eig(n, p->grams + (size_t)k * nn, &lm, &tr);
    if (info) {
      snprintf(p->err, sizeof p->err, "mNTK probe: LAPACK dsyevr failed (info %d) on the Gram of %s", info,
               k < p->nmod ? p->names[k] : "the whole model");
      return MATC_ERR;
    }
    gf += 4.0 / 3.0 * n * n * n;   /* dsyevr's tridiagonal reduction (the textbook count) */
    if (k < p->nmod) {
      if (lambda) lambda[k] = lm;
      if (trace) trace[k] = tr;
    } else {
      if (lambda_all) *lambda_all = lm;
      if (trace_all) *trace_all = tr;
    }
  }
  double t2 = ms_now();
  p->last.graph_ms = t1 - t0;
  p->last.gram_ms = t2 - t1;
  p->last.graph_flops = p->graph_flops;
  p->last.gram_flops = gf;
  p->last.grams = p->grams;
  if (flops) *flops = p->graph_flops + gf;
  return MATC_OK;
}

int probe_nmodules(const Probe *p) { return p->nmod; }
const char *probe_module_name(const Probe *p, int k) { return k >= 0 && k < p->nmod ? p->names[k] : NULL; }
int64_t probe_nsamples(const Probe *p) { return p->n; }
const char *probe_error(const Probe *p) { return p->err; }
void probe_stats(const Probe *p, ProbeStats *s) { *s = p->last; }

int probe_set_vectors(Probe *p, const float *v) {
  if (!p->vec_elems) return MATC_ERR;
  free(p->user_vectors);
  p->user_vectors = NULL;
  if (!v) return MATC_OK;
  p->user_vectors = malloc(sizeof(float) * p->vec_elems * p->pg.nvec);
  memcpy(p->user_vectors, v, sizeof(float) * p->vec_elems * p->pg.nvec);
  return MATC_OK;
}

void probe_free(Probe *p) {
  if (!p) return;
  for (int i = 0; i < p->nsites; i++) free(p->sites[i].dyv);
  free(p->user_vectors);
  exec_free(p->x);
  if (p->g) graph_free(p->g);
  free(p->sites);
  free(p->names);
  free(p->grams);
  free(p);
}
