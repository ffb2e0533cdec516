/* guard_kernels.c: carries insert_guards' node predicates to the kernels,
 * right after lowering (before fusion, while a loop kernel's vars are
 * still its output's dims).
 *
 *  1. Every kernel takes its node's predicate.
 *  2. A node with a split plan (a sliced parameter's optimizer step or
 *     weight-gradient chain) has each kernel writing the node's output
 *     replaced by one kernel per slice, restricted to that slice along the
 *     planned axis and guarded by the slice's module: a loop kernel
 *     narrows one var (loads and the store move by begin * stride, INDEX
 *     reads index + begin); a GEMM narrows N (output's last axis) or M
 *     (the one before, when M is not folded with batch dims). Kernels that
 *     cannot be split keep the union predicate (exact, just no saving).
 *     Head splits (stop mode, passes/guard_heads.c) work the same way,
 *     one kernel per head: a loop kernel narrows the var of the head axis
 *     (also when lowering merged it with the axes after it), a batched
 *     GEMM restricts the batch level of the head axis to one index, and a
 *     GEMM contracting over heads (dX = dQ . W_q^T) becomes one piece per
 *     head along K, accumulating into C after an always-running zeroing
 *     kernel.
 *  3. Where a kernel can be skipped while a later kernel reading its
 *     output runs (a clipping norm reading a frozen slice's gradient, a
 *     stop-mode gradient feeding a sum), a zeroing kernel follows it under
 *     the negated predicate: readers see zero, never stale bytes. A kernel
 *     for head h of a block never reads what another head's kernel of
 *     that block writes (each reads its head's part), so those pairs need
 *     no zeroing. Writes
 *     to parameters and optimizer state never get one (frozen state must
 *     stay bit-identical).
 *
 * Fusion then only inlines a producer into a consumer whose predicate
 * implies the producer's, and a value with two writers (a split or a
 * zeroing kernel) is never inlined. Memory planning counts every kernel
 * whatever its predicate, so skipped kernels cannot break its reuse. */
#include "guards.h"
#include "../runtime/rt.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  Kernel *k;
  int n, cap;
  int *split, *range;      /* per kernel: split id and range, -1 when not split */
  int *blk, *head;         /* per kernel: block of heads and head, -1 when none */
  char *kpiece;            /* a per-head piece of a K-split GEMM */
} KList;

static Kernel *push(KList *l, const Kernel *k, int split, int range) {
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 256;
    l->k = realloc(l->k, sizeof(Kernel) * l->cap);
    l->split = realloc(l->split, sizeof(int) * l->cap);
    l->range = realloc(l->range, sizeof(int) * l->cap);
    l->blk = realloc(l->blk, sizeof(int) * l->cap);
    l->head = realloc(l->head, sizeof(int) * l->cap);
    l->kpiece = realloc(l->kpiece, (size_t)l->cap);
    MATC_ASSERT(l->k && l->split && l->range && l->blk && l->head && l->kpiece);
  }
  l->k[l->n] = *k;
  l->split[l->n] = split;
  l->range[l->n] = range;
  l->blk[l->n] = l->head[l->n] = -1;
  l->kpiece[l->n] = 0;
  return &l->k[l->n++];
}

static void klist_free(KList *l) {
  free(l->k);
  free(l->split);
  free(l->range);
  free(l->blk);
  free(l->head);
  free(l->kpiece);
}

/* A piece of a split: head h of a block when the split's ranges are heads. */
static void push_piece(KList *l, const Kernel *c, const GuardSplit *sp, int split_id, int r, int kpiece) {
  push(l, c, split_id, r);
  if (sp->block >= 0) l->blk[l->n - 1] = sp->block, l->head[l->n - 1] = r;
  l->kpiece[l->n - 1] = (char)kpiece;
}

static Kernel zero_kernel(Graph *g, const Kernel *k, int pred);

/* Moves var v's start to b: loads shift by b * stride, INDEX v reads
 * index + b. The expression is a private copy. */
static Expr *shift_var(Graph *g, Expr *e, int v, int64_t b) {
  if (!e) return NULL;
  if (e->kind == EX_INDEX && e->var == v) return e_bin(g, B_ADD, e, e_consti(g, DT_I64, b));
  e->a = shift_var(g, e->a, v, b);
  e->b = shift_var(g, e->b, v, b);
  e->c = shift_var(g, e->c, v, b);
  if (e->kind == EX_LOAD) {
    e->off += b * e->stride[v];
    for (int d = 0; d < e->ndyn; d++) e->dyn[d] = shift_var(g, e->dyn[d], v, b);
  }
  return e;
}

/* The loop var walking `axis` of the kernel's output, or -1. Lowering may
 * have merged the axis with the ones after it (a [B,S,H,dh] transpose
 * stored as [B,S,H*dh]): then *scale is the elements of the merged inner
 * axes per index of `axis`, and a range of `axis` is still one range of
 * the var. */
static int axis_var(Graph *g, const Kernel *k, int axis, int64_t *scale) {
  Value *o = &g->vals[k->out];
  if (axis < 0 || axis >= o->rank) return -1;
  int64_t st[MATC_MAX_RANK];
  shape_strides(o->rank, o->dims, st);
  for (int v = 0; v < k->nvar; v++) {
    int64_t ext = 1;
    for (int j = axis; j < o->rank; j++) {
      ext *= o->dims[j];
      if (k->ext[v] == ext && k->out_stride[v] == st[j]) {
        *scale = ext / o->dims[axis];
        return v;
      }
    }
  }
  return -1;
}

/* A GEMM contracting over heads (dX = dQ . W_q^T) as one piece per head
 * along K, each accumulating (beta 1) into C, which an always-running
 * kernel zeroes first: a frozen head's piece adds nothing. */
static int split_k(Graph *g, const Kernel *k, int node, const GuardSplit *sp, int split_id, KList *out) {
  Node *n = &g->nodes[node];
  if (n->op != OP_MatMul || n->nin != 2 || matc_rt_bits_f64(k->p[GEMM_BETA]) != 0 ||
      value_root(g, k->args[0]) != value_root(g, n->in[0]) || value_root(g, k->args[1]) != value_root(g, n->in[1]) ||
      k->p[GEMM_K] != sp->end[sp->nranges - 1])
    return 0;
  Kernel z = zero_kernel(g, k, 0);
  push(out, &z, -1, -1);
  for (int r = 0; r < sp->nranges; r++) {
    Kernel c = *k;
    int64_t b = sp->begin[r];
    c.p[GEMM_K] = sp->end[r] - b;
    c.p[GEMM_BETA] = matc_rt_f64_bits(1.0);
    c.argoff[0] += c.p[GEMM_TA] ? b * c.p[GEMM_LDA] : b;
    c.argoff[1] += c.p[GEMM_TB] ? b : b * c.p[GEMM_LDB];
    c.pred = sp->pred[r];
    push_piece(out, &c, sp, split_id, r, 1);
  }
  return 1;
}

/* The batch level of a GEMM walking `axis` of its output C, or -1. */
static int batch_level(const Kernel *k, const Value *o, int axis) {
  int64_t st[MATC_MAX_RANK];
  shape_strides(o->rank, o->dims, st);
  for (int l = 0; l < k->p[GEMM_NB]; l++) {
    const int64_t *q = k->p + GEMM_BATCH + 4 * l;
    if (q[0] == o->dims[axis] && q[3] == st[axis]) return l;
  }
  return -1;
}

/* Splits kernel k of a planned node into the split's ranges; 0 if it
 * cannot (the caller keeps it whole). */
static int split_kernel(Graph *g, const Kernel *k, int node, const GuardSplit *sp, int split_id, int axis,
                        KList *out) {
  Node *n = &g->nodes[node];
  /* The value the node makes (an Assign's is its destination). */
  int made = n->op == OP_Assign ? n->in[0] : n->nout >= 1 ? n->out[0] : -1;
  if (made < 0) return 0;
  int target = value_root(g, made);
  if (k->kind == K_LOOP) {
    if (k->out != made) return 0;
    /* A head split leaves pure copies (transposes) whole: they do no
     * arithmetic, and split they made LLVM's loop-access analysis of
     * switch-mini's step take minutes. */
    if (sp->param < 0 && k->body && k->body->kind == EX_LOAD && k->red == R_NONE) return 0;
    int64_t sc;
    int v = axis_var(g, k, axis, &sc);
    if (v < 0) return 0;
    for (int r = 0; r < sp->nranges; r++) {
      Kernel c = *k;
      int64_t b = sp->begin[r] * sc;
      c.ext[v] = sp->end[r] * sc - b;
      c.out_off += b * c.out_stride[v];
      c.body = shift_var(g, expr_copy(g, k->body), v, b);
      c.post = shift_var(g, expr_copy(g, k->post), v, b);
      c.pred = sp->pred[r];
      push_piece(out, &c, sp, split_id, r, 0);
    }
    return 1;
  }
  if (k->ext_fn != EXT_gemm || k->nargs != 3 || value_root(g, k->args[2]) != target) return 0;
  if (axis == GUARD_AXIS_K) return split_k(g, k, node, sp, split_id, out);
  Value *o = &g->vals[made];
  int lvl = axis >= 0 && axis < o->rank - 2 ? batch_level(k, o, axis) : -1;
  if (lvl >= 0) {
    /* A batch level (the head axis of [B,H,S,S]): restrict it to the range. */
    for (int r = 0; r < sp->nranges; r++) {
      Kernel c = *k;
      int64_t b = sp->begin[r], *q = c.p + GEMM_BATCH + 4 * lvl;
      q[0] = sp->end[r] - b;
      for (int j = 0; j < 3; j++) c.argoff[j] += b * q[1 + j];
      c.pred = sp->pred[r];
      push_piece(out, &c, sp, split_id, r, 0);
    }
    return 1;
  }
  int last = axis == o->rank - 1;
  if (!last && !(axis == o->rank - 2 && (k->p[GEMM_NB] > 0 || o->rank == 2))) return 0;
  for (int r = 0; r < sp->nranges; r++) {
    Kernel c = *k;
    int64_t b = sp->begin[r], len = sp->end[r] - b;
    if (last) {
      c.p[GEMM_N] = len;
      c.argoff[1] += c.p[GEMM_TB] ? b * c.p[GEMM_LDB] : b;
      c.argoff[2] += b;
    } else {
      c.p[GEMM_M] = len;
      c.argoff[0] += c.p[GEMM_TA] ? b : b * c.p[GEMM_LDA];
      c.argoff[2] += b * c.p[GEMM_LDC];
    }
    c.pred = sp->pred[r];
    push_piece(out, &c, sp, split_id, r, 0);
  }
  return 1;
}

/* ---------------------------------------------------------------- readers */

typedef struct {
  int *head, *next, *kern;   /* per root value: a list of reading kernels */
  int n, cap;
} Readers;

static void add_reader(Readers *rd, int v, int k) {
  if (rd->head[v] >= 0 && rd->kern[rd->head[v]] == k) return;
  if (rd->n == rd->cap) {
    rd->cap = rd->cap ? 2 * rd->cap : 1024;
    rd->next = realloc(rd->next, sizeof(int) * rd->cap);
    rd->kern = realloc(rd->kern, sizeof(int) * rd->cap);
    MATC_ASSERT(rd->next && rd->kern);
  }
  rd->kern[rd->n] = k;
  rd->next[rd->n] = rd->head[v];
  rd->head[v] = rd->n++;
}

static void expr_readers(Graph *g, Readers *rd, Expr *e, int k) {
  if (!e) return;
  if (e->kind == EX_LOAD) {
    add_reader(rd, value_root(g, e->val), k);
    for (int d = 0; d < e->ndyn; d++) expr_readers(g, rd, e->dyn[d], k);
  }
  expr_readers(g, rd, e->a, k);
  expr_readers(g, rd, e->b, k);
  expr_readers(g, rd, e->c, k);
}

/* The value a kernel writes (the GEMM's C), or -1. */
static int written(Graph *g, const Kernel *k) {
  if (k->kind == K_LOOP) return value_root(g, k->out);
  if (k->ext_fn == EXT_gemm) return value_root(g, k->args[2]);
  return k->nargs ? value_root(g, k->args[0]) : -1;
}

/* A loop kernel storing zero over what k writes. */
static Kernel zero_kernel(Graph *g, const Kernel *k, int pred) {
  Kernel z;
  memset(&z, 0, sizeof z);
  z.kind = K_LOOP;
  z.node = k->node;
  z.pred = pred;
  if (k->kind == K_LOOP) {
    z.nvar = k->nvar;
    for (int v = 0; v < k->nvar; v++) z.ext[v] = k->ext[v], z.out_stride[v] = k->out_stride[v];
    z.out = k->out;
    z.out_dt = k->out_dt;
    z.out_off = k->out_off;
  } else if (k->ext_fn == EXT_gemm) {
    int nb = (int)k->p[GEMM_NB];
    for (int l = 0; l < nb; l++) {
      z.ext[l] = k->p[GEMM_BATCH + 4 * l];
      z.out_stride[l] = k->p[GEMM_BATCH + 4 * l + 3];
    }
    z.ext[nb] = k->p[GEMM_M], z.out_stride[nb] = k->p[GEMM_LDC];
    z.ext[nb + 1] = k->p[GEMM_N], z.out_stride[nb + 1] = 1;
    z.nvar = nb + 2;
    z.out = k->args[2];
    z.out_dt = g->vals[z.out].dt;
    z.out_off = k->argoff[2];
  } else {
    z.out = written(g, k);
    z.nvar = 1;
    z.ext[0] = value_nelem(&g->vals[z.out]);
    z.out_stride[0] = 1;
    z.out_dt = g->vals[z.out].dt;
  }
  z.body = e_const(g, z.out_dt, 0);
  z.red = R_NONE;
  return z;
}

int guard_kernels(Graph *g) {
  Guards *gd = g->guards;
  if (!gd) return MATC_OK;
  KList l = {0};
  for (int i = 0; i < g->nkernels; i++) {
    Kernel *k = &g->kernels[i];
    if (k->dead) continue;
    int node = k->node;
    k->pred = node >= 0 && node < gd->nnodes ? gd->node_pred[node] : 0;
    int s = node >= 0 && node < gd->nnodes ? gd->node_split[node] : -1;
    if (s >= 0 && split_kernel(g, k, node, &gd->splits[s], s, gd->node_axis[node], &l)) continue;
    push(&l, k, -1, -1);
  }

  /* Who reads what, after the split. */
  Readers rd = {0};
  rd.head = malloc(sizeof(int) * (g->nvals + 1));
  for (int v = 0; v < g->nvals; v++) rd.head[v] = -1;
  for (int i = 0; i < l.n; i++) {
    Kernel *k = &l.k[i];
    if (k->kind == K_LOOP) {
      expr_readers(g, &rd, k->body, i);
      expr_readers(g, &rd, k->post, i);
    } else {
      for (int j = 0; j < k->nargs; j++)
        if (!(k->ext_fn == EXT_gemm && j == 2)) add_reader(&rd, value_root(g, k->args[j]), i);
    }
  }
  KList z = {0};
  for (int i = 0; i < l.n; i++) {
    Kernel *k = &l.k[i];
    push(&z, k, l.split[i], l.range[i]);
    /* A K piece adds into a sum zeroed by an always-running kernel. */
    if (k->pred <= 0 || gd->negate[k->pred] || l.kpiece[i]) continue;
    int w = written(g, k);
    if (w < 0 || g->vals[w].kind != V_ACT) continue;
    int need = 0;
    for (int e = rd.head[w]; e >= 0 && !need; e = rd.next[e]) {
      int r = rd.kern[e];
      if (r <= i) continue;                      /* read before this write */
      if (l.split[r] >= 0 && l.split[r] == l.split[i] && l.range[r] != l.range[i]) continue;
      /* another head of the same block reads only its own head's part */
      if (l.blk[r] >= 0 && l.blk[r] == l.blk[i] && l.head[r] != l.head[i]) continue;
      if (!guard_pred_implies(g, l.k[r].pred, k->pred)) need = 1;
    }
    if (!need) continue;
    /* interning may grow gd->sets: copy the set out first */
    uint64_t *bits = malloc(sizeof(uint64_t) * gd->nwords);
    memcpy(bits, gd->sets + (size_t)k->pred * gd->nwords, sizeof(uint64_t) * gd->nwords);
    int neg = guards_intern(gd, bits, 0, 1);
    free(bits);
    Kernel zk = zero_kernel(g, k, neg);
    push(&z, &zk, l.split[i], l.range[i]);
  }
  free(g->kernels);
  g->kernels = z.k;
  g->nkernels = z.n;
  g->capkernels = z.cap;
  free(z.split);
  free(z.range);
  free(z.blk);
  free(z.head);
  free(z.kpiece);
  klist_free(&l);
  free(rd.head);
  free(rd.next);
  free(rd.kern);
  return MATC_OK;
}
