/* mntk.h: per-module Gram matrices of per-sample gradients (the modular
 * NTK of MAT.md, items 2-3), their largest eigenvalue and trace. No LLVM
 * and no compiler dependency: an ahead-of-time trainer links this alone.
 *
 * A probe site is a linear map y_t = W x_t (+ b) applied to every token t
 * of every sample (Gemm, MatMul, or a 2-D Conv through im2col patches).
 * Sample i's gradient w.r.t. W (restricted to a slice) is
 * g_i = sum_t dy_it x_it^T, so
 *   <g_i, g_j> = sum_{t,s} (x_it . x_js) (dy_it . dy_js)        (structured)
 * or, forming g_i explicitly, a dot product of two I x O matrices
 * (materialised). mntk_site_gram picks the cheaper by FLOP count. A bias
 * is an extra input feature that is constantly 1. */
#ifndef MATC_MNTK_H
#define MATC_MNTK_H

#include <stdint.h>

typedef struct {
  /* Linear sites: x is [outer, n, tokens / outer, nx] and dy is
   * [outer, n, tokens / outer, ny], row-major: outer is 1 when the sample
   * axis leads (PyTorch's nn.MultiheadAttention runs its projections on
   * [S, B, E] rows: outer S). Sample i's token (o, r) is row
   * (o * n + i) * (tokens / outer) + r.
   * Conv sites: x is [n, C, H, W] and dy is [n, ny, OH, OW]; tokens is
   * OH * OW and nx is C * KH * KW (the im2col patch). */
  const float *x, *dy;
  int64_t tokens, nx, ny;
  int64_t outer;           /* row blocks before the sample axis; 0 means 1 */
  int64_t x0, x1;          /* input features in the slice: [x0, x1) */
  int64_t y0, y1;          /* output features in the slice: [y0, y1) */
  int bias;                /* the slice includes the bias of [y0, y1) */
  int conv;
  int64_t C, H, W, KH, KW, OH, OW;
  int64_t stride[2], pad[2], dil[2];   /* (h, w); pad is the leading pad */
  int method;              /* 0: the cheaper; MNTK_STRUCTURED or MNTK_MATERIALISED to force one */
} MntkSite;

/* How mntk_site_gram computed a site. */
enum { MNTK_STRUCTURED = 1, MNTK_MATERIALISED = 2 };

/* Adds the site's n x n Gram to G (row-major doubles; both triangles).
 * Returns the floating-point operations executed (GEMMs 2MNK, SYRK MNK,
 * products and sums 2 each; packing copies count zero), or -1 when out of
 * memory. *how (if not NULL) gets MNTK_STRUCTURED or MNTK_MATERIALISED. */
double mntk_site_gram(int64_t n, const MntkSite *s, double *G, int *how);

/* FLOPs each method would take for the site (what the choice compares). */
void mntk_site_cost(int64_t n, const MntkSite *s, double *structured, double *materialised);

/* Largest eigenvalue (LAPACK dsyevr) and trace of a symmetric n x n G.
 * Returns 0, or the LAPACK info code when it fails. */
int mntk_eig(int64_t n, const double *G, double *lambda_max, double *trace);

#endif
