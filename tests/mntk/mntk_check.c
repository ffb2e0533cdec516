/* mntk_check.c: the mNTK probe (compiler/probe.h) against explicit
 * per-sample Jacobians from PyTorch (tools/make_mntk_refs.py).
 *
 *   mntk_check SRC MODEL            check tests/mntk/MODEL/reference.txt
 *   mntk_check SRC MODEL --bench N  time the probe on N samples and one
 *                                   training step (batch 32) of the model
 *
 * The check builds the reference's modules (parameter slices; sites are
 * found by the probe), runs the probe on the reference batch and compares
 * each module's lambda_max and trace, and the whole model's, with the
 * reference (relative 1e-3); checks the invariants sum_k trace(G_k) =
 * trace(G) and max_k lambda_k <= lambda_max(G) <= sum_k lambda_k; and
 * checks that a probe sharing another graph's parameters sees changes to
 * them. Exits 1 on any failure, 77 when the model uses something the probe
 * does not support. */
#include "../../compiler/probe.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXMOD 256

typedef struct {
  char name[256], kind[32];
  int nslices;
  char slice_param[16][256];
  int axis[16];
  int64_t begin[16], end[16];
  double lambda, trace;
} RefModule;

static RefModule mods[MAXMOD];
static int nmods, failed, passed, use_partition, rademacher;
static double ref_lambda_all, ref_trace_all;
static int64_t nsamples;
static char model_rel[512];

static int read_reference(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "mntk_check: cannot read %s\n", path);
    return 1;
  }
  char line[1024];
  while (fgets(line, sizeof line, f)) {
    RefModule *m = nmods ? &mods[nmods - 1] : NULL;
    long long a, b, c;
    char s[256];
    if (sscanf(line, "model %511s", model_rel) == 1) continue;
    if (sscanf(line, "samples %lld", &a) == 1) { nsamples = a; continue; }
    if (!strncmp(line, "partition auto", 14)) { use_partition = 1; continue; }
    if (sscanf(line, "rademacher %lld", &a) == 1) { rademacher = (int)a; continue; }
    if (sscanf(line, "all %lf %lf", &ref_lambda_all, &ref_trace_all) == 2) continue;
    if (nmods < MAXMOD && sscanf(line, "module %255s %31s", mods[nmods].name, mods[nmods].kind) == 2) {
      nmods++;
      continue;
    }
    if (m && m->nslices < 16 && sscanf(line, "slice %255s %lld %lld %lld", s, &a, &b, &c) == 4) {
      snprintf(m->slice_param[m->nslices], 256, "%s", s);
      m->axis[m->nslices] = (int)a, m->begin[m->nslices] = b, m->end[m->nslices] = c;
      m->nslices++;
      continue;
    }
    if (m && sscanf(line, "value %lf %lf", &m->lambda, &m->trace) == 2) continue;
    fprintf(stderr, "mntk_check: %s: cannot parse: %s", path, line);
    fclose(f);
    return 1;
  }
  fclose(f);
  return nmods == 0 || nsamples <= 0;
}

static double max_err;   /* over the comparisons with the reference */

static void check(const char *what, double got, double want, double tol) {
  double err = fabs(got - want) / fmax(fabs(want), 1e-30);
  if (tol >= 1e-3) max_err = fmax(max_err, err);
  if (err <= tol) passed++;
  else failed++;
  if (err > tol) printf("FAIL %-40s got %.7g want %.7g (rel %.2e)\n", what, got, want, err);
}

static void expect(const char *what, int ok) {
  if (ok) passed++;
  else {
    failed++;
    printf("FAIL %s\n", what);
  }
}

/* Imports the model with its first input bound to `in`'s shape and shape-inferred. */
static Graph *load(const char *path, const Tensor *in, int64_t batch) {
  Graph *g = graph_new(path);
  int rc = import_onnx(g, path);
  if (!rc) {
    Value *v = &g->vals[g->inputs[0]];
    v->rank = in->rank;
    memcpy(v->dims, in->dims, sizeof v->dims);
    v->dims[0] = batch;
    static const Pass front[] = {{"infer-shapes", infer_shapes}};
    rc = bind_inputs(g, batch);
    if (!rc) rc = run_passes(g, front, 1);
  }
  if (rc) {
    fprintf(stderr, "mntk_check: %s\n", g->err);
    graph_free(g);
    return NULL;
  }
  return g;
}

/* With `partition auto`, the reference's modules are the partition pass's:
 * run it and check it still finds exactly those, in any order (then the
 * reference is put in the pass's order, and the probe uses its sites,
 * fused QKV included). */
static int partition_matches(Graph *g) {
  PartitionOptions po = {0};
  if (partition_modules(g, &po)) {
    fprintf(stderr, "mntk_check: partition: %s\n", g->err);
    return 1;
  }
  static RefModule sorted[MAXMOD];
  int same = g->nmodules == nmods;
  for (int k = 0; same && k < nmods; k++) {
    Module *m = &g->modules[k];
    int r = 0;
    while (r < nmods && strcmp(mods[r].name, m->name)) r++;
    same = r < nmods && m->nslices == mods[r].nslices;
    for (int s = 0; same && s < m->nslices; s++) {
      ParamSlice *ps = &m->slices[s];
      same = !strcmp(g->vals[ps->param].name, mods[r].slice_param[s]) && ps->axis == mods[r].axis[s] &&
             (ps->axis < 0 || (ps->begin == mods[r].begin[s] && ps->end == mods[r].end[s]));
    }
    if (same) sorted[k] = mods[r];
  }
  if (!same) {
    printf("FAIL the partition pass no longer finds the reference's modules (regenerate with "
           "tools/make_mntk_refs.py if that is intended)\n");
    return 1;
  }
  memcpy(mods, sorted, sizeof(RefModule) * nmods);
  return 0;
}

static int make_modules(Graph *g) {
  if (use_partition) return partition_matches(g);
  g->nmodules = nmods;
  g->modules = arena_alloc(g->arena, sizeof(Module) * nmods);
  for (int k = 0; k < nmods; k++) {
    Module *m = &g->modules[k];
    m->name = mods[k].name;
    m->kind = !strcmp(mods[k].kind, "head") ? MOD_HEAD : !strcmp(mods[k].kind, "expert") ? MOD_EXPERT : MOD_LAYER;
    m->nslices = mods[k].nslices;
    m->slices = arena_alloc(g->arena, sizeof(ParamSlice) * m->nslices);
    for (int s = 0; s < m->nslices; s++) {
      int p = graph_find_value(g, mods[k].slice_param[s]);
      if (p < 0) {
        fprintf(stderr, "mntk_check: module %s: no initializer '%s'\n", m->name, mods[k].slice_param[s]);
        return 1;
      }
      m->slices[s] = (ParamSlice){p, mods[k].axis[s], mods[k].begin[s], mods[k].end[s]};
    }
  }
  return 0;
}

static TrainConfig config(const Tensor *tg) {
  TrainConfig cfg = {0};
  cfg.loss = LOSS_AUTO;
  cfg.ignore_index = -100;
  cfg.target_dt = tg->dt;
  cfg.target_rank = tg->rank - 1;
  for (int i = 1; i < tg->rank; i++) cfg.target_dims[i - 1] = tg->dims[i];
  return cfg;
}

static double ms_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The probe on n samples (the reference batch repeated) against one
 * training step of batch 32 (SGD with momentum), best of `reps` runs. */
static int bench(const char *src, Tensor *in, Tensor *tg, int64_t n) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", src, model_rel);
  int reps = 5;
  Graph *g = load(path, in, n);
  if (!g || make_modules(g)) return 1;
  TrainConfig cfg = config(tg);
  Probe *p;
  int rc = probe_new(g, &cfg, n, &p);
  if (rc) {
    fprintf(stderr, "mntk_check: %s\n", g->err);
    return rc == MATC_UNSUPPORTED ? 77 : 1;
  }
  size_t in_row = (size_t)(tensor_nelem(in) / in->dims[0]) * dt_size(in->dt);
  size_t tg_row = (size_t)(tensor_nelem(tg) / tg->dims[0]) * dt_size(tg->dt);
  char *xs = malloc(in_row * n), *ts = malloc(tg_row * n);
  for (int64_t i = 0; i < n; i++) {
    memcpy(xs + i * in_row, (char *)in->data + (i % in->dims[0]) * in_row, in_row);
    memcpy(ts + i * tg_row, (char *)tg->data + (i % tg->dims[0]) * tg_row, tg_row);
  }
  ProbeStats best = {0};
  double best_ms = 1e30, flops = 0;
  for (int r = 0; r < reps; r++) {
    double t0 = ms_now();
    if (probe_run(p, xs, ts, NULL, NULL, NULL, NULL, &flops)) {
      fprintf(stderr, "mntk_check: %s\n", probe_error(p));
      return 1;
    }
    double ms = ms_now() - t0;
    if (ms < best_ms) best_ms = ms, probe_stats(p, &best);
  }
  printf("probe n=%lld: %.1f ms (graph %.1f ms, Grams+eig %.1f ms), %.3g GFLOP (graph %.3g, Grams+eig %.3g); "
         "sites: %d structured, %d materialised\n", (long long)n, best_ms, best.graph_ms, best.gram_ms, flops / 1e9,
         best.graph_flops / 1e9, best.gram_flops / 1e9, best.nstructured, best.nmaterialised);
  probe_free(p);
  graph_free(g);
  /* One training step, batch 32. */
  Graph *t = load(path, in, 32);
  if (!t) return 1;
  cfg.optimizer = OPT_SGD;
  cfg.momentum = 0.9;
  TrainStep st;
  Exec *x = NULL;
  rc = build_train_step(t, &cfg, &st);
  if (!rc) rc = exec_new(t, &x);
  if (rc) {
    fprintf(stderr, "mntk_check: %s\n", t->err);
    return 1;
  }
  double step_ms = 1e30;
  for (int r = 0; r < reps; r++) {
    double t0 = ms_now();
    exec_run(x);
    step_ms = fmin(step_ms, ms_now() - t0);
  }
  printf("training step batch 32: %.1f ms, %.3g GFLOP\n", step_ms, kernels_flops(t) / 1e9);
  exec_free(x);
  free(st.params);
  free(st.grads);
  free(st.state);
  graph_free(t);
  free(xs);
  free(ts);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: mntk_check SRC MODEL [--bench N]\n");
    return 2;
  }
  const char *src = argv[1], *name = argv[2];
  char path[1024], err[512];
  snprintf(path, sizeof path, "%s/tests/mntk/%s/reference.txt", src, name);
  if (read_reference(path)) return 1;
  Arena *a = arena_new();
  Tensor in, tg;
  const char *tn;
  snprintf(path, sizeof path, "%s/tests/mntk/%s/input.pb", src, name);
  if (import_tensor_file(a, path, &in, &tn, err, sizeof err)) {
    fprintf(stderr, "mntk_check: %s\n", err);
    return 1;
  }
  snprintf(path, sizeof path, "%s/tests/mntk/%s/target.pb", src, name);
  if (import_tensor_file(a, path, &tg, &tn, err, sizeof err)) {
    fprintf(stderr, "mntk_check: %s\n", err);
    return 1;
  }
  if (argc >= 5 && !strcmp(argv[3], "--bench")) return bench(src, &in, &tg, atoll(argv[4]));

  snprintf(path, sizeof path, "%s/%s", src, model_rel);
  Graph *g = load(path, &in, nsamples);
  if (!g || make_modules(g)) return 1;
  TrainConfig cfg = config(&tg);
  Probe *p;
  ProbeOptions po = {rademacher, 1};
  int rc = probe_new_opts(g, &cfg, nsamples, &po, &p);
  if (rc) {
    fprintf(stderr, "mntk_check: %s\n", g->err);
    return rc == MATC_UNSUPPORTED ? 77 : 1;
  }
  expect("probe_set_vectors refuses the loss mode", rademacher || probe_set_vectors(p, NULL) == MATC_ERR);
  if (rademacher) {
    /* The reference's sign vectors, [m, logits dims but the first]. */
    Tensor vt;
    snprintf(path, sizeof path, "%s/tests/mntk/%s/vectors.pb", src, name);
    if (import_tensor_file(a, path, &vt, &tn, err, sizeof err) || vt.dt != DT_F32 || vt.dims[0] != rademacher) {
      fprintf(stderr, "mntk_check: %s: %s\n", path, err);
      return 1;
    }
    expect("probe_set_vectors", probe_set_vectors(p, vt.data) == MATC_OK);
  }
  double *lam = calloc(nmods, sizeof(double)), *tr = calloc(nmods, sizeof(double)), lall, tall, flops;
  expect("probe_nmodules", probe_nmodules(p) == nmods);
  if (probe_run(p, in.data, tg.data, lam, tr, &lall, &tall, &flops)) {
    fprintf(stderr, "mntk_check: %s\n", probe_error(p));
    return 1;
  }
  double max_l = 0, sum_l = 0, sum_t = 0;
  for (int k = 0; k < nmods; k++) {
    char what[600];
    snprintf(what, sizeof what, "%.250s lambda_max", mods[k].name);
    check(what, lam[k], mods[k].lambda, 1e-3);
    snprintf(what, sizeof what, "%.250s trace", mods[k].name);
    check(what, tr[k], mods[k].trace, 1e-3);
    printf("%-28s lambda %.6g (ref %.6g)  trace %.6g (ref %.6g)\n", mods[k].name, lam[k], mods[k].lambda, tr[k],
           mods[k].trace);
    max_l = fmax(max_l, lam[k]);
    sum_l += lam[k];
    sum_t += tr[k];
  }
  check("whole-model lambda_max", lall, ref_lambda_all, 1e-3);
  check("whole-model trace", tall, ref_trace_all, 1e-3);
  printf("whole model: lambda %.6g (ref %.6g)  trace %.6g (ref %.6g)  probe %.3g GFLOP\n", lall, ref_lambda_all,
         tall, ref_trace_all, flops / 1e9);
  /* MAT.md's invariants. */
  check("sum_k trace(G_k) = trace(G)", sum_t, tall, 1e-9);
  expect("max_k lambda_k <= lambda_max(G)", max_l <= lall * (1 + 1e-9));
  expect("lambda_max(G) <= sum_k lambda_k", lall <= sum_l * (1 + 1e-9));
  expect("probe FLOPs counted", flops > 0);

  /* Shared parameters: the probe must read another graph's current weights. */
  snprintf(path, sizeof path, "%s/%s", src, model_rel);
  Graph *train = load(path, &in, nsamples);
  if (!train) return 1;
  probe_share_params(p, train);
  int w = graph_find_value(train, mods[nmods - 1].slice_param[0]);
  Tensor *wt = train->vals[w].data;
  float *wd = wt->data;
  int64_t ne = tensor_nelem(wt);
  for (int64_t i = 0; i < ne; i++) wd[i] *= 2;
  double l2;
  probe_run(p, in.data, tg.data, NULL, NULL, &l2, NULL, NULL);
  expect("the probe sees the shared weights change (lambda_max(G) moves by > 1%)",
         fabs(l2 - ref_lambda_all) > 0.01 * ref_lambda_all);
  for (int64_t i = 0; i < ne; i++) wd[i] *= 0.5f;
  probe_run(p, in.data, tg.data, NULL, NULL, &l2, NULL, NULL);
  check("shared weights restored: lambda_max(G)", l2, ref_lambda_all, 1e-3);

  /* Bad requests: clear errors, no probe. */
  Probe *q = NULL;
  rc = probe_new(train, &cfg, 0, &q);
  expect("0 samples is an error naming the sample count", rc == MATC_ERR && !q && strstr(train->err, "sample"));
  rc = probe_new(train, &cfg, nsamples, &q);
  expect("a graph without modules is an error naming the partition", rc == MATC_ERR && !q &&
         strstr(train->err, "partition"));

  probe_free(p);
  graph_free(train);
  graph_free(g);
  arena_free(a);
  free(lam);
  free(tr);
  printf("largest relative difference from the reference: %.2e\n", max_err);
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
