/* exec.c: compiles a shape-inferred graph down to native code and runs it.
 * Storage: parameters and constants are used in place; every other value
 * gets its own 64-byte aligned buffer (views point into their base). */
#include "exec.h"
#include "../runtime/rt.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static const Pass backend_passes[] = {
    {"eliminate-dead", eliminate_dead},
    {"lower-kernels", lower_kernels},
    {"guard-kernels", guard_kernels},
    {"insert-allreduce", insert_allreduce},
    {"fuse-elementwise", fuse_elementwise},
    {"assign-in-place", assign_in_place},
    {"merge-loops", merge_loops},
    {"plan-memory", plan_memory},
};

const ExecBackend *exec_backend;
/* Defined by jit.c. Weak, so that the LLVM-free trainer library
 * (libmatc_aot.a, without jit.c) links; there exec_backend is set. */
extern const ExecBackend exec_jit_backend __attribute__((weak));

/* Buffers of 2 MB or more (the activation arena, large optimizer state)
 * go on 2 MB pages where the kernel gives them on request (transparent
 * huge pages in "madvise" mode, Debian's default). Winograd transforms and
 * GEMMs stream through tens of MB with 16 streams at once; on 4 KB pages
 * their TLB misses took half their time (vgg-small's 28x28 input
 * transform: 2.3 -> 1.0 ms). */
#define HUGE_PAGE ((size_t)2 << 20)
static void *buffer_alloc(size_t n) {
  if (n < HUGE_PAGE) return aligned_alloc(64, n ? n : 64);
  n = (n + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
  void *p = aligned_alloc(HUGE_PAGE, n);
  if (p) madvise(p, n, MADV_HUGEPAGE);
  return p;
}

int exec_new(Graph *g, Exec **out) {
  int rc = run_passes(g, backend_passes, sizeof backend_passes / sizeof *backend_passes);
  if (rc) return rc;
  Exec *x = calloc(1, sizeof *x);
  x->g = g;
  x->bufs = calloc(g->nvals + 1, sizeof(void *));
  x->owned = calloc(g->nvals + 1, sizeof(void *));
  x->arena = buffer_alloc(g->arena_bytes > 0 ? (size_t)g->arena_bytes : 0);
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
    x->owned[v] = buffer_alloc(bytes);
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
  x->backend = exec_backend ? exec_backend : &exec_jit_backend;
  if (!x->backend || !x->backend->bind) {
    exec_free(x);
    return fail(g, -1, -1, "this program has no code generator (no JIT and no precompiled code)");
  }
  rc = x->backend->bind(g, &x->code, &x->entry);
  if (rc) {
    exec_free(x);
    return rc;
  }
  *out = x;
  return MATC_OK;
}

/* FNV-1a, fed field by field (never struct bytes: padding is undefined). */
typedef struct {
  uint64_t h;
  int64_t budget;                /* expression nodes left to hash */
} Fp;

static void fp_bytes(Fp *f, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) f->h = (f->h ^ b[i]) * 0x100000001b3ULL;
}
static void fp_i64(Fp *f, int64_t v) { fp_bytes(f, &v, sizeof v); }
static void fp_f64(Fp *f, double v) { fp_bytes(f, &v, sizeof v); }

/* Fused expressions can share subtrees, so the walk is bounded; the bound
 * is the same on both sides, so the hash stays deterministic. */
static void fp_expr(Fp *f, const Expr *e) {
  if (!e) { fp_i64(f, -1); return; }
  if (f->budget-- <= 0) return;
  fp_i64(f, e->kind);
  fp_i64(f, e->dt);
  fp_i64(f, e->op);
  fp_f64(f, e->f);
  fp_i64(f, e->i);
  fp_i64(f, e->var);
  if (e->kind == EX_LOAD) {
    fp_i64(f, e->val);
    fp_i64(f, e->off);
    for (int v = 0; v < KMAX_VARS; v++) fp_i64(f, e->stride[v]);
    fp_i64(f, e->ndyn);
    for (int d = 0; d < e->ndyn; d++) {
      fp_i64(f, e->dstride[d]);
      fp_expr(f, e->dyn[d]);
    }
  }
  fp_expr(f, e->a);
  fp_expr(f, e->b);
  fp_expr(f, e->c);
}

uint64_t exec_plan_fingerprint(const Graph *g) {
  Fp f = {0xcbf29ce484222325ULL, 1 << 22};
  fp_i64(&f, g->arena_bytes);
  fp_i64(&f, g->nvals);
  fp_i64(&f, g->nkernels);
  fp_i64(&f, g->guard_value);
  for (int v = 0; v < g->nvals; v++) {
    const Value *val = &g->vals[v];
    fp_i64(&f, val->kind);
    fp_i64(&f, val->dt);
    fp_i64(&f, val->rank);
    for (int d = 0; d < val->rank && d < MATC_MAX_RANK; d++) fp_i64(&f, val->dims[d]);
    fp_i64(&f, val->alias_of);
    fp_i64(&f, val->alias_off);
    fp_i64(&f, val->fused);
    fp_i64(&f, val->mem_off);
  }
  for (int i = 0; i < g->nkernels; i++) {
    const Kernel *k = &g->kernels[i];
    fp_i64(&f, k->kind);
    fp_i64(&f, k->dead);
    fp_i64(&f, k->pred);
    if (k->dead) continue;
    if (k->kind == K_EXTERN) {
      fp_i64(&f, k->ext_fn);
      fp_i64(&f, k->nargs);
      for (int j = 0; j < k->nargs; j++) { fp_i64(&f, k->args[j]); fp_i64(&f, k->argoff[j]); }
      fp_i64(&f, k->np);
      for (int j = 0; j < k->np; j++) fp_i64(&f, k->p[j]);
      continue;
    }
    fp_i64(&f, k->nvar);
    fp_i64(&f, k->nred);
    for (int v = 0; v < k->nvar + k->nred && v < KMAX_VARS; v++) {
      fp_i64(&f, k->ext[v]);
      fp_i64(&f, k->out_stride[v]);
    }
    fp_i64(&f, k->out);
    fp_i64(&f, k->out_dt);
    fp_i64(&f, k->out_off);
    fp_i64(&f, k->red);
    fp_expr(&f, k->body);
    fp_expr(&f, k->post);
  }
  return f.h;
}

char *exec_describe_inputs(const Graph *g) {
  size_t cap = 256, len = 0;
  char *s = malloc(cap);
  s[0] = 0;
  for (int v = 0; v < g->nvals; v++) {
    const Value *val = &g->vals[v];
    if (val->kind != V_INPUT || val->rank < 0) continue;
    char item[1024];
    int n = snprintf(item, sizeof item, "%s%s %s[", len ? "; " : "", val->name, dt_name(val->dt));
    for (int d = 0; d < val->rank && n < 900; d++) n += snprintf(item + n, sizeof item - n, "%s%lld", d ? "," : "",
                                                                  (long long)val->dims[d]);
    snprintf(item + n, sizeof item - n, "]");
    size_t il = strlen(item);
    if (len + il + 1 > cap) {
      while (len + il + 1 > cap) cap *= 2;
      s = realloc(s, cap);
    }
    memcpy(s + len, item, il + 1);
    len += il;
  }
  return s;
}

void exec_run(Exec *x) { x->entry(x->bufs); }

void exec_free(Exec *x) {
  if (!x) return;
  if (x->backend && x->backend->release) x->backend->release(x->code);
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
