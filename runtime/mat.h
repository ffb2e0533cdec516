/* mat.h: the Modular Adaptive Training policy (MAT.md, "Policy").
 *
 * The runtime probes every module's mNTK principal eigenvalue lambda_k
 * every `refresh` steps and asks the policy which modules stay active.
 * The policy only decides; the guard bytes it writes are read by the
 * compiled step, which skips a frozen module's backward and optimizer
 * work. Every number here is an option (--mat-*), documented in README.md
 * with the evidence for its default. No LLVM, no compiler types: an AOT
 * trainer links this. */
#ifndef MATC_MAT_H
#define MATC_MAT_H

#include <stdint.h>

typedef enum { MAT_REF_MAX, MAT_REF_MEAN, MAT_REF_FULL } MatRef;

typedef struct {
  int64_t warmup;        /* full training for the first `warmup` steps */
  int64_t refresh;       /* probe and re-decide every `refresh` steps */
  double alpha;          /* modular rule: active iff lambda_k >= alpha * ref */
  MatRef ref;            /* max_k lambda_k, mean_k lambda_k, or lambda_max(G) */
  double beta;           /* temporal rule threshold; 0 turns it off */
  int patience;          /* refreshes below beta in a row before a module stops */
  int reentry;           /* stopped modules may come back (modular rule only) */
  int min_active;        /* never fewer active modules than this (largest lambda first) */
  int by_group;          /* ref (max or mean) over the module's own group (its kind:
                            heads against heads, layers against layers), not all */
} MatOptions;

/* Defaults (README.md, "MAT options", says why). */
void mat_options_default(MatOptions *o);
/* Parses "max" | "mean" | "full"; -1 when unknown. */
int mat_ref_parse(const char *s);
const char *mat_ref_name(MatRef r);

typedef struct MatPolicy MatPolicy;

MatPolicy *mat_policy_new(const MatOptions *o, int nmodules);
/* Module k's group (e.g. its kind), for by_group; all 0 unless set. */
void mat_policy_set_groups(MatPolicy *p, const int *group);
void mat_policy_free(MatPolicy *p);

/* Does step `step` (0-based, before it runs) start with a probe? */
int mat_policy_probe_due(const MatPolicy *p, int64_t step);

/* Feeds one probe's eigenvalues (lambda[nmodules], and lambda_max of the
 * whole-model Gram) taken before step `step`; writes the new active set
 * (1 = active) to guards[nmodules]. During warm-up every module stays
 * active, but the probe still counts for the temporal rule's baseline. */
void mat_policy_update(MatPolicy *p, int64_t step, const double *lambda, double lambda_all,
                       uint8_t *guards);

/* Counts one executed step with the given guards (for the summary). */
void mat_policy_count_step(MatPolicy *p, const uint8_t *guards);

/* Per-module state for reports: has it stopped for good (temporal rule),
 * and how many steps it spent frozen. */
int mat_policy_stopped(const MatPolicy *p, int k);
int64_t mat_policy_frozen_steps(const MatPolicy *p, int k);

/* Checkpointing: the whole state as doubles (exact for the integers it
 * holds), so a resumed run makes the same decisions. */
int mat_policy_state_len(int nmodules);
void mat_policy_save(const MatPolicy *p, double *state);
int mat_policy_load(MatPolicy *p, const double *state);   /* 0, or -1 on a wrong state */

#endif
