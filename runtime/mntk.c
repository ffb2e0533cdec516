/* mntk.c: per-site Gram matrices of per-sample gradients, and the
 * eigenvalue/trace of a module's Gram (see mntk.h for the formulas).
 *
 * Both methods start from the same packed rows: X [n*T, I] (the slice's
 * input features, then a constant 1 when the bias is in the slice; im2col
 * patches for a conv) and D [n*T, O] (the slice's output gradients).
 *   structured:   for each sample i, A = X_i X_{i..}^T and B = D_i D_{i..}^T
 *                 (T x (n-i)T GEMMs), G[i][j] = sum of the (i, j) block of A*B;
 *                 cost ~ n^2 T^2 (I + O): wins when T is small (T = 1 for an MLP).
 *   materialised: P_i = X_i^T D_i (the per-sample gradient, I x O), then
 *                 G = P P^T by SYRK; cost ~ 2 n T I O + n^2 I O: wins for long
 *                 sequences and conv layers. */
#include "mntk.h"

#include <cblas.h>   /* (through complex.h it defines I: feature counts are NI here) */
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Materialised per-sample gradients larger than this are not formed. */
#define MNTK_MAX_MATERIALISED_BYTES ((int64_t)512 << 20)

static int64_t in_features(const MntkSite *s) {
  int64_t per = s->conv ? s->KH * s->KW : 1;
  return (s->x1 - s->x0) * per + (s->bias ? 1 : 0);
}

void mntk_site_cost(int64_t n, const MntkSite *s, double *structured, double *materialised) {
  double T = (double)s->tokens, NI = (double)in_features(s), O = (double)(s->y1 - s->y0), N = (double)n;
  *structured = T * T * (NI + O) * N * (N + 1) + T * T * N * (N + 1);
  *materialised = 2 * N * T * NI * O + N * (N + 1) * NI * O;
}

/* Row of sample i's token t in an [outer, n, T / outer, features] layout. */
static int64_t row_of(int64_t n, const MntkSite *s, int64_t i, int64_t t) {
  int64_t outer = s->outer > 1 ? s->outer : 1, per = s->tokens / outer;
  return (t / per * n + i) * per + t % per;
}

/* X rows: sample i, token t -> the slice's input features (+ 1 for the bias). */
static void pack_x(int64_t n, const MntkSite *s, float *X) {
  int64_t T = s->tokens, NI = in_features(s);
  for (int64_t i = 0; i < n; i++)
    for (int64_t t = 0; t < T; t++) {
      float *row = X + (i * T + t) * NI;
      if (!s->conv) {
        memcpy(row, s->x + row_of(n, s, i, t) * s->nx + s->x0, sizeof(float) * (s->x1 - s->x0));
      } else {
        int64_t oh = t / s->OW, ow = t % s->OW, f = 0;
        for (int64_t c = s->x0; c < s->x1; c++) {
          const float *plane = s->x + (i * s->C + c) * s->H * s->W;
          for (int64_t kh = 0; kh < s->KH; kh++) {
            int64_t h = oh * s->stride[0] - s->pad[0] + kh * s->dil[0];
            for (int64_t kw = 0; kw < s->KW; kw++) {
              int64_t w = ow * s->stride[1] - s->pad[1] + kw * s->dil[1];
              row[f++] = h >= 0 && h < s->H && w >= 0 && w < s->W ? plane[h * s->W + w] : 0.0f;
            }
          }
        }
      }
      if (s->bias) row[NI - 1] = 1.0f;
    }
}

/* D rows: sample i, token t -> the slice's output gradients. */
static void pack_dy(int64_t n, const MntkSite *s, float *D) {
  int64_t T = s->tokens, O = s->y1 - s->y0;
  for (int64_t i = 0; i < n; i++) {
    if (!s->conv) {
      for (int64_t t = 0; t < T; t++)
        memcpy(D + (i * T + t) * O, s->dy + row_of(n, s, i, t) * s->ny + s->y0, sizeof(float) * O);
    } else {
      for (int64_t o = 0; o < O; o++) {
        const float *plane = s->dy + (i * s->ny + s->y0 + o) * T;
        for (int64_t t = 0; t < T; t++) D[(i * T + t) * O + o] = plane[t];
      }
    }
  }
}

static double gram_structured(int64_t n, int64_t T, int64_t NI, int64_t O, const float *X, const float *D,
                              double *G, int *oom) {
  int64_t cols = n * T;
  float *A = malloc(sizeof(float) * T * cols), *B = malloc(sizeof(float) * T * cols);
  double flops = 0;
  if (!A || !B) {
    *oom = 1;
    free(A);
    free(B);
    return 0;
  }
  for (int64_t i = 0; i < n; i++) {
    int64_t m = (n - i) * T;   /* columns: tokens of samples i..n-1 */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, m, NI, 1.0f, X + i * T * NI, NI, X + i * T * NI, NI,
                0.0f, A, m);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, m, O, 1.0f, D + i * T * O, O, D + i * T * O, O,
                0.0f, B, m);
    flops += 2.0 * T * m * (NI + O);
    for (int64_t j = i; j < n; j++) {
      double acc = 0;
      for (int64_t t = 0; t < T; t++) {
        const float *a = A + t * m + (j - i) * T, *b = B + t * m + (j - i) * T;
        for (int64_t u = 0; u < T; u++) acc += (double)a[u] * b[u];
      }
      G[i * n + j] += acc;
      if (j != i) G[j * n + i] += acc;
    }
    flops += 2.0 * T * m;
  }
  free(A);
  free(B);
  return flops;
}

static double gram_materialised(int64_t n, int64_t T, int64_t NI, int64_t O, const float *X, const float *D,
                                double *G, int *oom) {
  int64_t K = NI * O;
  float *P = malloc(sizeof(float) * n * K), *Gf = malloc(sizeof(float) * n * n);
  if (!P || !Gf) {
    *oom = 1;
    free(P);
    free(Gf);
    return 0;
  }
  for (int64_t i = 0; i < n; i++)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, NI, O, T, 1.0f, X + i * T * NI, NI, D + i * T * O, O, 0.0f,
                P + i * K, O);
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, K, 1.0f, P, K, 0.0f, Gf, n);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = i; j < n; j++) {
      G[i * n + j] += Gf[i * n + j];
      if (j != i) G[j * n + i] += Gf[i * n + j];
    }
  free(P);
  free(Gf);
  return 2.0 * n * T * NI * O + (double)n * (n + 1) * K;
}

double mntk_site_gram(int64_t n, const MntkSite *s, double *G, int *how) {
  int64_t T = s->tokens, NI = in_features(s), O = s->y1 - s->y0;
  if (n <= 0 || T <= 0 || NI <= 0 || O <= 0) return 0;
  double cs, cm;
  mntk_site_cost(n, s, &cs, &cm);
  int materialise = cm < cs && n * NI * O * (int64_t)sizeof(float) <= MNTK_MAX_MATERIALISED_BYTES;
  if (s->method) materialise = s->method == MNTK_MATERIALISED;
  if (how) *how = materialise ? MNTK_MATERIALISED : MNTK_STRUCTURED;
  float *X = malloc(sizeof(float) * n * T * NI), *D = malloc(sizeof(float) * n * T * O);
  int oom = !X || !D;
  double flops = 0;
  if (!oom) {
    pack_x(n, s, X);
    pack_dy(n, s, D);
    flops = materialise ? gram_materialised(n, T, NI, O, X, D, G, &oom) : gram_structured(n, T, NI, O, X, D, G, &oom);
  }
  free(X);
  free(D);
  return oom ? -1 : flops;
}

/* LAPACK (OpenBLAS ships it). The trailing size_t are the lengths of the
 * character arguments that gfortran-compiled LAPACK expects. */
extern void dsyevr_(const char *jobz, const char *range, const char *uplo, const int *n, double *a,
                    const int *lda, const double *vl, const double *vu, const int *il, const int *iu,
                    const double *abstol, int *m, double *w, double *z, const int *ldz, int *isuppz,
                    double *work, const int *lwork, int *iwork, const int *liwork, int *info, size_t,
                    size_t, size_t);

int mntk_eig(int64_t n64, const double *G, double *lambda_max, double *trace) {
  int n = (int)n64;
  double tr = 0;
  for (int i = 0; i < n; i++) tr += G[(int64_t)i * n + i];
  *trace = tr;
  *lambda_max = 0;
  if (n <= 0) return 0;
  /* dsyevr overwrites its matrix: work on a copy. */
  double *a = malloc(sizeof(double) * n * n), *w = malloc(sizeof(double) * n), z = 0, vl = 0, vu = 0, abstol = 0;
  int lwork = 26 * n + 64, liwork = 10 * n + 64, m = 0, info = 0, ldz = 1, il = n, iu = n;
  double *work = malloc(sizeof(double) * lwork);
  int *iwork = malloc(sizeof(int) * liwork), isuppz[2];
  if (!a || !w || !work || !iwork) {
    info = -100;
  } else {
    memcpy(a, G, sizeof(double) * n * n);
    dsyevr_("N", "I", "U", &n, a, &n, &vl, &vu, &il, &iu, &abstol, &m, w, &z, &ldz, isuppz, work, &lwork, iwork,
            &liwork, &info, 1, 1, 1);
    if (info == 0 && m >= 1) *lambda_max = w[0];
  }
  free(a);
  free(w);
  free(work);
  free(iwork);
  return info;
}
