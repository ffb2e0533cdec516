/* exec.h: a compiled, runnable graph. */
#ifndef MATC_EXEC_H
#define MATC_EXEC_H

#include "codegen.h"

/* Where a graph's entry function comes from: the JIT (compiler/jit.c,
 * the default) or code compiled ahead of time (`matc compile`: tools/aot_*.c).
 * bind runs after the back-end passes, so it sees the final plan. */
typedef struct {
  int (*bind)(Graph *g, void **handle, MatcEntryFn *entry);
  void (*release)(void *handle);
} ExecBackend;
extern const ExecBackend *exec_backend;        /* NULL: the JIT */
/* A hash of everything the generated code depends on: arena size, value
 * layout (offsets, shapes, types, aliases), every kernel and its
 * expressions (constants included), extern parameters, guards. */
uint64_t exec_plan_fingerprint(const Graph *g);
/* "name f32[32,784]; ..." for g's inputs (malloc'd): what a mismatching
 * precompiled plan names in its error. */
char *exec_describe_inputs(const Graph *g);

typedef struct {
  Graph *g;
  void *code;       /* the backend's handle */
  const ExecBackend *backend;
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
