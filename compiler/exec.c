/* exec.c: compiles a shape-inferred graph down to native code and runs it.
 * Storage: parameters and constants are used in place; every other value
 * gets its own 64-byte aligned buffer (views point into their base). */
#include "exec.h"
#include "../runtime/rt.h"

#include <stdlib.h>
#include <string.h>

static const Pass backend_passes[] = {
    {"eliminate-dead", eliminate_dead},
    {"lower-kernels", lower_kernels},
    {"guard-kernels", guard_kernels},
    {"fuse-elementwise", fuse_elementwise},
    {"merge-loops", merge_loops},
    {"plan-memory", plan_memory},
};

int exec_new(Graph *g, Exec **out) {
  int rc = run_passes(g, backend_passes, sizeof backend_passes / sizeof *backend_passes);
  if (rc) return rc;
  Exec *x = calloc(1, sizeof *x);
  x->g = g;
  x->bufs = calloc(g->nvals + 1, sizeof(void *));
  x->owned = calloc(g->nvals + 1, sizeof(void *));
  x->arena = aligned_alloc(64, g->arena_bytes > 0 ? (size_t)g->arena_bytes : 64);
  if (!x->arena) {
    exec_free(x);
    return fail(g, -1, -1, "out of memory allocating the %lld-byte activation arena",
                (long long)g->arena_bytes);
  }
  for (int v = 0; v < g->nvals; v++) {
    Value *val = &g->vals[v];
    if (val->alias_of >= 0 || val->rank < 0 || val->fused) continue;
    if (val->mem_off >= 0) {
      x->bufs[v] = x->arena + val->mem_off;
      continue;
    }
    if (val->data && val->kind != V_INPUT) {
      x->bufs[v] = val->data->data;
      continue;
    }
    if (val->kind == V_ACT && (val->producer < 0 || g->nodes[val->producer].dead)) continue;
    size_t bytes = (size_t)value_nelem(val) * dt_size(val->dt);
    bytes = (bytes + 63) & ~(size_t)63;
    x->owned[v] = aligned_alloc(64, bytes ? bytes : 64);
    if (!x->owned[v]) {
      exec_free(x);
      return fail(g, -1, -1, "out of memory allocating %zu bytes for '%s'", bytes, val->name);
    }
    memset(x->owned[v], 0, bytes);
    /* An input with an initial value (the MAT guard bytes start all ones)
     * starts with it. */
    if (val->kind == V_INPUT && val->data && val->data->data)
      memcpy(x->owned[v], val->data->data, (size_t)value_nelem(val) * dt_size(val->dt));
    x->bufs[v] = x->owned[v];
  }
  for (int v = 0; v < g->nvals; v++) {
    Value *val = &g->vals[v];
    if (val->alias_of < 0) continue;
    char *base = x->bufs[val->alias_of];
    if (base) x->bufs[v] = base + val->alias_off * dt_size(g->vals[val->alias_of].dt);
  }
  rc = jit_compile(g, &x->jit, &x->entry);
  if (rc) {
    exec_free(x);
    return rc;
  }
  *out = x;
  return MATC_OK;
}

void exec_run(Exec *x) { x->entry(x->bufs); }

void exec_free(Exec *x) {
  if (!x) return;
  jit_free(x->jit);
  for (int v = 0; v < x->g->nvals; v++) free(x->owned[v]);
  free(x->owned);
  free(x->arena);
  free(x->bufs);
  free(x);
}

typedef struct {
  int k;
  double ns;
} ProfRow;

static int by_time(const void *a, const void *b) {
  double x = ((const ProfRow *)a)->ns, y = ((const ProfRow *)b)->ns;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* Prints the kernels that took the most time, with their source nodes. */
void exec_print_profile(Exec *x, FILE *f, int top) {
  Graph *g = x->g;
  ProfRow *rows = calloc(g->nkernels + 1, sizeof *rows);
  double total = 0;
  int n = 0;
  for (int i = 0; i < g->nkernels; i++) {
    double ns;
    int64_t calls;
    matc_rt_prof_get(i, &ns, &calls);
    if (!calls) continue;
    rows[n].k = i;
    rows[n].ns = ns / calls;
    total += rows[n].ns;
    n++;
  }
  qsort(rows, n, sizeof *rows, by_time);
  fprintf(f, "%-6s %-10s %8s %6s  %-14s %s\n", "kernel", "kind", "ms/run", "%", "op", "node");
  for (int i = 0; i < n && i < top; i++) {
    Kernel *k = &g->kernels[rows[i].k];
    Node *nd = &g->nodes[k->node];
    fprintf(f, "k%-5d %-10s %8.3f %5.1f%%  %-14s %s\n", rows[i].k,
            k->kind == K_EXTERN ? "extern" : k->red ? "reduce" : "loop", rows[i].ns / 1e6,
            100 * rows[i].ns / (total > 0 ? total : 1), nd->op_type, nd->name);
  }
  fprintf(f, "total %.3f ms over %d kernels\n", total / 1e6, n);
  free(rows);
}
