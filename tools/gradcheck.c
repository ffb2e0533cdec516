/* gradcheck.c: `matc gradcheck`. Differentiates sum_i <output_i,
 * cotangent_i> with respect to every initializer that has a grad_<j>.pb
 * file and compares with it; or, with --fd, compares the analytic
 * gradient of every float initializer with float64 central differences on
 * a few elements each. Errors are relative to the reference tensor's
 * largest magnitude: max_i |got_i - want_i| / max_i |want_i|. */
#include "cli.h"
#include "../runtime/rt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Elements checked per tensor by finite differences. */
#define FD_SAMPLES 5

typedef struct {
  Graph *g;
  Tensor *ins, *outs, *cots, *grads;
  const char **in_names, **out_names, **cot_names, **grad_names;
  int nin, nout, ncot, ngrad;
  int *bound;
} Loaded;

static void loaded_free(Loaded *l) {
  graph_free(l->g);
  free(l->ins); free(l->outs); free(l->cots); free(l->grads);
  free(l->in_names); free(l->out_names); free(l->cot_names); free(l->grad_names);
  free(l->bound);
}

static int load(Options *o, Loaded *l) {
  memset(l, 0, sizeof *l);
  l->g = graph_new(o->model);
  l->g->dump_after = o->dump_after;
  int rc = import_onnx(l->g, o->model);
  if (!rc) rc = read_tensors(l->g, o->data, "input", &l->ins, &l->in_names, &l->nin);
  if (!rc) rc = read_tensors(l->g, o->data, "output", &l->outs, &l->out_names, &l->nout);
  if (!rc) rc = read_tensors(l->g, o->data, "cotangent", &l->cots, &l->cot_names, &l->ncot);
  if (!rc) rc = read_tensors(l->g, o->data, "grad", &l->grads, &l->grad_names, &l->ngrad);
  if (rc) return report(l->g, rc);
  l->bound = calloc(l->nin + 1, sizeof(int));
  if (bind_data(l->g, o->data, l->ins, l->in_names, l->nin, l->bound)) return 1;
  if (o->fd || o->f64) promote_f64(l->g);
  rc = bind_inputs(l->g, o->batch);
  if (!rc) rc = run_passes(l->g, front_passes, 1);
  if (rc) return report(l->g, rc);
  return 0;
}

/* Deterministic N(0,1)-ish values for --fd runs without cotangent files. */
static double pseudo_normal(uint64_t *s) {
  double acc = 0;
  for (int i = 0; i < 12; i++) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    acc += (double)(*s >> 11) / 9007199254740992.0;
  }
  return acc - 6;
}

static Tensor *as_dtype(Graph *g, const Tensor *t, DType dt) {
  Tensor *r = arena_alloc(g->arena, sizeof *r);
  *r = *t;
  r->dt = dt;
  int64_t n = tensor_nelem(t);
  r->data = arena_alloc(g->arena, (size_t)(n ? n : 1) * dt_size(dt));
  for (int64_t i = 0; t->data && i < n; i++) {   /* no data: just allocate */
    if (dt == DT_F64) ((double *)r->data)[i] = tensor_get_f(t, i);
    else ((float *)r->data)[i] = (float)tensor_get_f(t, i);
  }
  return r;
}

/* Makes the seed values (cotangents) as new graph inputs with data. */
static int make_seeds(Options *o, Loaded *l, int *seeds) {
  Graph *g = l->g;
  uint64_t s = 12345;
  for (int i = 0; i < g->noutputs; i++) {
    Value y = g->vals[g->outputs[i]];
    if (!dt_is_float(y.dt)) {
      fprintf(stderr, "matc: %s: output '%s' is %s; gradcheck needs float outputs\n", g->path, y.name,
              dt_name(y.dt));
      return 1;
    }
    Tensor *t;
    if (i < l->ncot) {
      t = &l->cots[i];
      if (t->rank != y.rank || tensor_nelem(t) != value_nelem(&y)) {
        fprintf(stderr, "matc: %s/cotangent_%d.pb: shape does not match output '%s'\n", o->data, i, y.name);
        return 1;
      }
      t = as_dtype(g, t, y.dt);
    } else if (o->fd) {
      t = arena_alloc(g->arena, sizeof *t);
      t->dt = y.dt;
      t->rank = y.rank;
      for (int d = 0; d < y.rank; d++) t->dims[d] = y.dims[d];
      t->data = arena_alloc(g->arena, (size_t)(value_nelem(&y) + 1) * dt_size(y.dt));
      for (int64_t k = 0; k < value_nelem(&y); k++) {
        double v = pseudo_normal(&s);
        if (y.dt == DT_F64) ((double *)t->data)[k] = v;
        else ((float *)t->data)[k] = (float)v;
      }
    } else {
      fprintf(stderr, "matc: %s: no cotangent_%d.pb for output '%s' (use --fd to check without "
              "reference files)\n", o->data, i, y.name);
      return 1;
    }
    char name[256];
    snprintf(name, sizeof name, "cotangent_%d", i);
    int v = graph_add_value(g, name);
    g->vals[v].kind = V_INPUT;
    value_set(&g->vals[v], y.dt, y.rank, y.dims);
    g->vals[v].data = t;
    seeds[i] = v;
  }
  return 0;
}

static void copy_inputs(Graph *g, Exec *x) {
  for (int v = 0; v < g->nvals; v++) {
    Value *val = &g->vals[v];
    if (val->kind == V_INPUT && val->data && x->bufs[v] && x->bufs[v] != val->data->data)
      memcpy(x->bufs[v], val->data->data, (size_t)value_nelem(val) * dt_size(val->dt));
  }
}

/* sum_i <y_i, s_i> with y from the run of g, seeds from graph gs. */
static double objective(Graph *g, Exec *x, Graph *gs, const int *seeds) {
  double f = 0;
  for (int i = 0; i < g->noutputs; i++) {
    Value *y = &g->vals[g->outputs[i]];
    Tensor yt = {y->dt, y->rank, {0}, x->bufs[g->outputs[i]]};
    memcpy(yt.dims, y->dims, sizeof yt.dims);
    for (int64_t k = 0; k < value_nelem(y); k++)
      f += tensor_get_f(&yt, k) * tensor_get_f(gs->vals[seeds[i]].data, k);
  }
  return f;
}

int cmd_gradcheck(Options *o) {
  if (!o->data) {
    fprintf(stderr, "matc: gradcheck needs --data DIR\n");
    return 2;
  }
  double tol = o->tol > 0 ? o->tol : (o->fd ? 1e-5 : 1e-4);
  Loaded a, b;
  memset(&b, 0, sizeof b);
  int status = load(o, &a);
  if (status) { loaded_free(&a); return status; }
  Graph *g = a.g;
  int nouts = g->noutputs;
  int *seeds = calloc(nouts + 1, sizeof(int)), *wrt = calloc(g->nvals + 1, sizeof(int));
  int *grads = calloc(g->nvals + 1, sizeof(int)), *ref = calloc(g->nvals + 1, sizeof(int));
  int *outs0 = calloc(nouts + 1, sizeof(int));
  int nwrt = 0;
  Exec *x = NULL, *xb = NULL;
  status = 1;
  memcpy(outs0, g->outputs, sizeof(int) * nouts);
  if (make_seeds(o, &a, seeds)) goto done;
  /* What to differentiate: the initializers named by grad files (a name
   * or shape that matches none is an error, not a skip), or with --fd
   * every float initializer. */
  for (int j = 0; j < a.ngrad; j++) {
    int v = graph_find_value(g, a.grad_names[j]);
    if (v < 0 || g->vals[v].kind != V_PARAM) {
      fprintf(stderr, "matc: %s/grad_%d.pb names '%s', which is not an initializer of %s\n", o->data, j,
              a.grad_names[j], o->model);
      goto done;
    }
    Value *p = &g->vals[v];
    int same = p->rank == a.grads[j].rank;
    for (int d = 0; same && d < p->rank; d++) same = p->dims[d] == a.grads[j].dims[d];
    if (!same) {
      fprintf(stderr, "matc: %s/grad_%d.pb: shape does not match initializer '%s'\n", o->data, j, p->name);
      goto done;
    }
    ref[nwrt] = j;
    wrt[nwrt++] = v;
  }
  /* --fd, or timing only (--repeat without references): all of them. */
  if ((o->fd || o->repeat > 1) && a.ngrad == 0)
    for (int v = 0; v < g->nvals; v++)
      if (g->vals[v].kind == V_PARAM && dt_is_float(g->vals[v].dt)) { ref[nwrt] = -1; wrt[nwrt++] = v; }
  if (nwrt == 0) {
    fprintf(stderr, "matc: %s: no grad_*.pb files and no --fd: nothing to check\n", o->data);
    goto done;
  }
  int rc = autodiff(g, nouts, outs0, seeds, nwrt, wrt, grads);
  if (rc) { status = report(g, rc); goto done; }
  g->outputs = arena_alloc(g->arena, sizeof(int) * (nouts + nwrt));
  memcpy(g->outputs, outs0, sizeof(int) * nouts);
  for (int j = 0; j < nwrt; j++) g->outputs[nouts + j] = grads[j];
  g->noutputs = nouts + nwrt;
  rc = exec_new(g, &x);
  if (rc) { status = report(g, rc); goto done; }
  copy_inputs(g, x);
  exec_run(x);
  if (o->repeat > 1 || o->verbose) {
    /* Time the forward + backward step (what a trainer runs, less the
     * optimizer) and report its activation memory. */
    int reps = o->repeat > 1 ? o->repeat : 1;
    double *t = calloc(reps, sizeof(double));
    for (int r = 0; r < reps; r++) {
      double s0 = now_ms();
      exec_run(x);
      t[r] = now_ms() - s0;
    }
    for (int i = 1; i < reps; i++)
      for (int j = i; j > 0 && t[j] < t[j - 1]; j--) { double z = t[j]; t[j] = t[j - 1]; t[j - 1] = z; }
    fprintf(stderr, "forward+backward median %.3f ms (%d runs); activations %.2f MB in the arena "
            "(%.2f MB without reuse)\n", t[reps / 2], reps, g->arena_bytes / 1e6, g->unplanned_bytes / 1e6);
    free(t);
  }
  int bad = 0;
  for (int i = 0; i < a.nout && i < nouts; i++) {
    Value *y = &g->vals[outs0[i]];
    bad |= compare(y->name, &a.outs[i], x->bufs[outs0[i]], y->dt, o->f64 || o->fd ? 1e-4 : 1e-3, 1e-5);
  }
  double worst = 0;
  /* Gradients that are zero in exact arithmetic (a key bias before a
   * softmax) cannot be checked relative to themselves: the reference holds
   * float64 round-off (max below 1e-12 of the model's largest reference
   * gradient G) and matc float32 round-off. Those tensors, and only those,
   * are checked absolutely: error below atol, by default 1e-6 G. */
  double gscale = 0;
  for (int j = 0; j < a.ngrad; j++)
    for (int64_t k = 0; k < tensor_nelem(&a.grads[j]); k++)
      gscale = fmax(gscale, fabs(tensor_get_f(&a.grads[j], k)));
  double atol = o->atol_set ? o->atol : 1e-6 * gscale;
  for (int j = 0; j < nwrt; j++) {
    Value *p = &g->vals[wrt[j]];
    Tensor got = {p->dt, p->rank, {0}, x->bufs[grads[j]]};
    memcpy(got.dims, p->dims, sizeof got.dims);
    if (ref[j] < 0) continue;
    Tensor *want = &a.grads[ref[j]];
    double maxabs = 0, scale = 0;
    for (int64_t k = 0; k < tensor_nelem(want); k++) {
      double w = tensor_get_f(want, k), h = tensor_get_f(&got, k);
      double d = fabs(w - h);
      if (isnan(d)) d = INFINITY;
      if (d > maxabs) maxabs = d;
      if (fabs(w) > scale) scale = fabs(w);
    }
    double rel = maxabs / (scale > 0 ? scale : 1);
    int zero = scale <= 1e-12 * gscale;
    int ok = zero ? maxabs <= atol : rel <= tol;
    if (!zero && rel > worst) worst = rel;
    printf("grad '%s' [%lld]: max abs err %.3g, max rel err %.3g%s: %s\n", p->name,
           (long long)value_nelem(p), maxabs, rel,
           zero ? " (zero in exact arithmetic: checked against atol)" : "", ok ? "ok" : "FAIL");
    bad |= !ok;
  }
  if (o->fd) {
    /* A forward-only float64 graph whose parameters we perturb. */
    status = load(o, &b);
    if (status) goto done;
    rc = exec_new(b.g, &xb);
    if (rc) { status = report(b.g, rc); goto done; }
    for (int j = 0; j < nwrt; j++) {
      Value *p = &g->vals[wrt[j]];
      int bv = graph_find_value(b.g, p->name);
      double *w = b.g->vals[bv].data->data;
      Tensor got = {p->dt, p->rank, {0}, x->bufs[grads[j]]};
      memcpy(got.dims, p->dims, sizeof got.dims);
      int64_t n = value_nelem(p);
      double scale = 0, maxabs = 0;
      for (int64_t k = 0; k < n; k++) scale = fmax(scale, fabs(tensor_get_f(&got, k)));
      for (int s = 0; s < FD_SAMPLES && s < n; s++) {
        int64_t k = n <= FD_SAMPLES ? s : (n - 1) * s / (FD_SAMPLES - 1);
        double w0 = w[k], h = 1e-6 * fmax(1.0, fabs(w0));
        w[k] = w0 + h;
        copy_inputs(b.g, xb);
        exec_run(xb);
        double fp = objective(b.g, xb, g, seeds);
        w[k] = w0 - h;
        exec_run(xb);
        double fm = objective(b.g, xb, g, seeds);
        w[k] = w0;
        double fd = (fp - fm) / (2 * h), an = tensor_get_f(&got, k);
        maxabs = fmax(maxabs, fabs(fd - an));
      }
      double rel = maxabs / (scale > 0 ? scale : 1);
      if (rel > worst) worst = rel;
      int ok = rel <= tol && scale > 0;
      printf("grad '%s' [%lld]: finite differences on %d elements, max abs err %.3g, max rel err %.3g%s: %s\n",
             p->name, (long long)n, (int)(n < FD_SAMPLES ? n : FD_SAMPLES), maxabs, rel,
             scale > 0 ? "" : " (gradient is all zeros)", ok ? "ok" : "FAIL");
      bad |= !ok;
    }
  }
  if (a.ngrad == 0 && !o->fd) {
    printf("%d gradients computed; no grad_*.pb references: timed only, nothing checked\n", nwrt);
    status = 0;
    goto done;
  }
  printf("%d gradients checked, worst relative error %.3g (tolerance %.3g, atol %.3g): %s\n", nwrt,
         worst, tol, atol, bad ? "FAIL" : "ok");
  status = bad ? 1 : 0;
done:
  exec_free(x);
  exec_free(xb);
  free(seeds); free(wrt); free(grads); free(ref); free(outs0);
  loaded_free(&a);
  if (b.g) loaded_free(&b);
  return status;
}
