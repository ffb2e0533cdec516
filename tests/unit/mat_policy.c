/* mat_policy.c: the MAT policy (runtime/mat_policy.c) on hand-made
 * eigenvalue sequences whose decisions are worked out in the comments:
 * warm-up, the modular rule with each reference, min_active, the temporal
 * rule with patience and re-entry, non-finite eigenvalues, and a
 * checkpoint round trip that must give the same decisions. Prints
 * "N passed, N failed"; exits 1 on any failure. */
#include "../../runtime/mat.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int passed, failed;

static void expect(const char *what, const uint8_t *got, const char *want, int n) {
  char s[64];
  for (int k = 0; k < n; k++) s[k] = got[k] ? '1' : '0';
  s[n] = 0;
  if (!strcmp(s, want)) passed++;
  else {
    failed++;
    printf("FAIL %s: active %s, want %s\n", what, s, want);
  }
}

static MatOptions opts(int64_t warmup, double alpha, MatRef ref, double beta) {
  MatOptions o;
  mat_options_default(&o);
  o.warmup = warmup;
  o.refresh = 1;
  o.alpha = alpha;
  o.ref = ref;
  o.beta = beta;
  o.min_active = 0;
  return o;
}

int main(void) {
  uint8_t g[8];
  double lam[4] = {10, 0.5, 2, 0.01};

  /* Warm-up: everything trains whatever the eigenvalues. */
  MatOptions o = opts(5, 0.1, MAT_REF_MAX, 0);
  MatPolicy *p = mat_policy_new(&o, 4);
  mat_policy_update(p, 4, lam, 12, g);
  expect("warm-up", g, "1111", 4);
  /* Modular, ref = max = 10: threshold 1 -> modules 0 and 2. */
  mat_policy_update(p, 5, lam, 12, g);
  expect("modular max", g, "1010", 4);
  mat_policy_free(p);

  /* ref = mean = 3.1275; alpha 0.5 -> 1.564; alpha 0.1 -> 0.313. */
  o = opts(0, 0.5, MAT_REF_MEAN, 0);
  p = mat_policy_new(&o, 4);
  mat_policy_update(p, 0, lam, 12, g);
  expect("modular mean 0.5", g, "1010", 4);
  mat_policy_free(p);
  o.alpha = 0.1;
  p = mat_policy_new(&o, 4);
  mat_policy_update(p, 0, lam, 12, g);
  expect("modular mean 0.1", g, "1110", 4);
  mat_policy_free(p);

  /* ref = lambda_max(G) = 12, alpha 0.2 -> 2.4: only module 0. */
  o = opts(0, 0.2, MAT_REF_FULL, 0);
  p = mat_policy_new(&o, 4);
  mat_policy_update(p, 0, lam, 12, g);
  expect("modular full", g, "1000", 4);
  mat_policy_free(p);

  /* Groups: modules {0,1} and {2,3}, alpha 0.5 of the max. Over all
   * modules the threshold is 5: only module 0. Per group: 5 in the first
   * (module 0), 1 in the second (module 2). */
  int groups[4] = {0, 0, 1, 1};
  o = opts(0, 0.5, MAT_REF_MAX, 0);
  o.by_group = 0;
  p = mat_policy_new(&o, 4);
  mat_policy_set_groups(p, groups);
  mat_policy_update(p, 0, lam, 12, g);
  expect("max over all", g, "1000", 4);
  mat_policy_free(p);
  o.by_group = 1;
  p = mat_policy_new(&o, 4);
  mat_policy_set_groups(p, groups);
  mat_policy_update(p, 0, lam, 12, g);
  expect("max per group", g, "1010", 4);
  mat_policy_free(p);

  /* Nothing passes alpha = 2 x max; min_active 2 keeps the two largest. */
  o = opts(0, 2, MAT_REF_MAX, 0);
  o.min_active = 2;
  p = mat_policy_new(&o, 4);
  mat_policy_update(p, 0, lam, 12, g);
  expect("min_active", g, "1010", 4);
  mat_policy_free(p);

  /* A NaN eigenvalue freezes its module and is ignored by the reference. */
  double nanl[4] = {NAN, 0.5, 2, 0.01};
  o = opts(0, 0.1, MAT_REF_MEAN, 0);
  p = mat_policy_new(&o, 4);
  mat_policy_update(p, 0, nanl, 12, g);   /* mean of finite = 0.8367, x0.1 = 0.0837 */
  expect("nan", g, "0110", 4);
  mat_policy_free(p);

  /* Temporal rule, beta 0.1, patience 2. Module 0: lambda 1, 2, 2.05,
   * 2.06, ... -> D = 0, 1, 1.05, 1.06: relative changes 0.05 (r=2) and
   * 0.01 (r=3) are both under 0.1, so it stops at r=3. Module 1 moves by 1
   * every refresh (relative change 1) and never stops. alpha 0 keeps the
   * modular rule out of the way. */
  double seq0[] = {1, 2, 2.05, 2.06, 2.061, 50};
  o = opts(0, 0, MAT_REF_MAX, 0.1);
  o.patience = 2;
  p = mat_policy_new(&o, 2);
  const char *want[] = {"11", "11", "11", "01", "01", "01"};
  double saved[64];
  for (int r = 0; r < 6; r++) {
    double l[2] = {seq0[r], 1.0 + r};
    if (r == 3) {
      /* A checkpoint taken here and restored into a fresh policy must
       * reach the same decision as the original. */
      mat_policy_save(p, saved);
      MatPolicy *q = mat_policy_new(&o, 2);
      int ok = mat_policy_load(q, saved) == 0;
      uint8_t gq[2];
      mat_policy_update(q, r, l, 0, gq);
      expect("resumed temporal r=3", gq, want[r], 2);
      if (!ok) failed++, printf("FAIL load\n");
      mat_policy_free(q);
    }
    mat_policy_update(p, r, l, 0, g);
    char what[32];
    snprintf(what, sizeof what, "temporal r=%d", r);
    expect(what, g, want[r], 2);
    mat_policy_count_step(p, g);
  }
  if (mat_policy_stopped(p, 0) != 1 || mat_policy_stopped(p, 1) != 0) failed++, printf("FAIL stopped flags\n");
  else passed++;
  if (mat_policy_frozen_steps(p, 0) != 3) failed++, printf("FAIL frozen steps %lld\n",
                                                           (long long)mat_policy_frozen_steps(p, 0));
  else passed++;
  /* A state for another module count is refused. */
  MatPolicy *q3 = mat_policy_new(&o, 3);
  if (mat_policy_load(q3, saved) == 0) failed++, printf("FAIL loaded a 2-module state into 3 modules\n");
  else passed++;
  mat_policy_free(q3);
  /* A damaged state (a checkpoint's bytes) is refused: NaN, negative,
   * fractional or huge counts. */
  MatPolicy *q4 = mat_policy_new(&o, 2);
  double bad[2 + 6 * 2];
  const double junk[] = {NAN, -1, 0.5, 1e300};
  for (int idx = 0; idx < 3; idx++)
    for (int j = 0; j < 4; j++) {
      int at = idx == 0 ? 1 : idx == 1 ? 2 + 3 : 2 + 6 + 5;   /* nrefresh, below[0], frozen_steps[1] */
      memcpy(bad, saved, sizeof bad);
      bad[at] = junk[j];
      if (mat_policy_load(q4, bad) == 0) failed++, printf("FAIL loaded a state with %g at %d\n", junk[j], at);
      else passed++;
    }
  mat_policy_free(q4);
  mat_policy_free(p);

  /* Re-entry: the same run with reentry on and alpha 0.5 of max: once
   * stopped, module 0 comes back when it passes the modular rule (it is
   * the max at r=5, lambda 50). */
  o.reentry = 1;
  o.alpha = 0.5;
  p = mat_policy_new(&o, 2);
  for (int r = 0; r < 6; r++) {
    double l[2] = {seq0[r], 1.0 + r};
    mat_policy_update(p, r, l, 0, g);
  }
  expect("re-entry", g, "10", 2);   /* r=5: 50 >= 25 on, 6 < 25 off */
  mat_policy_free(p);

  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
