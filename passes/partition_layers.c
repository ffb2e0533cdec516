/* partition_layers.c: the layers the partition works with (Gemm, MatMul,
 * Conv with a parameter weight), which parameters train, and each
 * module's probe sites and FLOPs, computed from its slices alone so the
 * automatic and the user's modules are described the same way. */
#include "partition.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- layers */

Uses uses_build(Graph *g) {
  Uses u;
  u.start = calloc(g->nvals + 1, sizeof(int));
  int n = 0;
  for (int i = 0; i < g->nnodes; i++) {
    Node *nd = &g->nodes[i];
    if (nd->dead) continue;
    for (int j = 0; j < nd->nin; j++)
      if (nd->in[j] >= 0) u.start[nd->in[j] + 1]++, n++;
  }
  for (int v = 0; v < g->nvals; v++) u.start[v + 1] += u.start[v];
  u.node = malloc(sizeof(int) * ((size_t)n + 1));
  u.input = malloc(sizeof(int) * ((size_t)n + 1));
  int *fill = calloc((size_t)g->nvals + 1, sizeof(int));
  for (int i = 0; i < g->nnodes; i++) {
    Node *nd = &g->nodes[i];
    if (nd->dead) continue;
    for (int j = 0; j < nd->nin; j++) {
      int v = nd->in[j];
      if (v < 0) continue;
      int k = u.start[v] + fill[v]++;
      u.node[k] = i;
      u.input[k] = j;
    }
  }
  free(fill);
  return u;
}

void uses_free(Uses *u) {
  free(u->start);
  free(u->node);
  free(u->input);
}

int uses_count(const Uses *u, int v) { return u->start[v + 1] - u->start[v]; }

static int is_float_param(Graph *g, int v) {
  return v >= 0 && g->vals[v].kind == V_PARAM && dt_is_float(g->vals[v].dt);
}

static int in_list(const char *list, const char *name) {
  size_t n = strlen(name);
  for (const char *p = list; p && *p;) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == n && strncmp(p, name, n) == 0) return 1;
    p = e ? e + 1 : NULL;
  }
  return 0;
}

/* The same rule as build_train_step's collect_params. */
char *trainable_mask(Graph *g, const char *freeze) {
  char *used = calloc((size_t)g->nvals + 1, 1), *stat = calloc((size_t)g->nvals + 1, 1);
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = &g->nodes[i];
    if (n->dead) continue;
    for (int j = 0; j < n->nin; j++) {
      if (n->in[j] < 0) continue;
      used[n->in[j]] = 1;
      if (n->op == OP_BatchNormalization && (j == 3 || j == 4)) stat[n->in[j]] = 1;
    }
  }
  for (int v = 0; v < g->nvals; v++)
    used[v] = used[v] && !stat[v] && is_float_param(g, v) && !in_list(freeze, g->vals[v].name);
  free(stat);
  return used;
}

int partition_trainable(Graph *g, int v, const char *freeze) {
  if (!is_float_param(g, v) || in_list(freeze, g->vals[v].name)) return 0;
  char *m = trainable_mask(g, freeze);
  int t = m[v];
  free(m);
  return t;
}

/* A MatMul's bias: the only use of y is an Add with a float parameter of
 * N elements along y's last axis. Sets *add to that node. */
static int matmul_bias(Graph *g, const Uses *u, int y, int64_t N, int *add) {
  if (uses_count(u, y) != 1) return -1;
  Node *n = &g->nodes[u->node[u->start[y]]];
  if (n->op != OP_Add || n->nin != 2) return -1;
  int other = n->in[1 - u->input[u->start[y]]];
  Value *b = &g->vals[other];
  if (!is_float_param(g, other) || b->rank < 1 || b->dims[b->rank - 1] != N ||
      value_nelem(b) != N)
    return -1;
  *add = u->node[u->start[y]];
  return other;
}

/* Is node i a layer (Gemm/MatMul/Conv with a float parameter weight)? */
int layer_at(Graph *g, const Uses *u, int i, Layer *L) {
  Node *n = &g->nodes[i];
  memset(L, 0, sizeof *L);
  L->node = i;
  L->b = -1;
  if (n->dead || n->nin < 2 || n->nout < 1 || !is_float_param(g, n->in[1])) return 0;
  L->x = n->in[0];
  L->w = n->in[1];
  L->y = n->out[0];
  Value *w = &g->vals[L->w], *y = &g->vals[L->y];
  if (w->rank < 0 || y->rank < 1 || !value_nelem_known(y) || value_nelem(w) <= 0 || value_nelem(y) <= 0)
    return 0;                      /* nothing to divide work by: not a layer */
  if (n->op == OP_MatMul && (w->rank == 2 || w->rank == 3)) {
    L->stacked = w->rank == 3;
    L->in_axis = w->rank - 2;
    L->out_axis = w->rank - 1;
    L->K = w->dims[L->in_axis];
    L->N = w->dims[L->out_axis];
    L->E = L->stacked ? w->dims[0] : 1;
    if (L->stacked && (y->rank < 3 || y->dims[y->rank - 3] != L->E)) return 0;
    L->rows = value_nelem(y) / (L->N * L->E);
    int add = -1;
    L->b = matmul_bias(g, u, L->y, L->N, &add);
    if (L->b < 0 && L->stacked) {
      /* a stacked bias [E, 1, N] */
      if (uses_count(u, L->y) == 1 && g->nodes[u->node[u->start[L->y]]].op == OP_Add) {
        Node *a = &g->nodes[u->node[u->start[L->y]]];
        int other = a->in[1 - u->input[u->start[L->y]]];
        Value *b = &g->vals[other];
        if (is_float_param(g, other) && b->rank >= 2 && value_nelem(b) == L->E * L->N &&
            b->dims[0] == L->E && b->dims[b->rank - 1] == L->N)
          L->b = other, add = u->node[u->start[L->y]];
      }
    }
    if (L->b >= 0) L->y = g->nodes[add].out[0];
    return 1;
  }
  if (n->op == OP_Gemm && w->rank == 2) {
    int tb = (int)attr_i(n, "transB", 0);
    L->out_axis = tb ? 0 : 1;
    L->in_axis = tb ? 1 : 0;
    L->K = w->dims[L->in_axis];
    L->N = w->dims[L->out_axis];
    L->E = 1;
    L->rows = value_nelem(y) / L->N;
    if (n->nin > 2 && is_float_param(g, n->in[2]) && value_nelem(&g->vals[n->in[2]]) == L->N &&
        g->vals[n->in[2]].dims[g->vals[n->in[2]].rank - 1] == L->N)
      L->b = n->in[2];
    return 1;
  }
  if (n->op == OP_Conv && w->rank >= 3) {
    L->out_axis = 0;
    L->in_axis = 1;
    L->N = w->dims[0];
    L->K = value_nelem(w) / L->N;
    L->E = 1;
    L->rows = value_nelem(y) / L->N;
    if (n->nin > 2 && is_float_param(g, n->in[2])) L->b = n->in[2];
    return 1;
  }
  return 0;
}

/* Does each value depend on a trainable parameter (so a backward pass
 * computes its gradient)? Nodes are in topological order. */
static char *needs_grad(Graph *g, const char *freeze) {
  char *need = trainable_mask(g, freeze);
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = &g->nodes[i];
    if (n->dead) continue;
    int any = 0;
    for (int j = 0; j < n->nin; j++)
      if (n->in[j] >= 0 && need[n->in[j]] && dt_is_float(g->vals[n->in[j]].dt)) any = 1;
    for (int j = 0; j < n->nout; j++)
      if (n->out[j] >= 0 && dt_is_float(g->vals[n->out[j]].dt)) need[n->out[j]] |= (char)any;
  }
  return need;
}

/* ---------------------------------------------------------------- sites and FLOPs */

static int same_range(const ParamSlice *s, int64_t b, int64_t e) {
  return s->axis < 0 ? b == 0 && e == 0 : s->begin == b && s->end == e;
}

void partition_find_sites(Graph *g, Module *m, const char *freeze) {
  Uses u = uses_build(g);
  char *need = needs_grad(g, freeze);
  int cap = 0;
  m->nsites = 0;
  m->sites = NULL;
  m->fwd_flops = m->bwd_flops = 0;
  m->nparams = 0;
  for (int s = 0; s < m->nslices; s++) {
    ParamSlice *ps = &m->slices[s];
    Value *pv = &g->vals[ps->param];
    m->nparams += ps->axis < 0 ? value_nelem(pv) : value_nelem(pv) / pv->dims[ps->axis] * (ps->end - ps->begin);
  }
  for (int i = 0; i < g->nnodes; i++) {
    Layer L;
    if (!layer_at(g, &u, i, &L)) continue;
    for (int s = 0; s < m->nslices; s++) {
      ParamSlice *ps = &m->slices[s];
      if (ps->param != L.w) continue;
      ProbeSite site = {.node = i, .weight = s, .bias = -1, .slice_out = 1};
      double frac;
      if (ps->axis < 0) {
        frac = 1;
      } else if (L.stacked && ps->axis == 0) {
        site.stacked = 1;
        site.begin = ps->begin, site.end = ps->end;
        frac = (double)(ps->end - ps->begin) / L.E;
      } else if (ps->axis == L.out_axis) {
        site.begin = ps->begin, site.end = ps->end;
        frac = (double)(ps->end - ps->begin) / L.N;
      } else if (ps->axis == L.in_axis && (g->nodes[i].op != OP_Conv || attr_i(&g->nodes[i], "group", 1) == 1)) {
        /* input features (a conv's input channels, all their taps) */
        site.slice_out = 0;
        site.begin = ps->begin, site.end = ps->end;
        frac = (double)(ps->end - ps->begin) / g->vals[L.w].dims[L.in_axis];
      } else {
        continue;                /* a slice the structured formula cannot read */
      }
      /* the bias slice added to the same outputs */
      for (int t = 0; t < m->nslices && L.b >= 0 && site.slice_out; t++) {
        ParamSlice *bs = &m->slices[t];
        if (bs->param != L.b) continue;
        if (site.stacked ? bs->axis == 0 && same_range(bs, site.begin, site.end)
                         : (bs->axis < 0 && ps->axis < 0) ||
                               (bs->axis == g->vals[L.b].rank - 1 && same_range(bs, site.begin, site.end)))
          site.bias = t;
      }
      if (m->nsites == cap) {
        cap = cap ? 2 * cap : 4;
        ProbeSite *ns = arena_alloc(g->arena, sizeof *ns * cap);
        if (m->nsites) memcpy(ns, m->sites, sizeof *ns * m->nsites);
        m->sites = ns;
      }
      m->sites[m->nsites++] = site;
      /* forward 2*rows*K*N over the slice; backward the weight gradient
       * plus the input gradient when the input needs one */
      double fwd = 2.0 * L.rows * L.K * L.N * L.E * frac;
      m->fwd_flops += fwd;
      m->bwd_flops += fwd * (1 + (L.x >= 0 && need[L.x]));
    }
  }
  free(need);
  uses_free(&u);
}

/* GEMM/conv FLOPs of every layer with a trainable weight, as if it were
 * one module: the reference the modules' FLOPs are a share of. */
void partition_total_flops(Graph *g, const char *freeze, double *fwd, double *bwd) {
  Module all = {.name = "all"};
  all.slices = arena_alloc(g->arena, sizeof(ParamSlice) * (g->nvals + 1));
  char *tr = trainable_mask(g, freeze);
  for (int v = 0; v < g->nvals; v++)
    if (tr[v]) all.slices[all.nslices++] = (ParamSlice){v, -1, 0, 0};
  free(tr);
  partition_find_sites(g, &all, freeze);
  *fwd = all.fwd_flops;
  *bwd = all.bwd_flops;
}
