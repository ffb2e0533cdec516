/* cli.h: what the command-line driver's files share. */
#ifndef MATC_CLI_H
#define MATC_CLI_H

#include "../compiler/exec.h"

#define EXIT_UNSUPPORTED 77

typedef struct {
  const char *cmd, *model, *data, *dump_after;
  int64_t batch;
  double rtol, atol;
  int json, verbose, repeat, threads, fd, f64, allow_random, atol_set;
  double tol;
  /* train */
  int64_t steps, warmup, eval_every, seed;
  double lr, momentum, weight_decay, clip, eval_fraction;
  int nesterov, no_shuffle, freeze_bn;
  const char *optimizer, *schedule, *log, *freeze;
} Options;

extern const Pass front_passes[];

int report(Graph *g, int rc);
int read_tensors(Graph *g, const char *dir, const char *prefix, Tensor **out, const char ***names, int *n);
int bind_data(Graph *g, const char *dir, Tensor *ins, const char **names, int nin, int *bound);
int check_outputs(Graph *g, Exec *x, Tensor *outs, int nout, double rtol, double atol);
int compare(const char *name, const Tensor *want, const void *got, DType dt, double rtol, double atol);
double now_ms(void);

int cmd_gradcheck(Options *o);
int cmd_train(Options *o);

#endif
