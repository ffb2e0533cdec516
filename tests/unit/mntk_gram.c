/* mntk_gram.c: runtime/mntk.c on random sites. Each site's Gram, by the
 * structured formula and by materialised per-sample gradients, must equal
 * the Gram of per-sample gradients formed here the slow, obvious way
 * (g_i[o][f] = sum_t dy_it[o] x_it[f], conv patches read directly), for
 * linear sites with input/output slices and a bias, and conv sites with
 * stride, padding, dilation and an output-filter slice. Also dsyevr's
 * lambda_max and the trace against a diagonal matrix and a 2 x 2 matrix
 * with known eigenvalues. Prints "N passed, N failed"; exits 1 on any
 * failure. */
#include "../../runtime/mntk.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

static uint64_t rng = 12345;
static float frand(void) {
  rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
  return (float)((rng >> 40) / (double)(1 << 24)) * 2 - 1;
}

static void check(const char *what, double got, double want, double tol) {
  double err = fabs(got - want) / fmax(fabs(want), 1e-12);
  if (err <= tol) passed++;
  else {
    failed++;
    printf("FAIL %s: got %.9g, want %.9g (rel %.3g)\n", what, got, want, err);
  }
}

/* Linear rows are [outer, n, tokens / outer]: sample i's token t = (o, r). */
static int64_t row(int64_t n, const MntkSite *s, int64_t i, int64_t t) {
  int64_t outer = s->outer ? s->outer : 1, per = s->tokens / outer, o = t / per, r = t % per;
  return o * n * per + i * per + r;
}

/* x feature f of sample i, token t (for conv: f = (c - x0, kh, kw) of the patch). */
static double x_at(int64_t n, const MntkSite *s, int64_t i, int64_t t, int64_t f) {
  int64_t nf = s->conv ? (s->x1 - s->x0) * s->KH * s->KW : s->x1 - s->x0;
  if (f == nf) return 1.0;   /* the bias feature */
  if (!s->conv) return s->x[row(n, s, i, t) * s->nx + s->x0 + f];
  int64_t c = s->x0 + f / (s->KH * s->KW), kh = f / s->KW % s->KH, kw = f % s->KW;
  int64_t h = t / s->OW * s->stride[0] - s->pad[0] + kh * s->dil[0];
  int64_t w = t % s->OW * s->stride[1] - s->pad[1] + kw * s->dil[1];
  if (h < 0 || h >= s->H || w < 0 || w >= s->W) return 0;
  return s->x[((i * s->C + c) * s->H + h) * s->W + w];
}

static double dy_at(int64_t n, const MntkSite *s, int64_t i, int64_t t, int64_t o) {
  if (!s->conv) return s->dy[row(n, s, i, t) * s->ny + s->y0 + o];
  return s->dy[(i * s->ny + s->y0 + o) * s->tokens + t];
}

/* The Gram of explicitly formed per-sample gradients. */
static void gram_explicit(int64_t n, const MntkSite *s, double *G) {
  int64_t nf = (s->conv ? (s->x1 - s->x0) * s->KH * s->KW : s->x1 - s->x0) + (s->bias ? 1 : 0);
  int64_t no = s->y1 - s->y0;
  double *g = calloc(n * nf * no, sizeof(double));
  for (int64_t i = 0; i < n; i++)
    for (int64_t t = 0; t < s->tokens; t++)
      for (int64_t o = 0; o < no; o++)
        for (int64_t f = 0; f < nf; f++) g[(i * no + o) * nf + f] += dy_at(n, s, i, t, o) * x_at(n, s, i, t, f);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) {
      double acc = 0;
      for (int64_t e = 0; e < no * nf; e++) acc += g[i * no * nf + e] * g[j * no * nf + e];
      G[i * n + j] = acc;
    }
  free(g);
}

static void compare_methods(const char *name, int64_t n, MntkSite *s) {
  double *want = calloc(n * n, sizeof(double)), *got = calloc(n * n, sizeof(double));
  gram_explicit(n, s, want);
  const char *mname[3] = {"", "structured", "materialised"};
  for (int m = MNTK_STRUCTURED; m <= MNTK_MATERIALISED; m++) {
    s->method = m;
    memset(got, 0, sizeof(double) * n * n);
    int how = 0;
    double flops = mntk_site_gram(n, s, got, &how);
    if (how != m || flops <= 0) {
      failed++;
      printf("FAIL %s %s: method %d, flops %g\n", name, mname[m], how, flops);
      continue;
    }
    double scale = 0, err = 0;
    for (int64_t e = 0; e < n * n; e++) scale = fmax(scale, fabs(want[e]));
    for (int64_t e = 0; e < n * n; e++) err = fmax(err, fabs(got[e] - want[e]));
    char what[128];
    snprintf(what, sizeof what, "%s %s max |G - G_explicit| / max |G|", name, mname[m]);
    if (err / scale <= 1e-5) passed++;
    else {
      failed++;
      printf("FAIL %s: %.3g\n", what, err / scale);
    }
  }
  s->method = 0;
  free(want);
  free(got);
}

static float *random_buf(int64_t n) {
  float *b = malloc(sizeof(float) * n);
  for (int64_t i = 0; i < n; i++) b[i] = frand();
  return b;
}

int main(void) {
  /* Linear: n 5, tokens 3, 7 -> 6 features; slices and the bias. */
  int64_t n = 5;
  MntkSite s;
  memset(&s, 0, sizeof s);
  s.tokens = 3, s.nx = 7, s.ny = 6;
  float *x = random_buf(n * 3 * 7), *dy = random_buf(n * 3 * 6);
  s.x = x, s.dy = dy;
  s.x0 = 0, s.x1 = 7, s.y0 = 0, s.y1 = 6;
  compare_methods("linear whole", n, &s);
  s.bias = 1;
  compare_methods("linear whole+bias", n, &s);
  s.y0 = 2, s.y1 = 5;
  compare_methods("linear out-slice+bias", n, &s);
  s.bias = 0, s.y0 = 0, s.y1 = 6, s.x0 = 3, s.x1 = 6;
  compare_methods("linear in-slice", n, &s);
  s.x0 = 0, s.x1 = 7, s.y0 = 1, s.y1 = 4, s.bias = 1, s.outer = 3;   /* [S=3, n, 7] rows, as in [S, B, E] */
  compare_methods("linear sample axis second, out-slice+bias", n, &s);
  s.outer = 0;
  s.tokens = 1, s.nx = 21, s.x0 = 0, s.x1 = 21, s.bias = 1;   /* [n, 21] rows: an MLP layer */
  compare_methods("linear one token", n, &s);
  free(x);
  free(dy);

  /* Conv: C 3, 6 x 5 image, 3 x 2 kernel, stride (2, 1), pad (1, 0), dilation (1, 2). */
  memset(&s, 0, sizeof s);
  s.conv = 1;
  s.C = 3, s.H = 6, s.W = 5, s.KH = 3, s.KW = 2;
  s.stride[0] = 2, s.stride[1] = 1, s.pad[0] = 1, s.pad[1] = 0, s.dil[0] = 1, s.dil[1] = 2;
  s.OH = (6 + 2 * 1 - (3 - 1) * 1 - 1) / 2 + 1;
  s.OW = (5 - (2 - 1) * 2 - 1) / 1 + 1;
  s.tokens = s.OH * s.OW, s.ny = 4, s.nx = 3 * 3 * 2;
  x = random_buf(n * 3 * 6 * 5), dy = random_buf(n * 4 * s.tokens);
  s.x = x, s.dy = dy;
  s.x0 = 0, s.x1 = 3, s.y0 = 0, s.y1 = 4;
  compare_methods("conv whole", n, &s);
  s.bias = 1, s.y0 = 1, s.y1 = 3;
  compare_methods("conv filters 1-2 + bias", n, &s);
  s.bias = 0, s.y0 = 0, s.y1 = 4, s.x0 = 1, s.x1 = 3;
  compare_methods("conv input channels 1-2", n, &s);
  free(x);
  free(dy);

  /* Eigenvalues: diag(1, 5, 2) and [[2, 1], [1, 2]] (eigenvalues 1, 3). */
  double D[9] = {1, 0, 0, 0, 5, 0, 0, 0, 2}, M[4] = {2, 1, 1, 2}, lm, tr;
  int info = mntk_eig(3, D, &lm, &tr);
  check("diag lambda_max", info ? -1 : lm, 5, 1e-12);
  check("diag trace", tr, 8, 1e-12);
  info = mntk_eig(2, M, &lm, &tr);
  check("2x2 lambda_max", info ? -1 : lm, 3, 1e-12);
  check("2x2 trace", tr, 4, 1e-12);

  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
