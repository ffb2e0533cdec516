/* probe.h: the mNTK probe, for the training loop (MAT.md items 2, 3, 6).
 *
 *   Probe *p;
 *   if (probe_new(fwd, &cfg, 32, &p)) return report(fwd, rc);   // compiles
 *   probe_share_params(p, train_graph);    // read the trained weights in place
 *   ...every refresh:
 *   probe_run(p, inputs, targets, lambda, trace, &lambda_all, &trace_all, &flops);
 *
 * A probe batch of n samples runs the model forward in inference mode
 * (BatchNormalization on its running statistics, Dropout off: batch
 * statistics would couple the samples), each sample's own loss, and one
 * backward pass to the probe sites; runtime/mntk.c then forms every
 * module's n x n Gram G_k[i][j] = <g_i^k, g_j^k> (g_i^k: the gradient of
 * sample i's loss w.r.t. module k's sliced parameters that sit in a Gemm,
 * MatMul or Conv, their bias included) and its largest eigenvalue and
 * trace; also those of the whole-model Gram G = sum_k G_k. */
#ifndef MATC_PROBE_H
#define MATC_PROBE_H

#include "exec.h"

typedef struct Probe Probe;

/* Builds and compiles the probe for nsamples samples from `fwd`, a
 * shape-inferred forward graph (any batch) whose modules are filled
 * (partition pass, or the caller). The probe re-imports fwd->path bound to
 * nsamples and maps the modules onto it by parameter and node name. cfg
 * gives the loss (as build_train_step reads it: loss kind, target dtype
 * and shape, ignore_index). On error returns MATC_ERR or
 * MATC_UNSUPPORTED with the message in fwd->err. */
int probe_new(Graph *fwd, const TrainConfig *cfg, int64_t nsamples, Probe **out);

/* The scalar output option (MAT.md item 2). rademacher = m > 0: instead of
 * each sample's loss, the logits contracted with m random sign vectors
 * shared by the samples, one backward pass each; each G_k is the mean of
 * the m Grams, an unbiased estimate of the logit-trace NTK's Gram
 * sum_c J_c J_c^T. Fresh vectors every run (from seed); targets unused. */
typedef struct {
  int rademacher;                /* 0: per-sample loss (the default) */
  uint64_t seed;
} ProbeOptions;
int probe_new_opts(Graph *fwd, const TrainConfig *cfg, int64_t nsamples, const ProbeOptions *o, Probe **out);
/* Rademacher mode: use these m vectors ([m, logits dims but the first],
 * floats) on every run instead of random ones (NULL: random again).
 * MATC_ERR in loss mode. */
int probe_set_vectors(Probe *p, const float *v);

/* Points the probe's parameters at `train`'s storage (matched by name),
 * so every probe_run sees the current weights, as the evaluation graph of
 * tools/train.c does. Parameters train lacks keep the model's values. */
void probe_share_params(Probe *p, Graph *train);

/* Runs the probe on n samples: inputs is the model's first input
 * [n, example dims] and targets [n, target dims] (may be NULL in
 * Rademacher mode), both contiguous in the
 * dtypes the model and cfg give. Writes lambda[k] and trace[k] for each
 * module k (probe_nmodules of them), the whole-model Gram's lambda_all and
 * trace_all, and *flops: the FLOPs executed (probe graph plus Grams).
 * Any output pointer may be NULL. Returns 0, or MATC_ERR when a Gram
 * could not be allocated or LAPACK failed (message: probe_error). */
int probe_run(Probe *p, const void *inputs, const void *targets, double *lambda, double *trace,
              double *lambda_all, double *trace_all, double *flops);

int probe_nmodules(const Probe *p);
const char *probe_module_name(const Probe *p, int k);
int64_t probe_nsamples(const Probe *p);
const char *probe_error(const Probe *p);

/* What the last probe_run did: milliseconds and FLOPs of the compiled
 * forward+backward graph and of the Gram/eigenvalue work, and the Gram
 * matrices themselves (module k's at grams + k*n*n, row-major). */
typedef struct {
  double graph_ms, gram_ms, graph_flops, gram_flops;
  int nstructured, nmaterialised;     /* sites computed each way */
  const double *grams;
} ProbeStats;
void probe_stats(const Probe *p, ProbeStats *s);

void probe_free(Probe *p);

#endif
