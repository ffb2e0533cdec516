/* threadpool.c: a fixed pool of worker threads for loop kernels and GEMM
 * pieces. The caller takes part in the work; each call is a fork-join.
 * Kernels come in quick succession (a forward pass is hundreds of them),
 * so idle workers spin briefly on the generation counter before sleeping
 * on a condition variable: a condvar wake-up alone costs more than many
 * small kernels take. */
#include "rt.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_THREADS 64
/* Below this much work a fork-join costs more than it saves. */
#define MIN_PARALLEL_WORK 32768
/* Spin iterations before a worker sleeps (about 100 microseconds). */
#define SPIN_LIMIT 20000

static struct {
  pthread_mutex_t mu;
  pthread_cond_t start;
  int nthreads;               /* including the caller */
  int started;
  atomic_long generation;
  atomic_int pending;
  int sleepers;
  MatcTaskFn fn;
  void **bufs;
  int64_t n;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

static int requested;
/* Set while a thread runs pool work: a nested parallel_for runs inline. */
static _Thread_local int in_pool;

static void chunk(int t, int nt, int64_t n, int64_t *lo, int64_t *hi) {
  *lo = n * t / nt;
  *hi = n * (t + 1) / nt;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static void *worker(void *arg) {
  int id = (int)(intptr_t)arg;
  long seen = 0;
  for (;;) {
    int spins = 0;
    while (atomic_load_explicit(&pool.generation, memory_order_acquire) == seen &&
           spins < SPIN_LIMIT) {
      cpu_relax();
      spins++;
    }
    if (atomic_load_explicit(&pool.generation, memory_order_acquire) == seen) {
      pthread_mutex_lock(&pool.mu);
      pool.sleepers++;
      while (atomic_load(&pool.generation) == seen) pthread_cond_wait(&pool.start, &pool.mu);
      pool.sleepers--;
      pthread_mutex_unlock(&pool.mu);
    }
    seen = atomic_load_explicit(&pool.generation, memory_order_acquire);
    int64_t lo, hi;
    chunk(id, pool.nthreads, pool.n, &lo, &hi);
    in_pool = 1;
    if (lo < hi) pool.fn(pool.bufs, lo, hi);
    in_pool = 0;
    atomic_fetch_sub_explicit(&pool.pending, 1, memory_order_release);
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
  if (nt <= 1 || in_pool || n < 2 || n * (cost > 0 ? cost : 1) < MIN_PARALLEL_WORK) {
    fn(bufs, 0, n);
    return;
  }
  /* Workers read fn/bufs/n only after seeing the new generation. */
  pool.fn = fn;
  pool.bufs = bufs;
  pool.n = n;
  atomic_store_explicit(&pool.pending, nt - 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&pool.generation, 1, memory_order_release);
  pthread_mutex_lock(&pool.mu);
  if (pool.sleepers) pthread_cond_broadcast(&pool.start);
  pthread_mutex_unlock(&pool.mu);
  int64_t lo, hi;
  chunk(0, nt, n, &lo, &hi);
  in_pool = 1;
  if (lo < hi) fn(bufs, lo, hi);
  in_pool = 0;
  while (atomic_load_explicit(&pool.pending, memory_order_acquire) > 0) cpu_relax();
}
