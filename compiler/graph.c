/* graph.c: building, printing and checking the graph IR. */
#include "matc_internal.h"

#include <stdlib.h>
#include <string.h>

Graph *graph_new(const char *path) {
  Graph *g = calloc(1, sizeof *g);
  if (!g) matc_die(__FILE__, __LINE__, "out of memory");
  g->arena = arena_new();
  g->path = path ? arena_strdup(g->arena, path) : NULL;
  g->guard_value = -1;
  return g;
}

const char *module_kind_name(ModuleKind k) {
  static const char *names[] = {"layer", "head", "expert", "other"};
  return (unsigned)k < sizeof names / sizeof *names ? names[k] : "?";
}

void graph_free(Graph *g) {
  if (!g) return;
  free(g->vals);
  free(g->nodes);
  free(g->kernels);
  arena_free(g->arena);
  free(g);
}

static void *grow(void *p, int *cap, int need, size_t elem) {
  if (need <= *cap) return p;
  int c = *cap ? *cap * 2 : 64;
  while (c < need) c *= 2;
  void *q = realloc(p, (size_t)c * elem);
  if (!q) matc_die(__FILE__, __LINE__, "out of memory");
  memset((char *)q + (size_t)*cap * elem, 0, (size_t)(c - *cap) * elem);
  *cap = c;
  return q;
}

int graph_add_value(Graph *g, const char *name) {
  g->vals = grow(g->vals, &g->capvals, g->nvals + 1, sizeof(Value));
  Value *v = &g->vals[g->nvals];
  memset(v, 0, sizeof *v);
  v->name = arena_strdup(g->arena, name ? name : "");
  v->rank = -1;
  v->producer = -1;
  v->alias_of = -1;
  v->mem_off = -1;
  return g->nvals++;
}

int value_root(const Graph *g, int v) {
  while (g->vals[v].alias_of >= 0) v = g->vals[v].alias_of;
  return v;
}

int graph_scalar_input(Graph *g, const char *name, DType dt, double init) {
  int v = graph_add_value(g, name);
  Value *x = &g->vals[v];
  x->kind = V_INPUT;
  value_set(x, dt, 0, NULL);
  x->data = tensor_new(g->arena, dt, 0, NULL);
  if (dt == DT_F64) *(double *)x->data->data = init;
  else if (dt == DT_F32) *(float *)x->data->data = (float)init;
  else if (dt == DT_I64) *(int64_t *)x->data->data = (int64_t)init;
  else MATC_ASSERT(0);
  return v;
}

int graph_rng_seed(Graph *g) {
  if (!g->rng_seed1) g->rng_seed1 = graph_scalar_input(g, "matc.rng_seed", DT_I64, 0) + 1;
  return g->rng_seed1 - 1;
}

/* Linear search: graphs have at most a few thousand values and lookups
 * happen only during import. */
int graph_find_value(Graph *g, const char *name) {
  for (int i = g->nvals - 1; i >= 0; i--)
    if (strcmp(g->vals[i].name, name) == 0) return i;
  return -1;
}

int graph_add_node(Graph *g, const char *op_type, const char *name, int nin,
                   const int *in, int nout, const int *out) {
  g->nodes = grow(g->nodes, &g->capnodes, g->nnodes + 1, sizeof(Node));
  int id = g->nnodes++;
  Node *n = &g->nodes[id];
  memset(n, 0, sizeof *n);
  n->op_type = arena_strdup(g->arena, op_type);
  n->op = op_lookup(op_type);
  if (name && *name) {
    n->name = arena_strdup(g->arena, name);
  } else {
    char buf[64];
    snprintf(buf, sizeof buf, "%s_%d", op_type, id);
    n->name = arena_strdup(g->arena, buf);
  }
  n->nin = nin;
  n->nout = nout;
  n->in = arena_alloc(g->arena, sizeof(int) * (nin + 1));
  n->out = arena_alloc(g->arena, sizeof(int) * (nout + 1));
  for (int i = 0; i < nin; i++) {
    n->in[i] = in[i];
    if (in[i] >= 0) g->vals[in[i]].nuses++;
  }
  for (int i = 0; i < nout; i++) {
    n->out[i] = out[i];
    if (out[i] >= 0) g->vals[out[i]].producer = id;
  }
  return id;
}

static const char *kind_name(ValueKind k) {
  switch (k) {
  case V_INPUT: return "input";
  case V_PARAM: return "param";
  case V_CONST: return "const";
  default: return "act";
  }
}

static void dump_value(Graph *g, int v, FILE *f) {
  Value *x = &g->vals[v];
  fprintf(f, "%%%d:%s", v, dt_name(x->dt));
  if (x->rank >= 0) {
    fputc('[', f);
    for (int i = 0; i < x->rank; i++) fprintf(f, "%s%lld", i ? "," : "", (long long)x->dims[i]);
    fputc(']', f);
  } else {
    fputs("[?]", f);
  }
}

void graph_dump(Graph *g, FILE *f) {
  fprintf(f, "graph %s opset %d\n", g->path ? g->path : "", g->opset);
  for (int v = 0; v < g->nvals; v++) {
    Value *x = &g->vals[v];
    if (x->kind == V_ACT) continue;
    if (x->kind == V_CONST && x->nuses == 0) continue;
    fprintf(f, "  %s '%s' ", kind_name(x->kind), x->name);
    dump_value(g, v, f);
    fputc('\n', f);
  }
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = &g->nodes[i];
    if (n->dead) continue;
    fputs("  ", f);
    for (int j = 0; j < n->nout; j++) {
      if (j) fputs(", ", f);
      if (n->out[j] >= 0) dump_value(g, n->out[j], f);
      else fputs("_", f);
    }
    fprintf(f, " = %s '%s' (", n->op_type, n->name);
    for (int j = 0; j < n->nin; j++) {
      if (j) fputs(", ", f);
      if (n->in[j] >= 0) fprintf(f, "%%%d", n->in[j]);
      else fputs("_", f);
    }
    fputs(")\n", f);
  }
  fputs("  outputs:", f);
  for (int i = 0; i < g->noutputs; i++) fprintf(f, " %%%d", g->outputs[i]);
  fputc('\n', f);
}

/* The IR verifier: structural invariants every pass must keep. */
int graph_verify(Graph *g) {
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = &g->nodes[i];
    if (n->dead) continue;
    for (int j = 0; j < n->nin; j++) {
      int v = n->in[j];
      if (v < -1 || v >= g->nvals) return fail(g, i, j, "verifier: bad value id %d", v);
      if (v >= 0 && g->vals[v].kind == V_ACT && g->vals[v].producer < 0)
        return fail(g, i, j, "verifier: value '%s' has no producer", g->vals[v].name);
      if (v >= 0 && g->vals[v].producer >= i)
        return fail(g, i, j, "verifier: value '%s' used before it is produced",
                    g->vals[v].name);
    }
    for (int j = 0; j < n->nout; j++) {
      int v = n->out[j];
      if (v >= 0 && g->vals[v].kind == V_ACT && g->vals[v].producer != i)
        return fail(g, i, -1, "verifier: output %d's producer is %d", j, g->vals[v].producer);
    }
  }
  for (int v = 0; v < g->nvals; v++) {
    Value *x = &g->vals[v];
    if (x->rank > MATC_MAX_RANK) return fail(g, -1, -1, "verifier: value '%s' rank %d", x->name, x->rank);
    if ((x->kind == V_PARAM || x->kind == V_CONST) && !x->data)
      return fail(g, -1, -1, "verifier: constant '%s' has no data", x->name);
    if (x->alias_of >= 0 && g->vals[x->alias_of].alias_of >= 0)
      return fail(g, -1, -1, "verifier: alias chain at '%s' not collapsed", x->name);
  }
  return MATC_OK;
}
