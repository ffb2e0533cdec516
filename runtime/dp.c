/* dp.c: data-parallel training over MPI (runtime/dp.h).
 *
 * Built with MATC_HAVE_MPI (CMake's MATC_MPI, on when Open MPI is found)
 * it starts MPI when the process was launched by mpirun; otherwise, and
 * in a build without MPI, there is a single rank and nothing here does
 * any work. Collectives are the non-blocking MPI ones, waited for with
 * MPI_Test in a loop that gives up after the timeout: MPI itself would
 * wait forever for a rank that stalled. While waiting, a rank answers
 * "where are you?" pings on a communicator of their own, so the rank that
 * times out can say which ranks are waiting with it, where, and which
 * do not answer. */
#include "dp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef MATC_HAVE_MPI
#include <mpi.h>
#endif

#define HOST_LEN 64

typedef struct {
  int first, last;           /* its gradients, [first, last] in plan order */
  int f64;
  int64_t cap;               /* elements */
  void *buf;
  int64_t used;              /* elements packed this step */
  int started, done;
#ifdef MATC_HAVE_MPI
  MPI_Request req;
#endif
} Bucket;

static struct {
  int init, mpi, rank, size, local_size;
  double timeout;
  int64_t step, seq;
  char what[112];
  char *hosts;               /* size * HOST_LEN */
  /* the bound step */
  const DpPlan *plan;
  const uint8_t *guards;
  Bucket *b;
  int nb;
  int *gb;                   /* gradient -> bucket */
  int64_t **pk;              /* gradient -> per slice: packed offset, -1 when not sent */
  double weight;
  int suspended;
  DpStats st;
#ifdef MATC_HAVE_MPI
  MPI_Comm comm, ping;
#endif
} dp = {.size = 1, .local_size = 1, .timeout = 300, .weight = 1};

int dp_rank(void) { return dp.rank; }
int dp_size(void) { return dp.size; }
int dp_local_size(void) { return dp.local_size; }
void dp_set_timeout(double s) { dp.timeout = s > 0 ? s : 300; }
double dp_timeout(void) { return dp.timeout; }
void dp_set_step(int64_t step) { dp.step = step; }
void dp_set_weight(double w) { dp.weight = w; }
void dp_suspend(int on) { dp.suspended = on; }
int dp_nbuckets(void) { return dp.nb; }

const char *dp_host(int rank) {
  if (!dp.hosts || rank < 0 || rank >= dp.size) return "this host";
  return dp.hosts + (size_t)rank * HOST_LEN;
}

int dp_built_with_mpi(void) {
#ifdef MATC_HAVE_MPI
  return 1;
#else
  return 0;
#endif
}

void dp_take_stats(DpStats *s) {
  *s = dp.st;
  memset(&dp.st, 0, sizeof dp.st);
}

/* Started by an MPI launcher? Open MPI's mpirun sets OMPI_COMM_WORLD_*
 * and PMIX_RANK; MPICH's and Intel's set PMI_RANK and PMI_SIZE. */
static int launched(void) {
  return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK") || getenv("PMI_SIZE");
}

static int env_size(void) {
  const char *s = getenv("OMPI_COMM_WORLD_SIZE");
  if (!s) s = getenv("PMI_SIZE");
  return s && *s ? atoi(s) : -1;
}

#ifdef MATC_HAVE_MPI

enum { TAG_PING = 7001, TAG_PONG = 7002 };

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef struct {
  int64_t step, seq;
  char what[112];
} Pong;

static void begin(const char *what) {
  dp.seq++;
  snprintf(dp.what, sizeof dp.what, "%s", what);
}

/* Answers every pending "where are you?" with this rank's step and
 * collective. A pong is small, so MPI_Send returns at once (eager). */
static void answer_pings(void) {
  for (;;) {
    int flag = 0;
    MPI_Status st;
    if (MPI_Iprobe(MPI_ANY_SOURCE, TAG_PING, dp.ping, &flag, &st) != MPI_SUCCESS || !flag) return;
    int64_t x;
    MPI_Recv(&x, 1, MPI_INT64_T, st.MPI_SOURCE, TAG_PING, dp.ping, MPI_STATUS_IGNORE);
    Pong p;
    memset(&p, 0, sizeof p);
    p.step = dp.step;
    p.seq = dp.seq;
    snprintf(p.what, sizeof p.what, "%s", dp.what);
    MPI_Send(&p, (int)sizeof p, MPI_BYTE, st.MPI_SOURCE, TAG_PONG, dp.ping);
  }
}

static void sleep_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  nanosleep(&ts, NULL);
}

/* A collective did not complete in time: asks every other rank where it
 * is (3 s for the answers), reports, and ends the job. */
static void stalled(const char *what, double waited) {
  fprintf(stderr, "\nmatc: rank %d of %d (%s): step %lld: %s did not complete within %.0f s (--mpi-timeout)\n",
          dp.rank, dp.size, dp_host(dp.rank), (long long)dp.step, what, waited);
  int n = dp.size;
  Pong *got = calloc((size_t)n, sizeof *got);
  MPI_Request *rq = calloc(2 * (size_t)n, sizeof *rq);
  char *have = calloc((size_t)n, 1);
  int64_t x = 0;
  for (int r = 0; r < n; r++) {
    if (r == dp.rank) continue;
    MPI_Isend(&x, 1, MPI_INT64_T, r, TAG_PING, dp.ping, &rq[2 * r]);
    MPI_Irecv(&got[r], (int)sizeof(Pong), MPI_BYTE, r, TAG_PONG, dp.ping, &rq[2 * r + 1]);
  }
  double t0 = now_s();
  for (int all = 0; !all && now_s() - t0 < 3;) {
    answer_pings();
    all = 1;
    for (int r = 0; r < n; r++) {
      if (r == dp.rank || have[r]) continue;
      int f = 0;
      MPI_Test(&rq[2 * r + 1], &f, MPI_STATUS_IGNORE);
      if (f) have[r] = 1;
      else all = 0;
    }
    if (!all) sleep_us(10000);
  }
  int silent = 0;
  for (int r = 0; r < n; r++) {
    if (r == dp.rank) continue;
    if (have[r]) {
      got[r].what[sizeof got[r].what - 1] = 0;
      fprintf(stderr, "matc:   rank %d (%s) answers: step %lld, %s%s\n", r, dp_host(r), (long long)got[r].step,
              got[r].what, got[r].seq == dp.seq ? " (waiting with this rank)" : "");
    } else {
      fprintf(stderr, "matc:   rank %d (%s) does not answer: it died, is stopped, or is still computing\n", r,
              dp_host(r));
      silent++;
    }
  }
  fprintf(stderr, "matc: aborting the job%s\n",
          silent ? " (a rank that is only slow needs a larger --mpi-timeout)" : "");
  fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  exit(1);
}

static void check(int rc, const char *what) {
  if (rc == MPI_SUCCESS) return;
  char s[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, s, &len);
  fprintf(stderr, "\nmatc: rank %d of %d (%s): step %lld: %s failed: %s\n", dp.rank, dp.size, dp_host(dp.rank),
          (long long)dp.step, what, s);
  fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  exit(1);
}

/* Waits for a request, at most the timeout: spins briefly, then sleeps
 * (another rank on this machine may need the core). */
static void wait_req(MPI_Request *r, const char *what) {
  double t0 = now_s();
  for (long spins = 0;; spins++) {
    int flag = 0;
    check(MPI_Test(r, &flag, MPI_STATUS_IGNORE), what);
    if (flag) return;
    answer_pings();
    double el = now_s() - t0;
    if (el > dp.timeout) stalled(what, el);
    if (spins > 200) sleep_us(spins > 5000 ? 1000 : 50);
  }
}

static MPI_Op mpi_op(int op) { return op == DP_MIN ? MPI_MIN : op == DP_MAX ? MPI_MAX : MPI_SUM; }

#endif /* MATC_HAVE_MPI */

int dp_init(char *err, size_t errlen) {
  if (dp.init) return 0;
  dp.init = 1;
  if (!launched()) return 0;
  int want = env_size();
#ifndef MATC_HAVE_MPI
  if (want > 1) {
    snprintf(err, errlen, "this matc was built without MPI, but it was started as one of %d processes (by mpirun?): "
             "each would train alone. Install Open MPI (libopenmpi-dev) and rebuild, or run a single process", want);
    return -1;
  }
  return 0;
#else
  int provided = 0;
  if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    snprintf(err, errlen, "MPI_Init failed");
    return -1;
  }
  dp.mpi = 1;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_dup(MPI_COMM_WORLD, &dp.comm);
  MPI_Comm_dup(MPI_COMM_WORLD, &dp.ping);
  MPI_Comm_set_errhandler(dp.comm, MPI_ERRORS_RETURN);
  MPI_Comm_set_errhandler(dp.ping, MPI_ERRORS_RETURN);
  MPI_Comm_rank(dp.comm, &dp.rank);
  MPI_Comm_size(dp.comm, &dp.size);
  if (want > 1 && dp.size != want) {
    snprintf(err, errlen, "the launcher started %d processes, but MPI_Init gives this one a world of %d: a launcher "
             "of another MPI? matc uses Open MPI: start it with Open MPI's mpirun", want, dp.size);
    dp.size = 1;
    MPI_Finalize();
    dp.mpi = 0;
    return -1;
  }
  if (provided < MPI_THREAD_FUNNELED) {
    snprintf(err, errlen, "MPI gives thread level %d, matc needs MPI_THREAD_FUNNELED", provided);
    MPI_Finalize();
    dp.mpi = 0;
    dp.size = 1;
    return -1;
  }
  MPI_Comm local;
  if (MPI_Comm_split_type(dp.comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local) == MPI_SUCCESS) {
    MPI_Comm_size(local, &dp.local_size);
    MPI_Comm_free(&local);
  }
  char me[HOST_LEN];
  int len = 0;
  memset(me, 0, sizeof me);
  MPI_Get_processor_name(me, &len);   /* may be longer: cut */
  me[HOST_LEN - 1] = 0;
  dp.hosts = calloc((size_t)dp.size, HOST_LEN);
  if (dp.size > 1) dp_allgather(me, HOST_LEN, dp.hosts, "start-up (host names)");
  else memcpy(dp.hosts, me, HOST_LEN);
  return 0;
#endif
}

void dp_unbind(void) {
  for (int i = 0; i < dp.nb; i++) free(dp.b[i].buf);
  if (dp.pk && dp.plan)
    for (int i = 0; i < dp.plan->ngrads; i++) free(dp.pk[i]);
  free(dp.b);
  free(dp.gb);
  free(dp.pk);
  dp.b = NULL;
  dp.gb = NULL;
  dp.pk = NULL;
  dp.nb = 0;
  dp.plan = NULL;
  dp.guards = NULL;
}

int dp_bind(const DpPlan *plan, const uint8_t *guards, int64_t bucket_bytes) {
  dp_unbind();
  dp.plan = plan;
  dp.guards = guards;
  if (!plan || plan->ngrads == 0 || dp.size <= 1) return 0;
  int n = plan->ngrads;
  dp.gb = malloc(sizeof(int) * (size_t)n);
  dp.pk = calloc((size_t)n, sizeof *dp.pk);
  dp.b = calloc((size_t)n, sizeof *dp.b);
  if (!dp.gb || !dp.pk || !dp.b) return -1;
  int64_t bytes = 0;
  for (int i = 0; i < n; i++) {
    const DpGrad *gr = &plan->grads[i];
    int64_t gbytes = gr->nelem * (gr->f64 ? 8 : 4);
    Bucket *cur = dp.nb ? &dp.b[dp.nb - 1] : NULL;
    if (!cur || cur->f64 != gr->f64 || (bytes > 0 && bytes + gbytes > bucket_bytes)) {
      cur = &dp.b[dp.nb++];
      cur->first = i;
      cur->f64 = gr->f64;
      bytes = 0;
    }
    cur->last = i;
    cur->cap += gr->nelem;
    bytes += gbytes;
    dp.gb[i] = dp.nb - 1;
    dp.pk[i] = malloc(sizeof(int64_t) * (size_t)(gr->nslices > 0 ? gr->nslices : 1));
    if (!dp.pk[i]) return -1;
  }
  for (int i = 0; i < dp.nb; i++) {
    dp.b[i].buf = malloc((size_t)dp.b[i].cap * (dp.b[i].f64 ? 8 : 4) + 1);
    if (!dp.b[i].buf) return -1;
  }
  return 0;
}

#ifdef MATC_HAVE_MPI
/* Lets started all-reduces move on (MPI progresses them inside its calls). */
static void progress(void) {
  for (int i = 0; i < dp.nb; i++) {
    Bucket *b = &dp.b[i];
    if (!b->started || b->done) continue;
    int flag = 0;
    check(MPI_Test(&b->req, &flag, MPI_STATUS_IGNORE), "the gradient all-reduce");
    if (flag) b->done = 1;
  }
}

/* Is a slice's module (one of them) active? Frozen slices are not sent. */
static int slice_active(const DpSlice *s) {
  if (s->nmods == 0 || !dp.guards) return 1;
  for (int j = 0; j < s->nmods; j++)
    if (dp.guards[s->mods[j]]) return 1;
  return 0;
}
#endif

void matc_rt_grad_put(void **ptrs, const int64_t *p) {
#ifdef MATC_HAVE_MPI
  if (dp.size <= 1 || !dp.b || dp.suspended) return;
  int i = (int)p[0];
  const DpGrad *gr = &dp.plan->grads[i];
  Bucket *b = &dp.b[dp.gb[i]];
  if (i == b->first) {
    b->used = 0;
    b->started = b->done = 0;
  }
  size_t es = gr->f64 ? 8 : 4;
  const char *src = ptrs[0];
  for (int s = 0; s < gr->nslices; s++) {
    const DpSlice *sl = &gr->slices[s];
    double bytes = (double)sl->block * sl->nblocks * es;
    if (!slice_active(sl)) {
      dp.pk[i][s] = -1;
      dp.st.saved += bytes;
      continue;
    }
    dp.pk[i][s] = b->used;
    for (int64_t k = 0; k < sl->nblocks; k++) {
      int64_t from = sl->off + k * sl->stride;
      if (gr->f64) {
        const double *x = (const double *)src + from;
        double *y = (double *)b->buf + b->used, w = dp.weight;
        for (int64_t e = 0; e < sl->block; e++) y[e] = w == 0 ? 0 : x[e] * w;
      } else {
        const float *x = (const float *)src + from;
        float *y = (float *)b->buf + b->used, w = (float)dp.weight;
        for (int64_t e = 0; e < sl->block; e++) y[e] = w == 0 ? 0 : x[e] * w;
      }
      b->used += sl->block;
    }
    dp.st.sent += bytes;
  }
  if (i == b->last) {
    if (b->used > 0) {
      begin("the gradient all-reduce");
      check(MPI_Iallreduce(MPI_IN_PLACE, b->buf, (int)b->used, b->f64 ? MPI_DOUBLE : MPI_FLOAT, MPI_SUM, dp.comm,
                           &b->req), "the gradient all-reduce");
      b->started = 1;
      dp.st.allreduces++;
    } else {
      b->done = 1;                  /* every module in it is frozen: nothing to send */
    }
  }
  progress();
#else
  (void)ptrs;
  (void)p;
#endif
}

void matc_rt_grad_get(void **ptrs, const int64_t *p) {
#ifdef MATC_HAVE_MPI
  if (dp.size <= 1 || !dp.b || dp.suspended) return;
  int i = (int)p[0], bi = dp.gb[i];
  const DpGrad *gr = &dp.plan->grads[i];
  Bucket *b = &dp.b[bi];
  if (b->started && !b->done) {
    char what[112];
    snprintf(what, sizeof what, "the gradient all-reduce (bucket %d of %d, %lld bytes)", bi + 1, dp.nb,
             (long long)b->used * (b->f64 ? 8 : 4));
    begin(what);
    double t0 = now_s();
    wait_req(&b->req, what);
    dp.st.wait_ms += (now_s() - t0) * 1e3;
    b->done = 1;
  }
  size_t es = gr->f64 ? 8 : 4;
  char *dst = ptrs[0];
  for (int s = 0; s < gr->nslices; s++) {
    const DpSlice *sl = &gr->slices[s];
    int64_t at = dp.pk[i][s];
    if (at < 0) continue;
    for (int64_t k = 0; k < sl->nblocks; k++, at += sl->block)
      memcpy(dst + (size_t)(sl->off + k * sl->stride) * es, (char *)b->buf + (size_t)at * es, (size_t)sl->block * es);
  }
#else
  (void)ptrs;
  (void)p;
#endif
}

/* ---------------------------------------------------------------- collectives */

#ifdef MATC_HAVE_MPI
/* A small in-place allreduce of n values of type t across the ranks. */
static void allreduce(void *v, int n, MPI_Datatype t, int op, const char *what) {
  if (dp.size <= 1) return;
  begin(what);
  MPI_Request r;
  check(MPI_Iallreduce(MPI_IN_PLACE, v, n, t, mpi_op(op), dp.comm, &r), what);
  wait_req(&r, what);
}
#endif

void dp_allreduce_f64(double *v, int n, int op, const char *what) {
#ifdef MATC_HAVE_MPI
  allreduce(v, n, MPI_DOUBLE, op, what);
#else
  (void)v, (void)n, (void)op, (void)what;
#endif
}

void dp_allreduce_i64(int64_t *v, int n, int op, const char *what) {
#ifdef MATC_HAVE_MPI
  allreduce(v, n, MPI_INT64_T, op, what);
#else
  (void)v, (void)n, (void)op, (void)what;
#endif
}

void dp_sum_f32(float *v, int64_t n, const char *what) {
#ifdef MATC_HAVE_MPI
  if (dp.size <= 1) return;
  begin(what);
  for (int64_t at = 0; at < n; at += 1 << 28) {
    int c = (int)(n - at < (1 << 28) ? n - at : (1 << 28));
    MPI_Request r;
    check(MPI_Iallreduce(MPI_IN_PLACE, v + at, c, MPI_FLOAT, MPI_SUM, dp.comm, &r), what);
    wait_req(&r, what);
  }
#else
  (void)v, (void)n, (void)what;
#endif
}

void dp_bcast(void *buf, size_t bytes, const char *what) {
#ifdef MATC_HAVE_MPI
  if (dp.size <= 1) return;
  begin(what);
  for (size_t at = 0; at < bytes; at += (size_t)1 << 30) {
    int c = (int)(bytes - at < ((size_t)1 << 30) ? bytes - at : ((size_t)1 << 30));
    MPI_Request r;
    check(MPI_Ibcast((char *)buf + at, c, MPI_BYTE, 0, dp.comm, &r), what);
    wait_req(&r, what);
  }
#else
  (void)buf, (void)bytes, (void)what;
#endif
}

void dp_allgather(const void *mine, size_t bytes, void *all, const char *what) {
#ifdef MATC_HAVE_MPI
  if (dp.size <= 1) {
    memcpy(all, mine, bytes);
    return;
  }
  begin(what);
  MPI_Request r;
  check(MPI_Iallgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, dp.comm, &r), what);
  wait_req(&r, what);
#else
  (void)what;
  memcpy(all, mine, bytes);
#endif
}

int dp_finish(int status) {
#ifdef MATC_HAVE_MPI
  if (!dp.mpi) return status;
  if (dp.size > 1) {
    int64_t s = status;
    dp_allreduce_i64(&s, 1, DP_MAX, "the final agreement on the exit status");
    status = (int)s;
  }
  dp_unbind();
  MPI_Comm_free(&dp.comm);
  MPI_Comm_free(&dp.ping);
  MPI_Finalize();
  dp.mpi = 0;
#endif
  return status;
}

void dp_abort(int status) {
#ifdef MATC_HAVE_MPI
  if (!dp.mpi) return;
  if (dp.size > 1) {
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, status ? status : 1);
    exit(status ? status : 1);
  }
  MPI_Finalize();
  dp.mpi = 0;
#else
  (void)status;
#endif
}
