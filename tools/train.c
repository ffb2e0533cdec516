/* train.c: `matc train`. Compiles the model's training step (forward,
 * loss, backward, optimizer: passes/build_train_step.c) and a forward-only
 * evaluation graph that shares the parameters, then runs the loop: draw a
 * batch, set the learning rate, run the step, log, evaluate every N steps.
 * The schedule (warm-up then cosine/linear decay) lives here; the step
 * reads the rate from a scalar input. */
#include "cli.h"
#include "mat_train.h"
#include "../runtime/data.h"
#include "../runtime/dp.h"
#include "../runtime/rt.h"

#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
  Graph *g;
  Exec *x;
  int input;               /* the model's data input */
} Compiled;

/* Imports the model and binds its first input to [batch, example dims]. */
static int load_model(Options *o, const DataShape *in, Compiled *c) {
  memset(c, 0, sizeof *c);
  c->g = graph_new(o->model);   /* the file: the MAT probe re-imports from it */
  c->g->dump_after = o->dump_after;
  c->g->profile = getenv("MATC_PROFILE") && *getenv("MATC_PROFILE") == '1';
  int rc = import_onnx(c->g, o->model);
  if (rc) return report(c->g, rc);
  if (c->g->ninputs < 1) {
    fprintf(stderr, "matc: %s: the model has no input to feed data to\n", model_label(o));
    return 1;
  }
  c->input = c->g->inputs[0];
  Value *v = &c->g->vals[c->input];
  if (v->dt != (DType)in->dtype) {
    fprintf(stderr, "matc: %s: input '%s' is %s but the data gives %s\n", model_label(o), v->name,
            dt_name(v->dt), dt_name((DType)in->dtype));
    return 1;
  }
  if (v->rank >= 0 && v->rank != in->rank + 1) {
    fprintf(stderr, "matc: %s: input '%s' has rank %d but the data gives examples of rank %d (plus the "
            "batch)\n", model_label(o), v->name, v->rank, in->rank);
    return 1;
  }
  v->rank = in->rank + 1;
  v->dims[0] = o->batch;
  for (int i = 0; i < in->rank; i++) {
    if (v->dims[i + 1] >= 0 && v->dims[i + 1] != in->dims[i]) {
      fprintf(stderr, "matc: %s: input '%s' dimension %d is %lld but the data gives %lld\n", model_label(o),
              v->name, i + 1, (long long)v->dims[i + 1], (long long)in->dims[i]);
      return 1;
    }
    v->dims[i + 1] = in->dims[i];
  }
  rc = bind_inputs(c->g, o->batch);
  if (!rc) rc = run_passes(c->g, front_passes, 1);
  if (rc) return report(c->g, rc);
  return 0;
}

static double schedule(Options *o, int64_t step) {
  double lr = o->lr;
  if (step < o->warmup) return lr * (step + 1) / o->warmup;
  double t = o->steps > o->warmup ? (double)(step - o->warmup) / (o->steps - o->warmup) : 1;
  if (strcmp(o->schedule, "cosine") == 0) return lr * 0.5 * (1 + cos(M_PI * t));
  if (strcmp(o->schedule, "linear") == 0) return lr * (1 - t);
  return lr;
}

static void set_scalar(Exec *x, int v, double val) {
  Value *s = &x->g->vals[v];
  if (s->dt == DT_F64) *(double *)x->bufs[v] = val;
  else *(float *)x->bufs[v] = (float)val;
}

static double get_scalar(Exec *x, int v) {
  Value *s = &x->g->vals[v];
  return s->dt == DT_F64 ? *(double *)x->bufs[v] : *(float *)x->bufs[v];
}

/* Cross-entropy and accuracy of logits [n, ..., C] against int targets
 * [n, ...] (positions with target < 0 are skipped), for the first `valid`
 * examples of a batch. */
static void score(const float *logits, const int64_t *tgt, int64_t valid, int64_t per_example,
                  int64_t classes, double *loss, int64_t *correct, int64_t *count) {
  for (int64_t i = 0; i < valid * per_example; i++) {
    int64_t t = tgt[i];
    if (t < 0 || t >= classes) continue;
    const float *z = logits + i * classes;
    double m = z[0];
    int64_t arg = 0;
    for (int64_t c = 1; c < classes; c++)
      if (z[c] > m) { m = z[c]; arg = c; }
    double s = 0;
    for (int64_t c = 0; c < classes; c++) s += exp(z[c] - m);
    *loss += m + log(s) - z[t];
    *correct += arg == t;
    (*count)++;
  }
}

/* Opens --eval-data: its examples and targets must look like the
 * training data's. */
static int open_eval_set(Options *o, const DataShape *in, const DataShape *tg, Dataset **eds, Sampler *esm) {
  char err[4096];
  *eds = data_open(o->eval_data, err, sizeof err);
  if (!*eds) {
    fprintf(stderr, "matc: --eval-data: %s\n", err);
    return 1;
  }
  DataShape ein = data_input_shape(*eds), etg = data_target_shape(*eds);
  if (ein.dtype != in->dtype || ein.rank != in->rank || memcmp(ein.dims, in->dims, sizeof(int64_t) * in->rank) ||
      etg.dtype != tg->dtype || etg.rank != tg->rank || memcmp(etg.dims, tg->dims, sizeof(int64_t) * tg->rank)) {
    fprintf(stderr, "matc: --eval-data %s: its examples or targets differ in shape or type from --data %s\n",
            o->eval_data, o->data);
  } else if (sampler_init_eval(esm, *eds)) {
    fprintf(stderr, "matc: --eval-data %s: no examples\n", o->eval_data);
  } else {
    return 0;
  }
  data_close(*eds);
  *eds = NULL;
  return 1;
}

/* Class targets must index the model's output (or be the ignored -100):
 * an out-of-range label would make the loss read outside the logits. */
static int check_targets(const Options *o, DType dt, const void *tgt, int64_t n, int64_t classes, int64_t step,
                         const char *what) {
  if (dt != DT_I64 && dt != DT_I32) return 0;
  for (int64_t i = 0; i < n; i++) {
    int64_t t = dt == DT_I64 ? ((const int64_t *)tgt)[i] : ((const int32_t *)tgt)[i];
    if (t == -100 || (t >= 0 && t < classes)) continue;
    fprintf(stderr, "\nmatc: %s: %s batch at step %lld: target %lld (element %lld) is out of range for the "
            "model's %lld classes (valid: 0..%lld, or -100 to ignore)\n", o->data, what, (long long)step,
            (long long)t, (long long)i, (long long)classes, (long long)classes - 1);
    return 1;
  }
  return 0;
}

/* After a non-finite loss: reruns the failed step kernel by kernel in
 * the interpreter, from the parameters as they were before it (the
 * snapshot), and names the first node whose output holds a NaN or an
 * infinity: a forward activation, the loss, a gradient or an update. */
static void find_nonfinite(Graph *g, Exec *x, FILE *f) {
  for (int k = 0; k < g->nkernels;) {
    int node = g->kernels[k].node, k1 = k + 1;
    while (k1 < g->nkernels && g->kernels[k1].node == node) k1++;
    kernels_interpret(g, k, k1, x->bufs);
    k = k1;
    if (node < 0) continue;
    const Node *n = &g->nodes[node];
    for (int j = 0; j < n->nout; j++) {
      int v = n->out[j];
      const Value *val = v >= 0 ? &g->vals[v] : NULL;
      if (!val || val->fused || !x->bufs[v] || (val->dt != DT_F32 && val->dt != DT_F64)) continue;
      int64_t ne = value_nelem(val);
      for (int64_t i = 0; i < ne; i++) {
        double e = val->dt == DT_F32 ? ((float *)x->bufs[v])[i] : ((double *)x->bufs[v])[i];
        if (isfinite(e)) continue;
        fprintf(f, "matc: the first non-finite value: %g at element %lld of '%s', output %d of node '%s' (%s)%s\n",
                e, (long long)i, val->name, j, n->name, n->op_type,
                val->kind == V_PARAM ? " (a parameter: the update wrote it)" : "");
        return;
      }
    }
  }
  fprintf(f, "matc: rerunning the step from the saved parameters gave no non-finite value (nondeterministic?)\n");
}

/* One line of progress: rewritten in place on a terminal (step, loss,
 * steps/s, ETA), a plain line every 50 steps otherwise (logs, CI). */
static void progress(int tty, int64_t done, int64_t total, int64_t step, int64_t steps, double loss,
                     double elapsed_ms) {
  double rate = elapsed_ms > 0 ? 1000.0 * done / elapsed_ms : 0;
  double eta = rate > 0 ? (total - done) / rate : 0;
  if (tty) {
    char bar[21];
    int fill = total > 0 ? (int)(20 * done / total) : 20;
    for (int i = 0; i < 20; i++) bar[i] = i < fill ? '#' : '.';
    bar[20] = 0;
    fprintf(stderr, "\r[%s] step %lld/%lld  loss %.4f  %.1f steps/s  ETA %dm%02ds   ", bar, (long long)step,
            (long long)steps, loss, rate, (int)eta / 60, (int)eta % 60);
  } else if (step % 50 == 0 || done == 1 || step == steps) {
    fprintf(stderr, "step %lld/%lld loss %.4f %.1f steps/s ETA %.0fs\n", (long long)step, (long long)steps, loss,
            rate, eta);
  }
}

/* SIGINT/SIGTERM: finish the step, checkpoint, exit 128 + signal. A
 * second signal while the first is being handled kills the run at once
 * (the previous checkpoint stays valid: writes are atomic). */
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) {
  if (stop_signal) {
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  stop_signal = sig;
}

/* Data parallel (runtime/dp.h): this rank's share of the global batch's
 * loss. Cross-entropy over class targets averages over the valid targets
 * (not -100), so a rank weighs by how many it holds; any other loss
 * averages over equal parts: 1 / ranks. */
static double local_count(const TrainStep *ts, DType dt, const void *tgt, int64_t n, int64_t batch) {
  if (ts->loss == ts->logits || (dt != DT_I64 && dt != DT_I32)) return (double)batch;
  int64_t c = 0;
  for (int64_t i = 0; i < n; i++) {
    int64_t t = dt == DT_I64 ? ((const int64_t *)tgt)[i] : ((const int32_t *)tgt)[i];
    c += t != -100;
  }
  return (double)c;
}

static int train(Options *o, int *together);

int cmd_train(Options *o) {
  if (!o->data) {
    fprintf(stderr, "matc: train needs --data SPEC (see README: idx:DIR, text:PATH:mlm:SEQ, npy:..., pb:DIR)\n");
    return 2;
  }
  if (o->checkpoint && o->checkpoint_every <= 0) {
    fprintf(stderr, "matc: --checkpoint-every must be a positive number of steps\n");
    return 2;
  }
  if (o->batch <= 0) o->batch = 32;
  /* Under mpirun: one rank of a data-parallel run (matc compile builds
   * the graphs only: no MPI). */
  if (!o->compile_only) {
    char err[1024];
    if (dp_init(err, sizeof err)) {
      fprintf(stderr, "matc: %s\n", err);
      return 1;
    }
    /* Until every rank has built its graphs (machines compile at their
     * own speed) the ranks wait for each other at least 10 minutes. */
    dp_set_timeout(o->mpi_timeout > 600 ? o->mpi_timeout : 600);
    if (dp_size() > 1 && o->threads <= 0) {
      /* The machine's cores shared by the ranks on it. */
      long c = sysconf(_SC_NPROCESSORS_ONLN) / dp_local_size();
      matc_rt_set_threads(c < 1 ? 1 : (int)c);
    }
  }
  /* Set-up errors may be one rank's own (a file missing on its machine):
   * they end the job. Errors in the loop are met by all ranks together
   * (the per-step agreements), and so is the end. */
  int together = 0;
  int status = train(o, &together);
  if (together || status == 0) return dp_finish(status);
  dp_abort(status);
  return status;
}

static int train(Options *o, int *together) {
  char err[4096];
  int ranks = dp_size(), rank = dp_rank(), lead = rank == 0;
  if (o->out && lead) {
    /* Fail now, not after training, when --out cannot be written. */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", o->out);
    if (access(dirname(dir), W_OK) != 0) {
      fprintf(stderr, "matc: --out %s: cannot write in directory %s: %s\n", o->out, dir, strerror(errno));
      return 1;
    }
  }
  /* The checkpoint first: a missing or damaged one fails before any work.
   * With several ranks, rank 0 reads it and sends it to the others. */
  Ckpt *ck = NULL;
  if (o->resume) {
    ck = ckpt_read_dp(o->resume, err, sizeof err);
    if (!ck) {
      if (lead) fprintf(stderr, "matc: %s\n", err);
      *together = 1;                    /* every rank knows */
      return 1;
    }
    const CkptMeta *m = ckpt_meta(ck);
    /* Resuming keeps the global batch (ranks x --batch); it may be split
     * over another number of ranks. */
    if (m->ranks != ranks && !(m->batch > 0 && m->ranks * m->batch == ranks * o->batch)) {
      if (lead) {
        fprintf(stderr, "matc: %s: the checkpoint was written by a run of %lld rank%s", ckpt_file(ck),
                (long long)m->ranks, m->ranks == 1 ? "" : "s");
        int64_t gb = m->ranks * m->batch;
        if (m->batch > 0)
          fprintf(stderr, " with a global batch of %lld (%lld x --batch %lld), this run's is %lld (%d x --batch "
                  "%lld): resume with ranks x --batch = %lld (e.g. %d rank%s with --batch %lld)\n", (long long)gb,
                  (long long)m->ranks, (long long)m->batch, (long long)(ranks * o->batch), ranks, (long long)o->batch,
                  (long long)gb, gb % ranks ? (int)m->ranks : ranks,
                  (gb % ranks ? m->ranks : ranks) == 1 ? "" : "s", (long long)(gb % ranks ? m->batch : gb / ranks));
        else
          fprintf(stderr, ", this run has %d: resume with %lld rank%s\n", ranks, (long long)m->ranks,
                  m->ranks == 1 ? "" : "s");
      }
      ckpt_free(ck);
      *together = 1;
      return 1;
    }
    if (m->ranks != ranks && lead)
      fprintf(stderr, "matc: the checkpoint was written by %lld rank%s, this run has %d: the global batch of %lld "
              "is kept, split %d x %lld\n", (long long)m->ranks, m->ranks == 1 ? "" : "s", ranks,
              (long long)(ranks * o->batch), ranks, (long long)o->batch);
    if (o->seed_set && o->seed != m->seed && lead)
      fprintf(stderr, "matc: --seed %lld ignored: resuming with the checkpoint's seed %lld\n", (long long)o->seed,
              (long long)m->seed);
    o->seed = m->seed;
  }
  if (o->checkpoint && lead && ckpt_prepare_dir(o->checkpoint, err, sizeof err)) {
    fprintf(stderr, "matc: %s\n", err);
    ckpt_free(ck);
    return 1;
  }
  Dataset *ds = data_open(o->data, err, sizeof err);
  if (!ds) {
    fprintf(stderr, "matc: %s\n", err);
    ckpt_free(ck);
    return 1;
  }
  DataShape in = data_input_shape(ds), tg = data_target_shape(ds);
  Sampler sm;
  if (sampler_init(&sm, ds, (uint64_t)o->seed, o->eval_fraction)) {
    fprintf(stderr, "matc: %s: cannot split %lld examples for evaluation\n", o->data, (long long)data_count(ds));
    data_close(ds);
    ckpt_free(ck);
    return 1;
  }
  if (o->no_shuffle) sampler_sequential(&sm);
  /* --eval-data: a separate evaluation set (a test split) instead of the
   * held-out fraction. */
  Dataset *eds = NULL;
  Sampler esm;
  memset(&esm, 0, sizeof esm);
  if (o->eval_data && open_eval_set(o, &in, &tg, &eds, &esm)) {
    sampler_free(&sm);
    data_close(ds);
    ckpt_free(ck);
    return 1;
  }
  Sampler *es = o->eval_data ? &esm : &sm;
  Compiled tr, ev;
  memset(&tr, 0, sizeof tr);
  memset(&ev, 0, sizeof ev);
  int status = 1;
  TrainStep ts;
  memset(&ts, 0, sizeof ts);
  MatRun mr;
  memset(&mr, 0, sizeof mr);
  char *probe_keys = NULL, *snapshot = NULL;
  int *saved = NULL, nsaved = 0, *bnv = NULL, nbn = 0;
  float *bnbuf = NULL;
  int64_t start = 0;
  FILE *log = NULL;
  struct sigaction sa, old_int, old_term;
  int handlers = 0;
  if (load_model(o, &in, &tr)) goto done;
  CkptMeta meta;
  memset(&meta, 0, sizeof meta);
  snprintf(meta.model, sizeof meta.model, "%s", model_label(o));
  snprintf(meta.optimizer, sizeof meta.optimizer, "%s", o->optimizer);
  meta.fingerprint = model_fingerprint(tr.g, &meta.ninit);
  meta.seed = o->seed;
  meta.ntrain = sm.ntrain;
  meta.ranks = ranks;
  meta.batch = o->batch;
  if (ck && ckpt_check_model(ck, &meta, err, sizeof err)) {
    fprintf(stderr, "matc: %s\n", err);
    goto done;
  }
  if (ck) {
    const CkptMeta *m = ckpt_meta(ck);
    if (m->ntrain != sm.ntrain) {
      fprintf(stderr, "matc: %s: the checkpoint was written with %lld training examples, but --data %s with "
              "--eval-fraction %g gives %lld\n", ckpt_file(ck), (long long)m->ntrain, o->data, o->eval_fraction,
              (long long)sm.ntrain);
      goto done;
    }
    sampler_seek(&sm, m->epoch, m->pos);
    start = m->step;
  }
  TrainConfig cfg = {0};
  cfg.optimizer = strcmp(o->optimizer, "adamw") == 0 ? OPT_ADAMW : OPT_SGD;
  cfg.loss = LOSS_AUTO;
  cfg.momentum = o->momentum;
  cfg.nesterov = o->nesterov;
  cfg.weight_decay = o->weight_decay;
  cfg.beta1 = 0.9;
  cfg.beta2 = 0.999;
  cfg.eps = 1e-8;
  cfg.clip_norm = o->clip;
  cfg.ignore_index = -100;
  cfg.freeze = o->freeze;
  cfg.bn_frozen = o->freeze_bn;
  cfg.target_dt = (DType)tg.dtype;
  cfg.target_rank = tg.rank;
  memcpy(cfg.target_dims, tg.dims, sizeof cfg.target_dims);
  /* MAT: modules on the forward graph, then guard predicates on the step,
   * and the policy's state as an input the checkpoint carries. */
  PartitionOptions po = {o->others_as_modules, o->freeze, o->partition};
  int rc = o->mat_on ? partition_modules(tr.g, &po) : MATC_OK;
  if (!rc) rc = build_train_step(tr.g, &cfg, &ts);
  if (!rc && o->mat_on) rc = insert_guards(tr.g, &ts, o->mat_stop);
  int mat_state = -1;
  if (!rc && o->mat_on && tr.g->nmodules > 0) {
    mat_state = graph_add_value(tr.g, "matc.mat_state");
    int64_t sd[1] = {mat_policy_state_len(tr.g->nmodules)};
    tr.g->vals[mat_state].kind = V_INPUT;
    value_set(&tr.g->vals[mat_state], DT_F64, 1, sd);
  }
  double t_compile = now_ms();
  if (!rc) rc = exec_new(tr.g, &tr.x);
  t_compile = now_ms() - t_compile;
  if (rc) { status = report(tr.g, rc); goto done; }
  /* Data parallel: the step's put/get kernels exchange through buckets. */
  if (dp_bind(tr.g->dp_plan, tr.g->guard_value >= 0 ? tr.x->bufs[tr.g->guard_value] : NULL,
              (int64_t)(o->mpi_bucket_mb * 1048576))) {
    fprintf(stderr, "matc: out of memory for the gradient all-reduce buckets\n");
    goto done;
  }
  /* The evaluation graph reads the training graph's parameters. */
  if (load_model(o, &in, &ev)) goto done;
  if (o->mat_on) {
    rc = partition_modules(ev.g, &po);
    if (rc) { status = report(ev.g, rc); goto done; }
    if (mat_setup(&mr, o, ev.g, tr.g, tr.x, &cfg, ds)) goto done;
  }
  for (int v = 0; v < ev.g->nvals; v++) {
    Value *p = &ev.g->vals[v];
    if (p->kind != V_PARAM) continue;
    int t = graph_find_value(tr.g, p->name);
    if (t >= 0) p->data = tr.g->vals[t].data;
  }
  double t_eval = now_ms();
  rc = exec_new(ev.g, &ev.x);
  t_compile += now_ms() - t_eval;
  if (rc) { status = report(ev.g, rc); goto done; }
  /* matc compile: every graph is built (and its code emitted); no training. */
  if (o->compile_only) { status = 0; goto done; }
  /* What a checkpoint holds: the trained parameters and the optimizer state. */
  saved = calloc((size_t)ts.nparams + ts.nstate + 3, sizeof(int));
  for (int i = 0; i < ts.nparams; i++) saved[nsaved++] = ts.params[i];
  for (int i = 0; i < ts.nstate; i++) saved[nsaved++] = ts.state[i];
  if (mr.on) {
    saved[nsaved++] = tr.g->guard_value;   /* MAT: the active set and the policy's state */
    saved[nsaved++] = mat_state;
  }
  /* BatchNormalization's running statistics (the state that is also an
   * initializer): each rank's come from its own batch, so with several
   * ranks they are averaged after every step and stay the same on all. */
  bnv = calloc((size_t)ts.nstate + 1, sizeof(int));
  int64_t bn_elems = 0;
  for (int i = 0; i < ts.nstate; i++) {
    int e = graph_find_value(ev.g, tr.g->vals[ts.state[i]].name);
    if (e >= 0 && ev.g->vals[e].kind == V_PARAM) {
      bnv[nbn++] = ts.state[i];
      if (tr.g->vals[ts.state[i]].dt == DT_F32) bn_elems += value_nelem(&tr.g->vals[ts.state[i]]);
    }
  }
  if (ranks > 1 && bn_elems) bnbuf = malloc(sizeof(float) * (size_t)bn_elems);
  if (ck) {
    if (ckpt_restore(ck, tr.x, saved, nsaved, err, sizeof err)) {
      fprintf(stderr, "matc: %s\n", err);
      goto done;
    }
    if (mr.on && mat_resume(&mr, tr.x->bufs[mat_state])) {
      fprintf(stderr, "matc: %s: its MAT state is for another partition\n", ckpt_file(ck));
      goto done;
    }
    if (lead)
      fprintf(stderr, "matc: resuming from %s at step %lld (epoch %lld, example %lld)\n", ckpt_file(ck),
              (long long)start, (long long)ckpt_meta(ck)->epoch, (long long)ckpt_meta(ck)->pos);
    ckpt_free(ck);
    ck = NULL;
  }
  /* Every rank must run the same training on the same data: the last
   * check of the set-up, and the first step where all ranks meet. */
  if (ranks > 1 && dp_check_same_run(o, tr.g, &meta, ds, &sm, es)) {
    *together = 1;
    goto done;
  }

  /* A resumed run appends to its log. */
  log = o->log && lead ? fopen(o->log, o->resume ? "a" : "w") : NULL;
  if (o->log && lead && !log) {
    fprintf(stderr, "matc: %s: cannot write the log\n", o->log);
    goto done;
  }
  /* From here on every rank leaves the loop at the same step. */
  *together = 1;
  dp_set_timeout(o->mpi_timeout > 0 ? o->mpi_timeout : 300);
  int tty = lead && isatty(fileno(stderr));
  size_t tg_bytes = (size_t)shape_nelem(tg.rank, tg.dims) * dt_size((DType)tg.dtype);
  int64_t classes = tr.g->vals[ts.logits].dims[tr.g->vals[ts.logits].rank - 1];
  int64_t tg_elems = shape_nelem(tg.rank, tg.dims);
  if (lead) {
    fprintf(stderr, "matc: training %s: %lld parameters in %d tensors, %s, batch %lld, %lld steps; "
            "%lld training / %lld evaluation examples\n", model_label(o), (long long)ts.nparam_elems, ts.nparams,
            o->optimizer, (long long)o->batch, (long long)o->steps, (long long)sm.ntrain, (long long)es->neval);
    if (tr.g->jit_parts) {
      int live = 0;
      for (int i = 0; i < tr.g->nkernels; i++) live += !tr.g->kernels[i].dead;
      fprintf(stderr, "matc: compiled the training step (%d kernels, in %d part%s) and the evaluation pass in "
              "%.1f s\n", live, tr.g->jit_parts, tr.g->jit_parts == 1 ? "" : "s", t_compile / 1e3);
    }
    if (ranks > 1)
      fprintf(stderr, "matc: data parallel over %d ranks (%s%s): global batch %lld = %d x %lld; gradients summed "
              "in %d bucket%s of up to %g MB; --mpi-timeout %g s\n", ranks, dp_host(0),
              strcmp(dp_host(0), dp_host(ranks - 1)) ? " and others" : "", (long long)(ranks * o->batch), ranks,
              (long long)o->batch, dp_nbuckets(), dp_nbuckets() == 1 ? "" : "s", o->mpi_bucket_mb, dp_timeout());
  }
  double t_start = now_ms(), last_loss = 0, total_flops = 0, best_acc = -1, best_eval_loss = INFINITY;
  /* Operations one step executes (GEMMs 2MNK plus generated loops, as
   * kernels_flops counts them), and what a step with every module active
   * costs. Without MAT the two are equal. With several ranks: all ranks'
   * work (the probe runs on rank 0 only). */
  double full_flops = ranks * (mr.on ? mr.full_flops : kernels_flops(tr.g)), step_flops = full_flops;
  double total_full = 0, comm_sent = 0, comm_saved = 0, comm_ms = 0;
  int nmodules = mr.on ? mr.n : 0, nactive = nmodules;
  if (mr.on) probe_keys = malloc(1 << 16);
  size_t param_bytes = 0;
  for (int i = 0; i < ts.nparams; i++)
    param_bytes += (size_t)value_nelem(&tr.g->vals[ts.params[i]]) * dt_size(tr.g->vals[ts.params[i]].dt);
  snapshot = malloc(param_bytes + 1);
  int64_t eval_every = o->eval_every > 0 ? o->eval_every : o->steps;
  int64_t saved_step = -1;
  if (start >= o->steps && lead)
    fprintf(stderr, "matc: the checkpoint is at step %lld, --steps is %lld: nothing to train\n", (long long)start,
            (long long)o->steps);
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  stop_signal = 0;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  handlers = 1;
  for (int64_t step = start; step < o->steps; step++) {
    double weight = 1;                 /* this rank's share of the loss */
    dp_set_step(step + 1);
    /* Rank r's part of the global batch: examples [r B, (r+1) B). */
    if (ranks > 1)
      sampler_next_part(&sm, ranks * o->batch, rank * o->batch, o->batch, tr.x->bufs[tr.input],
                        tr.x->bufs[ts.target]);
    else
      sampler_next(&sm, o->batch, tr.x->bufs[tr.input], tr.x->bufs[ts.target]);
    int bad = check_targets(o, (DType)tg.dtype, tr.x->bufs[ts.target], o->batch * tg_elems, classes, step + 1,
                            "training");
    if (ranks > 1) {
      /* Every rank learns whether a batch was bad, and its share of the loss. */
      double mine = local_count(&ts, (DType)tg.dtype, tr.x->bufs[ts.target], o->batch * tg_elems, o->batch);
      double v[2] = {bad, mine};
      dp_allreduce_f64(v, 2, DP_SUM, "the agreement before the step (targets)");
      if (v[0] > 0) goto done_log;
      weight = v[1] > 0 ? mine / v[1] : 0;
      dp_set_weight(weight);
    } else if (bad) {
      goto done_log;
    }
    double lr = schedule(o, step);
    set_scalar(tr.x, ts.lr, lr);
    set_scalar(tr.x, ts.bc1, 1 - pow(0.9, (double)(step + 1)));
    set_scalar(tr.x, ts.bc2, 1 - pow(0.999, (double)(step + 1)));
    /* Dropout: new masks every step, and another stream on every rank. */
    if (tr.g->rng_seed1)
      *(int64_t *)tr.x->bufs[tr.g->rng_seed1 - 1] =
          (int64_t)((uint64_t)o->seed * 1000003u + (uint64_t)step + (uint64_t)rank * 0x9E3779B97F4A7C15ull);
    if (mr.on) {
      if (mat_before_step(&mr, step, probe_keys, 1 << 16)) goto done_log;
      step_flops = ranks * mr.step_flops + mr.probe_flops;
      nactive = mat_active(&mr);
    }
    /* The parameters before the step, to diagnose a non-finite loss. */
    for (int i = 0, off = 0; i < ts.nparams; i++) {
      size_t b = (size_t)value_nelem(&tr.g->vals[ts.params[i]]) * dt_size(tr.g->vals[ts.params[i]].dt);
      memcpy(snapshot + off, tr.x->bufs[ts.params[i]], b);
      off += b;
    }
    double s0 = now_ms();
    exec_run(tr.x);
    double ms = now_ms() - s0;
    double loss = get_scalar(tr.x, ts.loss);
    DpStats cs = {0};
    if (ranks > 1) {
      dp_take_stats(&cs);
      comm_sent += cs.sent;
      comm_saved += cs.saved;
      comm_ms += cs.wait_ms;
      if (bnbuf) {
        /* The ranks' BatchNormalization statistics, averaged. */
        int64_t at = 0;
        for (int i = 0; i < nbn; i++) {
          if (tr.g->vals[bnv[i]].dt != DT_F32) continue;
          int64_t ne = value_nelem(&tr.g->vals[bnv[i]]);
          memcpy(bnbuf + at, tr.x->bufs[bnv[i]], sizeof(float) * ne);
          at += ne;
        }
        dp_sum_f32(bnbuf, at, "averaging BatchNormalization statistics");
        at = 0;
        for (int i = 0; i < nbn; i++) {
          if (tr.g->vals[bnv[i]].dt != DT_F32) continue;
          int64_t ne = value_nelem(&tr.g->vals[bnv[i]]);
          float *d = tr.x->bufs[bnv[i]];
          for (int64_t e = 0; e < ne; e++) d[e] = bnbuf[at + e] / ranks;
          at += ne;
        }
      }
      /* The global loss, and whether some rank was interrupted. */
      double v[2] = {weight == 0 ? 0 : loss * weight, stop_signal};
      dp_allreduce_f64(v, 2, DP_SUM, "the agreement after the step (loss)");
      loss = v[0];
      if (v[1] > 0 && !stop_signal) stop_signal = SIGINT;
    }
    if (!isfinite(loss)) {
      if (lead) {
        fprintf(stderr, "\nmatc: step %lld: the loss is %g; stopping (lower --lr, or --clip)\n",
                (long long)step + 1, loss);
        for (int i = 0, off = 0; i < ts.nparams; i++) {
          size_t b = (size_t)value_nelem(&tr.g->vals[ts.params[i]]) * dt_size(tr.g->vals[ts.params[i]].dt);
          memcpy(tr.x->bufs[ts.params[i]], snapshot + off, b);
          off += b;
        }
        dp_suspend(1);                 /* the rerun is this rank's alone */
        find_nonfinite(tr.g, tr.x, stderr);
        dp_suspend(0);
        if (saved_step >= 0 || o->resume)
          fprintf(stderr, "matc: the last checkpoint (%s/checkpoint.matc, step %lld) is kept\n",
                  o->checkpoint ? o->checkpoint : o->resume, (long long)(saved_step >= 0 ? saved_step : start));
      }
      goto done_log;
    }
    last_loss = loss;
    total_flops += step_flops;
    total_full += full_flops;
    if (mr.on) mat_after_step(&mr);
    if (log) {
      fprintf(log, "{\"step\":%lld,\"loss\":%.6g,\"ms\":%.3f,\"lr\":%.6g,\"flops\":%.10g,\"flops_full\":%.10g,"
              "\"active\":%d,\"modules\":%d", (long long)step + 1, loss, ms, lr, step_flops, full_flops, nactive,
              nmodules);
      if (ranks > 1)
        fprintf(log, ",\"ranks\":%d,\"comm_bytes\":%.0f,\"comm_saved\":%.0f,\"comm_ms\":%.3f", ranks, cs.sent,
                cs.saved, cs.wait_ms);
      fprintf(log, "%s}\n", mr.on ? probe_keys : "");
    }
    if (lead) progress(tty, step + 1 - start, o->steps - start, step + 1, o->steps, loss, now_ms() - t_start);
    if ((step + 1) % eval_every == 0 && es->neval > 0 && !dt_is_float((DType)tg.dtype)) {
      /* Rank r evaluates batches r, r + ranks, ...; the sums are added up. */
      double sums[4] = {0, 0, 0, 0};           /* loss, correct, count, bad */
      int64_t correct = 0, count = 0;
      void *tgt = malloc(tg_bytes * o->batch);
      for (int64_t k = rank;; k += ranks) {
        int64_t n = sampler_eval_batch(es, k, o->batch, ev.x->bufs[ev.input], tgt);
        if (n <= 0) break;
        if (check_targets(o, (DType)tg.dtype, tgt, n * tg_elems, classes, step + 1, "evaluation")) {
          sums[3] = 1;
          break;
        }
        exec_run(ev.x);
        score(ev.x->bufs[ev.g->outputs[0]], tgt, n, shape_nelem(tg.rank, tg.dims), classes, &sums[0], &correct,
              &count);
      }
      free(tgt);
      sums[1] = (double)correct;
      sums[2] = (double)count;
      dp_allreduce_f64(sums, 4, DP_SUM, "adding up the evaluation");
      if (sums[3] > 0) goto done_log;
      double el = sums[0];
      correct = (int64_t)sums[1];
      count = (int64_t)sums[2];
      double acc = count ? (double)correct / count : 0;
      if (tty) fputc('\n', stderr);
      if (lead)
        fprintf(stderr, "eval at step %lld: loss %.4f, accuracy %.2f%% (%lld targets)\n", (long long)step + 1,
                count ? el / count : 0, 100 * acc, (long long)count);
      if (count && acc > best_acc) best_acc = acc;
      if (count && el / count < best_eval_loss) best_eval_loss = el / count;
      if (log) fprintf(log, "{\"step\":%lld,\"eval_loss\":%.6g,\"eval_acc\":%.6g}\n", (long long)step + 1,
                       count ? el / count : 0, acc);
    }
    int64_t done_steps = step + 1;
    if (o->checkpoint && (done_steps % o->checkpoint_every == 0 || done_steps == o->steps || stop_signal)) {
      if (log) fflush(log);
      meta.step = done_steps;
      meta.epoch = sm.epoch;
      meta.pos = sm.pos;
      if (mr.on) mat_policy_save(mr.pol, tr.x->bufs[mat_state]);
      /* Rank 0 writes; every rank learns whether it could. */
      double ok = 1;
      if (lead && ckpt_save(o->checkpoint, &meta, tr.x, saved, nsaved, err, sizeof err)) {
        if (tty) fputc('\n', stderr);
        fprintf(stderr, "matc: step %lld: cannot write the checkpoint: %s\n", (long long)done_steps, err);
        ok = 0;
      }
      dp_allreduce_f64(&ok, 1, DP_MIN, "the checkpoint's agreement");
      if (!ok) goto done_log;
      saved_step = done_steps;
    }
    if (stop_signal) {
      if (tty) fputc('\n', stderr);
      if (lead) {
        fprintf(stderr, "matc: interrupted (%s) after step %lld", stop_signal == SIGINT ? "SIGINT" : "SIGTERM",
                (long long)done_steps);
        if (o->checkpoint)
          fprintf(stderr, "; checkpoint written to %s/checkpoint.matc (continue with --resume %s)\n",
                  o->checkpoint, o->checkpoint);
        else
          fprintf(stderr, "; no --checkpoint given, nothing saved\n");
      }
      status = 128 + stop_signal;
      goto done_log;
    }
  }
  if (tty) fputc('\n', stderr);
  if (start < o->steps && lead) {
    double secs = (now_ms() - t_start) / 1000;
    fprintf(stderr, "matc: done: %lld steps in %.1f s (%.2f steps/s, %.1f GFLOP/s), final training loss %.4f\n",
            (long long)(o->steps - start), secs, (o->steps - start) / secs, total_flops / secs / 1e9, last_loss);
    if (best_acc >= 0)
      fprintf(stderr, "matc: best evaluation: accuracy %.2f%%, loss %.4f\n", 100 * best_acc, best_eval_loss);
    if (mr.on) mat_summary(&mr, o->steps - start, total_flops, total_full, stderr);
    if (tr.g->profile)   /* MATC_PROFILE=1: where the training steps' time went */
      exec_print_profile(tr.x, stderr, getenv("MATC_PROFILE_TOP") ? atoi(getenv("MATC_PROFILE_TOP")) : 25);
    if (ranks > 1)
      fprintf(stderr, "matc: data parallel: each rank all-reduced %.4g MB of gradients (%.3g MB per step)%s%.4g MB "
              "saved by MAT (%.1f%%); %.1f s waiting for the sums\n", comm_sent / 1e6,
              comm_sent / 1e6 / (o->steps - start), mr.on ? "; " : "; no MAT: ", comm_saved / 1e6,
              comm_sent + comm_saved > 0 ? 100 * comm_saved / (comm_sent + comm_saved) : 0, comm_ms / 1000);
  }
  if (o->checkpoint && saved_step < 0) {
    meta.step = start > o->steps ? start : o->steps;
    meta.epoch = sm.epoch;
    meta.pos = sm.pos;
    if (mr.on) mat_policy_save(mr.pol, tr.x->bufs[mat_state]);
    if (lead && ckpt_save(o->checkpoint, &meta, tr.x, saved, nsaved, err, sizeof err)) {
      fprintf(stderr, "matc: cannot write the checkpoint: %s\n", err);
      goto done_log;
    }
  }
  if (o->checkpoint && lead) fprintf(stderr, "matc: checkpoint written to %s/checkpoint.matc\n", o->checkpoint);
  if (o->out && lead) {
    /* Parameters and the state that is also an initializer (BatchNorm's
     * running statistics); optimizer state matches no initializer. */
    int *outv = malloc(sizeof(int) * (ts.nparams + ts.nstate + 1)), nout = ts.nparams;
    memcpy(outv, ts.params, sizeof(int) * ts.nparams);
    for (int i = 0; i < nbn; i++) outv[nout++] = bnv[i];
    int wrc = write_trained_onnx(o->model, o->out, tr.x, outv, nout, err, sizeof err);
    free(outv);
    if (wrc) {
      fprintf(stderr, "matc: --out %s: %s\n", o->out, err);
      goto done_log;
    }
    fprintf(stderr, "matc: trained model written to %s\n", o->out);
  }
  status = 0;
done_log:
  if (log) fclose(log);
done:
  if (handlers) {
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
  }
  dp_unbind();
  ckpt_free(ck);
  free(saved);
  free(bnv);
  free(bnbuf);
  free(ts.state);
  free(probe_keys);
  free(snapshot);
  mat_free(&mr);
  exec_free(tr.x);
  exec_free(ev.x);
  if (tr.g) graph_free(tr.g);
  if (ev.g) graph_free(ev.g);
  free(ts.params);
  free(ts.grads);
  sampler_free(&sm);
  sampler_free(&esm);
  data_close(ds);
  data_close(eds);
  return status;
}
