/* threadpool.c: a fixed pool of worker threads for loop kernels.
 * The caller takes part in the work; each call is a fork-join. Workers
 * sleep on a condition variable between calls, so they leave the cores to
 * OpenBLAS while a GEMM runs. */
#include "rt.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_THREADS 64
/* Below this much work a fork-join costs more than it saves. */
#define MIN_PARALLEL_WORK 32768

static struct {
  pthread_mutex_t mu;
  pthread_cond_t start, done;
  int nthreads;               /* including the caller */
  int started;
  long generation;
  int pending;
  MatcTaskFn fn;
  void **bufs;
  int64_t n;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
          0, 0, 0, 0, 0, 0, 0};

static int requested;

static void chunk(int t, int nt, int64_t n, int64_t *lo, int64_t *hi) {
  *lo = n * t / nt;
  *hi = n * (t + 1) / nt;
}

static void *worker(void *arg) {
  int id = (int)(intptr_t)arg;
  long seen = 0;
  for (;;) {
    pthread_mutex_lock(&pool.mu);
    while (pool.generation == seen) pthread_cond_wait(&pool.start, &pool.mu);
    seen = pool.generation;
    MatcTaskFn fn = pool.fn;
    void **bufs = pool.bufs;
    int64_t n = pool.n;
    int nt = pool.nthreads;
    pthread_mutex_unlock(&pool.mu);
    int64_t lo, hi;
    chunk(id, nt, n, &lo, &hi);
    if (lo < hi) fn(bufs, lo, hi);
    pthread_mutex_lock(&pool.mu);
    if (--pool.pending == 0) pthread_cond_signal(&pool.done);
    pthread_mutex_unlock(&pool.mu);
  }
  return NULL;
}

void matc_rt_set_threads(int n) { requested = n; }

int matc_rt_threads(void) {
  if (requested > 0) return requested > MAX_THREADS ? MAX_THREADS : requested;
  long c = sysconf(_SC_NPROCESSORS_ONLN);
  if (c < 1) c = 1;
  return c > MAX_THREADS ? MAX_THREADS : (int)c;
}

static void pool_start(void) {
  pool.nthreads = matc_rt_threads();
  for (int i = 1; i < pool.nthreads; i++) {
    pthread_t t;
    if (pthread_create(&t, NULL, worker, (void *)(intptr_t)i) != 0) {
      pool.nthreads = i;
      break;
    }
    pthread_detach(t);
  }
  pool.started = 1;
}

void matc_rt_parallel_for(MatcTaskFn fn, void **bufs, int64_t n, int64_t cost) {
  if (n <= 0) return;
  if (!pool.started) pool_start();
  int nt = pool.nthreads;
  if (nt <= 1 || n < 2 || n * (cost > 0 ? cost : 1) < MIN_PARALLEL_WORK) {
    fn(bufs, 0, n);
    return;
  }
  pthread_mutex_lock(&pool.mu);
  pool.fn = fn;
  pool.bufs = bufs;
  pool.n = n;
  pool.pending = nt - 1;
  pool.generation++;
  pthread_cond_broadcast(&pool.start);
  pthread_mutex_unlock(&pool.mu);
  int64_t lo, hi;
  chunk(0, nt, n, &lo, &hi);
  if (lo < hi) fn(bufs, lo, hi);
  pthread_mutex_lock(&pool.mu);
  while (pool.pending > 0) pthread_cond_wait(&pool.done, &pool.mu);
  pthread_mutex_unlock(&pool.mu);
}
