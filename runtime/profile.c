/* profile.c: per-kernel wall time, for MATC_PROFILE=1. Only the thread
 * that runs the graph calls these, so plain arrays suffice. */
#include "rt.h"

#include <stdlib.h>
#include <time.h>

#define PROF_MAX 65536

static double total_ns[PROF_MAX];
static int64_t ncalls[PROF_MAX];
static struct timespec started;

void matc_rt_prof_begin(int64_t i) {
  (void)i;
  clock_gettime(CLOCK_MONOTONIC, &started);
}

void matc_rt_prof_end(int64_t i) {
  if (i < 0 || i >= PROF_MAX) return;
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  total_ns[i] += (t.tv_sec - started.tv_sec) * 1e9 + (t.tv_nsec - started.tv_nsec);
  ncalls[i]++;
}

void matc_rt_prof_get(int64_t i, double *ns, int64_t *calls) {
  *ns = i >= 0 && i < PROF_MAX ? total_ns[i] : 0;
  *calls = i >= 0 && i < PROF_MAX ? ncalls[i] : 0;
}

void matc_rt_prof_reset(void) {
  for (int i = 0; i < PROF_MAX; i++) {
    total_ns[i] = 0;
    ncalls[i] = 0;
  }
}
