/* nn.c: convolution, pooling, normalisation and resizing.
 *
 * Conv is Winograd F(2x2, 3x3) for 3x3 stride-1 convs with 16 or more
 * channels (see "Conv: Winograd" below), else im2col + GEMM. A loop
 * kernel copies every input window into a [N, G, Cg*k..., O...] buffer
 * whose innermost loop runs over the output width with a constant-stride
 * load, so LLVM vectorizes it; zero padding
 * is first materialised in a small padded copy of the input (clamped load
 * + select), which keeps the im2col loads purely affine. Then one batched
 * GEMM (a batch level per image and per group) multiplies the weights in.
 * Pooling and normalisation are loop kernels with reduction vars; per-row
 * statistics go to temporaries owned by the node. Resize precomputes, per
 * resized axis, the source taps and weights of every output coordinate at
 * compile time (shapes are static) and gathers through those tables. */
#include "../matc_internal.h"
#include "../../runtime/rt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NN_MAX_SP 4   /* spatial dims: each may need one clamped (dyn) load term */
#ifndef CONV_CHUNK_BYTES
#define CONV_CHUNK_BYTES (4 << 20)   /* im2col buffer per chunk of images */
#endif

/* ---------------------------------------------------------------- helpers */

static int has_in(Graph *g, int node, int j) {
  Node *n = &g->nodes[node];
  return j < n->nin && n->in[j] >= 0;
}

static int has_out(Graph *g, int node, int j) {
  Node *n = &g->nodes[node];
  return j < n->nout && n->out[j] >= 0;
}

static Value *in_val(Graph *g, int node, int j) { return &g->vals[g->nodes[node].in[j]]; }

static int need_inputs(Graph *g, int node, int min) {
  for (int j = 0; j < min; j++)
    if (!has_in(g, node, j)) return fail(g, node, j, "required input is missing");
  return MATC_OK;
}

static int need_float(Graph *g, int node, int j) {
  DType dt = in_val(g, node, j)->dt;
  if (dt != DT_F32 && dt != DT_F64)
    return unsupported(g, node, j, "%s on %s is not supported (float32 and float64 are)",
                       g->nodes[node].op_type, dt_name(dt));
  return MATC_OK;
}

static void set_out(Graph *g, int node, int j, DType dt, int rank, const int64_t *dims) {
  value_set(&g->vals[g->nodes[node].out[j]], dt, rank, dims);
}

/* A value only this node's kernels use (im2col buffer, statistics). */
#define new_temp value_scratch

/* A compile-time table (Resize taps, pooling divisors). */
static int new_table(Graph *g, int node, const char *what, DType dt, int rank, const int64_t *dims,
                     void **data) {
  int v = new_temp(g, node, what, dt, rank, dims);
  Tensor *t = tensor_new(g->arena, dt, rank, dims);
  g->vals[v].kind = V_CONST;
  g->vals[v].producer = -1;
  g->vals[v].data = t;
  *data = t->data;
  return v;
}

static void put_f(DType dt, void *p, int64_t i, double x) {
  if (dt == DT_F64) ((double *)p)[i] = x;
  else ((float *)p)[i] = (float)x;
}

static Expr *ci(Graph *g, int64_t v) { return e_consti(g, DT_I64, v); }
static Expr *bin(Graph *g, int op, Expr *a, Expr *b) { return e_bin(g, op, a, b); }
static Expr *and_(Graph *g, Expr *a, Expr *b) { return a ? e_bin(g, B_AND, a, b) : b; }
static Expr *clampi(Graph *g, Expr *x, int64_t lo, int64_t hi) {
  return bin(g, B_MIN, bin(g, B_MAX, x, ci(g, lo)), ci(g, hi));
}
static Expr *in_range(Graph *g, Expr *x, int64_t n) {   /* 0 <= x < n */
  return bin(g, B_AND, bin(g, B_GE, x, ci(g, 0)), bin(g, B_LT, x, ci(g, n)));
}
/* A load of val with strides given for every var (KMAX_VARS entries). */
static Expr *load(Graph *g, int val, const int64_t *st) { return e_load(g, val, 0, st, KMAX_VARS); }
/* Per-channel parameter p[c] at var `var`, cast to dt. */
static Expr *chan_load(Graph *g, int val, int var, DType dt) {
  int64_t st[KMAX_VARS] = {0};
  st[var] = 1;
  return e_cast(g, dt, load(g, val, st));
}

/* The smallest value of dt: max pooling's padding. */
static Expr *lowest(Graph *g, DType dt) {
  switch (dt) {
  case DT_F32: case DT_F64: return e_const(g, dt, -INFINITY);
  case DT_I8: return e_consti(g, dt, INT8_MIN);
  case DT_I16: return e_consti(g, dt, INT16_MIN);
  case DT_I32: return e_consti(g, dt, INT32_MIN);
  case DT_I64: return e_consti(g, dt, INT64_MIN);
  default: return e_consti(g, dt, 0);
  }
}

/* ---------------------------------------------------------------- window geometry */

typedef struct {
  int nsp;
  int64_t in[NN_MAX_SP], k[NN_MAX_SP], s[NN_MAX_SP], d[NN_MAX_SP];
  int64_t pb[NN_MAX_SP], pe[NN_MAX_SP], out[NN_MAX_SP];
} Geom;

static int read_ints(Graph *g, int node, const char *name, int64_t *out, int want, int64_t dflt) {
  int64_t buf[2 * MATC_MAX_RANK];
  int c = attr_ints(&g->nodes[node], name, buf, 2 * MATC_MAX_RANK);
  for (int i = 0; i < want; i++) out[i] = dflt;
  if (c < 0) return MATC_OK;
  if (c != want) return fail(g, node, -1, "'%s' has %d entries, expected %d", name, c, want);
  for (int i = 0; i < want; i++) out[i] = buf[i];
  return MATC_OK;
}

static int spatial_rank(Graph *g, int node, const Value *x) {
  int nsp = x->rank - 2;
  if (nsp < 1) return fail(g, node, 0, "input must have rank 3 or more, has %d", x->rank);
  if (nsp > NN_MAX_SP) return unsupported(g, node, 0, "more than %d spatial dims", NN_MAX_SP);
  return MATC_OK;
}

/* Strides, dilations, pads (explicit or auto_pad) and output sizes of a
 * conv or pool over x's spatial dims. */
static int geom_init(Graph *g, int node, const Value *x, const int64_t *kshape, int ceil_mode,
                     Geom *q) {
  int rc = spatial_rank(g, node, x);
  if (rc) return rc;
  int nsp = q->nsp = x->rank - 2;
  int64_t pads[2 * NN_MAX_SP];
  if (read_ints(g, node, "strides", q->s, nsp, 1) || read_ints(g, node, "dilations", q->d, nsp, 1) ||
      read_ints(g, node, "pads", pads, 2 * nsp, 0))
    return MATC_ERR;
  const char *ap = attr_s(&g->nodes[node], "auto_pad", "NOTSET");
  for (int i = 0; i < nsp; i++) {
    int64_t in = x->dims[2 + i], k = kshape[i], s = q->s[i], d = q->d[i];
    int64_t pb = pads[i], pe = pads[nsp + i], out;
    if (k < 1 || s < 1 || d < 1)
      return fail(g, node, -1, "kernel size, stride and dilation must be positive");
    if (pb < 0 || pe < 0) return unsupported(g, node, -1, "negative pads are not supported");
    int64_t dk = dim_mul(k - 1, d);
    if (dk < 0 || dk >= MATC_MAX_ELEMS || s > MATC_MAX_ELEMS || pb > MATC_MAX_ELEMS || pe > MATC_MAX_ELEMS)
      return fail(g, node, -1, "kernel %lld, stride %lld, dilation %lld or pads %lld, %lld pass the limit of 2^40",
                  (long long)k, (long long)s, (long long)d, (long long)pb, (long long)pe);
    dk += 1;
    if (!strcmp(ap, "SAME_UPPER") || !strcmp(ap, "SAME_LOWER")) {
      out = (in + s - 1) / s;
      int64_t tot = (out - 1) * s + dk - in;
      if (tot < 0) tot = 0;
      pb = ap[5] == 'U' ? tot / 2 : tot - tot / 2;
      pe = tot - pb;
    } else if (!strcmp(ap, "VALID")) {
      pb = pe = 0;
      if (in < dk) return fail(g, node, 0, "window %lld is larger than input %lld", (long long)dk, (long long)in);
      out = (in - dk) / s + 1;
    } else if (!strcmp(ap, "NOTSET") || !*ap) {
      int64_t span = in + pb + pe - dk;
      if (span < 0)
        return fail(g, node, 0, "window %lld is larger than the padded input %lld", (long long)dk,
                    (long long)(in + pb + pe));
      out = ceil_mode ? (span + s - 1) / s + 1 : span / s + 1;
      /* The last window must start inside the input or its left padding. */
      if (ceil_mode && (out - 1) * s >= in + pb) out--;
    } else {
      return fail(g, node, -1, "unknown auto_pad '%s'", ap);
    }
    q->in[i] = in; q->k[i] = k; q->pb[i] = pb; q->pe[i] = pe; q->out[i] = out;
  }
  return MATC_OK;
}

/* ---------------------------------------------------------------- Conv */

static int conv_setup(Graph *g, int node, int transpose, int64_t *group, int64_t *ks) {
  int rc;
  if ((rc = need_inputs(g, node, 2)) || (rc = need_float(g, node, 0))) return rc;
  Value *x = in_val(g, node, 0), *w = in_val(g, node, 1);
  if ((rc = spatial_rank(g, node, x))) return rc;
  if (w->dt != x->dt) return fail(g, node, 1, "data type does not match X's");
  if (w->rank != x->rank) return fail(g, node, 1, "W has rank %d, X has rank %d", w->rank, x->rank);
  int nsp = x->rank - 2;
  int64_t ka[MATC_MAX_RANK];
  int c = attr_ints(&g->nodes[node], "kernel_shape", ka, MATC_MAX_RANK);
  for (int i = 0; i < nsp; i++) {
    ks[i] = w->dims[2 + i];
    if (c >= 0 && (c != nsp || ka[i] != ks[i]))
      return fail(g, node, 1, "kernel_shape does not match W's shape");
  }
  int64_t G = *group = attr_i(&g->nodes[node], "group", 1);
  int64_t C = x->dims[1];
  if (G < 1 || G > (C > 1 ? C : 1) || C % G || (!transpose && (w->dims[0] % G || dim_mul(w->dims[1], G) != C)) ||
      (transpose && w->dims[0] != C))
    return fail(g, node, 1, "W's shape does not fit %lld input channels in %lld groups",
                (long long)C, (long long)G);
  int64_t M = transpose ? dim_mul(w->dims[1], G) : w->dims[0];
  if (M < 0) return fail(g, node, 1, "%lld groups of %lld output channels pass the limit of 2^40", (long long)G,
                         (long long)w->dims[1]);
  if (has_in(g, node, 2)) {
    Value *b = in_val(g, node, 2);
    if (b->rank != 1 || b->dims[0] != M || b->dt != x->dt)
      return fail(g, node, 2, "bias must be a vector of %lld %s", (long long)M, dt_name(x->dt));
  }
  return MATC_OK;
}

int infer_conv(Graph *g, int node) {
  int64_t G, ks[MATC_MAX_RANK];
  Geom q;
  int rc = conv_setup(g, node, 0, &G, ks);
  if (rc || (rc = geom_init(g, node, in_val(g, node, 0), ks, 0, &q))) return rc;
  Value *x = in_val(g, node, 0);
  int64_t d[MATC_MAX_RANK] = {x->dims[0], in_val(g, node, 1)->dims[0]};
  for (int i = 0; i < q.nsp; i++) d[2 + i] = q.out[i];
  set_out(g, node, 0, x->dt, x->rank, d);
  return MATC_OK;
}

/* Copy of x ([rows, in...]) with its zero padding, so that im2col reads
 * it with plain affine loads. sd receives the padded spatial dims. */
static int emit_pad(Graph *g, int node, int x, const Geom *q, int64_t rows, int64_t *sd) {
  DType dt = g->vals[x].dt;
  int nsp = q->nsp;
  int64_t ext[KMAX_VARS], xst[NN_MAX_SP], st[KMAX_VARS] = {0};
  shape_strides(nsp, q->in, xst);
  ext[0] = rows;
  st[0] = shape_nelem(nsp, q->in);
  for (int i = 0; i < nsp; i++) ext[1 + i] = sd[i] = q->in[i] + q->pb[i] + q->pe[i];
  int t = new_temp(g, node, "padded", dt, 1 + nsp, ext);
  Kernel *k = k_loop(g, node, t, 1 + nsp, ext);
  shape_strides(1 + nsp, ext, k->out_stride);
  Expr *ld = load(g, x, st), *ok = NULL;
  for (int i = 0; i < nsp; i++) {
    if (!q->pb[i] && !q->pe[i]) {
      ld->stride[1 + i] = xst[i];
      continue;
    }
    Expr *pos = bin(g, B_SUB, e_index(g, 1 + i), ci(g, q->pb[i]));
    e_load_dyn(ld, clampi(g, pos, 0, q->in[i] - 1), xst[i]);
    ok = and_(g, ok, in_range(g, pos, q->in[i]));
  }
  k->body = ok ? e_sel(g, ok, ld, e_const(g, dt, 0)) : ld;
  return t;
}

/* col[c, k..., n, o...] = src[n0 + n, c, o*s + k*d ...] for nb images of
 * src [N, C, sd...]: channel-major with the images side by side, so that
 * one GEMM covers them all. The innermost var is the last output dim, a
 * stride-s load that vectorizes. */
static void emit_im2col(Graph *g, int node, int src, int col, const Geom *q, int64_t n0, int64_t nb,
                        int64_t C, const int64_t *sd) {
  int nsp = q->nsp, nv = 2 + 2 * nsp;
  int64_t ext[KMAX_VARS], os[KMAX_VARS], sst[NN_MAX_SP], ost[NN_MAX_SP], kst[NN_MAX_SP];
  int64_t st[KMAX_VARS] = {0};
  int64_t inner = shape_nelem(nsp, sd), P = shape_nelem(nsp, q->out);
  shape_strides(nsp, sd, sst);
  shape_strides(nsp, q->out, ost);
  shape_strides(nsp, q->k, kst);
  /* The outer var is the one the thread pool splits: the larger of C, nb. */
  int cv = C >= nb ? 0 : 1, nvr = 1 - cv;
  ext[cv] = C;
  st[cv] = inner;
  os[cv] = shape_nelem(nsp, q->k) * nb * P;
  ext[nvr] = nb;
  st[nvr] = C * inner;
  os[nvr] = P;
  for (int i = 0; i < nsp; i++) {
    ext[2 + i] = q->k[i];
    st[2 + i] = q->d[i] * sst[i];
    os[2 + i] = kst[i] * nb * P;
    ext[2 + nsp + i] = q->out[i];
    st[2 + nsp + i] = q->s[i] * sst[i];
    os[2 + nsp + i] = ost[i];
  }
  Kernel *k = k_loop(g, node, col, nv, ext);
  memcpy(k->out_stride, os, sizeof(int64_t) * nv);
  k->body = e_load(g, src, n0 * C * inner, st, KMAX_VARS);
}

static void gemm_params(Kernel *k, DType dt, int ta, int64_t M, int64_t N, int64_t K, int64_t lda,
                        double beta) {
  k->np = GEMM_NPARAMS;
  k->p[GEMM_DT] = dt;
  k->p[GEMM_TA] = ta;
  k->p[GEMM_TB] = 0;
  k->p[GEMM_M] = M;
  k->p[GEMM_N] = N;
  k->p[GEMM_K] = K;
  k->p[GEMM_LDA] = lda;
  k->p[GEMM_LDB] = N;
  k->p[GEMM_LDC] = N;
  k->p[GEMM_ALPHA] = matc_rt_f64_bits(1.0);
  k->p[GEMM_BETA] = matc_rt_f64_bits(beta);
  k->p[GEMM_NB] = 0;
}

/* Adds a GEMM batch level (skipped when it has one iteration). */
static void gemm_level(Kernel *k, int64_t cnt, int64_t sa, int64_t sb, int64_t sc) {
  if (cnt == 1) return;
  int64_t *l = k->p + GEMM_BATCH + 4 * k->p[GEMM_NB]++;
  l[0] = cnt; l[1] = sa; l[2] = sb; l[3] = sc;
}

/* ---------------------------------------------------------------- Conv: Winograd F(2x2, 3x3)
 *
 * A 3x3, stride-1, undilated, ungrouped 2-D conv with enough channels
 * (a VGG/ResNet body conv, and the dX of one, which autodiff emits as such
 * a conv) runs as Winograd's minimal filtering F(2x2, 3x3): each 2x2
 * output tile is A^T [(G w G^T) .* (B^T d B)] A of its 4x4 input tile d.
 * The channel contraction becomes 16 GEMMs [M, C] x [C, tiles], 2.25
 * times fewer multiply-adds than im2col's, and the input is copied 4
 * times (the transformed tiles) instead of 9.
 *
 * Layout: the transforms are loop kernels of a few signed taps, and they
 * vectorize only along a long innermost loop, so the input is first staged
 * as [C, rows, N, Wp] (every image's zero-padded row side by side): one
 * row of tiles then runs across all images, N * Wp / 2 tiles long. An
 * image whose padded width is even contributes one junk tile per row (the
 * one straddling into the next image), computed and dropped (or, for dW,
 * multiplied by zeros); one with an odd width shares its padding with the
 * next and has none (wg_grid).
 * The output tiles land in the same staged layout and one copy puts them
 * back into NCHW. MATC_WINOGRAD=0 at compile time keeps im2col (for
 * side-by-side measurements).
 *
 * Each transform's 16 (or 4, or 9) tile points are separate kernels
 * marked `join`: code generation runs them in one loop nest, so the
 * staged input is read once for all 16 instead of once per point
 * (vgg-small's 28x28 input transform: 3.5 -> 2.5 ms). */

#define WG_MIN_CHANNELS 16   /* below, the [M, C] x [C, *] GEMMs are too thin to pay */

static const double WG_BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
static const double WG_G[4][3] = {{1, 0, 0}, {.5, .5, .5}, {.5, -.5, .5}, {0, 0, 1}};
static const double WG_AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};

/* sum + c * t, dropping zero coefficients and folding +-1. */
static Expr *wg_term(Graph *g, DType dt, Expr *sum, double c, Expr *t) {
  if (c == 0) return sum;
  if (c != 1 && c != -1) t = bin(g, B_MUL, e_const(g, dt, c), t);
  if (!sum) return c == -1 ? e_un(g, U_NEG, t) : t;
  return bin(g, c == -1 ? B_SUB : B_ADD, sum, t);
}

static int winograd_fits(const Geom *q, DType dt, int64_t G, int64_t C, int64_t M) {
  const char *env = getenv("MATC_WINOGRAD");
  if ((env && *env == '0') || (dt != DT_F32 && dt != DT_F64) || q->nsp != 2 || G != 1 ||
      C < WG_MIN_CHANNELS || M < WG_MIN_CHANNELS)
    return 0;
  for (int i = 0; i < 2; i++)
    if (q->k[i] != 3 || q->s[i] != 1 || q->d[i] != 1) return 0;
  return 1;
}

/* The tile grid of a conv's output: th x tw tiles of 2x2 per image; staged
 * rows are R = N * Wp long and hold X = R / 2 tile columns.
 *
 * Wp, an image's share of a staged row, is even (tiles start at even
 * columns) and as small as allows: the image's left padding and W input
 * columns fit (pb + W <= Wp), and the columns its real outputs read past
 * its own share are the next image's left padding, which is zero
 * (Wo + 2 - Wp <= pb). Every tile column past the tw-th is junk: computed
 * and dropped. A 7-wide image with padding 1 takes Wp = 8 (4 tiles, none
 * junk; 10 with a junk tile if images shared no padding), a 14-wide one
 * Wp = 16 (one junk tile of 8). */
typedef struct {
  int64_t N, Ho, Wo, th, tw, Wp, R, X, NX;
} WgGrid;

static WgGrid wg_grid(int64_t N, int64_t Ho, int64_t Wo, int64_t W, int64_t pb) {
  WgGrid t = {.N = N, .Ho = Ho, .Wo = Wo, .th = (Ho + 1) / 2, .tw = (Wo + 1) / 2};
  int64_t wp = 2 * t.tw;
  if (wp < pb + W) wp = pb + W;
  if (wp < Wo + 2 - pb) wp = Wo + 2 - pb;
  t.Wp = (wp + 1) / 2 * 2;
  t.R = N * t.Wp;
  t.X = t.R / 2;
  t.NX = t.th * t.X;
  return t;
}

/* Zeros into the [C, rows, N, cols] box of a staged buffer at off. */
static void wg_zero(Graph *g, int node, int dst, int64_t off, const int64_t *ext, const int64_t *st) {
  if (!ext[0] || !ext[1] || !ext[2] || !ext[3]) return;
  Kernel *k = k_loop(g, node, dst, 4, ext);
  k->out_off = off;
  memcpy(k->out_stride, st, 4 * sizeof(int64_t));
  k->body = e_const(g, g->vals[dst].dt, 0);
}

/* dst[c, r, n, w] = src[n, c, r - top, w - left] (zero outside src's
 * [H, W]) for rows x R: the staged layout above. A plain copy of the
 * interior plus zeros around it, all of which vectorize (one kernel
 * would need clamped loads at every element). */
static int wg_stage(Graph *g, int node, int src, const WgGrid *t, int64_t rows, int64_t top, int64_t left) {
  const Value *s = &g->vals[src];
  int64_t C = s->dims[1], H = s->dims[2], W = s->dims[3], R = t->R, Wp = t->Wp, N = t->N;
  int64_t ext[4] = {C, rows, N, Wp}, st[4] = {rows * R, R, Wp, 1};
  int dst = new_temp(g, node, "winograd_staged", s->dt, 4, ext);
  Kernel *k = k_loop(g, node, dst, 4, (int64_t[]){C, H, N, W});
  k->out_off = top * R + left;
  memcpy(k->out_stride, st, sizeof st);
  k->body = load(g, src, (int64_t[KMAX_VARS]){H * W, W, C * H * W, 1});
  wg_zero(g, node, dst, 0, (int64_t[]){C, top, N, Wp}, st);
  wg_zero(g, node, dst, (top + H) * R, (int64_t[]){C, rows - top - H, N, Wp}, st);
  wg_zero(g, node, dst, top * R, (int64_t[]){C, H, N, left}, st);
  wg_zero(g, node, dst, top * R + left + W, (int64_t[]){C, H, N, Wp - left - W}, st);
  return dst;
}

/* V[ab][c, ty, X] = sum_ij BT[a][i] BT[b][j] P[c, 2ty + i, 2X + j] over the
 * staged input P [C, 2 * th + 3, R] (one spare zero row for the last
 * tile's overhang): 16 loop kernels of 4 signed taps each. */
static void wg_input_tiles(Graph *g, int node, int p, int v, const double (*BT)[4], int64_t C, const WgGrid *t) {
  DType dt = g->vals[v].dt;
  int64_t plane = (2 * t->th + 3) * t->R;
  for (int a = 0; a < 4; a++)
    for (int b = 0; b < 4; b++) {
      Kernel *k = k_loop(g, node, v, 3, (int64_t[]){C, t->th, t->X});
      k->join = a || b;
      k->out_off = (a * 4 + b) * C * t->NX;
      shape_strides(3, k->ext, k->out_stride);
      Expr *s = NULL;
      for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
          s = wg_term(g, dt, s, BT[a][i] * BT[b][j],
                      e_load(g, p, i * t->R + j, (int64_t[KMAX_VARS]){plane, 2 * t->R, 2}, KMAX_VARS));
      k->body = s;
    }
}

/* x [N, C, H, W] staged for its tiles: the conv's top/left padding, zeros
 * below and right up to 2 * th + 3 rows and Wp columns. */
static int wg_stage_input(Graph *g, int node, int x, const Geom *q, const WgGrid *t) {
  return wg_stage(g, node, x, t, 2 * t->th + 3, q->pb[0], q->pb[1]);
}

/* The batched GEMM of the 16 tile points: out[ab] = A[ab] B[ab] (B[ab]^T
 * when tb), a [m, k] times [k, n] product per point. */
static void wg_gemm(Graph *g, int node, int a, int b, int out, int tb, int64_t m, int64_t n, int64_t k) {
  Kernel *kg = k_extern(g, node, EXT_gemm);
  k_arg(kg, a, 0);
  k_arg(kg, b, 0);
  k_arg(kg, out, 0);
  gemm_params(kg, g->vals[out].dt, 0, m, n, k, k, 0.0);
  kg->p[GEMM_TB] = tb;
  kg->p[GEMM_LDB] = tb ? k : n;
  gemm_level(kg, 16, m * k, k * n, m * n);
}

static int lower_conv_winograd(Graph *g, int node, const Geom *q) {
  Node *n = &g->nodes[node];
  int x = n->in[0], w = n->in[1], y = n->out[0];
  DType dt = g->vals[x].dt;
  int64_t C = g->vals[x].dims[1], M = g->vals[w].dims[0];
  WgGrid t = wg_grid(g->vals[x].dims[0], q->out[0], q->out[1], g->vals[x].dims[3], q->pb[1]);
  int p = wg_stage_input(g, node, x, q, &t);
  int u = new_temp(g, node, "winograd_w", dt, 3, (int64_t[]){16, M, C});
  int v = new_temp(g, node, "winograd_in", dt, 3, (int64_t[]){16, C, t.NX});
  int mm = new_temp(g, node, "winograd_prod", dt, 3, (int64_t[]){16, M, t.NX});
  int ys = new_temp(g, node, "winograd_out", dt, 3, (int64_t[]){M, 2 * t.th, t.R});
  /* U[ab][m, c] = sum_ij G[a][i] G[b][j] w[m, c, i, j] */
  for (int a = 0; a < 4; a++)
    for (int b = 0; b < 4; b++) {
      Kernel *k = k_loop(g, node, u, 2, (int64_t[]){M, C});
      k->join = a || b;
      k->out_off = (a * 4 + b) * M * C;
      shape_strides(2, k->ext, k->out_stride);
      Expr *s = NULL;
      for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
          s = wg_term(g, dt, s, WG_G[a][i] * WG_G[b][j],
                      e_load(g, w, i * 3 + j, (int64_t[KMAX_VARS]){C * 9, 9}, KMAX_VARS));
      k->body = s;
    }
  wg_input_tiles(g, node, p, v, WG_BT, C, &t);
  wg_gemm(g, node, u, v, mm, 0, M, t.NX, C);
  /* Ys[m, 2ty + r, 2X + c] = sum_ab AT[r][a] AT[c][b] Prod[ab][m, ty, X] */
  for (int r = 0; r < 2; r++)
    for (int c = 0; c < 2; c++) {
      Kernel *k = k_loop(g, node, ys, 3, (int64_t[]){M, t.th, t.X});
      k->join = r || c;
      k->out_off = r * t.R + c;
      memcpy(k->out_stride, (int64_t[]){2 * t.th * t.R, 2 * t.R, 2}, 3 * sizeof(int64_t));
      Expr *s = NULL;
      for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++)
          s = wg_term(g, dt, s, WG_AT[r][a] * WG_AT[c][b],
                      e_load(g, mm, (a * 4 + b) * M * t.NX, (int64_t[KMAX_VARS]){t.NX, t.X, 1}, KMAX_VARS));
      k->body = s;
    }
  /* y[n, m, i, j] = Ys[m, i, n * Wp + j] (+ bias[m]) */
  Kernel *k = k_elementwise(g, node, y);
  Expr *s = load(g, ys, (int64_t[KMAX_VARS]){t.Wp, 2 * t.th * t.R, t.R, 1});
  k->body = has_in(g, node, 2) ? bin(g, B_ADD, s, chan_load(g, n->in[2], 1, dt)) : s;
  return MATC_OK;
}

static int lower_conv_kernels(Graph *g, int node) {
  int64_t G, ks[MATC_MAX_RANK];
  Geom q;
  int rc = conv_setup(g, node, 0, &G, ks);
  if (rc || (rc = geom_init(g, node, in_val(g, node, 0), ks, 0, &q))) return rc;
  Node *n = &g->nodes[node];
  int x = n->in[0], w = n->in[1], y = n->out[0];
  DType dt = g->vals[x].dt;
  int64_t N = g->vals[x].dims[0], C = g->vals[x].dims[1], M = g->vals[w].dims[0];
  int64_t kk = 1, P = 1, pad = 0, unit = 1, sd[NN_MAX_SP];
  for (int i = 0; i < q.nsp; i++) {
    kk *= q.k[i];
    P *= q.out[i];
    pad |= q.pb[i] | q.pe[i];
    if (q.k[i] != 1 || q.s[i] != 1) unit = 0;
    sd[i] = q.in[i];
  }
  int64_t Cg = C / G, Mg = M / G, K = Cg * kk;
  if (winograd_fits(&q, dt, G, C, M)) return lower_conv_winograd(g, node, &q);
  int bias = has_in(g, node, 2);
  int src = pad ? emit_pad(g, node, x, &q, N * C, sd) : x;
  /* Images per im2col chunk: enough for a large GEMM, few enough that the
   * buffer stays in cache between im2col and GEMM; chunks balanced. A 1x1
   * stride-1 conv multiplies the (padded) input directly. */
  int64_t per_img = C * kk * P * dt_size(dt);
  int64_t nb = unit ? 1 : CONV_CHUNK_BYTES / (per_img ? per_img : 1);
  nb = nb < 1 ? 1 : nb > N ? N : nb;
  nb = (N + (N + nb - 1) / nb - 1) / ((N + nb - 1) / nb);
  int col = src;
  if (!unit) col = new_temp(g, node, "im2col", dt, 1, (int64_t[]){C * kk * nb * P});
  if (bias) {
    Kernel *kb = k_elementwise(g, node, y);
    kb->body = chan_load(g, n->in[2], 1, dt);
  }
  if (unit) {
    Kernel *k = k_extern(g, node, EXT_gemm);
    k_arg(k, w, 0);
    k_arg(k, col, 0);
    k_arg(k, y, 0);
    gemm_params(k, dt, 0, Mg, P, K, K, bias ? 1.0 : 0.0);
    gemm_level(k, N, 0, C * P, M * P);
    gemm_level(k, G, Mg * K, K * P, Mg * P);
    return MATC_OK;
  }
  /* One GEMM per image and group of the chunk, y[n0 + n, m, p] = W[m, :]
   * col[:, n, p]: each writes its image's [Mg, P] block of y in place
   * (ldb skips the chunk's other images), so no [M, nb*P] result has to
   * be transposed to NCHW afterwards; the pool splits the images. */
  for (int64_t n0 = 0; n0 < N; n0 += nb) {
    int64_t cnt = N - n0 < nb ? N - n0 : nb;
    emit_im2col(g, node, src, col, &q, n0, cnt, C, sd);
    Kernel *k = k_extern(g, node, EXT_gemm);
    k_arg(k, w, 0);
    k_arg(k, col, 0);
    k_arg(k, y, n0 * M * P);
    gemm_params(k, dt, 0, Mg, P, K, K, bias ? 1.0 : 0.0);
    k->p[GEMM_LDB] = cnt * P;
    gemm_level(k, cnt, 0, P, M * P);
    gemm_level(k, G, Mg * K, K * cnt * P, Mg * P);
  }
  return MATC_OK;
}

/* Conv's kernels (im2col or Winograd copies and transforms over large
 * constant extents) are not unrolled: unrolling their vectorized loops
 * took most of the compile time (vgg-small's `matc train` started in 37.7 s
 * instead of 9.5 s with Winograd, 16.9 s instead of 5.2 s with im2col) and
 * gained no step time. */
static int no_unroll_since(Graph *g, int k0, int rc) {
  for (int i = k0; i < g->nkernels; i++) g->kernels[i].no_unroll = 1;
  return rc;
}

int lower_conv(Graph *g, int node) {
  int k0 = g->nkernels;
  return no_unroll_since(g, k0, lower_conv_kernels(g, node));
}

/* ---------------------------------------------------------------- ConvTranspose */

static int convt_geom(Graph *g, int node, Geom *q, int64_t *group) {
  int64_t ks[MATC_MAX_RANK];
  int rc = conv_setup(g, node, 1, group, ks);
  if (rc) return rc;
  Value *x = in_val(g, node, 0);
  int nsp = q->nsp = x->rank - 2;
  int64_t pads[2 * NN_MAX_SP], op[NN_MAX_SP], os[MATC_MAX_RANK];
  if (read_ints(g, node, "strides", q->s, nsp, 1) || read_ints(g, node, "dilations", q->d, nsp, 1) ||
      read_ints(g, node, "pads", pads, 2 * nsp, 0) ||
      read_ints(g, node, "output_padding", op, nsp, 0))
    return MATC_ERR;
  int nos = attr_ints(&g->nodes[node], "output_shape", os, MATC_MAX_RANK);
  if (nos == x->rank) {   /* some exporters give the full shape */
    memmove(os, os + 2, sizeof(int64_t) * nsp);
    nos = nsp;
  }
  if (nos >= 0 && nos != nsp) return fail(g, node, -1, "output_shape has %d entries", nos);
  const char *ap = attr_s(&g->nodes[node], "auto_pad", "NOTSET");
  int same = !strcmp(ap, "SAME_UPPER") || !strcmp(ap, "SAME_LOWER");
  for (int i = 0; i < nsp; i++) {
    int64_t in = x->dims[2 + i], s = q->s[i], d = q->d[i];
    if (s < 1 || d < 1) return fail(g, node, -1, "stride and dilation must be positive");
    const int64_t L = MATC_MAX_ELEMS;
    int64_t span = in > 0 ? dim_mul(s, in - 1) : -s, reach = dim_mul(ks[i] - 1, d);
    if (s > L || span < -L || reach < 0 || op[i] < -L || op[i] > L || pads[i] < -L || pads[i] > L ||
        pads[nsp + i] < -L || pads[nsp + i] > L || (nos >= 0 && (os[i] < -L || os[i] > L)))
      return fail(g, node, -1, "stride, dilation, pads, output_padding or output_shape pass the limit of 2^40");
    int64_t full = span + op[i] + reach + 1;
    int64_t pb = pads[i], pe = pads[nsp + i], out;
    if (nos >= 0 || same) {
      out = nos >= 0 ? os[i] : dim_mul(in, s);
      int64_t tot = full - out, half = tot >= 0 ? tot / 2 : -((1 - tot) / 2);   /* floor */
      pb = !strcmp(ap, "SAME_UPPER") ? half : tot - half;
      pe = tot - pb;
    } else {
      out = full - pb - pe;
    }
    if (out < 1) return fail(g, node, -1, "output size %lld is not positive", (long long)out);
    q->in[i] = in; q->k[i] = ks[i]; q->pb[i] = pb; q->pe[i] = pe; q->out[i] = out;
  }
  return MATC_OK;
}

int infer_conv_transpose(Graph *g, int node) {
  Geom q;
  int64_t G;
  int rc = convt_geom(g, node, &q, &G);
  if (rc) return rc;
  Value *x = in_val(g, node, 0);
  int64_t d[MATC_MAX_RANK] = {x->dims[0], dim_mul(in_val(g, node, 1)->dims[1], G)};
  for (int i = 0; i < q.nsp; i++) d[2 + i] = q.out[i];
  set_out(g, node, 0, x->dt, x->rank, d);
  return MATC_OK;
}

/* GEMM into col[n, g, mg, k..., i...] = W[g]^T X[n, g], then a gather
 * (col2im) where each output point sums the taps that land on it:
 * o = i*s + k*d - pb, so i = (o + pb - k*d) / s when that divides. */
int lower_conv_transpose(Graph *g, int node) {
  Geom q;
  int64_t G;
  int rc = convt_geom(g, node, &q, &G);
  if (rc) return rc;
  Node *n = &g->nodes[node];
  int x = n->in[0], w = n->in[1], y = n->out[0];
  DType dt = g->vals[x].dt;
  int nsp = q.nsp;
  int64_t N = g->vals[x].dims[0], C = g->vals[x].dims[1], Mg = g->vals[w].dims[1];
  int64_t M = Mg * G, Cg = C / G, kk = shape_nelem(nsp, q.k), Pin = shape_nelem(nsp, q.in);
  int64_t cd[2] = {N * M, kk * Pin};
  int col = new_temp(g, node, "col", dt, 2, cd);
  Kernel *k = k_extern(g, node, EXT_gemm);
  k_arg(k, w, 0);
  k_arg(k, x, 0);
  k_arg(k, col, 0);
  gemm_params(k, dt, 1, Mg * kk, Pin, Cg, Mg * kk, 0.0);
  gemm_level(k, N, 0, C * Pin, M * kk * Pin);
  gemm_level(k, G, Cg * Mg * kk, Cg * Pin, Mg * kk * Pin);

  int64_t ext[KMAX_VARS], kst[NN_MAX_SP], ist[NN_MAX_SP], st[KMAX_VARS] = {0};
  shape_strides(nsp, q.k, kst);
  shape_strides(nsp, q.in, ist);
  ext[0] = N * M;
  st[0] = kk * Pin;
  for (int i = 0; i < nsp; i++) {
    ext[1 + i] = q.out[i];
    ext[1 + nsp + i] = q.k[i];
    st[1 + nsp + i] = kst[i] * Pin;
  }
  k = k_loop(g, node, y, 1 + nsp, ext);
  shape_strides(1 + nsp, ext, k->out_stride);
  k->nred = nsp;
  for (int i = 0; i < nsp; i++) k->ext[1 + nsp + i] = q.k[i];
  Expr *ld = load(g, col, st), *ok = NULL;
  for (int i = 0; i < nsp; i++) {
    Expr *t = bin(g, B_SUB, bin(g, B_ADD, e_index(g, 1 + i), ci(g, q.pb[i])),
                  bin(g, B_MUL, e_index(g, 1 + nsp + i), ci(g, q.d[i])));
    Expr *tc = bin(g, B_MAX, t, ci(g, 0)), *iv = tc;
    Expr *v = bin(g, B_GE, t, ci(g, 0));
    if (q.s[i] > 1) {
      iv = bin(g, B_DIV, tc, ci(g, q.s[i]));
      v = bin(g, B_AND, v, bin(g, B_EQ, bin(g, B_MUL, iv, ci(g, q.s[i])), tc));
    }
    v = bin(g, B_AND, v, bin(g, B_LT, iv, ci(g, q.in[i])));
    e_load_dyn(ld, bin(g, B_MIN, iv, ci(g, q.in[i] - 1)), ist[i]);
    ok = and_(g, ok, v);
  }
  k->body = e_sel(g, ok, ld, e_const(g, dt, 0));
  k->red = R_SUM;
  if (has_in(g, node, 2)) {
    int64_t zs[KMAX_VARS] = {0};
    Expr *b = load(g, n->in[2], zs);   /* b[row % M] */
    e_load_dyn(b, bin(g, B_IMOD, e_index(g, 0), ci(g, M)), 1);
    k->post = bin(g, B_ADD, e_acc(g, dt), b);
  }
  return MATC_OK;
}

/* ---------------------------------------------------------------- pooling */

typedef enum { PK_MAX, PK_AVG, PK_LP } PoolKind;

static PoolKind pool_kind(int op) {
  if (op == OP_MaxPool || op == OP_GlobalMaxPool) return PK_MAX;
  if (op == OP_AveragePool || op == OP_GlobalAveragePool) return PK_AVG;
  return PK_LP;
}

static int pool_geom(Graph *g, int node, Geom *q) {
  int rc;
  if ((rc = need_inputs(g, node, 1))) return rc;
  Node *n = &g->nodes[node];
  Value *x = in_val(g, node, 0);
  if (n->op != OP_MaxPool && (rc = need_float(g, node, 0))) return rc;
  if (n->op == OP_MaxPool && (x->dt == DT_BOOL || !dt_size(x->dt)))
    return unsupported(g, node, 0, "MaxPool on %s is not supported", dt_name(x->dt));
  if ((rc = spatial_rank(g, node, x))) return rc;
  int64_t ks[MATC_MAX_RANK];
  int c = attr_ints(n, "kernel_shape", ks, MATC_MAX_RANK);
  if (c != x->rank - 2) return fail(g, node, -1, "kernel_shape must have %d entries", x->rank - 2);
  if (n->op == OP_MaxPool && attr_i(n, "storage_order", 0) && has_out(g, node, 1) && x->rank != 4)
    return unsupported(g, node, -1, "storage_order=1 needs a 4-D input");
  return geom_init(g, node, x, ks, (int)attr_i(n, "ceil_mode", 0), q);
}

int infer_pool(Graph *g, int node) {
  Geom q;
  int rc = pool_geom(g, node, &q);
  if (rc) return rc;
  Value *x = in_val(g, node, 0);
  int64_t d[MATC_MAX_RANK] = {x->dims[0], x->dims[1]};
  for (int i = 0; i < q.nsp; i++) d[2 + i] = q.out[i];
  set_out(g, node, 0, x->dt, x->rank, d);
  if (g->nodes[node].op == OP_MaxPool && has_out(g, node, 1)) set_out(g, node, 1, DT_I64, x->rank, d);
  return MATC_OK;
}

/* x at one window tap of output point (vars 1..nsp): the tap is reduction
 * vars kvar0.. or, with kc, constants. A dim whose windows never leave the
 * input is an affine term; otherwise its index is clamped and *ok gets
 * the in-bounds test (NULL when every tap is in bounds). */
static Expr *window_load(Graph *g, int x, const Geom *q, int kvar0, const int64_t *kc, Expr **ok) {
  int64_t xst[NN_MAX_SP], st[KMAX_VARS] = {0};
  shape_strides(q->nsp, q->in, xst);
  st[0] = shape_nelem(q->nsp, q->in);
  Expr *ld = load(g, x, st);
  *ok = NULL;
  for (int i = 0; i < q->nsp; i++) {
    int64_t s = q->s[i], d = q->d[i], pb = q->pb[i];
    int64_t kmin = kc ? kc[i] : 0, kmax = kc ? kc[i] : q->k[i] - 1;
    if (kmin * d - pb >= 0 && (q->out[i] - 1) * s + kmax * d - pb < q->in[i]) {
      ld->stride[1 + i] += s * xst[i];
      if (kc) ld->off += (kc[i] * d - pb) * xst[i];
      else {
        ld->stride[kvar0 + i] += d * xst[i];
        ld->off -= pb * xst[i];
      }
      continue;
    }
    Expr *kt = kc ? ci(g, kc[i] * d - pb)
                  : bin(g, B_SUB, bin(g, B_MUL, e_index(g, kvar0 + i), ci(g, d)), ci(g, pb));
    Expr *pos = bin(g, B_ADD, bin(g, B_MUL, e_index(g, 1 + i), ci(g, s)), kt);
    e_load_dyn(ld, clampi(g, pos, 0, q->in[i] - 1), xst[i]);
    *ok = and_(g, *ok, in_range(g, pos, q->in[i]));
  }
  return ld;
}

/* What one tap contributes: padding is -inf for max and 0 for the sums. */
static Expr *pool_term(Graph *g, PoolKind pk, Expr *x, Expr *ok, double p) {
  DType dt = x->dt;
  if (pk == PK_LP) {
    Expr *ax = e_un(g, U_ABS, x);
    x = p == 1 ? ax : p == 2 ? bin(g, B_MUL, x, x) : bin(g, B_POW, ax, e_const(g, dt, p));
  }
  if (!ok) return x;
  return e_sel(g, ok, x, pk == PK_MAX ? lowest(g, dt) : e_const(g, dt, 0));
}

static Expr *pool_final(Graph *g, PoolKind pk, Expr *acc, Expr *div, double p) {
  if (pk == PK_AVG) return bin(g, B_DIV, acc, div);
  if (pk == PK_LP)
    return p == 1 ? acc : p == 2 ? e_un(g, U_SQRT, acc) : bin(g, B_POW, acc, e_const(g, acc->dt, 1 / p));
  return acc;
}

/* AveragePool's divisor: the taps of each window inside the input (or
 * inside the padded input with count_include_pad). A constant when every
 * window has the same count, else a table over the output points. */
static Expr *avg_divisor(Graph *g, int node, const Geom *q, DType dt, int include_pad) {
  int64_t *cnt[NN_MAX_SP];
  int uniform = 1;
  for (int i = 0; i < q->nsp; i++) {
    cnt[i] = arena_alloc(g->arena, sizeof(int64_t) * (q->out[i] + 1));
    int64_t lo = include_pad ? -q->pb[i] : 0, hi = include_pad ? q->in[i] + q->pe[i] : q->in[i];
    for (int64_t o = 0; o < q->out[i]; o++) {
      int64_t c = 0;
      for (int64_t t = 0; t < q->k[i]; t++) {
        int64_t pos = o * q->s[i] + t * q->d[i] - q->pb[i];
        c += pos >= lo && pos < hi;
      }
      cnt[i][o] = c;
      if (c != cnt[i][0]) uniform = 0;
    }
  }
  if (uniform) {
    double c = 1;
    for (int i = 0; i < q->nsp; i++) c *= (double)cnt[i][0];
    return e_const(g, dt, c);
  }
  void *data;
  int t = new_table(g, node, "divisor", dt, q->nsp, q->out, &data);
  int64_t total = shape_nelem(q->nsp, q->out);
  for (int64_t j = 0; j < total; j++) {
    int64_t rem = j;
    double c = 1;
    for (int i = q->nsp - 1; i >= 0; i--) {
      c *= (double)cnt[i][rem % q->out[i]];
      rem /= q->out[i];
    }
    put_f(dt, data, j, c);
  }
  int64_t ost[NN_MAX_SP], st[KMAX_VARS] = {0};
  shape_strides(q->nsp, q->out, ost);
  for (int i = 0; i < q->nsp; i++) st[1 + i] = ost[i];
  return load(g, t, st);
}

/* MaxPool's Indices: an argmax over the window, turned from the tap
 * number into the flat index of the input element (row-major, or
 * column-major over the spatial dims with storage_order=1). */
static void emit_pool_argmax(Graph *g, int node, int x, int ind, const Geom *q, const int64_t *ext,
                             int storage_order) {
  int nsp = q->nsp;
  Kernel *k = k_loop(g, node, ind, 1 + nsp, ext);
  shape_strides(1 + nsp, ext, k->out_stride);
  k->nred = nsp;
  for (int i = 0; i < nsp; i++) k->ext[1 + nsp + i] = q->k[i];
  Expr *ok;
  Expr *ld = window_load(g, x, q, 1 + nsp, NULL, &ok);
  k->body = ok ? e_sel(g, ok, ld, lowest(g, ld->dt)) : ld;
  k->red = R_ARGMAX;
  int64_t kst[NN_MAX_SP], sst[NN_MAX_SP];
  shape_strides(nsp, q->k, kst);
  shape_strides(nsp, q->in, sst);
  if (storage_order)
    for (int i = 0; i < nsp; i++) sst[i] = i ? sst[i - 1] * q->in[i - 1] : 1;
  Expr *a = e_acc(g, DT_I64);
  Expr *idx = bin(g, B_MUL, e_index(g, 0), ci(g, shape_nelem(nsp, q->in)));
  for (int i = 0; i < nsp; i++) {
    Expr *tap = bin(g, B_IMOD, bin(g, B_DIV, a, ci(g, kst[i])), ci(g, q->k[i]));
    Expr *pos = bin(g, B_ADD, bin(g, B_MUL, e_index(g, 1 + i), ci(g, q->s[i])),
                    bin(g, B_SUB, bin(g, B_MUL, tap, ci(g, q->d[i])), ci(g, q->pb[i])));
    idx = bin(g, B_ADD, idx, bin(g, B_MUL, pos, ci(g, sst[i])));
  }
  k->post = idx;
}

/* Windows of up to this many taps are unrolled into one expression, so
 * the innermost loop runs over output width and vectorizes. */
#define POOL_UNROLL 16

int lower_pool(Graph *g, int node) {
  Geom q;
  int rc = pool_geom(g, node, &q);
  if (rc) return rc;
  Node *n = &g->nodes[node];
  int x = n->in[0], y = n->out[0], nsp = q.nsp;
  DType dt = g->vals[x].dt;
  PoolKind pk = pool_kind(n->op);
  double p = attr_f(n, "p", 2.0f);
  int64_t ext[KMAX_VARS];
  ext[0] = g->vals[x].dims[0] * g->vals[x].dims[1];
  for (int i = 0; i < nsp; i++) ext[1 + i] = q.out[i];
  Expr *div = pk == PK_AVG ? avg_divisor(g, node, &q, dt, (int)attr_i(n, "count_include_pad", 0)) : NULL;
  int64_t kk = shape_nelem(nsp, q.k);
  Kernel *k = k_loop(g, node, y, 1 + nsp, ext);
  shape_strides(1 + nsp, ext, k->out_stride);
  Expr *ok;
  if (kk <= POOL_UNROLL) {
    Expr *acc = NULL;
    for (int64_t t = 0; t < kk; t++) {
      int64_t kc[NN_MAX_SP], rem = t;
      for (int i = nsp - 1; i >= 0; i--) {
        kc[i] = rem % q.k[i];
        rem /= q.k[i];
      }
      Expr *ld = window_load(g, x, &q, 0, kc, &ok);
      Expr *term = pool_term(g, pk, ld, ok, p);
      acc = acc ? bin(g, pk == PK_MAX ? B_MAX : B_ADD, acc, term) : term;
    }
    k->body = pool_final(g, pk, acc, div, p);
  } else {
    k->nred = nsp;
    for (int i = 0; i < nsp; i++) k->ext[1 + nsp + i] = q.k[i];
    Expr *ld = window_load(g, x, &q, 1 + nsp, NULL, &ok);
    k->body = pool_term(g, pk, ld, ok, p);
    k->red = pk == PK_MAX ? R_MAX : R_SUM;
    if (pk != PK_MAX) k->post = pool_final(g, pk, e_acc(g, dt), div, p);
  }
  if (n->op == OP_MaxPool && has_out(g, node, 1))
    emit_pool_argmax(g, node, x, n->out[1], &q, ext, (int)attr_i(n, "storage_order", 0));
  return MATC_OK;
}

int infer_global_pool(Graph *g, int node) {
  int rc;
  if ((rc = need_inputs(g, node, 1)) || (rc = need_float(g, node, 0))) return rc;
  Value *x = in_val(g, node, 0);
  if (x->rank < 2) return fail(g, node, 0, "input must have rank 2 or more");
  int64_t d[MATC_MAX_RANK];
  for (int i = 0; i < x->rank; i++) d[i] = i < 2 ? x->dims[i] : 1;
  set_out(g, node, 0, x->dt, x->rank, d);
  return MATC_OK;
}

int lower_global_pool(Graph *g, int node) {
  Node *n = &g->nodes[node];
  int x = n->in[0];
  Value *xv = &g->vals[x];
  DType dt = xv->dt;
  PoolKind pk = pool_kind(n->op);
  double p = attr_f(n, "p", 2.0f);
  int64_t rows = xv->dims[0] * xv->dims[1], S = shape_nelem(xv->rank - 2, xv->dims + 2);
  Kernel *k = k_loop(g, node, n->out[0], 1, &rows);
  k->out_stride[0] = 1;
  k->nred = 1;
  k->ext[1] = S;
  int64_t st[KMAX_VARS] = {S, 1};
  k->body = pool_term(g, pk, load(g, x, st), NULL, p);
  k->red = pk == PK_MAX ? R_MAX : R_SUM;
  if (pk != PK_MAX) k->post = pool_final(g, pk, e_acc(g, dt), e_const(g, dt, (double)S), p);
  return MATC_OK;
}

/* ---------------------------------------------------------------- normalisation */

/* x's dims split into kept ones (the outer loop vars of a reduction
 * kernel, in order) and reduced ones (its reduction vars). Statistics
 * live in temps shaped like the kept dims. */
typedef struct {
  int rank, nkept, nred;
  int var[MATC_MAX_RANK];       /* loop var of each dim in a reduction kernel */
  int64_t ext[MATC_MAX_RANK];   /* extents, in var order */
  int64_t xst[MATC_MAX_RANK];   /* x's row-major strides */
  int64_t tst[MATC_MAX_RANK];   /* stride of each dim in a statistics temp; 0 if reduced */
  int64_t nkeep, count;         /* kept elements; elements reduced into each */
} RPlan;

static void rplan_init(RPlan *p, const Value *x, const char *red) {
  memset(p, 0, sizeof *p);
  p->rank = x->rank;
  shape_strides(x->rank, x->dims, p->xst);
  int v = 0;
  for (int d = 0; d < x->rank; d++)
    if (!red[d]) { p->var[d] = v; p->ext[v++] = x->dims[d]; }
  p->nkept = v;
  for (int d = 0; d < x->rank; d++)
    if (red[d]) { p->var[d] = v; p->ext[v++] = x->dims[d]; }
  p->nred = x->rank - p->nkept;
  p->nkeep = p->count = 1;
  for (int d = x->rank - 1; d >= 0; d--) {
    if (red[d]) {
      p->count *= x->dims[d];
    } else {
      p->tst[d] = p->nkeep;
      p->nkeep *= x->dims[d];
    }
  }
}

/* A load of x (temp = 0) or of a statistics temp (temp = 1), inside a
 * reduction kernel of the plan (in_red) or an x-shaped elementwise one. */
static Expr *rp_load(Graph *g, const RPlan *p, int val, int temp, int in_red) {
  int64_t st[KMAX_VARS] = {0};
  for (int d = 0; d < p->rank; d++) st[in_red ? p->var[d] : d] += temp ? p->tst[d] : p->xst[d];
  return load(g, val, st);
}

static Kernel *rp_kernel(Graph *g, int node, const RPlan *p, int out) {
  Kernel *k = k_loop(g, node, out, p->nkept, p->ext);
  k->nred = p->nred;
  for (int j = 0; j < p->nred; j++) k->ext[p->nkept + j] = p->ext[p->nkept + j];
  int64_t s = 1;
  for (int v = p->nkept - 1; v >= 0; v--) {
    k->out_stride[v] = s;
    s *= p->ext[v];
  }
  k->red = R_SUM;
  return k;
}

enum { SPREAD_INVSTD, SPREAD_INV_STD_PLUS_EPS, SPREAD_VAR };

/* mean and a spread statistic of x over the plan's reduced dims, computed
 * in sdt, two-pass (mean first) for accuracy:
 * 1/sqrt(var + eps), 1/(sqrt(var) + eps), or var. */
static void emit_moments(Graph *g, int node, const RPlan *p, int x, DType sdt, int mean, int spread,
                         int which, double eps) {
  Kernel *k = rp_kernel(g, node, p, mean);
  k->body = e_cast(g, sdt, rp_load(g, p, x, 0, 1));
  k->post = bin(g, B_DIV, e_acc(g, sdt), e_const(g, sdt, (double)p->count));
  k = rp_kernel(g, node, p, spread);
  Expr *dv = bin(g, B_SUB, e_cast(g, sdt, rp_load(g, p, x, 0, 1)),
                 e_cast(g, sdt, rp_load(g, p, mean, 1, 1)));
  k->body = bin(g, B_MUL, dv, dv);
  Expr *var = bin(g, B_DIV, e_acc(g, sdt), e_const(g, sdt, (double)p->count));
  Expr *eps_c = e_const(g, sdt, eps);
  if (which == SPREAD_INVSTD) k->post = e_un(g, U_RECIP, e_un(g, U_SQRT, bin(g, B_ADD, var, eps_c)));
  else if (which == SPREAD_INV_STD_PLUS_EPS) k->post = e_un(g, U_RECIP, bin(g, B_ADD, e_un(g, U_SQRT, var), eps_c));
  else k->post = var;
}

/* (x - mean) * inv in sdt, cast back to x's type, in an x-shaped kernel. */
static Expr *normalized(Graph *g, const RPlan *p, int x, int mean, int inv, DType sdt) {
  Expr *xv = e_cast(g, sdt, rp_load(g, p, x, 0, 0));
  Expr *dv = bin(g, B_SUB, xv, e_cast(g, sdt, rp_load(g, p, mean, 1, 0)));
  return e_cast(g, g->vals[x].dt, bin(g, B_MUL, dv, e_cast(g, sdt, rp_load(g, p, inv, 1, 0))));
}

static int check_chan_params(Graph *g, int node, int first, int last, int64_t C) {
  for (int j = first; j <= last; j++) {
    if (!has_in(g, node, j)) return fail(g, node, j, "required input is missing");
    Value *v = in_val(g, node, j);
    if (value_nelem(v) != C || v->rank != 1)
      return fail(g, node, j, "must be a vector of %lld channels", (long long)C);
    if (!dt_is_float(v->dt) || !dt_supported(v->dt))
      return unsupported(g, node, j, "parameters of type %s are not supported", dt_name(v->dt));
  }
  return MATC_OK;
}

static int bn_training(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (NODE_OPSET(g, n) >= 14) return (int)attr_i(n, "training_mode", 0);
  /* Before opset 14 the extra outputs exist only in training. */
  for (int j = 1; j < n->nout; j++)
    if (n->out[j] >= 0) return 1;
  return 0;
}

int infer_batchnorm(Graph *g, int node) {
  int rc;
  if ((rc = need_inputs(g, node, 5)) || (rc = need_float(g, node, 0))) return rc;
  Node *n = &g->nodes[node];
  Value *x = in_val(g, node, 0);
  if (x->rank < 2) return fail(g, node, 0, "input must have rank 2 or more");
  if (NODE_OPSET(g, n) < 9 && !attr_i(n, "spatial", 1))
    return unsupported(g, node, -1, "BatchNormalization with spatial=0 is not supported");
  if ((rc = check_chan_params(g, node, 1, 4, x->dims[1]))) return rc;
  int training = bn_training(g, node);
  if (training && NODE_OPSET(g, n) < 14)
    return unsupported(g, node, -1, "training-mode BatchNormalization before opset 14 is not supported");
  set_out(g, node, 0, x->dt, x->rank, x->dims);
  int64_t C = x->dims[1];
  for (int j = 1; j < n->nout && j < 3; j++)
    if (n->out[j] >= 0) set_out(g, node, j, in_val(g, node, 2 + j)->dt, 1, &C);
  /* Outputs 3 and 4 (opset 9's saved_mean and saved_var; the training
   * step adds them to keep the forward's batch statistics for the
   * backward): the batch mean and biased variance. */
  if (n->nout > 5 || (n->nout > 3 && !training))
    return unsupported(g, node, -1, "BatchNormalization's saved statistics outputs are supported only in training mode");
  for (int j = 3; j < n->nout; j++)
    if (n->out[j] >= 0) set_out(g, node, j, x->dt, 1, &C);
  return MATC_OK;
}

int lower_batchnorm(Graph *g, int node) {
  Node *n = &g->nodes[node];
  int x = n->in[0], y = n->out[0];
  DType dt = g->vals[x].dt;
  int rank = g->vals[x].rank;
  int64_t C = g->vals[x].dims[1];
  double eps = attr_f(n, "epsilon", 1e-5f);
  if (bn_training(g, node)) {
    /* Batch statistics over every dim but the channel's; the running
     * ones move toward them by 1 - momentum. */
    char red[MATC_MAX_RANK] = {0};
    for (int d = 0; d < rank; d++) red[d] = d != 1;
    RPlan p;
    rplan_init(&p, &g->vals[x], red);
    int mean = has_out(g, node, 3) ? n->out[3] : new_temp(g, node, "mean", dt, 1, &C);
    int var = has_out(g, node, 4) ? n->out[4] : new_temp(g, node, "var", dt, 1, &C);
    emit_moments(g, node, &p, x, dt, mean, var, SPREAD_VAR, 0);
    Kernel *k = k_elementwise(g, node, y);
    Expr *inv = e_un(g, U_RECIP, e_un(g, U_SQRT, bin(g, B_ADD, chan_load(g, var, 1, dt), e_const(g, dt, eps))));
    Expr *nv = bin(g, B_MUL, bin(g, B_SUB, e_load_bcast(g, x, rank), chan_load(g, mean, 1, dt)), inv);
    k->body = bin(g, B_ADD, bin(g, B_MUL, nv, chan_load(g, n->in[1], 1, dt)), chan_load(g, n->in[2], 1, dt));
    double mom = attr_f(n, "momentum", 0.9f);
    for (int j = 1; j <= 2; j++) {
      if (!has_out(g, node, j)) continue;
      int o = n->out[j];
      DType odt = g->vals[o].dt;
      k = k_loop(g, node, o, 1, &C);
      k->out_stride[0] = 1;
      Expr *old = chan_load(g, n->in[2 + j], 0, odt), *cur = chan_load(g, j == 1 ? mean : var, 0, odt);
      k->body = bin(g, B_ADD, bin(g, B_MUL, old, e_const(g, odt, mom)), bin(g, B_MUL, cur, e_const(g, odt, 1 - mom)));
    }
    return MATC_OK;
  }
  /* a[c] = scale[c] / sqrt(var[c] + eps); y = (x - mean[c]) * a[c] + B[c]. */
  int a = new_temp(g, node, "scale", dt, 1, &C);
  Kernel *k = k_loop(g, node, a, 1, &C);
  k->out_stride[0] = 1;
  Expr *sd = e_un(g, U_SQRT, bin(g, B_ADD, chan_load(g, n->in[4], 0, dt), e_const(g, dt, eps)));
  k->body = bin(g, B_DIV, chan_load(g, n->in[1], 0, dt), sd);
  k = k_elementwise(g, node, y);
  Expr *xc = bin(g, B_SUB, e_load_bcast(g, x, rank), chan_load(g, n->in[3], 1, dt));
  k->body = bin(g, B_ADD, bin(g, B_MUL, xc, chan_load(g, a, 1, dt)), chan_load(g, n->in[2], 1, dt));
  return MATC_OK;
}

int infer_instancenorm(Graph *g, int node) {
  int rc;
  if ((rc = need_inputs(g, node, 3)) || (rc = need_float(g, node, 0))) return rc;
  Value *x = in_val(g, node, 0);
  if (x->rank < 3) return fail(g, node, 0, "input must have rank 3 or more");
  if ((rc = check_chan_params(g, node, 1, 2, x->dims[1]))) return rc;
  set_out(g, node, 0, x->dt, x->rank, x->dims);
  return MATC_OK;
}

int lower_instancenorm(Graph *g, int node) {
  Node *n = &g->nodes[node];
  int x = n->in[0];
  DType dt = g->vals[x].dt;
  char red[MATC_MAX_RANK] = {0};
  for (int d = 2; d < g->vals[x].rank; d++) red[d] = 1;
  RPlan p;
  rplan_init(&p, &g->vals[x], red);
  int mean = new_temp(g, node, "mean", dt, 1, &p.nkeep);
  int inv = new_temp(g, node, "invstd", dt, 1, &p.nkeep);
  emit_moments(g, node, &p, x, dt, mean, inv, SPREAD_INVSTD, attr_f(n, "epsilon", 1e-5f));
  Kernel *k = k_elementwise(g, node, n->out[0]);
  k->body = bin(g, B_ADD, bin(g, B_MUL, normalized(g, &p, x, mean, inv, dt), chan_load(g, n->in[1], 1, dt)),
                chan_load(g, n->in[2], 1, dt));
  return MATC_OK;
}

static int layernorm_setup(Graph *g, int node, int *axis, DType *sdt) {
  int rc;
  if ((rc = need_inputs(g, node, 2)) || (rc = need_float(g, node, 0))) return rc;
  Node *n = &g->nodes[node];
  Value *x = in_val(g, node, 0);
  *axis = norm_axis(attr_i(n, "axis", -1), x->rank);
  if (*axis < 0) return fail(g, node, -1, "axis is out of range");
  int64_t st = attr_i(n, "stash_type", 1);
  if (st != DT_F32 && st != DT_F64) return unsupported(g, node, -1, "stash_type %lld is not supported", (long long)st);
  *sdt = (DType)st;
  for (int j = 1; j <= 2; j++) {
    if (!has_in(g, node, j)) continue;
    Value *v = in_val(g, node, j);
    int r;
    int64_t d[MATC_MAX_RANK];
    if (v->dt != x->dt) return fail(g, node, j, "data type does not match X's");
    if (v->rank > x->rank - *axis ||
        broadcast_shapes(g, node, x->rank - *axis, x->dims + *axis, v->rank, v->dims, &r, d) ||
        shape_nelem(r, d) != shape_nelem(x->rank - *axis, x->dims + *axis))
      return fail(g, node, j, "does not broadcast to the normalized shape");
  }
  return MATC_OK;
}

int infer_layernorm(Graph *g, int node) {
  int axis;
  DType sdt;
  int rc = layernorm_setup(g, node, &axis, &sdt);
  if (rc) return rc;
  Value *x = in_val(g, node, 0);
  set_out(g, node, 0, x->dt, x->rank, x->dims);
  int64_t d[MATC_MAX_RANK];
  for (int i = 0; i < x->rank; i++) d[i] = i < axis ? x->dims[i] : 1;
  for (int j = 1; j <= 2; j++)
    if (has_out(g, node, j)) set_out(g, node, j, sdt, x->rank, d);
  return MATC_OK;
}

int lower_layernorm(Graph *g, int node) {
  int axis;
  DType sdt;
  int rc = layernorm_setup(g, node, &axis, &sdt);
  if (rc) return rc;
  Node *n = &g->nodes[node];
  int x = n->in[0], rank = g->vals[x].rank;
  char red[MATC_MAX_RANK] = {0};
  for (int d = axis; d < rank; d++) red[d] = 1;
  RPlan p;
  rplan_init(&p, &g->vals[x], red);
  /* Statistics nobody sees are kept at least as precise as x (a float64
   * gradient check of a stash_type=float model must not lose digits). */
  if (!has_out(g, node, 1) && !has_out(g, node, 2) && g->vals[x].dt == DT_F64) sdt = DT_F64;
  /* The optional Mean and InvStdDev outputs are the statistics themselves. */
  int mean = has_out(g, node, 1) ? n->out[1] : new_temp(g, node, "mean", sdt, 1, &p.nkeep);
  int inv = has_out(g, node, 2) ? n->out[2] : new_temp(g, node, "invstd", sdt, 1, &p.nkeep);
  emit_moments(g, node, &p, x, sdt, mean, inv, SPREAD_INVSTD, attr_f(n, "epsilon", 1e-5f));
  Kernel *k = k_elementwise(g, node, n->out[0]);
  Expr *y = bin(g, B_MUL, normalized(g, &p, x, mean, inv, sdt), e_load_bcast(g, n->in[1], rank));
  if (has_in(g, node, 2)) y = bin(g, B_ADD, y, e_load_bcast(g, n->in[2], rank));
  k->body = y;
  return MATC_OK;
}

static int mvn_setup(Graph *g, int node, char *red) {
  int rc;
  if ((rc = need_inputs(g, node, 1)) || (rc = need_float(g, node, 0))) return rc;
  Value *x = in_val(g, node, 0);
  int64_t axes[MATC_MAX_RANK] = {0, 2, 3};
  int na = attr_ints(&g->nodes[node], "axes", axes, MATC_MAX_RANK);
  if (na < 0) na = 3;
  memset(red, 0, MATC_MAX_RANK);
  for (int i = 0; i < na && i < MATC_MAX_RANK; i++) {
    int a = norm_axis(axes[i], x->rank);
    if (a < 0) return fail(g, node, -1, "axis %lld is out of range", (long long)axes[i]);
    red[a] = 1;
  }
  return MATC_OK;
}

int infer_mvn(Graph *g, int node) {
  char red[MATC_MAX_RANK];
  int rc = mvn_setup(g, node, red);
  if (rc) return rc;
  Value *x = in_val(g, node, 0);
  set_out(g, node, 0, x->dt, x->rank, x->dims);
  return MATC_OK;
}

/* (x - mean) / (sqrt(var) + 1e-9), as the ONNX function body defines it. */
int lower_mvn(Graph *g, int node) {
  char red[MATC_MAX_RANK];
  int rc = mvn_setup(g, node, red);
  if (rc) return rc;
  int x = g->nodes[node].in[0];
  DType dt = g->vals[x].dt;
  RPlan p;
  rplan_init(&p, &g->vals[x], red);
  int mean = new_temp(g, node, "mean", dt, 1, &p.nkeep);
  int inv = new_temp(g, node, "invstd", dt, 1, &p.nkeep);
  emit_moments(g, node, &p, x, dt, mean, inv, SPREAD_INV_STD_PLUS_EPS, 1e-9);
  Kernel *k = k_elementwise(g, node, g->nodes[node].out[0]);
  k->body = normalized(g, &p, x, mean, inv, dt);
  return MATC_OK;
}

int infer_lrn(Graph *g, int node) {
  int rc;
  if ((rc = need_inputs(g, node, 1)) || (rc = need_float(g, node, 0))) return rc;
  Value *x = in_val(g, node, 0);
  if (x->rank < 2) return fail(g, node, 0, "input must have rank 2 or more");
  if (attr_i(&g->nodes[node], "size", 0) < 1) return fail(g, node, -1, "size must be positive");
  set_out(g, node, 0, x->dt, x->rank, x->dims);
  return MATC_OK;
}

/* y = x / (bias + alpha/size * sum of x^2 over nearby channels)^beta. */
int lower_lrn(Graph *g, int node) {
  Node *n = &g->nodes[node];
  int x = n->in[0];
  Value *xv = &g->vals[x];
  DType dt = xv->dt;
  int64_t size = attr_i(n, "size", 1), C = xv->dims[1];
  int64_t S = shape_nelem(xv->rank - 2, xv->dims + 2), lo = (size - 1) / 2;
  double alpha = attr_f(n, "alpha", 1e-4f), beta = attr_f(n, "beta", 0.75f), bias = attr_f(n, "bias", 1.0f);
  int64_t ext[3] = {xv->dims[0], C, S}, st[KMAX_VARS] = {C * S, 0, 1};
  Kernel *k = k_loop(g, node, n->out[0], 3, ext);
  shape_strides(3, ext, k->out_stride);
  k->nred = 1;
  k->ext[3] = size;
  Expr *ld = load(g, x, st);
  Expr *c = bin(g, B_ADD, e_index(g, 1), ci(g, -lo));
  c = bin(g, B_ADD, c, e_index(g, 3));
  e_load_dyn(ld, clampi(g, c, 0, C - 1), S);
  k->body = e_sel(g, in_range(g, c, C), bin(g, B_MUL, ld, ld), e_const(g, dt, 0));
  k->red = R_SUM;
  st[1] = S;
  Expr *den = bin(g, B_ADD, e_const(g, dt, bias), bin(g, B_MUL, e_const(g, dt, alpha / size), e_acc(g, dt)));
  k->post = bin(g, B_DIV, load(g, x, st), bin(g, B_POW, den, e_const(g, dt, beta)));
  return MATC_OK;
}

/* ---------------------------------------------------------------- Resize, Upsample */

enum { RM_NEAREST, RM_LINEAR, RM_CUBIC };

typedef struct {
  int mode;
  const char *ctm;               /* coordinate_transformation_mode */
  const char *nearest;           /* nearest_mode */
  double a, extrap;
  int exclude;
  int64_t out[MATC_MAX_RANK];
  double scale[MATC_MAX_RANK];
  double roi[2 * MATC_MAX_RANK];
} ResizeSpec;

/* x's shape comes from the caller: ResizeGrad reads the forward's spec
 * with dY in X's place. modern: Resize-11+ (else Upsample/Resize-10). */
static int resize_setup(Graph *g, int node, ResizeSpec *rs, int modern, int r, const int64_t *xdims) {
  Node *n = &g->nodes[node];
  int rc;
  if ((rc = need_inputs(g, node, 1))) return rc;
  const char *mode = attr_s(n, "mode", "nearest");
  if (!strcmp(mode, "nearest")) rs->mode = RM_NEAREST;
  else if (!strcmp(mode, "linear") || !strcmp(mode, "bilinear")) rs->mode = RM_LINEAR;
  else if (!strcmp(mode, "cubic")) rs->mode = RM_CUBIC;
  else return fail(g, node, -1, "unknown mode '%s'", mode);
  if (rs->mode != RM_NEAREST && (rc = need_float(g, node, 0))) return rc;
  if (attr_i(n, "antialias", 0)) return unsupported(g, node, -1, "antialias is not supported");
  if (attr_get(n, "axes")) return unsupported(g, node, -1, "the axes attribute is not supported");
  if (strcmp(attr_s(n, "keep_aspect_ratio_policy", "stretch"), "stretch"))
    return unsupported(g, node, -1, "keep_aspect_ratio_policy is not supported");
  /* Upsample and Resize-10 map coordinates asymmetrically and round down. */
  rs->ctm = modern ? attr_s(n, "coordinate_transformation_mode", "half_pixel") : "asymmetric";
  rs->nearest = modern ? attr_s(n, "nearest_mode", "round_prefer_floor") : "floor";
  rs->a = attr_f(n, "cubic_coeff_a", -0.75f);
  rs->exclude = (int)attr_i(n, "exclude_outside", 0);
  rs->extrap = attr_f(n, "extrapolation_value", 0.0f);
  int scales_in = modern ? 2 : 1, sizes_in = modern ? 3 : -1;
  Tensor *sizes = NULL, *scales = NULL;
  if (sizes_in > 0 && has_in(g, node, sizes_in)) {
    sizes = known_value(g, n->in[sizes_in]);
    if (!sizes) return unsupported(g, node, sizes_in, "sizes must be known at compile time");
    if (tensor_nelem(sizes) == 0) sizes = NULL;
  }
  if (!sizes && has_in(g, node, scales_in)) {
    scales = known_value(g, n->in[scales_in]);
    if (!scales) return unsupported(g, node, scales_in, "scales must be known at compile time");
    if (tensor_nelem(scales) == 0) scales = NULL;
  }
  const Attr *sa = attr_get(n, "scales");
  if (!sizes && !scales && !(sa && sa->type == A_FLOATS))
    return fail(g, node, -1, "neither scales nor sizes is given");
  int64_t cnt = sizes ? tensor_nelem(sizes) : scales ? tensor_nelem(scales) : sa->n;
  if (cnt != r) return fail(g, node, -1, "scales/sizes have %lld entries for rank %d", (long long)cnt, r);
  for (int i = 0; i < r; i++) {
    int64_t in = xdims[i];
    if (sizes) {
      rs->out[i] = tensor_get_i(sizes, i);
      rs->scale[i] = in ? (double)rs->out[i] / (double)in : 1;
    } else {
      /* The scale is a float; the reference multiplies in double. */
      rs->scale[i] = (float)(scales ? tensor_get_f(scales, i) : sa->floats[i]);
      if (!(rs->scale[i] > 0)) return fail(g, node, -1, "scale %g is not positive", rs->scale[i]);
      rs->out[i] = f2i_sat(floor(rs->scale[i] * (double)in));
    }
    if (rs->out[i] < 0) return fail(g, node, -1, "negative output size");
    rs->roi[i] = 0;
    rs->roi[r + i] = 1;
  }
  if (!strcmp(rs->ctm, "tf_crop_and_resize")) {
    Tensor *roi = has_in(g, node, 1) ? known_value(g, n->in[1]) : NULL;
    if (!roi) return unsupported(g, node, 1, "roi must be known at compile time");
    if (tensor_nelem(roi) != 2 * r) return fail(g, node, 1, "roi must have %d entries", 2 * r);
    for (int i = 0; i < 2 * r; i++) rs->roi[i] = tensor_get_f(roi, i);
  }
  return MATC_OK;
}

static int resize_modern(Graph *g, int node) {
  Node *n = &g->nodes[node];
  return n->op == OP_Resize && NODE_OPSET(g, n) >= 11;
}

int infer_resize(Graph *g, int node) {
  ResizeSpec rs;
  int rc = need_inputs(g, node, 1);
  if (rc) return rc;
  Value *xv = in_val(g, node, 0);
  rc = resize_setup(g, node, &rs, resize_modern(g, node), xv->rank, xv->dims);
  if (rc) return rc;
  set_out(g, node, 0, xv->dt, xv->rank, rs.out);
  return MATC_OK;
}

/* One axis's taps: for every output coordinate, `taps` clamped source
 * indices and weights, and whether it lies inside (tf_crop_and_resize). */
typedef struct {
  int taps, identity, outside;
  int64_t *idx;
  double *w;
  char *ok;
} ResizeAxis;

/* Follows the ONNX reference: the source coordinate x of output o, its
 * neighbours taken so that the fractional ratio is in (0, 1], indices
 * clamped as if the input were edge-padded. */
static int resize_axis(Graph *g, int node, const ResizeSpec *rs, int rank, int i, int64_t in,
                       ResizeAxis *ax) {
  int64_t out = rs->out[i];
  double sc = rs->scale[i], ow = sc * (double)in;
  int T = ax->taps = rs->mode == RM_NEAREST ? 1 : rs->mode == RM_LINEAR ? 2 : 4;
  ax->idx = arena_alloc(g->arena, sizeof(int64_t) * (out * T + 1));
  ax->w = arena_alloc(g->arena, sizeof(double) * (out * T + 1));
  ax->ok = arena_alloc(g->arena, out + 1);
  ax->identity = out == in;
  ax->outside = 0;
  const char *m = rs->ctm;
  for (int64_t o = 0; o < out; o++) {
    double xo = (double)o, x;
    ax->ok[o] = 1;
    if (!strcmp(m, "half_pixel")) x = (xo + 0.5) / sc - 0.5;
    else if (!strcmp(m, "pytorch_half_pixel")) x = ow == 1 ? -0.5 : (xo + 0.5) / sc - 0.5;
    else if (!strcmp(m, "align_corners")) x = ow == 1 ? 0 : xo * (double)(in - 1) / (ow - 1);
    else if (!strcmp(m, "asymmetric")) x = xo / sc;
    else if (!strcmp(m, "tf_half_pixel_for_nn")) x = (xo + 0.5) / sc;
    else if (!strcmp(m, "tf_crop_and_resize")) {
      double r0 = rs->roi[i], r1 = rs->roi[rank + i];
      x = ow == 1 ? (r1 - r0) * (double)(in - 1) / 2 : xo * (r1 - r0) * (double)(in - 1) / (ow - 1);
      x += r0 * (double)(in - 1);
      if (x < 0 || x > (double)(in - 1)) {
        ax->ok[o] = 0;
        ax->outside = 1;
      }
    } else {
      return unsupported(g, node, -1, "coordinate_transformation_mode '%s' is not supported", m);
    }
    /* Far outside the input every tap clamps to the edge: keep x near it
     * (extreme scales give x up to 1e300, or NaN) so the index math stays
     * in range. */
    if (!(x > -8)) x = x != x ? 0 : -8;
    if (x > (double)in + 8) x = (double)in + 8;
    double fl = floor(x), t = x - fl, c[4] = {1, 0, 0, 0};
    int64_t base = (int64_t)fl, first = base;
    if (t == 0) { base--; t = 1; }
    if (rs->mode == RM_NEAREST) {
      const char *nm = rs->nearest;
      int up;
      if (t == 1) up = 1;
      else if (!strcmp(nm, "round_prefer_floor")) up = t > 0.5;
      else if (!strcmp(nm, "round_prefer_ceil")) up = t >= 0.5;
      else if (!strcmp(nm, "floor")) up = 0;
      else if (!strcmp(nm, "ceil")) up = 1;
      else return fail(g, node, -1, "unknown nearest_mode '%s'", nm);
      first = base + up;
    } else if (rs->mode == RM_LINEAR) {
      first = base;
      c[0] = 1 - t;
      c[1] = t;
    } else {
      double A = rs->a, u = 1 - t;
      first = base - 1;
      c[0] = ((A * (t + 1) - 5 * A) * (t + 1) + 8 * A) * (t + 1) - 4 * A;
      c[1] = ((A + 2) * t - (A + 3)) * t * t + 1;
      c[2] = ((A + 2) * u - (A + 3)) * u * u + 1;
      c[3] = ((A * (u + 1) - 5 * A) * (u + 1) + 8 * A) * (u + 1) - 4 * A;
    }
    if (rs->exclude && T > 1) {
      double sum = 0;
      for (int j = 0; j < T; j++) {
        if (first + j < 0 || first + j >= in) c[j] = 0;
        sum += c[j];
      }
      for (int j = 0; j < T; j++) c[j] /= sum;
    }
    double self = 0, other = 0;
    for (int j = 0; j < T; j++) {
      int64_t s = first + j;
      s = s < 0 ? 0 : s >= in ? in - 1 : s;
      ax->idx[o * T + j] = s;
      ax->w[o * T + j] = c[j];
      if (s == o) self += c[j];
      else other += fabs(c[j]);
    }
    if (self != 1 || other != 0 || !ax->ok[o]) ax->identity = 0;
  }
  return MATC_OK;
}

/* One kernel over the output; each resized axis adds a reduction var
 * over its taps, and a gather through its index and weight tables. */
int lower_resize(Graph *g, int node) {
  ResizeSpec rs;
  Value *xv = in_val(g, node, 0);
  int rc = resize_setup(g, node, &rs, resize_modern(g, node), xv->rank, xv->dims);
  if (rc) return rc;
  int x = g->nodes[node].in[0], y = g->nodes[node].out[0];
  DType dt = g->vals[x].dt;
  int r = g->vals[x].rank;
  int64_t in[MATC_MAX_RANK], xst[MATC_MAX_RANK];
  memcpy(in, g->vals[x].dims, sizeof in);
  shape_strides(r, in, xst);
  ResizeAxis ax[MATC_MAX_RANK];
  int nres = 0, nred = 0;
  for (int i = 0; i < r; i++) {
    if ((rc = resize_axis(g, node, &rs, r, i, in[i], &ax[i]))) return rc;
    nres += !ax[i].identity;
  }
  if (nres > KMAX_DYN) return unsupported(g, node, -1, "resizing more than %d axes", KMAX_DYN);
  Kernel *k = k_loop(g, node, y, r, rs.out);
  shape_strides(r, rs.out, k->out_stride);
  int64_t st[KMAX_VARS] = {0};
  Expr *ld = load(g, x, st), *w = NULL, *ok = NULL;
  for (int i = 0; i < r; i++) {
    if (ax[i].identity) {
      ld->stride[i] = xst[i];
      continue;
    }
    int T = ax[i].taps;
    int64_t td[2] = {rs.out[i], T}, ts[KMAX_VARS] = {0};
    ts[i] = T;
    if (T > 1) {
      ts[r + nred] = 1;
      k->ext[r + nred++] = T;
    }
    void *data;
    int it = new_table(g, node, "taps", DT_I64, 2, td, &data);
    memcpy(data, ax[i].idx, sizeof(int64_t) * rs.out[i] * T);
    e_load_dyn(ld, load(g, it, ts), xst[i]);
    if (T > 1) {
      int wt = new_table(g, node, "weights", dt, 2, td, &data);
      for (int64_t j = 0; j < rs.out[i] * T; j++) put_f(dt, data, j, ax[i].w[j]);
      Expr *wl = load(g, wt, ts);
      w = w ? bin(g, B_MUL, w, wl) : wl;
    }
    if (ax[i].outside) {
      int ot = new_table(g, node, "inside", DT_BOOL, 1, rs.out + i, &data);
      memcpy(data, ax[i].ok, rs.out[i]);
      int64_t os[KMAX_VARS] = {0};
      os[i] = 1;
      ok = and_(g, ok, load(g, ot, os));
    }
  }
  k->nred = nred;
  Expr *v = w ? bin(g, B_MUL, w, ld) : ld;
  if (nred) {
    k->red = R_SUM;
    k->body = v;
    v = e_acc(g, dt);
  }
  if (ok) v = e_sel(g, ok, v, e_const(g, dt, rs.extrap));
  if (nred) k->post = ok ? v : NULL;
  else k->body = v;
  return MATC_OK;
}

/* ---------------------------------------------------------------- gradients
 * Conv: dX is a ConvTranspose of dY with the same weights and geometry
 * (output_padding restores the input size a stride rounded away); dW is
 * ConvGradW, the forward's im2col + one GEMM per chunk of images; dB sums
 * dY. Pooling backward is PoolGrad, a gather over the windows that cover
 * each input element. Normalisations are written in ordinary ops, which
 * fuse into a few reduction and elementwise kernels. */

static int nn_attr_ints(AD *ad, Attr *a, int na, const char *name, int n, const int64_t *v) {
  a[na] = ad_attr_ints(ad, name, n, v);
  return na + 1;
}

/* kernel_shape, strides, dilations and explicit pads of a geometry. */
static int geom_attrs(AD *ad, const Geom *q, Attr *a) {
  int64_t pads[2 * NN_MAX_SP];
  for (int i = 0; i < q->nsp; i++) {
    pads[i] = q->pb[i];
    pads[q->nsp + i] = q->pe[i];
  }
  int na = nn_attr_ints(ad, a, 0, "kernel_shape", q->nsp, q->k);
  na = nn_attr_ints(ad, a, na, "strides", q->nsp, q->s);
  na = nn_attr_ints(ad, a, na, "dilations", q->nsp, q->d);
  return nn_attr_ints(ad, a, na, "pads", 2 * q->nsp, pads);
}

/* Reduction axes {0, 2, 3, ...}: every dim but the channel's. */
static int non_channel_axes(int rank, int64_t *axes) {
  int na = 0;
  for (int d = 0; d < rank; d++)
    if (d != 1) axes[na++] = d;
  return na;
}

int grad_conv(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  int64_t G, ks[MATC_MAX_RANK];
  Geom q;
  int rc = conv_setup(g, node, 0, &G, ks);
  if (rc || (rc = geom_init(g, node, in_val(g, node, 0), ks, 0, &q))) return rc;
  Attr a[8];
  int na = geom_attrs(ad, &q, a);
  a[na++] = ad_attr_i("group", G);
  int d = dy[0], rank = g->vals[n.in[0]].rank;
  /* Stride 1: dX is a forward Conv of dY (fast im2col path) with the
   * kernel flipped and in/out channels swapped within each group. */
  int flip = ad_needs(ad, node, 0);
  int64_t fp[2 * NN_MAX_SP];
  for (int i = 0; i < q.nsp; i++) {
    int64_t dk = (q.k[i] - 1) * q.d[i] + 1;
    fp[i] = dk - 1 - q.pb[i];
    fp[q.nsp + i] = dk - 1 - q.pe[i];
    flip &= q.s[i] == 1 && fp[i] >= 0 && fp[q.nsp + i] >= 0;
  }
  if (flip) {
    Value w = g->vals[n.in[1]];
    int64_t M = w.dims[0], Cg = w.dims[1], d5[MATC_MAX_RANK + 1], perm[MATC_MAX_RANK + 1];
    d5[0] = G;
    d5[1] = M / G;
    for (int i = 1; i < rank; i++) d5[1 + i] = w.dims[i];
    for (int i = 0; i <= rank; i++) perm[i] = i;
    perm[1] = 2;
    perm[2] = 1;
    int wt = ad_transpose(ad, ad_reshape(ad, n.in[1], rank + 1, d5), perm);
    int64_t wd[MATC_MAX_RANK] = {Cg * G, M / G}, st[NN_MAX_SP], en[NN_MAX_SP], ax[NN_MAX_SP], sp[NN_MAX_SP];
    for (int i = 0; i < q.nsp; i++) {
      wd[2 + i] = q.k[i];
      st[i] = -1;
      en[i] = INT64_MIN;
      ax[i] = 2 + i;
      sp[i] = -1;
    }
    wt = ad_reshape(ad, wt, rank, wd);
    int sl[5] = {wt, ad_const_ints(ad, q.nsp, st), ad_const_ints(ad, q.nsp, en), ad_const_ints(ad, q.nsp, ax),
                 ad_const_ints(ad, q.nsp, sp)};
    wt = ad_node(ad, "Slice", 5, sl, 0, NULL);
    Attr fa[5] = {a[0], a[1], a[2], ad_attr_ints(ad, "pads", 2 * q.nsp, fp), a[4]};
    dx[0] = ad_node(ad, "Conv", 2, (int[]){d, wt}, 5, fa);
  } else if (ad_needs(ad, node, 0)) {
    int64_t op[NN_MAX_SP];
    for (int i = 0; i < q.nsp; i++)
      op[i] = q.in[i] - (q.s[i] * (q.out[i] - 1) + (q.k[i] - 1) * q.d[i] + 1 - q.pb[i] - q.pe[i]);
    a[na] = ad_attr_ints(ad, "output_padding", q.nsp, op);
    dx[0] = ad_node(ad, "ConvTranspose", 2, (int[]){d, n.in[1]}, na + 1, a);
  }
  if (ad_needs(ad, node, 1)) dx[1] = ad_node(ad, "ConvGradW", 2, (int[]){n.in[0], d}, na, a);
  if (n.nin > 2 && n.in[2] >= 0 && ad_needs(ad, node, 2)) {
    int64_t axes[MATC_MAX_RANK];
    dx[2] = ad_reduce_sum(ad, d, non_channel_axes(rank, axes), axes, 0);
  }
  return MATC_OK;
}

/* ConvGradW(X, dY) -> dW [M, C/group, k...]: Conv's weight gradient. */
int infer_conv_grad_w(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Value *x = in_val(g, node, 0), *dy = in_val(g, node, 1);
  int64_t ks[MATC_MAX_RANK], d[MATC_MAX_RANK];
  int nsp = x->rank - 2;
  int64_t G = attr_i(n, "group", 1);
  if (attr_ints(n, "kernel_shape", ks, MATC_MAX_RANK) != nsp || G < 1 || x->dims[1] % G)
    return fail(g, node, -1, "bad kernel_shape or group");
  d[0] = dy->dims[1];
  d[1] = x->dims[1] / G;
  for (int i = 0; i < nsp; i++) d[2 + i] = ks[i];
  set_out(g, node, 0, x->dt, x->rank, d);
  return MATC_OK;
}

/* Winograd dW, F(3x3, 2x2): each 2x2 tile g of dY correlated with its 4x4
 * input tile d gives the tile's 3x3 share of dW as A^T [(G g G^T) .*
 * (B^T d B)] A, so dW = A^T [sum over tiles of the products] A, and the
 * sum over images and tiles is 16 GEMMs [M, tiles] x [tiles, C]. dY is
 * staged like the input, with zeros past its edges, so junk tiles add 0. */
static const double WD_BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, -1, 0, 1}};
static const double WD_G[4][2] = {{1, 0}, {.5, .5}, {.5, -.5}, {0, 1}};
static const double WD_AT[3][4] = {{1, 1, 1, 0}, {0, 1, -1, 0}, {0, 1, 1, 1}};

/* The forward's transformed input tiles of x, when a Winograd Conv on x
 * with the same padding and output already made them (the usual case: the
 * Conv this ConvGradW differentiates): dW's tiles are those up to the sign
 * of the last row and column of B^T, folded into dY's transform. -1 when
 * there are none. */
static int wg_forward_tiles(Graph *g, int node, int x, const Geom *q) {
  char name[512];
  for (int i = 0; i < node; i++) {
    Node *f = &g->nodes[i];
    if (f->dead || f->op != OP_Conv || f->nin < 2 || f->in[0] != x) continue;
    int64_t G, ks[MATC_MAX_RANK];
    Geom fq;
    if (conv_setup(g, i, 0, &G, ks) || geom_init(g, i, &g->vals[x], ks, 0, &fq)) continue;
    if (!winograd_fits(&fq, g->vals[x].dt, G, g->vals[x].dims[1], g->vals[f->in[1]].dims[0]) ||
        fq.pb[0] != q->pb[0] || fq.pb[1] != q->pb[1] || fq.out[0] != q->out[0] || fq.out[1] != q->out[1])
      continue;
    snprintf(name, sizeof name, "%s/winograd_in", f->name);
    int v = graph_find_value(g, name);
    if (v >= 0) return v;
  }
  return -1;
}

static int lower_conv_grad_w_winograd(Graph *g, int node, const Geom *q) {
  Node *n = &g->nodes[node];
  int x = n->in[0], dyv = n->in[1], dw = n->out[0];
  DType dt = g->vals[x].dt;
  int64_t C = g->vals[x].dims[1], M = g->vals[dyv].dims[1];
  WgGrid t = wg_grid(g->vals[x].dims[0], q->out[0], q->out[1], g->vals[x].dims[3], q->pb[1]);
  int v = wg_forward_tiles(g, node, x, q), reuse = v >= 0;
  int yp = wg_stage(g, node, dyv, &t, 2 * t.th, 0, 0);
  int gy = new_temp(g, node, "winograd_dy", dt, 3, (int64_t[]){16, M, t.NX});
  if (!reuse) {
    v = new_temp(g, node, "winograd_in", dt, 3, (int64_t[]){16, C, t.NX});
    wg_input_tiles(g, node, wg_stage_input(g, node, x, q, &t), v, WD_BT, C, &t);
  }
  int sm = new_temp(g, node, "winograd_sum", dt, 3, (int64_t[]){16, M, C});
  /* Gy[ab][m, ty, X] = sum_uv G[a][u] G[b][v] dY'[m, 2ty + u, 2X + v] */
  int64_t plane = 2 * t.th * t.R;
  for (int a = 0; a < 4; a++)
    for (int b = 0; b < 4; b++) {
      Kernel *k = k_loop(g, node, gy, 3, (int64_t[]){M, t.th, t.X});
      k->join = a || b;
      k->out_off = (a * 4 + b) * M * t.NX;
      shape_strides(3, k->ext, k->out_stride);
      Expr *s = NULL;
      for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
          s = wg_term(g, dt, s, WD_G[a][i] * WD_G[b][j] * (reuse && (a == 3) != (b == 3) ? -1 : 1),
                      e_load(g, yp, i * t.R + j, (int64_t[KMAX_VARS]){plane, 2 * t.R, 2}, KMAX_VARS));
      k->body = s;
    }
  wg_gemm(g, node, gy, v, sm, 1, M, C, t.NX);
  /* dW[m, c, i, j] = sum_ab AT[i][a] AT[j][b] S[ab][m, c] */
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) {
      Kernel *k = k_loop(g, node, dw, 2, (int64_t[]){M, C});
      k->join = i || j;
      k->out_off = i * 3 + j;
      k->out_stride[0] = C * 9;
      k->out_stride[1] = 9;
      Expr *s = NULL;
      for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++)
          s = wg_term(g, dt, s, WD_AT[i][a] * WD_AT[j][b],
                      e_load(g, sm, (a * 4 + b) * M * C, (int64_t[KMAX_VARS]){C, 1}, KMAX_VARS));
      k->body = s;
    }
  return MATC_OK;
}

/* dW[g] = sum over images of dY[n, g] col[n, g]^T: dY transposed once to
 * [M, N, P] so a chunk's images are one [Mg, nb*P] operand beside the
 * forward's im2col buffer [Cg*k, nb*P]; chunks accumulate (beta = 1). */
static int lower_conv_grad_w_kernels(Graph *g, int node) {
  Node *n = &g->nodes[node];
  int x = n->in[0], dyv = n->in[1], dw = n->out[0];
  int64_t ks[MATC_MAX_RANK];
  attr_ints(n, "kernel_shape", ks, MATC_MAX_RANK);
  Geom q;
  int rc = geom_init(g, node, &g->vals[x], ks, 0, &q);
  if (rc) return rc;
  DType dt = g->vals[x].dt;
  int64_t G = attr_i(n, "group", 1);
  int64_t N = g->vals[x].dims[0], C = g->vals[x].dims[1], M = g->vals[dyv].dims[1];
  int64_t kk = shape_nelem(q.nsp, q.k), P = shape_nelem(q.nsp, q.out), pad = 0, sd[NN_MAX_SP];
  for (int i = 0; i < q.nsp; i++) {
    pad |= q.pb[i] | q.pe[i];
    sd[i] = q.in[i];
  }
  int64_t Cg = C / G, Mg = M / G, K = Cg * kk;
  if (winograd_fits(&q, dt, G, C, M)) return lower_conv_grad_w_winograd(g, node, &q);
  int src = pad ? emit_pad(g, node, x, &q, N * C, sd) : x;
  int dyt = dyv;
  if (N > 1) {
    int64_t ext[3] = {M, N, P}, st[KMAX_VARS] = {P, M * P, 1};
    dyt = new_temp(g, node, "dyt", dt, 3, ext);
    Kernel *k = k_loop(g, node, dyt, 3, ext);
    shape_strides(3, ext, k->out_stride);
    k->body = load(g, dyv, st);
  }
  int64_t per_img = C * kk * P * dt_size(dt);
  int64_t nb = CONV_CHUNK_BYTES / (per_img ? per_img : 1);
  nb = nb < 1 ? 1 : nb > N ? N : nb;
  nb = (N + (N + nb - 1) / nb - 1) / ((N + nb - 1) / nb);
  int col = new_temp(g, node, "im2col", dt, 1, (int64_t[]){C * kk * nb * P});
  for (int64_t n0 = 0; n0 < N; n0 += nb) {
    int64_t cnt = N - n0 < nb ? N - n0 : nb;
    emit_im2col(g, node, src, col, &q, n0, cnt, C, sd);
    Kernel *k = k_extern(g, node, EXT_gemm);
    k_arg(k, dyt, n0 * P);
    k_arg(k, col, 0);
    k_arg(k, dw, 0);
    gemm_params(k, dt, 0, Mg, K, cnt * P, N * P, n0 ? 1.0 : 0.0);
    k->p[GEMM_TB] = 1;
    k->p[GEMM_LDB] = cnt * P;
    k->p[GEMM_LDC] = K;
    gemm_level(k, G, Mg * N * P, K * cnt * P, Mg * K);
  }
  return MATC_OK;
}

int lower_conv_grad_w(Graph *g, int node) {
  int k0 = g->nkernels;
  return no_unroll_since(g, k0, lower_conv_grad_w_kernels(g, node));
}

enum { PG_MAX = 0, PG_AVG = 1, PG_SUM = 2 };   /* SUM: LpPool's, dY pre-scaled */

int grad_pool(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  Geom q;
  int rc = pool_geom(g, node, &q);
  if (rc) return rc;
  Attr a[8];
  int na = geom_attrs(ad, &q, a);
  a[na++] = ad_attr_i("ceil_mode", attr_i(&n, "ceil_mode", 0));
  a[na++] = ad_attr_i("count_include_pad", attr_i(&n, "count_include_pad", 0));
  a[na++] = ad_attr_i("mode", n.op == OP_MaxPool ? PG_MAX : PG_AVG);
  dx[0] = ad_node(ad, "PoolGrad", 2, (int[]){n.in[0], dy[0]}, na, a);
  return MATC_OK;
}

/* PoolGrad(X, dY) -> dX: max (to each window's first argmax) or average. */
int infer_pool_grad(Graph *g, int node) {
  Value *x = in_val(g, node, 0);
  set_out(g, node, 0, x->dt, x->rank, x->dims);
  return MATC_OK;
}

/* Output index along dim i of the window that covers input position
 * var 1+i at tap offset kt = k*d - pb; *valid when there is one. */
static Expr *covering_window(Graph *g, const Geom *q, int i, Expr *kt, Expr **valid) {
  Expr *t = bin(g, B_SUB, e_index(g, 1 + i), kt);
  if (q->s[i] == 1) {
    *valid = in_range(g, t, q->out[i]);
    return clampi(g, t, 0, q->out[i] - 1);
  }
  Expr *tc = bin(g, B_MAX, t, ci(g, 0)), *o = bin(g, B_DIV, tc, ci(g, q->s[i]));
  *valid = bin(g, B_AND, bin(g, B_GE, t, ci(g, 0)),
               bin(g, B_AND, bin(g, B_EQ, bin(g, B_MUL, o, ci(g, q->s[i])), tc),
                   bin(g, B_LT, o, ci(g, q->out[i]))));
  return bin(g, B_MIN, o, ci(g, q->out[i] - 1));
}

/* One tap's share of dX: dY of the window (ld, divided by div when it
 * is a constant count) where the window exists (ok) and, for max pooling,
 * where its argmax (al) is this tap. */
static Expr *pool_grad_term(Graph *g, Expr *ld, Expr *al, Expr *tap, Expr *ok, Expr *div, DType dt) {
  if (al) ok = bin(g, B_AND, ok, bin(g, B_EQ, e_cast(g, DT_I64, al), tap));
  return e_sel(g, ok, div ? bin(g, B_DIV, ld, div) : ld, e_const(g, dt, 0));
}

/* Windows that tile the input without overlap or leading padding (the
 * usual 2x2 stride-2 max pool; end padding and ceil mode's partial last
 * windows qualify): each input element lies in at most one window, at tap
 * (h mod s) of window h / s, so dX needs one tap instead of kk. */
static int pool_disjoint(const Geom *q) {
  for (int i = 0; i < q->nsp; i++)
    if (q->s[i] != q->k[i] || q->d[i] != 1 || q->pb[i] != 0) return 0;
  return 1;
}

/* One kernel over dX: every input element sums, over the taps of the
 * window shape, dY of the window that holds it at that tap (divided by
 * the window's count, or only where that tap is the window's argmax).
 * Small windows are unrolled so the innermost loop is the input width. */
int lower_pool_grad(Graph *g, int node) {
  Node *n = &g->nodes[node];
  int x = n->in[0], dyv = n->in[1], dxv = n->out[0];
  int mode = (int)attr_i(n, "mode", PG_MAX);
  int64_t ks[MATC_MAX_RANK];
  attr_ints(n, "kernel_shape", ks, MATC_MAX_RANK);
  Geom q;
  int rc = geom_init(g, node, &g->vals[x], ks, (int)attr_i(n, "ceil_mode", 0), &q);
  if (rc) return rc;
  int nsp = q.nsp;
  DType dt = g->vals[x].dt;
  int64_t oext[KMAX_VARS], xext[KMAX_VARS], ost[NN_MAX_SP], kst[NN_MAX_SP], ost1[KMAX_VARS] = {0};
  oext[0] = xext[0] = g->vals[x].dims[0] * g->vals[x].dims[1];
  for (int i = 0; i < nsp; i++) {
    oext[1 + i] = q.out[i];
    xext[1 + i] = q.in[i];
  }
  shape_strides(nsp, q.out, ost);
  shape_strides(nsp, q.k, kst);
  int src = dyv, arg = -1;
  Expr *div = NULL;
  if (mode == PG_AVG) {
    div = avg_divisor(g, node, &q, dt, (int)attr_i(n, "count_include_pad", 0));
    if (div->kind != EX_CONST) {   /* per-window counts: divide dY first */
      src = new_temp(g, node, "scaled", dt, 1 + nsp, oext);
      Kernel *k = k_loop(g, node, src, 1 + nsp, oext);
      shape_strides(1 + nsp, oext, k->out_stride);
      shape_strides(1 + nsp, oext, ost1);
      k->body = bin(g, B_DIV, load(g, dyv, ost1), div);
      div = NULL;
    }
  } else if (mode == PG_MAX) {
    /* The window's argmax as the narrowest integer that holds a tap: a
     * byte for the usual small windows, 8 times less to write and read
     * back than int64 (vgg-small's first pool: 3.2 MB -> 0.4 MB). */
    DType adt = shape_nelem(nsp, q.k) <= 127 ? DT_I8 : DT_I32;
    arg = new_temp(g, node, "argmax", adt, 1 + nsp, oext);
    Kernel *k = k_loop(g, node, arg, 1 + nsp, oext);
    shape_strides(1 + nsp, oext, k->out_stride);
    k->nred = nsp;
    for (int i = 0; i < nsp; i++) k->ext[1 + nsp + i] = q.k[i];
    Expr *ok;
    Expr *ld = window_load(g, x, &q, 1 + nsp, NULL, &ok);
    k->body = ok ? e_sel(g, ok, ld, lowest(g, dt)) : ld;
    k->red = R_ARGMAX;
    k->post = e_acc(g, DT_I64);
  }
  if (pool_disjoint(&q)) {   /* one window per input element at most */
    Kernel *k = k_loop(g, node, dxv, 1 + nsp, xext);
    shape_strides(1 + nsp, xext, k->out_stride);
    int64_t st[KMAX_VARS] = {shape_nelem(nsp, q.out)};
    Expr *ld = load(g, src, st), *al = arg >= 0 ? load(g, arg, st) : NULL, *ok = NULL, *tap = NULL;
    for (int i = 0; i < nsp; i++) {
      Expr *h = e_index(g, 1 + i), *o = bin(g, B_DIV, h, ci(g, q.s[i]));
      ok = and_(g, ok, bin(g, B_LT, o, ci(g, q.out[i])));
      e_load_dyn(ld, bin(g, B_MIN, o, ci(g, q.out[i] - 1)), ost[i]);
      if (al) e_load_dyn(al, bin(g, B_MIN, o, ci(g, q.out[i] - 1)), ost[i]);
      Expr *part = bin(g, B_MUL, bin(g, B_SUB, h, bin(g, B_MUL, o, ci(g, q.s[i]))), ci(g, kst[i]));
      tap = tap ? bin(g, B_ADD, tap, part) : part;
    }
    k->body = pool_grad_term(g, ld, al, tap, ok, div, dt);
    return MATC_OK;
  }
  int64_t kk = shape_nelem(nsp, q.k);
  int unroll = kk <= POOL_UNROLL;
  Kernel *k = k_loop(g, node, dxv, 1 + nsp, xext);
  shape_strides(1 + nsp, xext, k->out_stride);
  if (!unroll) {
    k->nred = nsp;
    for (int i = 0; i < nsp; i++) k->ext[1 + nsp + i] = q.k[i];
    k->red = R_SUM;
  }
  int64_t st[KMAX_VARS] = {shape_nelem(nsp, q.out)};
  Expr *acc = NULL;
  for (int64_t t = 0; t < (unroll ? kk : 1); t++) {
    Expr *ld = load(g, src, st), *al = arg >= 0 ? load(g, arg, st) : NULL, *ok = NULL;
    Expr *tap = unroll ? ci(g, t) : NULL;
    for (int i = 0; i < nsp; i++) {
      Expr *kt, *v;
      if (unroll) kt = ci(g, (t / kst[i]) % q.k[i] * q.d[i] - q.pb[i]);
      else {
        Expr *kv = e_index(g, 1 + nsp + i);
        kt = bin(g, B_SUB, bin(g, B_MUL, kv, ci(g, q.d[i])), ci(g, q.pb[i]));
        Expr *part = bin(g, B_MUL, kv, ci(g, kst[i]));
        tap = tap ? bin(g, B_ADD, tap, part) : part;
      }
      Expr *o = covering_window(g, &q, i, kt, &v);
      e_load_dyn(ld, o, ost[i]);
      if (al) e_load_dyn(al, o, ost[i]);
      ok = and_(g, ok, v);
    }
    Expr *term = pool_grad_term(g, ld, al, tap, ok, div, dt);
    acc = acc ? bin(g, B_ADD, acc, term) : term;
  }
  k->body = acc;
  return MATC_OK;
}

int grad_global_pool(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  Value x = g->vals[n.in[0]];
  if (n.op == OP_GlobalAveragePool) {
    int s = ad_scale(ad, dy[0], 1.0 / (double)shape_nelem(x.rank - 2, x.dims + 2));
    dx[0] = ad_node(ad, "Expand", 2, (int[]){s, ad_const_ints(ad, x.rank, x.dims)}, 0, NULL);
  } else {   /* to every element equal to its channel's maximum */
    int eq = ad_node(ad, "Equal", 2, (int[]){n.in[0], n.out[0]}, 0, NULL);
    Attr to = ad_attr_i("to", x.dt);
    dx[0] = ad_mul(ad, ad_node(ad, "Cast", 1, &eq, 1, &to), dy[0]);
  }
  return MATC_OK;
}

/* ---------------------------------------------------------------- normalisation gradients */

/* A per-channel vector [C] viewed as [C, 1, ...] against a rank-r x. */
static int chan_view(AD *ad, int v, int rank) {
  if (v < 0) return -1;
  int64_t d[MATC_MAX_RANK];
  d[0] = ad->g->vals[v].dims[0];
  for (int i = 1; i < rank - 1; i++) d[i] = 1;
  return ad_reshape(ad, v, rank - 1, d);
}

static int mean_over(AD *ad, int v, int na, const int64_t *axes, double inv_m) {
  return ad_scale(ad, ad_reduce_sum(ad, v, na, axes, 1), inv_m);
}

/* xhat = (x - mean) / sqrt(var + eps) over axes, from the forward's
 * statistics when it kept them (saved_mean and saved_var >= 0, as [C]
 * values of BatchNormalization), else recomputed from x; with dxhat >= 0
 * also returns dx = inv * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)). */
static int norm_back(AD *ad, int x, int saved_mean, int saved_var, int dxhat, int na, const int64_t *axes,
                     double eps, int *xhat, int *xc_out, int *inv_out) {
  Value *xv = &ad->g->vals[x];
  int64_t m = 1;
  for (int i = 0; i < na; i++) m *= xv->dims[axes[i]];
  double im = 1.0 / (double)m;
  DType dt = xv->dt;
  int saved = saved_mean >= 0 && saved_var >= 0;
  int xc = ad_sub(ad, x, saved ? chan_view(ad, saved_mean, xv->rank) : mean_over(ad, x, na, axes, im));
  int var = saved ? chan_view(ad, saved_var, xv->rank) : mean_over(ad, ad_mul(ad, xc, xc), na, axes, im);
  int inv = ad_unary(ad, "Reciprocal", ad_unary(ad, "Sqrt", ad_add(ad, var, ad_const(ad, dt, eps))));
  *xhat = ad_mul(ad, xc, inv);
  if (xc_out) *xc_out = xc;
  if (inv_out) *inv_out = inv;
  if (dxhat < 0) return -1;
  int t1 = mean_over(ad, dxhat, na, axes, im);
  int t2 = mean_over(ad, ad_mul(ad, dxhat, *xhat), na, axes, im);
  return ad_mul(ad, inv, ad_sub(ad, ad_sub(ad, dxhat, t1), ad_mul(ad, *xhat, t2)));
}

static int acc_grad(AD *ad, int a, int b) { return a < 0 ? b : b < 0 ? a : ad_add(ad, a, b); }

int grad_batchnorm(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  int x = n.in[0], sc = n.in[1], d = dy[0];
  Value xv = g->vals[x];
  int rank = xv.rank;
  double eps = attr_f(&n, "epsilon", 1e-5f);
  int64_t axes[MATC_MAX_RANK];
  int na = non_channel_axes(rank, axes);
  if (!bn_training(g, node)) {
    /* Inference: a per-channel affine map of x with constant statistics. */
    int inv = ad_unary(ad, "Reciprocal",
                       ad_unary(ad, "Sqrt", ad_add(ad, n.in[4], ad_const(ad, xv.dt, eps))));
    int a = ad_mul(ad, sc, inv), db = -1, s = -1;
    if (ad_needs(ad, node, 0)) dx[0] = ad_mul(ad, d, chan_view(ad, a, rank));
    if (ad_needs(ad, node, 2) || ad_needs(ad, node, 3)) db = ad_reduce_sum(ad, d, na, axes, 0);
    if (ad_needs(ad, node, 1) || ad_needs(ad, node, 4))
      s = ad_reduce_sum(ad, ad_mul(ad, d, ad_sub(ad, x, chan_view(ad, n.in[3], rank))), na, axes, 0);
    if (ad_needs(ad, node, 1)) dx[1] = ad_mul(ad, s, inv);
    if (ad_needs(ad, node, 2)) dx[2] = db;
    if (ad_needs(ad, node, 3)) dx[3] = ad_neg(ad, ad_mul(ad, db, a));
    if (ad_needs(ad, node, 4))   /* d/dvar (var + eps)^-1/2 = -1/2 inv^3 */
      dx[4] = ad_mul(ad, ad_mul(ad, s, sc), ad_scale(ad, ad_mul(ad, inv, ad_mul(ad, inv, inv)), -0.5));
    return MATC_OK;
  }
  /* Training: batch statistics; the running outputs, when they carry a
   * gradient, are momentum * input + (1 - momentum) * batch statistic. */
  int64_t m = value_nelem(&xv) / xv.dims[1];
  double mom = attr_f(&n, "momentum", 0.9f);
  int xhat, xc, inv, gx = -1;
  int saved_mean = n.nout > 4 ? n.out[3] : -1, saved_var = n.nout > 4 ? n.out[4] : -1;
  norm_back(ad, x, saved_mean, saved_var, -1, na, axes, eps, &xhat, &xc, &inv);
  /* With xc = x - mean, s1 = sum(d), s2 = sum(d * xc) over the batch:
   * dbias = s1, dscale = s2 * inv and
   * dx = (d - s1 / m - xc * (s2 * inv^2 / m)) * inv * scale,
   * each sum reduced once and the terms in the order PyTorch's CPU
   * kernel takes them (AdamW trajectories amplify rounding). dbias and
   * dscale are their own [C] values (a sum over the size-1 axes, not a
   * view): the gradient exchange sums a gradient in place once backward
   * is over, while dx reads its sums earlier. */
  if (d >= 0 && (ad_needs(ad, node, 0) || ad_needs(ad, node, 1) || ad_needs(ad, node, 2))) {
    int s1 = ad_reduce_sum(ad, d, na, axes, 1), s2 = ad_reduce_sum(ad, ad_mul(ad, d, xc), na, axes, 1);
    if (ad_needs(ad, node, 1)) dx[1] = ad_reduce_sum(ad, ad_mul(ad, s2, inv), na, axes, 0);
    if (ad_needs(ad, node, 2)) dx[2] = ad_reduce_sum(ad, s1, na, axes, 0);
    if (ad_needs(ad, node, 0)) {
      double im = 1.0 / (double)m;
      int k = ad_scale(ad, ad_mul(ad, ad_mul(ad, s2, inv), inv), im);
      int t = ad_sub(ad, ad_sub(ad, d, ad_scale(ad, s1, im)), ad_mul(ad, xc, k));
      gx = ad_mul(ad, ad_mul(ad, t, inv), chan_view(ad, sc, rank));
    }
  }
  for (int j = 1; j <= 2; j++) {
    int r = n.nout > j && n.out[j] >= 0 ? dy[j] : -1;
    if (r < 0) continue;
    if (ad_needs(ad, node, 2 + j)) dx[2 + j] = ad_scale(ad, r, mom);
    if (!ad_needs(ad, node, 0)) continue;
    int rc = chan_view(ad, r, rank), t;
    if (j == 1)
      t = ad_node(ad, "Expand", 2, (int[]){ad_scale(ad, rc, (1 - mom) / (double)m),
                                           ad_const_ints(ad, rank, xv.dims)}, 0, NULL);
    else
      t = ad_mul(ad, xc, ad_scale(ad, rc, 2 * (1 - mom) / (double)m));
    gx = acc_grad(ad, gx, t);
  }
  if (ad_needs(ad, node, 0)) dx[0] = gx;
  return MATC_OK;
}

int grad_instancenorm(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  int x = n.in[0], d = dy[0], rank = g->vals[x].rank;
  int64_t axes[MATC_MAX_RANK], cax[MATC_MAX_RANK];
  int na = 0, nc = non_channel_axes(rank, cax);
  for (int i = 2; i < rank; i++) axes[na++] = i;
  int xhat;
  int dxhat = ad_needs(ad, node, 0) ? ad_mul(ad, d, chan_view(ad, n.in[1], rank)) : -1;
  int gx = norm_back(ad, x, -1, -1, dxhat, na, axes, attr_f(&n, "epsilon", 1e-5f), &xhat, NULL, NULL);
  if (ad_needs(ad, node, 0)) dx[0] = gx;
  if (ad_needs(ad, node, 1)) dx[1] = ad_reduce_sum(ad, ad_mul(ad, d, xhat), nc, cax, 0);
  if (ad_needs(ad, node, 2)) dx[2] = ad_reduce_sum(ad, d, nc, cax, 0);
  return MATC_OK;
}

int grad_layernorm(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  if ((n.nout > 1 && dy[1] >= 0) || (n.nout > 2 && dy[2] >= 0))
    return unsupported(g, node, -1, "no gradient through LayerNormalization's Mean/InvStdDev outputs");
  int x = n.in[0], d = dy[0], rank = g->vals[x].rank;
  int axis = norm_axis(attr_i(&n, "axis", -1), rank);
  int64_t axes[MATC_MAX_RANK];
  int na = 0;
  for (int i = axis; i < rank; i++) axes[na++] = i;
  int xhat;
  int dxhat = ad_needs(ad, node, 0) ? ad_mul(ad, d, n.in[1]) : -1;
  int gx = norm_back(ad, x, -1, -1, dxhat, na, axes, attr_f(&n, "epsilon", 1e-5f), &xhat, NULL, NULL);
  if (ad_needs(ad, node, 0)) dx[0] = gx;
  if (ad_needs(ad, node, 1)) dx[1] = ad_sum_to(ad, ad_mul(ad, d, xhat), n.in[1]);
  if (n.nin > 2 && n.in[2] >= 0 && ad_needs(ad, node, 2)) dx[2] = ad_sum_to(ad, d, n.in[2]);
  return MATC_OK;
}

/* ---------------------------------------------------------------- more NN gradients */

/* ConvTranspose is the adjoint of a Conv with the same weights and
 * geometry: dX = Conv(dY, W) (output_padding only adds outputs that a
 * stride skips), dW = ConvGradW with X and dY in swapped roles. */
int grad_conv_transpose(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  Geom q;
  int64_t G;
  int rc = convt_geom(g, node, &q, &G);
  if (rc) return rc;
  for (int i = 0; i < q.nsp; i++) {
    int64_t dk = (q.k[i] - 1) * q.d[i] + 1;
    if (q.pb[i] < 0 || q.pe[i] < 0 || (q.out[i] + q.pb[i] + q.pe[i] - dk) / q.s[i] + 1 != q.in[i])
      return unsupported(g, node, -1, "no ConvTranspose gradient for negative pads or output_padding >= strides");
  }
  Attr a[8];
  int na = geom_attrs(ad, &q, a);
  a[na++] = ad_attr_i("group", G);
  int d = dy[0], rank = g->vals[n.in[0]].rank;
  if (ad_needs(ad, node, 0)) dx[0] = ad_node(ad, "Conv", 2, (int[]){d, n.in[1]}, na, a);
  if (ad_needs(ad, node, 1)) dx[1] = ad_node(ad, "ConvGradW", 2, (int[]){d, n.in[0]}, na, a);
  if (n.nin > 2 && n.in[2] >= 0 && ad_needs(ad, node, 2)) {
    int64_t axes[MATC_MAX_RANK];
    dx[2] = ad_reduce_sum(ad, d, non_channel_axes(rank, axes), axes, 0);
  }
  return MATC_OK;
}

/* d/dx (sum |x|^p)^(1/p) = x |x|^(p-2) / y^(p-1), for every window
 * holding x: dY / y^(p-1) is summed over the windows (PoolGrad in sum
 * mode, or a broadcast for the global pool), then scaled by x |x|^(p-2). */
static int lp_factor(AD *ad, int x, double p) {
  if (p == 1) return ad_unary(ad, "Sign", x);
  if (p == 2) return x;
  DType dt = ad->g->vals[x].dt;
  int ax = ad_unary(ad, "Abs", x);
  return ad_mul(ad, x, ad_node(ad, "Pow", 2, (int[]){ax, ad_const(ad, dt, p - 2)}, 0, NULL));
}

static int lp_scaled_dy(AD *ad, int d, int y, double p) {
  if (p == 1) return d;
  if (p == 2) return ad_div(ad, d, y);
  DType dt = ad->g->vals[y].dt;
  return ad_mul(ad, d, ad_node(ad, "Pow", 2, (int[]){y, ad_const(ad, dt, 1 - p)}, 0, NULL));
}

int grad_lp_pool(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  double p = attr_f(&n, "p", 2.0f);
  int t = lp_scaled_dy(ad, dy[0], n.out[0], p);
  if (n.op == OP_GlobalLpPool) {
    dx[0] = ad_mul(ad, t, lp_factor(ad, n.in[0], p));
    return MATC_OK;
  }
  Geom q;
  int rc = pool_geom(g, node, &q);
  if (rc) return rc;
  Attr a[8];
  int na = geom_attrs(ad, &q, a);
  a[na++] = ad_attr_i("ceil_mode", attr_i(&n, "ceil_mode", 0));
  a[na++] = ad_attr_i("mode", PG_SUM);
  int s = ad_node(ad, "PoolGrad", 2, (int[]){n.in[0], t}, na, a);
  dx[0] = ad_mul(ad, s, lp_factor(ad, n.in[0], p));
  return MATC_OK;
}

/* Sum of v over the channel window [c - before, c + after], zeros outside:
 * an AveragePool over [N, 1, C, rest] that counts the padding, times size. */
static int chan_window_sum(AD *ad, int v, int64_t size, int64_t before) {
  Value xv = ad->g->vals[v];
  int64_t d4[4] = {xv.dims[0], 1, xv.dims[1], shape_nelem(xv.rank - 2, xv.dims + 2)};
  int64_t ks[2] = {size, 1}, pads[4] = {before, 0, size - 1 - before, 0};
  Attr a[3] = {ad_attr_ints(ad, "kernel_shape", 2, ks), ad_attr_ints(ad, "pads", 4, pads),
               ad_attr_i("count_include_pad", 1)};
  int r = ad_reshape(ad, v, 4, d4);
  r = ad_scale(ad, ad_node(ad, "AveragePool", 1, &r, 3, a), (double)size);
  return ad_reshape(ad, r, xv.rank, xv.dims);
}

/* y = x den^-b, den = bias + a/size * S(x^2): dX = dY den^-b
 * - 2ab/size x S^T(dY x den^(-b-1)), S^T the window sum's transpose. */
int grad_lrn(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  int x = n.in[0], d = dy[0];
  DType dt = g->vals[x].dt;
  int64_t size = attr_i(&n, "size", 1), lo = (size - 1) / 2;
  double alpha = attr_f(&n, "alpha", 1e-4f), beta = attr_f(&n, "beta", 0.75f), bias = attr_f(&n, "bias", 1.0f);
  int s = chan_window_sum(ad, ad_mul(ad, x, x), size, lo);
  int den = ad_add(ad, ad_const(ad, dt, bias), ad_scale(ad, s, alpha / (double)size));
  int pw = ad_node(ad, "Pow", 2, (int[]){den, ad_const(ad, dt, -beta)}, 0, NULL);   /* den^-b */
  int u = ad_div(ad, ad_mul(ad, ad_mul(ad, d, x), pw), den);
  int back = chan_window_sum(ad, u, size, size - 1 - lo);
  dx[0] = ad_add(ad, ad_mul(ad, d, pw), ad_scale(ad, ad_mul(ad, x, back), -2 * alpha * beta / (double)size));
  return MATC_OK;
}

/* y = xc r, r = 1/(sigma + 1e-9), sigma = sqrt(mean(xc^2)):
 * dX = r (dY - mean(dY)) - xc mean(dY xc) r^2 / sigma. */
int grad_mvn(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  char red[MATC_MAX_RANK];
  int rc = mvn_setup(g, node, red);
  if (rc) return rc;
  int x = n.in[0], d = dy[0];
  Value xv = g->vals[x];
  int64_t axes[MATC_MAX_RANK], m = 1;
  int na = 0;
  for (int i = 0; i < xv.rank; i++)
    if (red[i]) { axes[na++] = i; m *= xv.dims[i]; }
  double im = 1.0 / (double)m;
  int xc = ad_sub(ad, x, mean_over(ad, x, na, axes, im));
  int sig = ad_unary(ad, "Sqrt", mean_over(ad, ad_mul(ad, xc, xc), na, axes, im));
  int r = ad_unary(ad, "Reciprocal", ad_add(ad, sig, ad_const(ad, xv.dt, 1e-9)));
  int t1 = ad_mul(ad, r, ad_sub(ad, d, mean_over(ad, d, na, axes, im)));
  int c = ad_div(ad, ad_mul(ad, mean_over(ad, ad_mul(ad, d, xc), na, axes, im), ad_mul(ad, r, r)), sig);
  dx[0] = ad_sub(ad, t1, ad_mul(ad, xc, c));
  return MATC_OK;
}

/* Resize/Upsample: ResizeGrad(dY, <the forward's other inputs>) with the
 * forward's attributes, plus modern (its coordinate conventions) and
 * in_shape (X's). It rebuilds the forward's tap tables bit for bit. */
int grad_resize(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  Value xv = g->vals[n.in[0]];
  int in[8];
  Attr a[40];
  if (n.nin > 8 || n.nattr > 38) return unsupported(g, node, -1, "too many inputs or attributes");
  for (int i = 0; i < n.nin; i++) in[i] = n.in[i];
  in[0] = dy[0];
  for (int i = 0; i < n.nattr; i++) a[i] = n.attr[i];
  a[n.nattr] = ad_attr_i("modern", resize_modern(g, node));
  a[n.nattr + 1] = ad_attr_ints(ad, "in_shape", xv.rank, xv.dims);
  dx[0] = ad_node(ad, "ResizeGrad", n.nin, in, n.nattr + 2, a);
  return MATC_OK;
}

static int resize_grad_setup(Graph *g, int node, ResizeSpec *rs, int64_t *in) {
  Node *n = &g->nodes[node];
  Value *d = in_val(g, node, 0);
  if (attr_ints(n, "in_shape", in, MATC_MAX_RANK) != d->rank) return fail(g, node, -1, "bad in_shape");
  int rc = resize_setup(g, node, rs, (int)attr_i(n, "modern", 1), d->rank, in);
  if (rc) return rc;
  for (int i = 0; i < d->rank; i++)
    if (rs->out[i] != d->dims[i]) return fail(g, node, 0, "dY does not have the resized shape");
  return MATC_OK;
}

int infer_resize_grad(Graph *g, int node) {
  ResizeSpec rs;
  int64_t in[MATC_MAX_RANK];
  int rc = resize_grad_setup(g, node, &rs, in);
  if (rc) return rc;
  set_out(g, node, 0, in_val(g, node, 0)->dt, in_val(g, node, 0)->rank, in);
  return MATC_OK;
}

/* The forward's per-axis taps (output o reads sources idx with weights w)
 * transposed: source j gathers from the outputs that read it, K entries
 * each (padded with weight 0). Taps of one output that clamp to the same
 * source are merged; zero weights and outside outputs are dropped. */
static int64_t resize_transpose_axis(Graph *g, const ResizeAxis *ax, int64_t out, int64_t in,
                                     int64_t **ti, double **tw) {
  int T = ax->taps;
  int64_t *cnt = arena_alloc(g->arena, sizeof(int64_t) * (in + 1)), K = 1;
  memset(cnt, 0, sizeof(int64_t) * in);
  for (int pass = 0; pass < 2; pass++) {
    if (pass) {
      *ti = arena_alloc(g->arena, sizeof(int64_t) * in * K);
      *tw = arena_alloc(g->arena, sizeof(double) * in * K);
      memset(*ti, 0, sizeof(int64_t) * in * K);
      memset(*tw, 0, sizeof(double) * in * K);
      memset(cnt, 0, sizeof(int64_t) * in);
    }
    for (int64_t o = 0; o < out; o++) {
      if (!ax->ok[o]) continue;
      for (int j = 0; j < T; j++) {
        int64_t s = ax->idx[o * T + j];
        double w = ax->w[o * T + j];
        if (j && s == ax->idx[o * T + j - 1]) {   /* merged into the previous tap */
          if (pass) (*tw)[s * K + cnt[s] - 1] += w;
          continue;
        }
        if (pass) {
          (*ti)[s * K + cnt[s]] = o;
          (*tw)[s * K + cnt[s]] = w;
        }
        cnt[s]++;
        if (cnt[s] > K) K = cnt[s];
      }
    }
  }
  return K;
}

/* One kernel over dX; each resized axis adds a reduction var over its
 * K transposed taps: a gather of dY through index and weight tables. */
int lower_resize_grad(Graph *g, int node) {
  ResizeSpec rs;
  int64_t in[MATC_MAX_RANK];
  int rc = resize_grad_setup(g, node, &rs, in);
  if (rc) return rc;
  int dyv = g->nodes[node].in[0], dxv = g->nodes[node].out[0];
  DType dt = g->vals[dyv].dt;
  int r = g->vals[dyv].rank, nres = 0, nred = 0;
  int64_t dst[MATC_MAX_RANK];
  shape_strides(r, rs.out, dst);
  ResizeAxis ax[MATC_MAX_RANK];
  for (int i = 0; i < r; i++) {
    if ((rc = resize_axis(g, node, &rs, r, i, in[i], &ax[i]))) return rc;
    nres += !ax[i].identity;
  }
  if (nres > KMAX_DYN) return unsupported(g, node, -1, "resizing more than %d axes", KMAX_DYN);
  Kernel *k = k_loop(g, node, dxv, r, in);
  shape_strides(r, in, k->out_stride);
  int64_t st[KMAX_VARS] = {0};
  Expr *ld = load(g, dyv, st), *w = NULL;
  for (int i = 0; i < r; i++) {
    if (ax[i].identity) {
      ld->stride[i] = dst[i];
      continue;
    }
    int64_t *ti;
    double *tw;
    int64_t K = resize_transpose_axis(g, &ax[i], rs.out[i], in[i], &ti, &tw);
    int64_t td[2] = {in[i], K}, ts[KMAX_VARS] = {0};
    ts[i] = K;
    if (K > 1) {
      ts[r + nred] = 1;
      k->ext[r + nred++] = K;
    }
    void *data;
    int it = new_table(g, node, "taps", DT_I64, 2, td, &data);
    memcpy(data, ti, sizeof(int64_t) * in[i] * K);
    e_load_dyn(ld, load(g, it, ts), dst[i]);
    int ones = 1;
    for (int64_t j = 0; j < in[i] * K; j++) ones &= tw[j] == 1;
    if (!ones) {
      int wt = new_table(g, node, "weights", dt, 2, td, &data);
      for (int64_t j = 0; j < in[i] * K; j++) put_f(dt, data, j, tw[j]);
      Expr *wl = load(g, wt, ts);
      w = w ? bin(g, B_MUL, w, wl) : wl;
    }
  }
  k->nred = nred;
  k->body = w ? bin(g, B_MUL, w, ld) : ld;
  if (nred) k->red = R_SUM;
  return MATC_OK;
}
