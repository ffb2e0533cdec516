/* mat_train.c: Modular Adaptive Training inside `matc train` (MAT.md).
 *
 * Every --mat-refresh steps the mNTK probe (compiler/probe.c) runs on a
 * fixed probe batch (the first --mat-probe-samples examples of the
 * seed's first training epoch: the same batch at every refresh, so the
 * eigenvalues move with the model, not with the data) and gives each
 * module's lambda_max and trace; the policy (runtime/mat_policy.c) turns
 * them into guard bytes, which the compiled step reads: a frozen module's
 * backward and optimizer work is skipped with no recompilation. The
 * executed FLOPs of a step are counted for the guards it ran with. In a
 * data-parallel run rank 0 probes and sends the eigenvalues to the other
 * ranks, which run the same policy on them: every rank holds the same
 * active set (and a frozen module's gradient is sent by none). */
#include "mat_train.h"
#include "../runtime/dp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int mat_setup(MatRun *m, const Options *o, Graph *fwd, Graph *train, Exec *tx, const TrainConfig *cfg,
              Dataset *ds) {
  memset(m, 0, sizeof *m);
  m->on = 1;
  m->opts = o->mat;
  m->n = train->nmodules;
  if (m->n < 1 || train->guard_value < 0) {
    fprintf(stderr, "matc: %s: --mat on, but the partition found no module to train adaptively (see matc "
            "inspect; a --partition file can name modules)\n", model_label(o));
    return 1;
  }
  if (fwd->nmodules != m->n) {
    fprintf(stderr, "matc: %s: the probe graph has %d modules, the training step %d\n", model_label(o), fwd->nmodules,
            m->n);
    return 1;
  }
  for (int k = 0; k < m->n; k++)
    if (strcmp(fwd->modules[k].name, train->modules[k].name)) {
      fprintf(stderr, "matc: %s: module %d is '%s' in the probe graph but '%s' in the training step\n", model_label(o),
              k, fwd->modules[k].name, train->modules[k].name);
      return 1;
    }
  /* The probe batch: the first examples of the seed's first epoch, from
   * a sampler of its own (the training sampler may have been moved by a
   * resume). */
  Sampler first;
  if (sampler_init(&first, ds, (uint64_t)o->seed, o->eval_fraction)) return 1;
  int64_t ns = o->mat_probe_samples;
  if (ns < 1 || ns > first.ntrain) {
    fprintf(stderr, "matc: --mat-probe-samples %lld: must be between 1 and the %lld training examples\n",
            (long long)ns, (long long)first.ntrain);
    sampler_free(&first);
    return 1;
  }
  int rc = probe_new(fwd, cfg, ns, &m->probe);
  if (rc) return report(fwd, rc);
  probe_share_params(m->probe, train);
  m->guards = tx->bufs[train->guard_value];
  memset(m->guards, 1, (size_t)m->n);
  m->pol = mat_policy_new(&m->opts, m->n);
  int *kinds = malloc(sizeof(int) * (size_t)m->n);
  if (m->pol && kinds) {
    for (int k = 0; k < m->n; k++) kinds[k] = (int)train->modules[k].kind;
    mat_policy_set_groups(m->pol, kinds);
  }
  free(kinds);
  m->lambda = calloc((size_t)m->n, sizeof(double));
  m->trace = calloc((size_t)m->n, sizeof(double));
  /* The fixed probe batch. */
  DataShape in = data_input_shape(ds), tg = data_target_shape(ds);
  size_t ib = (size_t)shape_nelem(in.rank, in.dims) * dt_size((DType)in.dtype);
  size_t tb = (size_t)shape_nelem(tg.rank, tg.dims) * dt_size((DType)tg.dtype);
  m->probe_in = malloc(ib * ns);
  m->probe_tg = malloc(tb * ns);
  if (!m->pol || !m->lambda || !m->trace || !m->probe_in || !m->probe_tg) {
    fprintf(stderr, "matc: out of memory setting up MAT\n");
    sampler_free(&first);
    return 1;
  }
  for (int64_t i = 0; i < ns; i++)
    data_example(ds, first.order[i], (char *)m->probe_in + i * ib, (char *)m->probe_tg + i * tb);
  sampler_free(&first);
  m->train = train;
  m->full_flops = m->step_flops = kernels_flops_guarded(train, m->guards);
  return 0;
}

int mat_resume(MatRun *m, const void *state) {
  if (mat_policy_load(m->pol, state)) return 1;
  m->step_flops = kernels_flops_guarded(m->train, m->guards);
  return 0;
}

int mat_before_step(MatRun *m, int64_t step, char *logbuf, size_t len) {
  logbuf[0] = 0;
  m->probe_flops = 0;
  if (!mat_policy_probe_due(m->pol, step)) return 0;
  double t0 = now_ms();
  /* Data parallel: rank 0 probes and sends the eigenvalues; every rank
   * then runs the same policy on the same numbers, so all hold the same
   * active set (checked below). */
  int failed = 0;
  if (dp_rank() == 0 && probe_run(m->probe, m->probe_in, m->probe_tg, m->lambda, m->trace, &m->lambda_all,
                                  &m->trace_all, &m->probe_flops)) {
    fprintf(stderr, "\nmatc: step %lld: %s\n", (long long)step + 1, probe_error(m->probe));
    failed = 1;
  }
  if (dp_size() > 1) {
    int n = m->n;
    double *b = malloc(sizeof(double) * (2 * (size_t)n + 4));
    b[0] = failed;
    memcpy(b + 1, m->lambda, sizeof(double) * n);
    memcpy(b + 1 + n, m->trace, sizeof(double) * n);
    b[1 + 2 * n] = m->lambda_all;
    b[2 + 2 * n] = m->trace_all;
    b[3 + 2 * n] = m->probe_flops;
    dp_bcast(b, sizeof(double) * (2 * (size_t)n + 4), "the MAT probe's eigenvalues (rank 0 probes)");
    failed = b[0] != 0;
    memcpy(m->lambda, b + 1, sizeof(double) * n);
    memcpy(m->trace, b + 1 + n, sizeof(double) * n);
    m->lambda_all = b[1 + 2 * n];
    m->trace_all = b[2 + 2 * n];
    m->probe_flops = b[3 + 2 * n];
    free(b);
  }
  if (failed) return 1;
  m->probe_ms_total += now_ms() - t0;
  m->probe_flops_total += m->probe_flops;
  m->nprobes++;
  mat_policy_update(m->pol, step, m->lambda, m->lambda_all, m->guards);
  /* A module the probe cannot measure (no Gemm/MatMul/Conv site: an
   * embedding, a norm given as a module) is never frozen on a zero. */
  for (int k = 0; k < m->n; k++)
    if (m->train->modules[k].nsites == 0) m->guards[k] = 1;
  if (dp_size() > 1) {
    /* The same active set on every rank: a hash of the guard bytes, whose
     * largest and smallest over the ranks must agree. */
    uint64_t h = 14695981039346656037ull;
    for (int k = 0; k < m->n; k++) h = (h ^ (m->guards[k] != 0)) * 1099511628211ull;
    int64_t mine = (int64_t)(h >> 1), v[2] = {mine, -mine};
    dp_allreduce_i64(v, 2, DP_MAX, "the check of MAT's active set");
    if (v[0] != mine || -v[1] != mine) {
      fprintf(stderr, "\nmatc: step %lld: rank %d's MAT active set differs from another rank's (the ranks run "
              "different policy options?)\n", (long long)step + 1, dp_rank());
      return 1;
    }
  }
  m->step_flops = kernels_flops_guarded(m->train, m->guards);
  /* The probe keys of DESIGN.md's metrics log, for this step's line. */
  size_t n = 0;
#define PUT(...) n += (size_t)snprintf(logbuf + n, n < len ? len - n : 0, __VA_ARGS__)
  for (int pass = 0; pass < 3; pass++) {
    PUT(pass == 0 ? ",\"lambda\":{" : pass == 1 ? ",\"trace\":{" : ",\"state\":{");
    for (int k = 0; k < m->n; k++) {
      const char *name = probe_module_name(m->probe, k);
      if (pass == 2) PUT("%s\"%s\":%d", k ? "," : "", name, m->guards[k] ? 1 : 0);
      else PUT("%s\"%s\":%.6g", k ? "," : "", name, pass == 0 ? m->lambda[k] : m->trace[k]);
    }
    PUT("}");
  }
  PUT(",\"lambda_all\":%.6g,\"trace_all\":%.6g,\"probe_flops\":%.10g,\"probe_ms\":%.3f", m->lambda_all,
      m->trace_all, m->probe_flops, now_ms() - t0);
#undef PUT
  if (n >= len) logbuf[0] = 0;   /* too many modules for the line buffer: log the step without them */
  return 0;
}

int mat_active(const MatRun *m) {
  int a = 0;
  for (int k = 0; k < m->n; k++) a += m->guards[k] != 0;
  return a;
}

void mat_after_step(MatRun *m) {
  mat_policy_count_step(m->pol, m->guards);
}

void mat_summary(const MatRun *m, int64_t steps, double flops_run, double flops_full, FILE *f) {
  fprintf(f, "matc: MAT: %d modules, %d probes (%.1f s, %.3g GFLOP); executed %.4g TFLOP of %.4g for full "
          "training: %.1f%% saved (probe included)\n", m->n, m->nprobes, m->probe_ms_total / 1000,
          m->probe_flops_total / 1e9, flops_run / 1e12, flops_full / 1e12,
          flops_full > 0 ? 100 * (1 - flops_run / flops_full) : 0);
  /* The modules frozen longest, up to five. */
  int *idx = malloc(sizeof(int) * (size_t)m->n), shown = 0;
  for (int k = 0; k < m->n; k++) idx[k] = k;
  for (int i = 0; i < m->n && shown < 5; i++) {
    int best = i;
    for (int j = i + 1; j < m->n; j++)
      if (mat_policy_frozen_steps(m->pol, idx[j]) > mat_policy_frozen_steps(m->pol, idx[best])) best = j;
    int t = idx[i];
    idx[i] = idx[best];
    idx[best] = t;
    int64_t fs = mat_policy_frozen_steps(m->pol, idx[i]);
    if (fs == 0) break;
    if (!shown) fprintf(f, "matc: frozen longest:");
    fprintf(f, "%s %s (%lld of %lld steps%s)", shown ? "," : "", probe_module_name(m->probe, idx[i]),
            (long long)fs, (long long)steps, mat_policy_stopped(m->pol, idx[i]) ? ", stopped" : "");
    shown++;
  }
  if (shown) fputc('\n', f);
  else fprintf(f, "matc: no module was frozen\n");
  free(idx);
}

void mat_free(MatRun *m) {
  probe_free(m->probe);
  mat_policy_free(m->pol);
  free(m->lambda);
  free(m->trace);
  free(m->probe_in);
  free(m->probe_tg);
  memset(m, 0, sizeof *m);
}
