/* exec.h: a compiled, runnable graph. */
#ifndef MATC_EXEC_H
#define MATC_EXEC_H

#include "codegen.h"

typedef struct {
  Graph *g;
  Jit *jit;
  MatcEntryFn entry;
  void **bufs;      /* storage of every value, by value id */
  void **owned;     /* what exec_free releases */
  char *arena;      /* activations, placed by plan_memory */
} Exec;

/* Runs the back-end passes, allocates storage and JIT-compiles. */
int exec_new(Graph *g, Exec **out);
void exec_run(Exec *x);
void exec_free(Exec *x);
/* With g->profile set before exec_new: the slowest kernels, per run. */
void exec_print_profile(Exec *x, FILE *f, int top);

#endif
