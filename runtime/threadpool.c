/* threadpool.c: a fixed pool of worker threads for loop kernels and GEMM
 * pieces. Each call is a fork-join in which the caller takes part.
 *
 * The range is cut into a few chunks per thread that every participant
 * claims from one atomic counter. The caller never waits for a worker that
 * has not started: on a loaded machine a worker may not be scheduled for a
 * whole time slice, and with fixed shares the caller would wait that long
 * for every kernel. It waits only for chunks already being run.
 *
 * Kernels come in quick succession (a forward pass is hundreds of them),
 * so idle workers spin briefly on the generation counter before sleeping
 * on a condition variable. */
#include "rt.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_THREADS 64
/* Below this much work a fork-join costs more than it saves. */
#define MIN_PARALLEL_WORK 32768
/* Spin iterations before a worker sleeps. */
#define SPIN_LIMIT 20000
#define CHUNKS_PER_THREAD 4

static struct {
  pthread_mutex_t mu;
  pthread_cond_t start;
  int nthreads;               /* including the caller */
  int started;
  atomic_uint generation;
  atomic_ullong claim;        /* generation << 32 | next chunk */
  atomic_int inflight;        /* workers between claiming and finishing */
  int sleepers;
  /* the current job; written only while no worker can claim from it */
  MatcTaskFn fn;
  void **bufs;
  int64_t n;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

static int requested;
/* Set while a thread runs pool work: a nested parallel_for runs inline. */
static _Thread_local int in_pool;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* The claim word: generation (32 bits) | chunk count (16) | next chunk (16).
 * A successful claim proves the job is still open, so the job fields read
 * after it are the current job's: the caller cannot finish (and rewrite
 * them) while a claimed chunk's runner is counted in flight, and every
 * runner is counted before it claims (all these atomics are seq_cst). */
static void run_chunks(void) {
  for (;;) {
    unsigned long long w = atomic_load(&pool.claim);
    int64_t c = (int64_t)(w & 0xffff), nc = (int64_t)((w >> 16) & 0xffff);
    if (c >= nc) return;
    if (!atomic_compare_exchange_weak(&pool.claim, &w, w + 1)) continue;
    int64_t n = pool.n;
    int64_t lo = n * c / nc, hi = n * (c + 1) / nc;
    in_pool = 1;
    if (lo < hi) pool.fn(pool.bufs, lo, hi);
    in_pool = 0;
  }
}

static void *worker(void *arg) {
  (void)arg;
  unsigned seen = 0;
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
    atomic_fetch_add(&pool.inflight, 1);
    run_chunks();
    atomic_fetch_sub(&pool.inflight, 1);
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
    if (pthread_create(&t, NULL, worker, NULL) != 0) {
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
  /* The previous job is closed (all chunks claimed, nobody in flight), so
   * no one reads the job fields until the new claim word is published. */
  unsigned gen = atomic_load(&pool.generation) + 1;
  int64_t nc = n < (int64_t)nt * CHUNKS_PER_THREAD ? n : (int64_t)nt * CHUNKS_PER_THREAD;
  pool.fn = fn;
  pool.bufs = bufs;
  pool.n = n;
  atomic_store(&pool.claim, (unsigned long long)gen << 32 | (unsigned long long)nc << 16);
  atomic_store(&pool.generation, gen);
  pthread_mutex_lock(&pool.mu);
  if (pool.sleepers) pthread_cond_broadcast(&pool.start);
  pthread_mutex_unlock(&pool.mu);
  run_chunks();
  while (atomic_load(&pool.inflight) > 0) cpu_relax();
}
