/* kernels.c: the extern kernels generated code calls: GEMM through
 * OpenBLAS, TopK, copies. Each takes (pointers, integer parameters). */
#include "rt.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

int64_t matc_rt_f64_bits(double x) {
  int64_t b;
  memcpy(&b, &x, sizeof b);
  return b;
}

double matc_rt_bits_f64(int64_t b) {
  double x;
  memcpy(&x, &b, sizeof x);
  return x;
}

static void gemm_one(int f64, const int64_t *p, char *a, char *b, char *c) {
  CBLAS_TRANSPOSE ta = p[GEMM_TA] ? CblasTrans : CblasNoTrans;
  CBLAS_TRANSPOSE tb = p[GEMM_TB] ? CblasTrans : CblasNoTrans;
  double alpha = matc_rt_bits_f64(p[GEMM_ALPHA]), beta = matc_rt_bits_f64(p[GEMM_BETA]);
  if (p[GEMM_M] == 0 || p[GEMM_N] == 0) return;
  if (p[GEMM_K] == 0) {
    /* BLAS may skip the beta scaling when K is 0; do it here. */
    for (int64_t i = 0; i < p[GEMM_M]; i++)
      for (int64_t j = 0; j < p[GEMM_N]; j++) {
        if (f64) { double *x = (double *)c + i * p[GEMM_LDC] + j; *x = beta == 0 ? 0 : *x * beta; }
        else { float *x = (float *)c + i * p[GEMM_LDC] + j; *x = beta == 0 ? 0 : (float)(*x * beta); }
      }
    return;
  }
  if (f64)
    cblas_dgemm(CblasRowMajor, ta, tb, p[GEMM_M], p[GEMM_N], p[GEMM_K], alpha, (double *)a,
                p[GEMM_LDA], (double *)b, p[GEMM_LDB], beta, (double *)c, p[GEMM_LDC]);
  else
    cblas_sgemm(CblasRowMajor, ta, tb, p[GEMM_M], p[GEMM_N], p[GEMM_K], (float)alpha, (float *)a,
                p[GEMM_LDA], (float *)b, p[GEMM_LDB], (float)beta, (float *)c, p[GEMM_LDC]);
}

static void gemm_level(int f64, const int64_t *p, int lvl, char *a, char *b, char *c) {
  if (lvl == p[GEMM_NB]) {
    gemm_one(f64, p, a, b, c);
    return;
  }
  size_t es = f64 ? 8 : 4;
  const int64_t *q = p + GEMM_BATCH + 4 * lvl;
  for (int64_t i = 0; i < q[0]; i++)
    gemm_level(f64, p, lvl + 1, a + i * q[1] * es, b + i * q[2] * es, c + i * q[3] * es);
}

/* GEMMs are split over matc's own thread pool, and OpenBLAS runs single
 * threaded inside each piece: OpenBLAS's threads spin after every call and
 * fight the pool's workers for the cores, which made small GEMMs several
 * times slower on 2 cores. Split by batch entry when there are enough,
 * else along the longer side of C (below). */
typedef struct {
  void **ptrs;
  const int64_t *p;
  int how;               /* 0 batch, 1 rows, 2 columns */
  int64_t nbatch;
} GemmTask;

/* Below this many multiply-adds a GEMM runs on the calling thread. */
#define GEMM_PARALLEL_MIN (64 * 64 * 64)

static void gemm_batch_index(const int64_t *p, int64_t flat, int64_t off[3]) {
  off[0] = off[1] = off[2] = 0;
  for (int l = (int)p[GEMM_NB] - 1; l >= 0; l--) {
    const int64_t *q = p + GEMM_BATCH + 4 * l;
    int64_t i = flat % q[0];
    flat /= q[0];
    off[0] += i * q[1];
    off[1] += i * q[2];
    off[2] += i * q[3];
  }
}

static void gemm_task(void **bufs, int64_t lo, int64_t hi) {
  GemmTask *t = (GemmTask *)bufs;
  const int64_t *p = t->p;
  int f64 = p[GEMM_DT] == 11;
  size_t es = f64 ? 8 : 4;
  char *a = t->ptrs[0], *b = t->ptrs[1], *c = t->ptrs[2];
  if (t->how == 0) {
    for (int64_t i = lo; i < hi; i++) {
      int64_t off[3];
      gemm_batch_index(p, i, off);
      gemm_one(f64, p, a + off[0] * es, b + off[1] * es, c + off[2] * es);
    }
    return;
  }
  int64_t q[GEMM_NPARAMS];
  for (int i = 0; i < GEMM_NPARAMS; i++) q[i] = p[i];
  if (t->how == 1) {
    q[GEMM_M] = hi - lo;
    char *a2 = a + (p[GEMM_TA] ? lo : lo * p[GEMM_LDA]) * es;
    gemm_level(f64, q, 0, a2, b, c + lo * p[GEMM_LDC] * es);
  } else {
    q[GEMM_N] = hi - lo;
    char *b2 = b + (p[GEMM_TB] ? lo * p[GEMM_LDB] : lo) * es;
    gemm_level(f64, q, 0, a, b2, c + lo * es);
  }
}

void matc_rt_gemm(void **ptrs, const int64_t *p) {
  static int blas_single;
  if (!blas_single) {
    openblas_set_num_threads(1);
    blas_single = 1;
  }
  int f64 = p[GEMM_DT] == 11;
  int64_t nbatch = 1;
  for (int l = 0; l < p[GEMM_NB]; l++) nbatch *= p[GEMM_BATCH + 4 * l];
  int64_t work = nbatch * p[GEMM_M] * p[GEMM_N] * p[GEMM_K];
  int nt = matc_rt_threads();
  if (nt <= 1 || work < GEMM_PARALLEL_MIN) {
    gemm_level(f64, p, 0, ptrs[0], ptrs[1], ptrs[2]);
    return;
  }
  GemmTask t = {ptrs, p, 0, nbatch};
  int64_t n;
  /* Each piece packs its own share of one operand and all of the other:
   * splitting rows repeats B's packing (K x N) in every piece, splitting
   * columns repeats A's (M x K), so split the longer side (a conv's dW,
   * [Mg, Cg*k] from a long reduction, is much wider than tall). */
  int rows_ok = p[GEMM_M] >= 16 * nt, cols_ok = p[GEMM_N] >= 16 * nt;
  if (nbatch >= 2 * nt) { t.how = 0; n = nbatch; }
  else if (rows_ok && (!cols_ok || p[GEMM_M] >= p[GEMM_N])) { t.how = 1; n = p[GEMM_M]; }
  else { t.how = 2; n = p[GEMM_N]; }
  /* cost 1 << 20 per index: always worth splitting at this size */
  matc_rt_parallel_for(gemm_task, (void **)&t, n, 1 << 20);
}

/* TopK keeps the k best of each row by partial insertion: k is small in
 * every model matc targets (top-1/top-2 routing). Ties keep the lower
 * index first, as ONNX requires. */
void matc_rt_topk(void **ptrs, const int64_t *p) {
  int f64 = p[TOPK_DT] == 11;
  int64_t outer = p[TOPK_OUTER], n = p[TOPK_N], inner = p[TOPK_INNER], k = p[TOPK_K];
  int largest = (int)p[TOPK_LARGEST];
  int64_t *idx = malloc(sizeof(int64_t) * (k > 0 ? k : 1));
  double *val = malloc(sizeof(double) * (k > 0 ? k : 1));
  for (int64_t o = 0; o < outer; o++) {
    for (int64_t in = 0; in < inner; in++) {
      int64_t cnt = 0;
      for (int64_t j = 0; j < n; j++) {
        int64_t off = (o * n + j) * inner + in;
        double x = f64 ? ((double *)ptrs[0])[off] : ((float *)ptrs[0])[off];
        int64_t pos = cnt;
        while (pos > 0 && (largest ? x > val[pos - 1] : x < val[pos - 1])) pos--;
        if (pos >= k) continue;
        int64_t last = cnt < k ? cnt : k - 1;
        for (int64_t q = last; q > pos; q--) {
          val[q] = val[q - 1];
          idx[q] = idx[q - 1];
        }
        val[pos] = x;
        idx[pos] = j;
        if (cnt < k) cnt++;
      }
      for (int64_t q = 0; q < k; q++) {
        int64_t off = (o * k + q) * inner + in;
        if (f64) ((double *)ptrs[1])[off] = val[q];
        else ((float *)ptrs[1])[off] = (float)val[q];
        ((int64_t *)ptrs[2])[off] = idx[q];
      }
    }
  }
  free(idx);
  free(val);
}

void matc_rt_copy(void **ptrs, const int64_t *p) {
  if (p[0] > 0) memmove(ptrs[0], ptrs[1], (size_t)p[0]);
}

/* dst[di] op= src[si] for one element of ONNX type dt. Bool add/mul are
 * or/and. */
#define SCAT_CASE(code, T)                                                  \
  case code: {                                                              \
    T *d = (T *)dst + di, u = ((const T *)src)[si];                        \
    switch (red) {                                                          \
    case SCAT_ADD: *d = (T)(*d + u); break;                                 \
    case SCAT_MUL: *d = (T)(*d * u); break;                                 \
    case SCAT_MAX: *d = *d > u ? *d : u; break;                             \
    case SCAT_MIN: *d = *d < u ? *d : u; break;                             \
    default: *d = u; break;                                                 \
    }                                                                       \
    break;                                                                  \
  }

static void scat_apply(int64_t dt, int64_t red, void *dst, int64_t di, const void *src, int64_t si) {
  if (dt == 9) {   /* bool */
    uint8_t *d = (uint8_t *)dst + di, u = ((const uint8_t *)src)[si] != 0;
    *d = red == SCAT_ADD || red == SCAT_MAX ? (*d || u) : red == SCAT_NONE ? u : (*d && u);
    return;
  }
  switch (dt) {
    SCAT_CASE(1, float)
    SCAT_CASE(11, double)
    SCAT_CASE(7, int64_t)
    SCAT_CASE(6, int32_t)
    SCAT_CASE(5, int16_t)
    SCAT_CASE(3, int8_t)
    SCAT_CASE(2, uint8_t)
    SCAT_CASE(4, uint16_t)
    SCAT_CASE(12, uint32_t)
    SCAT_CASE(13, uint64_t)
  default: break;
  }
}

static int64_t scat_index(const void *idx, int idx64, int64_t i) {
  return idx64 ? ((const int64_t *)idx)[i] : ((const int32_t *)idx)[i];
}

void matc_rt_scatter_elements(void **ptrs, const int64_t *p) {
  int rank = (int)p[SCAT_RANK], axis = (int)p[SCAT_AXIS];
  const int64_t *dd = p + SCAT_DIMS, *id = p + SCAT_DIMS + SCAT_MAX_RANK;
  int64_t ds[SCAT_MAX_RANK], n = 1, s = 1;
  for (int d = rank - 1; d >= 0; d--) {
    ds[d] = s;
    s *= dd[d];
    n *= id[d];
  }
  for (int64_t i = 0; i < n; i++) {
    int64_t rem = i, off = 0, ok = 1;
    for (int d = rank - 1; d >= 0; d--) {
      int64_t c = rem % id[d];
      rem /= id[d];
      if (d == axis) {
        c = scat_index(ptrs[1], (int)p[SCAT_IDX64], i);
        if (c < 0) c += dd[d];
        ok &= c >= 0 && c < dd[d];
      }
      off += c * ds[d];
    }
    if (ok) scat_apply(p[SCAT_DT], p[SCAT_RED], ptrs[0], off, ptrs[2], i);
  }
}

/* n consecutive elements. Float adds (embedding gradients: a row per
 * token id) use 32-byte vector adds (GCC/Clang vector extension): the
 * runtime builds at -O2, which does not vectorize this loop by itself. */
#define SCAT_ADD_ROW(T)                                                     \
  do {                                                                      \
    typedef T V __attribute__((vector_size(32)));                           \
    T *d = (T *)dst + di;                                                   \
    const T *u = (const T *)src + si;                                       \
    int64_t e = 0, w = (int64_t)(sizeof(V) / sizeof(T));                    \
    for (; e + w <= n; e += w) {                                            \
      V a, b;                                                               \
      memcpy(&a, d + e, sizeof a);                                          \
      memcpy(&b, u + e, sizeof b);                                          \
      a += b;                                                               \
      memcpy(d + e, &a, sizeof a);                                          \
    }                                                                       \
    for (; e < n; e++) d[e] += u[e];                                        \
  } while (0)

static void scat_slice(int64_t dt, int64_t red, void *dst, int64_t di, const void *src, int64_t si,
                       int64_t n) {
  if (red == SCAT_ADD && dt == 1) SCAT_ADD_ROW(float);
  else if (red == SCAT_ADD && dt == 11) SCAT_ADD_ROW(double);
  else
    for (int64_t e = 0; e < n; e++) scat_apply(dt, red, dst, di + e, src, si + e);
}

void matc_rt_scatter_nd(void **ptrs, const int64_t *p) {
  int64_t k = p[SCND_K], slice = p[SCND_SLICE];
  const int64_t *dd = p + SCND_DIMS;
  for (int64_t i = 0; i < p[SCND_N]; i++) {
    int64_t off = 0, ok = 1;
    for (int64_t j = 0; j < k; j++) {
      int64_t c = scat_index(ptrs[1], (int)p[SCND_IDX64], i * k + j);
      if (c < 0) c += dd[j];
      ok &= c >= 0 && c < dd[j];
      off = off * dd[j] + c;
    }
    if (!ok) continue;
    scat_slice(p[SCND_DT], p[SCND_RED], ptrs[0], off * slice, ptrs[2], i * slice, slice);
  }
}
