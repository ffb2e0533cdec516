/* mat_train.h: MAT in the training loop (tools/mat_train.c). */
#ifndef MATC_MAT_TRAIN_H
#define MATC_MAT_TRAIN_H

#include "cli.h"
#include "../compiler/probe.h"
#include "../runtime/data.h"
#include "../runtime/mat.h"

typedef struct {
  int on;
  MatOptions opts;
  int n;                          /* modules */
  Probe *probe;
  MatPolicy *pol;
  Graph *train;
  uint8_t *guards;                /* the training step's guard bytes (its matc.guards input) */
  double *lambda, *trace, lambda_all, trace_all;
  void *probe_in, *probe_tg;      /* the fixed probe batch */
  double step_flops;              /* FLOPs of a step under the current guards */
  double full_flops;              /* ... with every module active */
  double probe_flops;             /* of this step's probe (0 if none) */
  double probe_flops_total, probe_ms_total;
  int nprobes;
} MatRun;

/* fwd: a partitioned forward graph (not yet compiled) for the probe;
 * train: the compiled training step with guards (tx its storage). */
int mat_setup(MatRun *m, const Options *o, Graph *fwd, Graph *train, Exec *tx, const TrainConfig *cfg,
              Dataset *ds);
/* After a checkpoint restored the guard bytes: the policy's saved state. */
int mat_resume(MatRun *m, const void *state);
/* Before step `step` (0-based): probes and re-decides when due, writing
 * the probe's log keys (",\"lambda\":{...},...") to logbuf ("" if none). */
int mat_before_step(MatRun *m, int64_t step, char *logbuf, size_t len);
void mat_after_step(MatRun *m);
int mat_active(const MatRun *m);
void mat_summary(const MatRun *m, int64_t steps, double flops_run, double flops_full, FILE *f);
void mat_free(MatRun *m);

#endif
