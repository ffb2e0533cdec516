/* insert_allreduce.c: the data-parallel gradient exchange of a training
 * step (runtime/dp.h, README "Data-parallel training").
 *
 * Runs after guard_kernels, so the weight-gradient and optimizer kernels
 * of parameters split between modules are already split, and before
 * fusion and memory planning, so both see the new kernels: a gradient
 * that an extern reads is never fused into its reader, and it stays live
 * (its bytes unshared) from its first write to its last read.
 *
 * For every gradient g->sync_grad[i] (recorded by build_train_step before
 * clipping), with storage root r:
 *   - W, the last kernel writing r; a put kernel (ptrs {gradient}) goes
 *     right after it: the gradient is complete, its bucket can fill;
 *   - R, the first kernel reading r; a get kernel goes right before it:
 *     the sum across ranks is copied back. Every read must follow every
 *     write (clipping and the update read finished gradients), else the
 *     pass fails: the exchange would be in the wrong place. And since a
 *     get waits for its whole bucket, every get must follow every put.
 * Backward produces the gradients from the last layer to the first, so
 * the first buckets are summed while backward still runs; the reads are
 * all in the update, after backward.
 *
 * The plan lists the gradients in put order with their slices: a
 * parameter split between modules (insert_guards' split plans: heads,
 * stacked experts) has one slice per range, under that range's module;
 * any other gradient is one slice under the modules its update runs for
 * (its Assign's predicate), or always. At run time a slice of a frozen
 * module is not sent. On one rank the kernels return at once. */
#include "guards.h"
#include "../runtime/dp.h"
#include "../runtime/rt.h"

#include <stdlib.h>
#include <string.h>

/* Does kernel k write / read storage root r? An extern other than GEMM
 * may do both with any argument. */
static void kernel_uses(Graph *g, const Kernel *k, int r, int *writes, int *reads) {
  *writes = *reads = 0;
  if (k->kind == K_LOOP) {
    *writes = value_root(g, k->out) == r;
    *reads = expr_loads(g, k->body, r) || expr_loads(g, k->post, r);
    return;
  }
  for (int j = 0; j < k->nargs; j++) {
    if (value_root(g, k->args[j]) != r) continue;
    if (k->ext_fn == EXT_gemm && j == 2) {
      *writes = 1;
      if (matc_rt_bits_f64(k->p[GEMM_BETA]) != 0) *reads = 1;
    } else if (k->ext_fn == EXT_gemm) {
      *reads = 1;
    } else {
      *writes = *reads = 1;
    }
  }
}

/* The modules of a predicate, as a list (empty: always). */
static int pred_modules(Graph *g, int pred, int **mods) {
  Guards *gd = g->guards;
  *mods = NULL;
  if (!gd || pred <= 0) return 0;
  const uint64_t *set = gd->sets + (size_t)pred * gd->nwords;
  int n = 0;
  for (int m = 0; m < g->nmodules; m++)
    if ((set[m / 64] >> (m % 64)) & 1) n++;
  *mods = arena_alloc(g->arena, sizeof(int) * (n + 1));
  n = 0;
  for (int m = 0; m < g->nmodules; m++)
    if ((set[m / 64] >> (m % 64)) & 1) (*mods)[n++] = m;
  return n;
}

/* The slices of parameter p's gradient (see the top of the file). */
static int grad_slices(Graph *g, int p, DpSlice **out) {
  Guards *gd = g->guards;
  Value *pv = &g->vals[p];
  int64_t nelem = value_nelem(pv);
  const GuardSplit *sp = NULL;
  for (int s = 0; gd && s < gd->nsplits; s++)
    if (gd->splits[s].param == p) sp = &gd->splits[s];
  int axis = -1;
  for (int k = 0; sp && k < g->nmodules && axis < 0; k++)
    for (int s = 0; s < g->modules[k].nslices; s++)
      if (g->modules[k].slices[s].param == p && g->modules[k].slices[s].axis >= 0) {
        axis = g->modules[k].slices[s].axis;
        break;
      }
  if (sp && axis >= 0 && axis < pv->rank) {
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; d++) outer *= pv->dims[d];
    for (int d = axis + 1; d < pv->rank; d++) inner *= pv->dims[d];
    DpSlice *sl = arena_alloc(g->arena, sizeof(DpSlice) * sp->nranges);
    for (int r = 0; r < sp->nranges; r++) {
      int *mods;
      sl[r].off = sp->begin[r] * inner;
      sl[r].block = (sp->end[r] - sp->begin[r]) * inner;
      sl[r].stride = pv->dims[axis] * inner;
      sl[r].nblocks = outer;
      sl[r].nmods = pred_modules(g, sp->pred[r], &mods);
      sl[r].mods = mods;
    }
    *out = sl;
    return sp->nranges;
  }
  int pred = 0;
  for (int i = 0; gd && i < g->nnodes && i < gd->nnodes; i++) {
    Node *n = &g->nodes[i];
    if (!n->dead && n->op == OP_Assign && n->in[0] == p) {
      pred = gd->node_pred[i];
      break;
    }
  }
  DpSlice *sl = arena_alloc(g->arena, sizeof(DpSlice));
  int *mods;
  sl->off = 0;
  sl->block = nelem;
  sl->stride = nelem;
  sl->nblocks = 1;
  sl->nmods = pred_modules(g, pred, &mods);
  sl->mods = mods;
  *out = sl;
  return 1;
}

typedef struct {
  int sync;                  /* index into g->sync_grad */
  int w, r;                  /* last writer, first reader */
} Site;

static int by_writer(const void *a, const void *b) {
  const Site *x = a, *y = b;
  return x->w != y->w ? x->w - y->w : x->sync - y->sync;
}

/* A grad_put/grad_get kernel for gradient site j (its value, the node it
 * is attributed to). */
static void grad_kernel(Kernel *x, int ext, int node, int value, int j) {
  x->kind = K_EXTERN;
  x->ext_fn = ext;
  x->node = node;
  x->nargs = 1;
  x->args[0] = value;
  x->np = 1;
  x->p[0] = j;
}

int insert_allreduce(Graph *g) {
  if (g->nsync <= 0) return MATC_OK;
  Site *site = malloc(sizeof(Site) * (g->nsync + 1));
  int ns = 0;
  for (int i = 0; i < g->nsync; i++) {
    int v = g->sync_grad[i], r = value_root(g, v);
    int last_w = -1, first_r = -1;
    for (int k = 0; k < g->nkernels; k++) {
      Kernel *kn = &g->kernels[k];
      if (kn->dead) continue;
      int w, rd;
      kernel_uses(g, kn, r, &w, &rd);
      if (w) last_w = k;
      if (rd && !w && first_r < 0) first_r = k;
    }
    if (last_w < 0) continue;            /* no kernel computes it (a constant gradient): same on every rank */
    if (first_r < 0) {
      free(site);
      return fail(g, -1, -1, "internal: the gradient '%s' of '%s' is computed but never read", g->vals[v].name,
                  g->vals[g->sync_param[i]].name);
    }
    if (first_r < last_w) {
      free(site);
      return fail(g, -1, -1, "internal: the gradient '%s' of '%s' is read (kernel %d) before its last write "
                  "(kernel %d): no place to sum it across ranks", g->vals[v].name, g->vals[g->sync_param[i]].name,
                  first_r, last_w);
    }
    site[ns++] = (Site){i, last_w, first_r};
  }
  qsort(site, ns, sizeof *site, by_writer);
  /* Buckets group gradients in put order, and a get waits for its whole
   * bucket: every put must come before every get (backward before the
   * update, as build_train_step orders them). */
  for (int j = 0; j < ns; j++)
    if (site[j].r < site[ns - 1].w) {
      int i = site[j].sync, r = site[j].r, w = site[ns - 1].w;
      free(site);
      return fail(g, -1, -1, "internal: the gradient of '%s' is read (kernel %d) before the last gradient is "
                  "complete (kernel %d): the gradient exchange needs backward before the update",
                  g->vals[g->sync_param[i]].name, r, w);
    }

  DpGrad *gr = arena_alloc(g->arena, sizeof(DpGrad) * (ns + 1));
  for (int j = 0; j < ns; j++) {
    int i = site[j].sync, v = g->sync_grad[i], p = g->sync_param[i];
    Value *val = &g->vals[v];
    if (val->dt != DT_F32 && val->dt != DT_F64) {
      free(site);
      return fail(g, -1, -1, "the gradient of '%s' is %s: data-parallel training sums float32 and float64 only",
                  g->vals[p].name, dt_name(val->dt));
    }
    DpSlice *sl;
    gr[j].value = v;
    gr[j].f64 = val->dt == DT_F64;
    gr[j].nelem = value_nelem(val);
    gr[j].nslices = grad_slices(g, p, &sl);
    gr[j].slices = sl;
    gr[j].name = g->vals[p].name;
  }
  DpPlan *plan = arena_alloc(g->arena, sizeof *plan);
  plan->ngrads = ns;
  plan->grads = gr;
  g->dp_plan = plan;

  /* The new kernel list: gets before their readers, puts after their writers. */
  int cap = g->nkernels + 2 * ns + 1, n = 0;
  Kernel *nk = calloc((size_t)cap, sizeof(Kernel));
  if (!nk) {
    free(site);
    return fail(g, -1, -1, "out of memory");
  }
  for (int k = 0; k < g->nkernels; k++) {
    for (int j = 0; j < ns; j++)
      if (site[j].r == k) grad_kernel(&nk[n++], EXT_grad_get, g->kernels[k].node, gr[j].value, j);
    nk[n++] = g->kernels[k];
    for (int j = 0; j < ns; j++)
      if (site[j].w == k) grad_kernel(&nk[n++], EXT_grad_put, g->kernels[k].node, gr[j].value, j);
  }
  free(g->kernels);
  g->kernels = nk;
  g->nkernels = n;
  g->capkernels = cap;
  free(site);
  return MATC_OK;
}
