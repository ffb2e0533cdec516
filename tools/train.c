/* train.c: `matc train`. Compiles the model's training step (forward,
 * loss, backward, optimizer: passes/build_train_step.c) and a forward-only
 * evaluation graph that shares the parameters, then runs the loop: draw a
 * batch, set the learning rate, run the step, log, evaluate every N steps.
 * The schedule (warm-up then cosine/linear decay) lives here; the step
 * reads the rate from a scalar input. */
#include "cli.h"
#include "../runtime/data.h"
#include "../runtime/rt.h"

#include <math.h>
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
  c->g = graph_new(o->model);
  c->g->dump_after = o->dump_after;
  int rc = import_onnx(c->g, o->model);
  if (rc) return report(c->g, rc);
  if (c->g->ninputs < 1) {
    fprintf(stderr, "matc: %s: the model has no input to feed data to\n", o->model);
    return 1;
  }
  c->input = c->g->inputs[0];
  Value *v = &c->g->vals[c->input];
  if (v->dt != (DType)in->dtype) {
    fprintf(stderr, "matc: %s: input '%s' is %s but the data gives %s\n", o->model, v->name,
            dt_name(v->dt), dt_name((DType)in->dtype));
    return 1;
  }
  if (v->rank >= 0 && v->rank != in->rank + 1) {
    fprintf(stderr, "matc: %s: input '%s' has rank %d but the data gives examples of rank %d (plus the "
            "batch)\n", o->model, v->name, v->rank, in->rank);
    return 1;
  }
  v->rank = in->rank + 1;
  v->dims[0] = o->batch;
  for (int i = 0; i < in->rank; i++) {
    if (v->dims[i + 1] >= 0 && v->dims[i + 1] != in->dims[i]) {
      fprintf(stderr, "matc: %s: input '%s' dimension %d is %lld but the data gives %lld\n", o->model,
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

int cmd_train(Options *o) {
  char err[1024];
  if (!o->data) {
    fprintf(stderr, "matc: train needs --data SPEC (see README: idx:DIR, text:PATH:mlm:SEQ, npy:..., pb:DIR)\n");
    return 2;
  }
  if (o->batch <= 0) o->batch = 32;
  Dataset *ds = data_open(o->data, err, sizeof err);
  if (!ds) {
    fprintf(stderr, "matc: %s\n", err);
    return 1;
  }
  DataShape in = data_input_shape(ds), tg = data_target_shape(ds);
  Sampler sm;
  if (sampler_init(&sm, ds, (uint64_t)o->seed, o->eval_fraction)) {
    fprintf(stderr, "matc: %s: cannot split %lld examples for evaluation\n", o->data, (long long)data_count(ds));
    data_close(ds);
    return 1;
  }
  if (o->no_shuffle) sampler_sequential(&sm);
  Compiled tr, ev;
  memset(&tr, 0, sizeof tr);
  memset(&ev, 0, sizeof ev);
  int status = 1;
  TrainStep ts;
  memset(&ts, 0, sizeof ts);
  if (load_model(o, &in, &tr)) goto done;
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
  int rc = build_train_step(tr.g, &cfg, &ts);
  if (!rc) rc = exec_new(tr.g, &tr.x);
  if (rc) { status = report(tr.g, rc); goto done; }
  /* The evaluation graph reads the training graph's parameters. */
  if (load_model(o, &in, &ev)) goto done;
  for (int v = 0; v < ev.g->nvals; v++) {
    Value *p = &ev.g->vals[v];
    if (p->kind != V_PARAM) continue;
    int t = graph_find_value(tr.g, p->name);
    if (t >= 0) p->data = tr.g->vals[t].data;
  }
  rc = exec_new(ev.g, &ev.x);
  if (rc) { status = report(ev.g, rc); goto done; }

  FILE *log = o->log ? fopen(o->log, "w") : NULL;
  if (o->log && !log) {
    fprintf(stderr, "matc: %s: cannot write the log\n", o->log);
    goto done;
  }
  int tty = isatty(fileno(stderr));
  size_t in_bytes = (size_t)shape_nelem(in.rank, in.dims) * dt_size((DType)in.dtype);
  size_t tg_bytes = (size_t)shape_nelem(tg.rank, tg.dims) * dt_size((DType)tg.dtype);
  int64_t classes = tr.g->vals[ts.logits].dims[tr.g->vals[ts.logits].rank - 1];
  fprintf(stderr, "matc: training %s: %lld parameters in %d tensors, %s, batch %lld, %lld steps; "
          "%lld training / %lld evaluation examples\n", o->model, (long long)ts.nparam_elems, ts.nparams,
          o->optimizer, (long long)o->batch, (long long)o->steps, (long long)sm.ntrain, (long long)sm.neval);
  double t_start = now_ms(), last_loss = 0;
  int64_t eval_every = o->eval_every > 0 ? o->eval_every : o->steps;
  for (int64_t step = 0; step < o->steps; step++) {
    sampler_next(&sm, o->batch, tr.x->bufs[tr.input], tr.x->bufs[ts.target]);
    double lr = schedule(o, step);
    set_scalar(tr.x, ts.lr, lr);
    set_scalar(tr.x, ts.bc1, 1 - pow(0.9, (double)(step + 1)));
    set_scalar(tr.x, ts.bc2, 1 - pow(0.999, (double)(step + 1)));
    if (tr.g->rng_seed1) *(int64_t *)tr.x->bufs[tr.g->rng_seed1 - 1] = o->seed * 1000003 + step;
    double s0 = now_ms();
    exec_run(tr.x);
    double ms = now_ms() - s0;
    double loss = get_scalar(tr.x, ts.loss);
    if (!isfinite(loss)) {
      fprintf(stderr, "\nmatc: step %lld: the loss is %g; stopping (lower --lr, or --clip)\n",
              (long long)step + 1, loss);
      goto done_log;
    }
    last_loss = loss;
    if (log) fprintf(log, "{\"step\":%lld,\"loss\":%.6g,\"ms\":%.3f,\"lr\":%.6g}\n", (long long)step + 1, loss, ms, lr);
    if (tty) fprintf(stderr, "\rstep %lld/%lld  loss %.4f  %.1f steps/s   ", (long long)step + 1,
                     (long long)o->steps, loss, 1000.0 * (step + 1) / (now_ms() - t_start));
    else if ((step + 1) % 50 == 0 || step == 0)
      fprintf(stderr, "step %lld/%lld loss %.4f\n", (long long)step + 1, (long long)o->steps, loss);
    if ((step + 1) % eval_every == 0 && sm.neval > 0 && !dt_is_float((DType)tg.dtype)) {
      double el = 0;
      int64_t correct = 0, count = 0;
      void *tgt = malloc(tg_bytes * o->batch);
      for (int64_t k = 0;; k++) {
        int64_t n = sampler_eval_batch(&sm, k, o->batch, ev.x->bufs[ev.input], tgt);
        if (n <= 0) break;
        exec_run(ev.x);
        score(ev.x->bufs[ev.g->outputs[0]], tgt, n, shape_nelem(tg.rank, tg.dims), classes, &el, &correct, &count);
      }
      free(tgt);
      (void)in_bytes;
      double acc = count ? (double)correct / count : 0;
      if (tty) fputc('\n', stderr);
      fprintf(stderr, "eval at step %lld: loss %.4f, accuracy %.2f%% (%lld targets)\n", (long long)step + 1,
              count ? el / count : 0, 100 * acc, (long long)count);
      if (log) fprintf(log, "{\"step\":%lld,\"eval_loss\":%.6g,\"eval_acc\":%.6g}\n", (long long)step + 1,
                       count ? el / count : 0, acc);
    }
  }
  if (tty) fputc('\n', stderr);
  fprintf(stderr, "matc: done: %lld steps in %.1f s, final training loss %.4f\n", (long long)o->steps,
          (now_ms() - t_start) / 1000, last_loss);
  status = 0;
done_log:
  if (log) fclose(log);
done:
  exec_free(tr.x);
  exec_free(ev.x);
  if (tr.g) graph_free(tr.g);
  if (ev.g) graph_free(ev.g);
  free(ts.params);
  free(ts.grads);
  sampler_free(&sm);
  data_close(ds);
  return status;
}
