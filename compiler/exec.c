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
    {"fuse-elementwise", fuse_elementwise},
    {"merge-loops", merge_loops},
};

int exec_new(Graph *g, Exec **out) {
  int rc = run_passes(g, backend_passes, sizeof backend_passes / sizeof *backend_passes);
  if (rc) return rc;
  Exec *x = calloc(1, sizeof *x);
  x->g = g;
  x->bufs = calloc(g->nvals + 1, sizeof(void *));
  x->owned = calloc(g->nvals + 1, sizeof(void *));
  for (int v = 0; v < g->nvals; v++) {
    Value *val = &g->vals[v];
    if (val->alias_of >= 0 || val->rank < 0 || val->fused) continue;
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
  free(x->bufs);
  free(x);
}
