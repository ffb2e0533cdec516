/* linalg.c: MatMul and Gemm. Both become one extern GEMM kernel (OpenBLAS)
 * over the broadcast batch dims; Gemm's C term is a loop kernel that
 * initialises the output before the GEMM accumulates into it. */
#include "../matc_internal.h"
#include "../../runtime/rt.h"

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
