/* partition.h: what the partition's files share (passes/partition*.c). */
#ifndef MATC_PARTITION_H
#define MATC_PARTITION_H

#include "matc_internal.h"

/* A Gemm/MatMul/Conv whose weight is a float parameter. */
typedef struct {
  int node;
  int x, w, b;                   /* data input, weight, bias (-1 if none) */
  int y;                         /* output after the bias */
  int out_axis, in_axis;         /* axes of w holding output / input features */
  int stacked;                   /* w is [E, K, N] (MatMul) */
  int64_t rows, K, N, E;         /* GEMM shape: rows x K times K x N (per expert) */
} Layer;

/* The uses of every value, as (node, input) pairs: CSR over value ids. */
typedef struct {
  int *start, *node, *input;
} Uses;

Uses uses_build(Graph *g);
void uses_free(Uses *u);
int uses_count(const Uses *u, int v);
/* Is node i a layer? Fills L. */
int layer_at(Graph *g, const Uses *u, int i, Layer *L);
/* Per value: 1 for a parameter that trains (partition_trainable). */
char *trainable_mask(Graph *g, const char *freeze);

#endif
