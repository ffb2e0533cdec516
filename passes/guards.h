/* guards.h: the guard tables insert_guards fills and guard_kernels,
 * codegen, the interpreter and FLOP counting read (see passes/guards.c). */
#ifndef MATC_GUARDS_H
#define MATC_GUARDS_H

#include "matc_internal.h"

/* A parameter cut into slices along one axis: its ranges, each under the
 * predicate of its module (0 for a part no module owns). A head split
 * (passes/guard_heads.c, param -1) cuts an attention backward value:
 * range h is head h of a block. */
typedef struct {
  int param;             /* -1 for a head split */
  int axis;              /* the parameter's sliced axis */
  int block;             /* the block of heads its ranges are, or -1 */
  int nranges;
  int64_t *begin, *end;
  int *pred;
} GuardSplit;

struct Guards {
  Arena *arena;                /* the graph's: the tables live as long as it */
  int nwords;                  /* uint64 words per module set */
  int stop_mode;
  int npreds, cappreds;
  uint64_t *sets;              /* npreds sets; pred 0 = always */
  char *negate;
  int nnodes;                  /* nodes when the pass ran; later ones run always */
  int *node_pred;
  int *node_split;             /* per node: index into splits, -1 if not split */
  int *node_axis;              /* the axis of the node's output 0 that is sliced,
                                  GUARD_AXIS_K: a MatMul's K (per-head pieces) */
  GuardSplit *splits;
  int nsplits, capsplits;
};

#define GUARD_AXIS_K (-1)

/* insert_guards' stop_mode: 1 = stop (per-head where it can), 2 = stop
 * with the union of a layer's heads (no per-head split; a test reference). */
void plan_heads(Graph *g, Guards *gd, int nfwd);

int guards_intern(Guards *gd, const uint64_t *bits, int always, int negate);

#endif
