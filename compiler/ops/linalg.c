/* linalg.c: MatMul, Gemm and Einsum. MatMul and Gemm become one extern
 * GEMM kernel (OpenBLAS) over the broadcast batch dims; Gemm's C term is a
 * loop kernel that initialises the output before the GEMM accumulates into
 * it. Einsum is a GEMM (plus transposes) when the equation is a batched
 * matrix product, else one summing loop kernel. */
#include "../matc_internal.h"
#include "../../runtime/rt.h"

#include <stdio.h>
#include <string.h>

static int check_float(Graph *g, int node, int j) {
  DType dt = g->vals[g->nodes[node].in[j]].dt;
  if (dt != DT_F32 && dt != DT_F64)
    return unsupported(g, node, j, "%s on %s is not supported (float32 and float64 are)",
                       g->nodes[node].op_type, dt_name(dt));
  return MATC_OK;
}

int infer_matmul(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (n->nin < 2 || n->in[0] < 0 || n->in[1] < 0) return fail(g, node, -1, "needs two inputs");
  if (check_float(g, node, 0) || check_float(g, node, 1)) return MATC_UNSUPPORTED;
  Value *a = &g->vals[n->in[0]], *b = &g->vals[n->in[1]];
  if (a->dt != b->dt) return fail(g, node, 1, "data type does not match input 0's");
  if (a->rank < 1 || b->rank < 1) return fail(g, node, -1, "inputs must have rank >= 1");
  int64_t ka = a->dims[a->rank - 1];
  int64_t kb = b->rank == 1 ? b->dims[0] : b->dims[b->rank - 2];
  if (ka != kb)
    return fail(g, node, 1, "inner dimensions differ: %lld vs %lld", (long long)ka, (long long)kb);
  int ra = a->rank > 2 ? a->rank - 2 : 0, rb = b->rank > 2 ? b->rank - 2 : 0;
  int64_t d[MATC_MAX_RANK];
  int r;
  if (broadcast_shapes(g, node, ra, a->dims, rb, b->dims, &r, d)) return MATC_ERR;
  if (a->rank > 1) d[r++] = a->dims[a->rank - 2];
  if (b->rank > 1) d[r++] = b->dims[b->rank - 1];
  value_set(&g->vals[n->out[0]], a->dt, r, d);
  return MATC_OK;
}

/* Emits out = A @ B (+ out if accumulate) for A [..,M,K], B [..,K,N] with
 * numpy broadcasting of batch dims. Used by MatMul, Gemm and Einsum. */
int emit_matmul(Graph *g, int node, int va, int ta, int vb, int tb, int out, double alpha,
                double beta) {
  Value *a = &g->vals[va], *b = &g->vals[vb], *o = &g->vals[out];
  int64_t M = a->rank > 1 ? a->dims[a->rank - (ta ? 1 : 2)] : 1;
  int64_t K = a->dims[a->rank - (ta ? 2 : 1)];
  if (a->rank == 1) K = a->dims[0];
  int64_t N = b->rank > 1 ? b->dims[b->rank - (tb ? 2 : 1)] : 1;
  int ra = a->rank > 2 ? a->rank - 2 : 0, rb = b->rank > 2 ? b->rank - 2 : 0;
  int nb = ra > rb ? ra : rb;
  Kernel *k = k_extern(g, node, EXT_gemm);
  k_arg(k, va, 0);
  k_arg(k, vb, 0);
  k_arg(k, out, 0);
  k->np = GEMM_NPARAMS;
  k->p[GEMM_DT] = o->dt;
  k->p[GEMM_TA] = ta;
  k->p[GEMM_TB] = tb;
  k->p[GEMM_N] = N;
  k->p[GEMM_K] = K;
  k->p[GEMM_LDA] = a->rank > 1 ? a->dims[a->rank - 1] : K;
  k->p[GEMM_LDB] = b->rank > 1 ? b->dims[b->rank - 1] : 1;
  k->p[GEMM_LDC] = N;
  k->p[GEMM_ALPHA] = matc_rt_f64_bits(alpha);
  k->p[GEMM_BETA] = matc_rt_f64_bits(beta);
  /* A weight without batch dims times a contiguous activation is one big
   * GEMM: fold A's batch into M. */
  if (rb == 0 && !ta && a->rank > 2) {
    k->p[GEMM_M] = M * shape_nelem(ra, a->dims);
    k->p[GEMM_NB] = 0;
    return MATC_OK;
  }
  k->p[GEMM_M] = M;
  if (nb > GEMM_MAX_BATCH) return unsupported(g, node, -1, "more than %d batch dims", GEMM_MAX_BATCH);
  k->p[GEMM_NB] = nb;
  int64_t sa = M * K, sb = K * N, sc = M * N;
  for (int i = nb - 1; i >= 0; i--) {
    int ia = i - (nb - ra), ib = i - (nb - rb);
    int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
    int64_t cnt = da > db ? da : db;
    int64_t *q = k->p + GEMM_BATCH + 4 * i;
    q[0] = cnt;
    q[1] = da == 1 ? 0 : sa;
    q[2] = db == 1 ? 0 : sb;
    q[3] = sc;
    sa *= da;
    sb *= db;
    sc *= cnt;
  }
  return MATC_OK;
}

int lower_matmul(Graph *g, int node) {
  Node *n = &g->nodes[node];
  return emit_matmul(g, node, n->in[0], 0, n->in[1], 0, n->out[0], 1.0, 0.0);
}

int infer_gemm(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (n->nin < 2 || n->in[0] < 0 || n->in[1] < 0) return fail(g, node, -1, "needs two inputs");
  if (check_float(g, node, 0) || check_float(g, node, 1)) return MATC_UNSUPPORTED;
  Value *a = &g->vals[n->in[0]], *b = &g->vals[n->in[1]];
  if (a->rank != 2 || b->rank != 2) return fail(g, node, -1, "A and B must be matrices");
  int ta = (int)attr_i(n, "transA", 0), tb = (int)attr_i(n, "transB", 0);
  int64_t M = a->dims[ta ? 1 : 0], K = a->dims[ta ? 0 : 1];
  int64_t K2 = b->dims[tb ? 1 : 0], N = b->dims[tb ? 0 : 1];
  if (K != K2) return fail(g, node, 1, "inner dimensions differ: %lld vs %lld", (long long)K, (long long)K2);
  int64_t d[2] = {M, N};
  if (n->nin > 2 && n->in[2] >= 0) {
    Value *c = &g->vals[n->in[2]];
    int r;
    int64_t bd[MATC_MAX_RANK];
    if (c->rank > 2 || broadcast_shapes(g, node, c->rank, c->dims, 2, d, &r, bd) ||
        bd[0] != M || bd[1] != N)
      return fail(g, node, 2, "C does not broadcast to [%lld, %lld]", (long long)M, (long long)N);
  }
  value_set(&g->vals[n->out[0]], a->dt, 2, d);
  return MATC_OK;
}

int lower_gemm(Graph *g, int node) {
  Node *n = &g->nodes[node];
  double alpha = attr_f(n, "alpha", 1.0f), beta = attr_f(n, "beta", 1.0f);
  int out = n->out[0];
  int has_c = n->nin > 2 && n->in[2] >= 0 && beta != 0;
  if (has_c) {
    Kernel *k = k_elementwise(g, node, out);
    Expr *c = e_load_bcast(g, n->in[2], 2);
    k->body = beta == 1 ? c : e_bin(g, B_MUL, c, e_const(g, c->dt, beta));
  }
  return emit_matmul(g, node, n->in[0], (int)attr_i(n, "transA", 0), n->in[1],
                     (int)attr_i(n, "transB", 0), out, alpha, has_c ? 1.0 : 0.0);
}

/* ---------------------------------------------------------------- Einsum */

/* Labels: 'A'-'Z' are 0-25, 'a'-'z' 26-51 (so ids sort like ASCII, as the
 * implicit output's alphabetical order needs), the dims an ellipsis covers
 * 52.. (right-aligned across operands, numpy style). */
#define EIN_ELL 52
#define EIN_NLAB (EIN_ELL + MATC_MAX_RANK)
#define EIN_MAXIN 8

typedef struct {
  int nop;
  int nlab[EIN_MAXIN], lab[EIN_MAXIN][MATC_MAX_RANK];
  int nout, out[EIN_NLAB];
  int64_t dim[EIN_NLAB];           /* -1 when the label is unused */
  int count[EIN_NLAB];             /* occurrences over all operands */
} Einsum;

static int ein_letter(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return 26 + c - 'a';
  return -1;
}

/* One subscript term: its letter ids in order, -2 standing for "...". */
static int ein_term(const char *s, int len, int *ids, int *n) {
  *n = 0;
  for (int i = 0; i < len; i++) {
    if (*n >= MATC_MAX_RANK + 1) return -1;
    if (s[i] == '.') {
      if (i + 2 >= len || s[i + 1] != '.' || s[i + 2] != '.') return -1;
      for (int j = 0; j < *n; j++)
        if (ids[j] == -2) return -1;
      ids[(*n)++] = -2;
      i += 2;
    } else if ((ids[*n] = ein_letter(s[i])) >= 0) {
      (*n)++;
    } else {
      return -1;
    }
  }
  return 0;
}

static int parse_einsum(Graph *g, int node, Einsum *e) {
  Node *n = &g->nodes[node];
  const char *eq = attr_s(n, "equation", NULL);
  if (!eq) return fail(g, node, -1, "attribute 'equation' is missing");
  char s[512];
  int len = 0;
  for (const char *p = eq; *p && len < (int)sizeof s - 1; p++)
    if (*p != ' ') s[len++] = *p;
  s[len] = 0;
  const char *arrow = strstr(s, "->");
  int lhs_len = arrow ? (int)(arrow - s) : len;
  memset(e, 0, sizeof *e);
  for (int l = 0; l < EIN_NLAB; l++) e->dim[l] = -1;
  int terms[EIN_MAXIN][MATC_MAX_RANK + 1], nterm[EIN_MAXIN], ell[EIN_MAXIN], E = 0;
  for (int start = 0, i = 0; i <= lhs_len; i++) {
    if (i < lhs_len && s[i] != ',') continue;
    if (e->nop == EIN_MAXIN) return unsupported(g, node, -1, "more than %d operands", EIN_MAXIN);
    if (ein_term(s + start, i - start, terms[e->nop], &nterm[e->nop]))
      return fail(g, node, -1, "bad equation '%s'", eq);
    e->nop++;
    start = i + 1;
  }
  if (e->nop != n->nin) return fail(g, node, -1, "equation has %d operands, node %d inputs", e->nop, n->nin);
  for (int j = 0; j < e->nop; j++) {
    if (n->in[j] < 0) return fail(g, node, j, "input is missing");
    int r = g->vals[n->in[j]].rank, nl = nterm[j], has = 0;
    for (int t = 0; t < nl; t++) has |= terms[j][t] == -2;
    ell[j] = has ? r - (nl - 1) : 0;
    if (ell[j] < 0 || (!has && nl != r))
      return fail(g, node, j, "rank %d does not match its subscripts", r);
    if (ell[j] > E) E = ell[j];
  }
  for (int j = 0; j < e->nop; j++) {
    Value *x = &g->vals[n->in[j]];
    int p = 0;
    for (int t = 0; t < nterm[j]; t++) {
      if (terms[j][t] == -2) {
        for (int q = 0; q < ell[j]; q++) e->lab[j][p++] = EIN_ELL + E - ell[j] + q;
      } else {
        e->lab[j][p++] = terms[j][t];
      }
    }
    e->nlab[j] = p;
    for (p = 0; p < e->nlab[j]; p++) {
      int l = e->lab[j][p];
      int64_t d = x->dims[p];
      e->count[l]++;
      if (e->dim[l] < 0 || e->dim[l] == 1) e->dim[l] = d;
      else if (d != 1 && d != e->dim[l])
        return fail(g, node, j, "dimension %d is %lld, elsewhere %lld", p, (long long)d,
                    (long long)e->dim[l]);
    }
  }
  if (arrow) {
    int ids[MATC_MAX_RANK + 1], nl;
    if (ein_term(arrow + 2, len - lhs_len - 2, ids, &nl)) return fail(g, node, -1, "bad equation '%s'", eq);
    char seen[EIN_NLAB] = {0};
    for (int t = 0; t < nl; t++) {
      if (ids[t] == -2) {
        for (int q = 0; q < E; q++) e->out[e->nout++] = EIN_ELL + q;
        continue;
      }
      if (e->dim[ids[t]] < 0 || seen[ids[t]])
        return fail(g, node, -1, "output subscripts of '%s' are unknown or repeated", eq);
      seen[ids[t]] = 1;
      e->out[e->nout++] = ids[t];
    }
  } else {
    /* Implicit output: the broadcast dims, then the letters seen once. */
    for (int q = 0; q < E; q++) e->out[e->nout++] = EIN_ELL + q;
    for (int l = 0; l < EIN_ELL; l++)
      if (e->count[l] == 1) e->out[e->nout++] = l;
  }
  if (e->nout > MATC_MAX_RANK) return unsupported(g, node, -1, "output rank %d is over the limit", e->nout);
  return MATC_OK;
}

int infer_einsum(Graph *g, int node) {
  Node *n = &g->nodes[node];
  if (n->nin < 1) return fail(g, node, -1, "needs an input");
  Einsum e;
  int rc = parse_einsum(g, node, &e);
  if (rc) return rc;
  DType dt = g->vals[n->in[0]].dt;
  for (int j = 1; j < n->nin; j++)
    if (g->vals[n->in[j]].dt != dt) return fail(g, node, j, "data type does not match input 0's");
  int64_t d[MATC_MAX_RANK];
  for (int i = 0; i < e.nout; i++) d[i] = e.dim[e.out[i]];
  value_set(&g->vals[n->out[0]], dt, e.nout, d);
  return MATC_OK;
}

static int ein_scratch(Graph *g, int node, const char *what, int alias_of, int rank, const int64_t *dims) {
  int v = value_scratch(g, node, what, g->vals[g->nodes[node].out[0]].dt, rank, dims);
  g->vals[v].alias_of = alias_of;
  return v;
}

/* The direct loop: out[out labels] = sum over the other labels of the
 * product of the operands. Handles every equation (diagonals, traces,
 * broadcasting: a size-1 dim gets stride 0); GEMM-shaped ones take the
 * faster path below. */
static int ein_loop(Graph *g, int node, int nop, const int *vals, int (*lab)[MATC_MAX_RANK],
                    const int *nlab, int out, const int *olab, int nout, const int64_t *dim) {
  int var[EIN_NLAB], nv = 0;
  int64_t ext[EIN_NLAB] = {0};
  for (int l = 0; l < EIN_NLAB; l++) var[l] = -1;
  for (int i = 0; i < nout; i++) { var[olab[i]] = nv; ext[nv++] = dim[olab[i]]; }
  for (int j = 0; j < nop; j++)
    for (int p = 0; p < nlab[j]; p++)
      if (var[lab[j][p]] < 0) { var[lab[j][p]] = nv; ext[nv++] = dim[lab[j][p]]; }
  if (nv > KMAX_VARS) return unsupported(g, node, -1, "more than %d distinct subscripts", KMAX_VARS);
  Kernel *k = k_loop(g, node, out, nout, ext);
  shape_strides(nout, ext, k->out_stride);
  k->nred = nv - nout;
  for (int i = nout; i < nv; i++) k->ext[i] = ext[i];
  k->red = k->nred ? R_SUM : R_NONE;
  Expr *body = NULL;
  for (int j = 0; j < nop; j++) {
    /* A scratch operand has merged dims: take its dims from the labels. */
    Value *x = &g->vals[vals[j]];
    int64_t xd[EIN_NLAB], xs[EIN_NLAB], st[KMAX_VARS] = {0};
    for (int p = 0; p < nlab[j]; p++) xd[p] = x->rank == nlab[j] ? x->dims[p] : dim[lab[j][p]];
    shape_strides(nlab[j], xd, xs);
    for (int p = 0; p < nlab[j]; p++)
      if (xd[p] != 1) st[var[lab[j][p]]] += xs[p];
    Expr *ld = e_load(g, vals[j], 0, st, nv);
    body = body ? e_bin(g, B_MUL, body, ld) : ld;
  }
  k->body = body;
  return MATC_OK;
}

static int same_labels(const int *a, int na, const int *b1, int n1, const int *b2, int n2,
                       const int *b3, int n3) {
  if (na != n1 + n2 + n3) return 0;
  for (int i = 0; i < n1; i++) if (a[i] != b1[i]) return 0;
  for (int i = 0; i < n2; i++) if (a[n1 + i] != b2[i]) return 0;
  for (int i = 0; i < n3; i++) if (a[n1 + n2 + i] != b3[i]) return 0;
  return 1;
}

/* An operand as the [batch, rows, cols] matrix GEMM wants: a view when its
 * dims already come in that order (or with rows and cols swapped: *t),
 * else a transposed copy. */
static int ein_operand(Graph *g, int node, int v, const int *lab, int nl, const int *bl, int nb,
                       const int *rl, int nr, const int *cl, int nc, const int64_t *dim, int *t) {
  int64_t B = 1, R = 1, C = 1;
  for (int i = 0; i < nb; i++) B *= dim[bl[i]];
  for (int i = 0; i < nr; i++) R *= dim[rl[i]];
  for (int i = 0; i < nc; i++) C *= dim[cl[i]];
  *t = 0;
  if (same_labels(lab, nl, bl, nb, rl, nr, cl, nc))
    return ein_scratch(g, node, "view", v, 3, (int64_t[]){B, R, C});
  if (same_labels(lab, nl, bl, nb, cl, nc, rl, nr)) {
    *t = 1;
    return ein_scratch(g, node, "view", v, 3, (int64_t[]){B, C, R});
  }
  int m = ein_scratch(g, node, "operand", -1, 3, (int64_t[]){B, R, C});
  int want[3 * MATC_MAX_RANK], nw = 0;
  for (int i = 0; i < nb; i++) want[nw++] = bl[i];
  for (int i = 0; i < nr; i++) want[nw++] = rl[i];
  for (int i = 0; i < nc; i++) want[nw++] = cl[i];
  int labs[1][MATC_MAX_RANK];
  memcpy(labs[0], lab, sizeof(int) * nl);
  /* m's own dims are merged; ein_loop only needs its element order. */
  if (ein_loop(g, node, 1, &v, labs, &nl, m, want, nw, dim)) return -1;
  return m;
}

int lower_einsum(Graph *g, int node) {
  Node *n = &g->nodes[node];
  Einsum e;
  int rc = parse_einsum(g, node, &e);
  if (rc) return rc;
  int out = n->out[0];
  DType dt = g->vals[out].dt;
  /* GEMM path: two float operands, no repeated or broadcast subscripts,
   * every summed subscript in both operands. */
  int gemm = e.nop == 2 && (dt == DT_F32 || dt == DT_F64);
  char in_a[EIN_NLAB] = {0}, in_b[EIN_NLAB] = {0}, in_o[EIN_NLAB] = {0};
  for (int i = 0; i < e.nout; i++) in_o[e.out[i]] = 1;
  for (int j = 0; j < e.nop && gemm; j++) {
    Value *x = &g->vals[n->in[j]];
    for (int p = 0; p < e.nlab[j]; p++) {
      char *seen = j ? in_b : in_a;
      int l = e.lab[j][p];
      if (seen[l] || x->dims[p] != e.dim[l]) gemm = 0;
      seen[l] = 1;
    }
  }
  int bl[EIN_NLAB], ml[EIN_NLAB], kl[EIN_NLAB], nlist[EIN_NLAB], nb = 0, nm = 0, nk = 0, nn = 0;
  if (gemm) {
    for (int p = 0; p < e.nlab[0]; p++) {
      int l = e.lab[0][p];
      if (in_b[l] && in_o[l]) bl[nb++] = l;
      else if (in_b[l]) kl[nk++] = l;
      else if (in_o[l]) ml[nm++] = l;
      else gemm = 0;
    }
    for (int p = 0; p < e.nlab[1]; p++) {
      int l = e.lab[1][p];
      if (!in_a[l] && in_o[l]) nlist[nn++] = l;
      else if (!in_a[l]) gemm = 0;
    }
    gemm = gemm && nk > 0;
  }
  if (!gemm)
    return ein_loop(g, node, e.nop, n->in, e.lab, e.nlab, out, e.out, e.nout, e.dim);
  int ta, tb;
  int a = ein_operand(g, node, n->in[0], e.lab[0], e.nlab[0], bl, nb, ml, nm, kl, nk, e.dim, &ta);
  if (a < 0) return MATC_UNSUPPORTED;
  int b = ein_operand(g, node, n->in[1], e.lab[1], e.nlab[1], bl, nb, kl, nk, nlist, nn, e.dim, &tb);
  if (b < 0) return MATC_UNSUPPORTED;
  /* GEMM writes [batch, M, N]; permute into the output when it differs. */
  int direct = same_labels(e.out, e.nout, bl, nb, ml, nm, nlist, nn);
  int64_t B = 1, M = 1, N = 1;
  for (int i = 0; i < nb; i++) B *= e.dim[bl[i]];
  for (int i = 0; i < nm; i++) M *= e.dim[ml[i]];
  for (int i = 0; i < nn; i++) N *= e.dim[nlist[i]];
  int c = direct ? out : ein_scratch(g, node, "product", -1, 3, (int64_t[]){B, M, N});
  rc = emit_matmul(g, node, a, ta, b, tb, c, 1.0, 0.0);
  if (rc || direct) return rc;
  int clab[1][MATC_MAX_RANK], ncl = 0;
  for (int i = 0; i < nb; i++) clab[0][ncl++] = bl[i];
  for (int i = 0; i < nm; i++) clab[0][ncl++] = ml[i];
  for (int i = 0; i < nn; i++) clab[0][ncl++] = nlist[i];
  return ein_loop(g, node, 1, &c, clab, &ncl, out, e.out, e.nout, e.dim);
}

/* ---------------------------------------------------------------- gradients */

/* MatMul y = a @ b (numpy rules): da = dy @ b^T, db = a^T @ dy, with
 * 1-D operands promoted and broadcast batch dims summed back. */
int grad_matmul(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  int a = n.in[0], b = n.in[1], d = dy[0];
  Value va = g->vals[a], vb = g->vals[b];
  /* Promote 1-D operands (and dy) to matrices. */
  int a2 = a, b2 = b, d2 = d;
  if (va.rank == 1) a2 = ad_reshape(ad, a, 2, (int64_t[]){1, va.dims[0]});
  if (vb.rank == 1) b2 = ad_reshape(ad, b, 2, (int64_t[]){vb.dims[0], 1});
  if (va.rank == 1 || vb.rank == 1) {
    Value vy = g->vals[n.out[0]];
    /* rebuild dy as [..., M, N] */
    int64_t dims[MATC_MAX_RANK];
    int r = 0;
    int nb = vy.rank - (va.rank > 1) - (vb.rank > 1);
    for (int i = 0; i < nb; i++) dims[r++] = vy.dims[i];
    dims[r++] = va.rank > 1 ? va.dims[va.rank - 2] : 1;
    dims[r++] = vb.rank > 1 ? vb.dims[vb.rank - 1] : 1;
    d2 = ad_reshape(ad, d, r, dims);
  }
  if (ad_needs(ad, node, 0)) {
    int r = ad_matmul(ad, d2, ad_swap_last(ad, b2));
    if (va.rank == 1) {
      r = ad_sum_to(ad, r, a2);
      r = ad_reshape(ad, r, 1, va.dims);
    }
    dx[0] = ad_sum_to(ad, r, a);
  }
  if (ad_needs(ad, node, 1)) {
    int r = ad_matmul(ad, ad_swap_last(ad, a2), d2);
    if (vb.rank == 1) {
      r = ad_sum_to(ad, r, b2);
      r = ad_reshape(ad, r, 1, vb.dims);
    }
    dx[1] = ad_sum_to(ad, r, b);
  }
  return MATC_OK;
}

/* Gemm y = alpha op(A) op(B) + beta C. */
int grad_gemm(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  int a = n.in[0], b = n.in[1], d = dy[0];
  int ta = (int)attr_i(&n, "transA", 0), tb = (int)attr_i(&n, "transB", 0);
  double alpha = attr_f(&n, "alpha", 1.0f), beta = attr_f(&n, "beta", 1.0f);
  int da = alpha == 1 ? d : ad_scale(ad, d, alpha);
  if (ad_needs(ad, node, 0)) {
    /* op(A) = A: dA = dy op(B)^T;  op(A) = A^T: dA = op(B) dy^T */
    int bt = tb ? b : ad_swap_last(ad, b);           /* op(B)^T */
    dx[0] = ta ? ad_matmul(ad, tb ? ad_swap_last(ad, b) : b, ad_swap_last(ad, da))
               : ad_matmul(ad, da, bt);
  }
  if (ad_needs(ad, node, 1)) {
    /* op(B) = B: dB = op(A)^T dy;  op(B) = B^T: dB = dy^T op(A) */
    int at = ta ? a : ad_swap_last(ad, a);           /* op(A)^T */
    dx[1] = tb ? ad_matmul(ad, ad_swap_last(ad, da), ta ? ad_swap_last(ad, a) : a)
               : ad_matmul(ad, at, da);
  }
  if (n.nin > 2 && n.in[2] >= 0 && ad_needs(ad, node, 2))
    dx[2] = ad_sum_to(ad, beta == 1 ? d : ad_scale(ad, d, beta), n.in[2]);
  return MATC_OK;
}

/* Einsum: the gradient of operand j is the einsum of dy with the other
 * operands into j's subscripts (so "ij,jk->ik" gives dA = "ik,jk->ij",
 * which takes the GEMM path again). Subscripts only j has are constant
 * along the product: the einsum leaves them out and an Expand spreads the
 * result over them; dims j broadcast (size 1 against a larger one) are
 * summed back. A subscript repeated within j (a diagonal) is unsupported. */
int grad_einsum(AD *ad, int node, const int *dy, int *dx) {
  Graph *g = ad->g;
  Node n = g->nodes[node];
  Einsum e;
  int rc = parse_einsum(g, node, &e);
  if (rc) return rc;
  /* Letters for the equation: a label keeps its own, ellipsis dims take
   * letters no operand uses. */
  char let[EIN_NLAB];
  int free_l = 0;
  for (int l = 0; l < EIN_NLAB; l++) {
    if (l < EIN_ELL) { let[l] = (char)(l < 26 ? 'A' + l : 'a' + l - 26); continue; }
    if (e.dim[l] < 0) continue;
    while (free_l < EIN_ELL && e.dim[free_l] >= 0) free_l++;
    if (free_l == EIN_ELL) return unsupported(g, node, -1, "too many subscripts to differentiate");
    let[l] = let[free_l++];
  }
  for (int j = 0; j < e.nop; j++) {
    if (!ad_needs(ad, node, j)) continue;
    int x = n.in[j];
    Value vx = g->vals[x];
    char in_other[EIN_NLAB] = {0}, seen[EIN_NLAB] = {0};
    for (int i = 0; i < e.nout; i++) in_other[e.out[i]] = 1;
    for (int k = 0; k < e.nop; k++)
      for (int p = 0; k != j && p < e.nlab[k]; p++) in_other[e.lab[k][p]] = 1;
    char eq[4 * EIN_NLAB + 16];
    int len = 0, ins[EIN_MAXIN + 1], nin = 0;
    ins[nin++] = dy[0];
    for (int i = 0; i < e.nout; i++) eq[len++] = let[e.out[i]];
    for (int k = 0; k < e.nop; k++) {
      if (k == j) continue;
      eq[len++] = ',';
      for (int p = 0; p < e.nlab[k]; p++) eq[len++] = let[e.lab[k][p]];
      ins[nin++] = n.in[k];
    }
    eq[len++] = '-';
    eq[len++] = '>';
    int64_t kd[MATC_MAX_RANK];          /* the result's dims at j's rank */
    int missing = 0;
    for (int p = 0; p < e.nlab[j]; p++) {
      int l = e.lab[j][p];
      if (seen[l]) return unsupported(g, node, j, "no gradient for a repeated subscript (diagonal)");
      seen[l] = 1;
      kd[p] = in_other[l] ? e.dim[l] : 1;
      if (in_other[l]) eq[len++] = let[l];
      else missing |= vx.dims[p] != 1;
    }
    eq[len] = 0;
    Attr a = ad_attr_s("equation", arena_strdup(g->arena, eq));
    int r = ad_node(ad, "Einsum", nin, ins, 1, &a);
    if (r < 0) return MATC_OK;
    if (g->vals[r].rank != vx.rank) r = ad_reshape(ad, r, vx.rank, kd);
    int64_t axes[MATC_MAX_RANK];
    int na = 0;
    for (int p = 0; p < vx.rank; p++)
      if (vx.dims[p] == 1 && kd[p] != 1) axes[na++] = p;
    if (na) r = ad_reduce_sum(ad, r, na, axes, 1);
    if (missing) r = ad_node(ad, "Expand", 2, (int[]){r, ad_const_ints(ad, vx.rank, vx.dims)}, 0, NULL);
    dx[j] = r;
  }
  return MATC_OK;
}
