/* layout.h: helpers shared by layout.c and layout_index.c. */
#ifndef MATC_OPS_LAYOUT_H
#define MATC_OPS_LAYOUT_H

#include "../matc_internal.h"

/* A loop nest under construction: one extent per dim and, per dim, a
 * stride for each of up to LOOP_SETS tensors (set 0 is the output).
 * Dims of extent 1 are dropped and adjacent dims that are contiguous in
 * every tensor are merged, so copies become few long unit-stride loops
 * (they vectorize) and the outermost var is worth splitting over threads. */
#define LOOP_SETS 4
typedef struct {
  int n, nset, empty;
  int64_t ext[KMAX_VARS];
  int64_t st[LOOP_SETS][KMAX_VARS];
} LoopNest;

void loop_dim(LoopNest *l, int64_t ext, const int64_t *st);     /* st[nset] */
void loop_merge(LoopNest *l);
Kernel *loop_kernel(Graph *g, int node, const LoopNest *l, int out, int64_t out_off);
Expr *loop_load(Graph *g, const LoopNest *l, int set, int val, int64_t off);

/* out[ooff + ...] = in[ioff + ...] over ext, with per-dim strides. */
void emit_copy(Graph *g, int node, int out, int64_t ooff, const int64_t *ost, int in,
               int64_t ioff, const int64_t *ist, int rank, const int64_t *ext);
/* Like emit_copy for a copy that writes all of `out`, but when the source
 * elements are one contiguous run the output becomes a view instead. */
void copy_or_view(Graph *g, int node, int out, int in, int64_t ioff, const int64_t *ist);

/* Integers of an input that shapes depend on: must be known at compile
 * time. *n gets the count (at most max). */
int known_ints(Graph *g, int node, int j, int64_t *out, int max, int *n);
/* A run-time int64 index normalised (negative counts from dim) and
 * clamped into [0, dim-1], so a load through it stays in bounds. */
Expr *index_norm_clamp(Graph *g, Expr *idx, int64_t dim);
/* Makes output 0 a compile-time constant and retires the node. */
Tensor *layout_new_tensor(Graph *g, DType dt, int rank, const int64_t *dims);
int layout_resolve_const(Graph *g, int node, Tensor *t);
int layout_need_inputs(Graph *g, int node, int min);

/* Gradient helpers. Zeros of a shape; and the gradient of gathering rows
 * `idx` (any integer shape I) along `axis` from data of shape dims: dy is
 * [dims before axis, I, dims after axis], summed into the rows it came
 * from (repeated indices accumulate; negative ones count from the end). */
int layout_zeros(AD *ad, DType dt, int rank, const int64_t *dims);
int layout_gather_grad(AD *ad, int dy, int idx, int axis, int rank, const int64_t *dims);

#endif
