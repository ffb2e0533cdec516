/* mat_policy.c: which modules train, from their mNTK eigenvalues.
 *
 * Two rules (MAT.md, "Policy"):
 *  - modular: module k is active when lambda_k >= alpha * ref, ref being
 *    the largest lambda_k, their mean, or lambda_max of the whole-model
 *    Gram. A module frozen by this rule is re-examined at every refresh.
 *  - temporal: with D_k(r) = |lambda_k(r) - lambda_k(0)| over refreshes r,
 *    a module whose relative change |D_k(r) - D_k(r-1)| / D_k(1) stays
 *    below beta for `patience` refreshes in a row has converged and stops
 *    (for good, unless re-entry is on).
 * min_active keeps the modules with the largest lambda active when the
 * rules would freeze (almost) everything. */
#include "mat.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct MatPolicy {
  MatOptions o;
  int n;
  int64_t nrefresh;        /* probes seen */
  double *lambda0;         /* lambda_k at the first probe */
  double *d1;              /* D_k(1) */
  double *dprev;           /* D_k(r-1) */
  int64_t *below;          /* refreshes in a row under beta */
  uint8_t *stopped;        /* temporal rule fired */
  int64_t *frozen_steps;
  int *group;
};

void mat_options_default(MatOptions *o) {
  memset(o, 0, sizeof *o);
  o->warmup = 50;
  o->refresh = 25;
  o->alpha = 0.3;
  o->ref = MAT_REF_MAX;
  o->beta = 0;
  o->patience = 2;
  o->reentry = 0;
  o->min_active = 1;
  o->by_group = 1;
}

int mat_ref_parse(const char *s) {
  if (!strcmp(s, "max")) return MAT_REF_MAX;
  if (!strcmp(s, "mean")) return MAT_REF_MEAN;
  if (!strcmp(s, "full")) return MAT_REF_FULL;
  return -1;
}

const char *mat_ref_name(MatRef r) {
  return r == MAT_REF_MEAN ? "mean" : r == MAT_REF_FULL ? "full" : "max";
}

MatPolicy *mat_policy_new(const MatOptions *o, int nmodules) {
  MatPolicy *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->o = *o;
  if (p->o.refresh < 1) p->o.refresh = 1;
  p->n = nmodules;
  size_t n = nmodules > 0 ? (size_t)nmodules : 1;
  p->lambda0 = calloc(n, sizeof(double));
  p->d1 = calloc(n, sizeof(double));
  p->dprev = calloc(n, sizeof(double));
  p->below = calloc(n, sizeof(int64_t));
  p->stopped = calloc(n, 1);
  p->frozen_steps = calloc(n, sizeof(int64_t));
  p->group = calloc(n, sizeof(int));
  if (!p->lambda0 || !p->d1 || !p->dprev || !p->below || !p->stopped || !p->frozen_steps || !p->group) {
    mat_policy_free(p);
    return NULL;
  }
  return p;
}

void mat_policy_free(MatPolicy *p) {
  if (!p) return;
  free(p->lambda0);
  free(p->d1);
  free(p->dprev);
  free(p->below);
  free(p->stopped);
  free(p->frozen_steps);
  free(p->group);
  free(p);
}

void mat_policy_set_groups(MatPolicy *p, const int *group) {
  memcpy(p->group, group, sizeof(int) * (size_t)p->n);
}

int mat_policy_probe_due(const MatPolicy *p, int64_t step) {
  return step % p->o.refresh == 0;
}

/* The temporal rule's bookkeeping for refresh r = p->nrefresh. */
static void temporal(MatPolicy *p, const double *lambda) {
  int64_t r = p->nrefresh;
  for (int k = 0; k < p->n; k++) {
    double l = isfinite(lambda[k]) ? lambda[k] : 0;
    if (r == 0) {
      p->lambda0[k] = l;
      continue;
    }
    double d = fabs(l - p->lambda0[k]);
    if (r == 1) {
      p->d1[k] = d;
    } else if (p->o.beta > 0) {
      /* D_k(1) == 0 (no movement yet) gives no scale: never "converged". */
      double rel = p->d1[k] > 0 ? fabs(d - p->dprev[k]) / p->d1[k] : INFINITY;
      p->below[k] = rel < p->o.beta ? p->below[k] + 1 : 0;
    }
    p->dprev[k] = d;
  }
}

/* The modular rule's reference for module k: the largest or mean finite
 * lambda over all modules or over k's group, or lambda_max(G). */
static double reference(const MatPolicy *p, int k, const double *lambda, double lambda_all) {
  if (p->o.ref == MAT_REF_FULL) return lambda_all;
  double ref = 0;
  int nfin = 0;
  for (int j = 0; j < p->n; j++) {
    if (!isfinite(lambda[j]) || (p->o.by_group && p->group[j] != p->group[k])) continue;
    nfin++;
    if (p->o.ref == MAT_REF_MAX) ref = lambda[j] > ref ? lambda[j] : ref;
    else ref += lambda[j];
  }
  return p->o.ref == MAT_REF_MEAN && nfin ? ref / nfin : ref;
}

void mat_policy_update(MatPolicy *p, int64_t step, const double *lambda, double lambda_all,
                       uint8_t *guards) {
  temporal(p, lambda);
  p->nrefresh++;
  if (step < p->o.warmup) {
    memset(guards, 1, (size_t)p->n);
    return;
  }
  int active = 0;
  for (int k = 0; k < p->n; k++) {
    if (p->o.beta > 0 && p->below[k] >= p->o.patience) p->stopped[k] = 1;
    int on = isfinite(lambda[k]) && lambda[k] >= p->o.alpha * reference(p, k, lambda, lambda_all);
    if (p->stopped[k] && !p->o.reentry) on = 0;
    if (p->stopped[k] && p->o.reentry && on) {
      p->stopped[k] = 0;   /* back: its convergence is judged afresh */
      p->below[k] = 0;
    }
    guards[k] = (uint8_t)on;
    active += on;
  }
  /* Too few active: wake the largest-lambda frozen modules. */
  while (active < p->o.min_active && active < p->n) {
    int best = -1;
    for (int k = 0; k < p->n; k++)
      if (!guards[k] && (best < 0 || lambda[k] > lambda[best] || !isfinite(lambda[best]))) best = k;
    guards[best] = 1;
    active++;
  }
}

void mat_policy_count_step(MatPolicy *p, const uint8_t *guards) {
  for (int k = 0; k < p->n; k++)
    if (!guards[k]) p->frozen_steps[k]++;
}

int mat_policy_stopped(const MatPolicy *p, int k) { return p->stopped[k]; }
int64_t mat_policy_frozen_steps(const MatPolicy *p, int k) { return p->frozen_steps[k]; }

/* Layout: nmodules, nrefresh, then per module lambda0, d1, dprev, below,
 * stopped, frozen_steps. Integers below 2^53 are exact in a double. */
int mat_policy_state_len(int nmodules) { return 2 + 6 * nmodules; }

void mat_policy_save(const MatPolicy *p, double *s) {
  s[0] = p->n;
  s[1] = (double)p->nrefresh;
  for (int k = 0; k < p->n; k++) {
    double *m = s + 2 + 6 * k;
    m[0] = p->lambda0[k];
    m[1] = p->d1[k];
    m[2] = p->dprev[k];
    m[3] = (double)p->below[k];
    m[4] = p->stopped[k];
    m[5] = (double)p->frozen_steps[k];
  }
}

/* A count stored as a double: a whole number in [0, 2^53] (a damaged
 * checkpoint may hold anything, NaN included). */
static int count_ok(double x) { return x >= 0 && x <= 9007199254740992.0 && x == floor(x); }

int mat_policy_load(MatPolicy *p, const double *s) {
  if (s[0] != p->n || !count_ok(s[1])) return -1;
  for (int k = 0; k < p->n; k++) {
    const double *m = s + 2 + 6 * k;
    if (!count_ok(m[3]) || !count_ok(m[5])) return -1;
  }
  p->nrefresh = (int64_t)s[1];
  for (int k = 0; k < p->n; k++) {
    const double *m = s + 2 + 6 * k;
    p->lambda0[k] = m[0];
    p->d1[k] = m[1];
    p->dprev[k] = m[2];
    p->below[k] = (int64_t)m[3];
    p->stopped[k] = m[4] != 0;
    p->frozen_steps[k] = (int64_t)m[5];
  }
  return 0;
}
