/* dp.h: data-parallel training over MPI (README, "Data-parallel training").
 *
 * `mpirun -np N matc train ...` (or a compiled trainer) runs N ranks; each
 * computes the step on its own part of every global batch, and the
 * gradients are summed across ranks between backward and the optimizer
 * update by two extern kernels the training step carries
 * (passes/insert_allreduce.c): after the last kernel that writes a
 * gradient, matc_rt_grad_put copies its active slices (scaled by this
 * rank's weight) into a bucket and, when the bucket is full, starts an
 * MPI_Iallreduce on it while backward goes on; before the first kernel
 * that reads the gradient, matc_rt_grad_get waits for its bucket and
 * copies the sum back. A slice of a frozen MAT module (guard byte 0) is
 * neither copied nor sent; the bytes sent and saved are counted here.
 *
 * Without mpirun (or in a build without MPI) there is one rank and every
 * call below returns at once. Every collective waits at most the timeout
 * (--mpi-timeout); then it asks the other ranks where they are, reports
 * it, and aborts the job (MPI offers no timeout of its own). No LLVM, no
 * compiler types: an AOT trainer links this. */
#ifndef MATC_DP_H
#define MATC_DP_H

#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- ranks */

/* Starts MPI when the process was started by an MPI launcher (mpirun),
 * else stays a single rank. Fails (message in err) when the launch is
 * wrong: a build without MPI started as one of several processes, or a
 * launcher this MPI does not understand (MPI says 1 process where the
 * launcher's environment says N). Call once, before any thread starts. */
int dp_init(char *err, size_t errlen);
int dp_rank(void);
int dp_size(void);                 /* 1 without MPI */
int dp_local_size(void);           /* ranks on this machine */
const char *dp_host(int rank);     /* host name of a rank */
int dp_built_with_mpi(void);
void dp_set_timeout(double seconds);
double dp_timeout(void);
/* The step number the messages name (1-based). */
void dp_set_step(int64_t step);

/* Ends data parallelism: the ranks agree on the exit status (the largest)
 * and MPI is finalized. Every rank must call it at the same point. */
int dp_finish(int status);
/* For an error only this rank may have met (set-up: a missing file on one
 * machine): ends the whole job now with this status. Never returns when
 * there are several ranks. */
void dp_abort(int status);

/* ---------------------------------------------------------------- collectives
 * Every rank calls them in the same order; `what` names the collective in
 * the timeout message. */
enum { DP_SUM, DP_MIN, DP_MAX };
void dp_allreduce_f64(double *v, int n, int op, const char *what);
void dp_allreduce_i64(int64_t *v, int n, int op, const char *what);
void dp_sum_f32(float *v, int64_t n, const char *what);
void dp_bcast(void *buf, size_t bytes, const char *what);            /* from rank 0 */
/* Every rank's `bytes` bytes, in rank order, into all[size * bytes]. */
void dp_allgather(const void *mine, size_t bytes, void *all, const char *what);

/* ---------------------------------------------------------------- gradients */

/* A part of a gradient that one set of MAT modules owns: nblocks blocks
 * of `block` elements, `stride` elements apart, from element `off`. */
typedef struct {
  int64_t off, block, stride, nblocks;
  int nmods;                 /* 0: always sent (a parameter in no module) */
  const int *mods;           /* else sent when one of these modules is active */
} DpSlice;

typedef struct {
  int value;                 /* the gradient's value id: its storage is bufs[value] */
  int f64;                   /* float64 elements, else float32 */
  int64_t nelem;
  int nslices;
  const DpSlice *slices;
  const char *name;          /* the parameter's, for dumps */
} DpGrad;

/* The gradients of a training step, in the order the step completes them
 * (the order of their put kernels). */
typedef struct DpPlan {
  int ngrads;
  const DpGrad *grads;
} DpPlan;

/* Binds the step whose kernels call put/get: its plan and its guard bytes
 * (NULL without MAT). Buckets hold up to bucket_bytes (a gradient larger
 * than that has one of its own). */
int dp_bind(const DpPlan *plan, const uint8_t *guards, int64_t bucket_bytes);
void dp_unbind(void);
int dp_nbuckets(void);
/* This rank's share of the global batch's loss (its examples, or its
 * valid targets, over the global count): gradients are scaled by it
 * before the sum. */
void dp_set_weight(double w);
/* While suspended, put/get do nothing (a step rerun on one rank). */
void dp_suspend(int on);

typedef struct {
  double sent;               /* bytes this rank gave to all-reduce */
  double saved;              /* bytes of frozen modules' gradients it did not */
  double wait_ms;            /* time spent waiting for buckets */
  int allreduces;
} DpStats;
/* What the gradient exchange did since the last call. */
void dp_take_stats(DpStats *s);

/* The extern kernels (MATC_EXTERNS): ptrs = {gradient}, p[0] = its index
 * in the bound plan. */
void matc_rt_grad_put(void **ptrs, const int64_t *p);
void matc_rt_grad_get(void **ptrs, const int64_t *p);

#endif
