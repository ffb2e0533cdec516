/* guard_heads.c: per-head predicates for the attention backward in stop
 * mode (MAT.md section 5; called by insert_guards after its sweep).
 *
 * In stop mode the gradient through a frozen head's Q/K/V projections is
 * dropped, so nothing needs that head's slice of the attention backward:
 * dCtx through W_o's rows, the batched dP/dV/dS/dQ/dK GEMMs over
 * [B,H,S,*], the softmax backward, and the head's share of dX through the
 * Q/K/V columns. insert_guards gives those nodes the union of the
 * layer's heads; here each gets a head split that guard_kernels uses to
 * run head h's part under head h's module only.
 *
 *   - Blocks: a parameter split (passes/guards.c) into H >= 2 equal,
 *     gapless ranges, each owned by one module, is a block of H heads;
 *     parameters with the same module list (Q, K, V, O and the biases of
 *     one layer) share the block.
 *   - Tags: a value's tag says that along `axis`, indices [h*hs, (h+1)*hs)
 *     belong to head h of `block`, and that head h's part of the value is
 *     computed from head h's parts of its tagged inputs only. Tags start
 *     at the blocks' parameters and follow nodes in order: elementwise ops
 *     (inputs aligned, not broadcast on the axis), keepdims reductions and
 *     Softmax on other axes, Transpose, reshapes that keep whole heads
 *     together, and MatMul when the head axis is a batch, M or N axis.
 *   - A MatMul contracting over the head axis (dX = dQ . W_q^T: A's last
 *     axis and B's rows tagged alike) sums over heads; it is split along K
 *     into one accumulating piece per head.
 *   - Only backward nodes whose predicate is exactly their block's heads
 *     are split (nothing outside the block needs them, which stop mode's
 *     cut guarantees for the attention backward): then head h's part is
 *     needed by head h alone. weights mode is left as it is: there the
 *     attention backward also feeds dX for the modules below.
 *   - A split node must not read, through an untagged value, what another
 *     split node writes per head (it would read other heads' parts). */
#include "guards.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  int *blk, *axis;       /* per value: block (-1 untagged) and head axis */
  int64_t *hs;           /* indices per head along axis */
} Tags;

typedef struct {
  int nblocks, cap;
  int *H;
  int (*mods)[64];
} Blocks;

static void set_tag(Tags *t, int v, int b, int a, int64_t hs) {
  t->blk[v] = b, t->axis[v] = a, t->hs[v] = hs;
}

static int one_module(const Guards *gd, int pred, int nmodules) {
  if (pred <= 0 || gd->negate[pred]) return -1;
  const uint64_t *s = gd->sets + (size_t)pred * gd->nwords;
  int m = -1;
  for (int k = 0; k < nmodules; k++)
    if ((s[k / 64] >> (k % 64)) & 1) {
      if (m >= 0) return -1;
      m = k;
    }
  return m;
}

/* The block a parameter split forms, or -1. */
static int split_block(Graph *g, Guards *gd, Blocks *bl, const GuardSplit *sp) {
  int H = sp->nranges;
  if (H < 2 || H > 64 || sp->axis < 0) return -1;
  int mods[64];
  int64_t w = sp->end[0] - sp->begin[0];
  for (int r = 0; r < H; r++) {
    mods[r] = one_module(gd, sp->pred[r], g->nmodules);
    if (mods[r] < 0 || sp->begin[r] != r * w || sp->end[r] != (r + 1) * w) return -1;
    for (int q = 0; q < r; q++)
      if (mods[q] == mods[r]) return -1;
  }
  if (sp->end[H - 1] != g->vals[sp->param].dims[sp->axis]) return -1;
  for (int b = 0; b < bl->nblocks; b++)
    if (bl->H[b] == H && memcmp(bl->mods[b], mods, sizeof(int) * H) == 0) return b;
  if (bl->nblocks == bl->cap) {
    bl->cap = bl->cap ? 2 * bl->cap : 16;
    bl->H = realloc(bl->H, sizeof(int) * bl->cap);
    bl->mods = realloc(bl->mods, sizeof *bl->mods * bl->cap);
  }
  bl->H[bl->nblocks] = H;
  memcpy(bl->mods[bl->nblocks], mods, sizeof(int) * H);
  return bl->nblocks++;
}

/* Where a reshape moves tag (a, hs) of x into y, or -1: the axis of y that
 * starts after the same outer elements and holds whole heads. */
static int reshape_axis(const Value *x, const Value *y, int a, int64_t hs, int64_t *hs_out) {
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < a; i++) outer *= x->dims[i];
  for (int i = a + 1; i < x->rank; i++) inner *= x->dims[i];
  int64_t pre = 1;
  for (int j = 0; j < y->rank; pre *= y->dims[j], j++) {
    if (pre != outer) continue;
    int64_t in2 = 1;
    for (int i = j + 1; i < y->rank; i++) in2 *= y->dims[i];
    if (y->dims[j] * in2 != x->dims[a] * inner || (hs * inner) % in2) continue;
    *hs_out = hs * inner / in2;
    return j;
  }
  return -1;
}

/* Input j's tag, moved to the output's axis by right alignment (elementwise
 * broadcasting); -1 when j is untagged or broadcast along the axis. */
static int aligned(Graph *g, Tags *t, int v, const Value *y) {
  if (v < 0 || t->blk[v] < 0) return -1;
  const Value *x = &g->vals[v];
  int ao = t->axis[v] + (y->rank - x->rank);
  if (ao < 0 || y->dims[ao] != x->dims[t->axis[v]]) return -2;
  return ao;
}

/* The output's tag from the inputs'; for a MatMul contracting over heads
 * sets *kblk / *khs. */
static void tag_node(Graph *g, Tags *t, int i, int *kblk, int64_t *khs) {
  Node *n = &g->nodes[i];
  *kblk = -1;
  if (n->nout < 1 || n->out[0] < 0 || n->nin < 1) return;
  int y = n->out[0];
  Value *yv = &g->vals[y];
  int x = n->in[0];
  if (yv->rank < 0) return;
  if (n->op == OP_MatMul && n->nin == 2) {
    int b = n->in[1];
    Value *av = &g->vals[x], *bv = &g->vals[b];
    if (av->rank < 2 || bv->rank < 2) return;
    int blk = -1, ao = -1, kside = 0, bad = 0;
    int64_t hs = 0;
    for (int s = 0; s < 2; s++) {
      int v = s ? b : x;
      if (t->blk[v] < 0) continue;
      Value *xv = &g->vals[v];
      int a = t->axis[v], r = xv->rank, o;
      int kax = s ? r - 2 : r - 1;
      if (a == kax) o = -3;                              /* contracted */
      else if (a == r - 1) o = yv->rank - 1;              /* B's N */
      else if (a == r - 2) o = yv->rank - 2;              /* A's M */
      else o = a + (yv->rank - r);                        /* batch */
      if (o >= 0 && yv->dims[o] != xv->dims[a]) bad = 1;
      if (blk >= 0 && (blk != t->blk[v] || hs != t->hs[v] || ao != o)) bad = 1;
      blk = t->blk[v], hs = t->hs[v], ao = o;
      kside |= o == -3;
    }
    if (blk < 0 || bad) return;
    if (kside) *kblk = blk, *khs = hs;
    else set_tag(t, y, blk, ao, hs);
    return;
  }
  if (t->blk[x] < 0 && !(op_table[n->op].flags & OPF_ELEMENTWISE)) return;
  Value *xv = &g->vals[x];
  switch (n->op) {
  case OP_Transpose: {
    int64_t perm[MATC_MAX_RANK];
    int np = attr_ints(n, "perm", perm, MATC_MAX_RANK);
    for (int j = 0; j < yv->rank; j++) {
      int64_t p = np == yv->rank ? perm[j] : yv->rank - 1 - j;
      if (p == t->axis[x]) set_tag(t, y, t->blk[x], j, t->hs[x]);
    }
    return;
  }
  case OP_Reshape: case OP_Flatten: case OP_Identity: case OP_Squeeze: case OP_Unsqueeze: {
    int64_t hs;
    int a = reshape_axis(xv, yv, t->axis[x], t->hs[x], &hs);
    if (a >= 0) set_tag(t, y, t->blk[x], a, hs);
    return;
  }
  case OP_ReduceSum: case OP_ReduceMean: case OP_ReduceMax:
    if (xv->rank == yv->rank && yv->dims[t->axis[x]] == xv->dims[t->axis[x]])
      set_tag(t, y, t->blk[x], t->axis[x], t->hs[x]);
    return;
  case OP_Softmax: case OP_LogSoftmax: {
    int64_t ax = attr_i(n, "axis", -1);
    if (ax < 0) ax += xv->rank;
    if (t->axis[x] < ax) set_tag(t, y, t->blk[x], t->axis[x], t->hs[x]);
    return;
  }
  default:
    break;
  }
  if (!(op_table[n->op].flags & OPF_ELEMENTWISE)) return;
  int blk = -1, ao = -1;
  int64_t hs = 0;
  for (int j = 0; j < n->nin; j++) {
    int o = aligned(g, t, n->in[j], yv);
    if (o == -1) continue;
    int v = n->in[j];
    if (o == -2 || (blk >= 0 && (blk != t->blk[v] || hs != t->hs[v] || ao != o))) return;
    blk = t->blk[v], hs = t->hs[v], ao = o;
  }
  if (blk >= 0) set_tag(t, y, blk, ao, hs);
}

/* The head split of (block, hs), made on first use. */
static int head_split(Graph *g, Guards *gd, Blocks *bl, int b, int64_t hs) {
  for (int s = 0; s < gd->nsplits; s++)
    if (gd->splits[s].param < 0 && gd->splits[s].block == b && gd->splits[s].end[0] == hs) return s;
  MATC_ASSERT(gd->nsplits < gd->capsplits);
  GuardSplit *sp = &gd->splits[gd->nsplits];
  int H = bl->H[b];
  sp->param = -1;
  sp->axis = -1;
  sp->block = b;
  sp->nranges = H;
  sp->begin = arena_alloc(g->arena, sizeof(int64_t) * H);
  sp->end = arena_alloc(g->arena, sizeof(int64_t) * H);
  sp->pred = arena_alloc(g->arena, sizeof(int) * H);
  uint64_t *bits = calloc(gd->nwords, sizeof(uint64_t));
  for (int h = 0; h < H; h++) {
    memset(bits, 0, sizeof(uint64_t) * gd->nwords);
    bits[bl->mods[b][h] / 64] |= 1ull << (bl->mods[b][h] % 64);
    sp->begin[h] = h * hs, sp->end[h] = (h + 1) * hs;
    sp->pred[h] = guards_intern(gd, bits, 0, 0);
  }
  free(bits);
  return gd->nsplits++;
}

/* Is pred exactly block b's module set? */
static int pred_is_block(const Guards *gd, const Blocks *bl, int pred, int b) {
  if (pred <= 0 || gd->negate[pred]) return 0;
  uint64_t *want = calloc(gd->nwords, sizeof(uint64_t));
  for (int h = 0; h < bl->H[b]; h++) want[bl->mods[b][h] / 64] |= 1ull << (bl->mods[b][h] % 64);
  int eq = memcmp(want, gd->sets + (size_t)pred * gd->nwords, sizeof(uint64_t) * gd->nwords) == 0;
  free(want);
  return eq;
}

/* Does an untagged input (or the value it views) come from a head split? */
static int from_head_split(Graph *g, Guards *gd, int v) {
  while (v >= 0) {
    int p = g->vals[v].producer;
    if (p < 0 || p >= gd->nnodes) return 0;
    int s = gd->node_split[p];
    if (s >= 0 && gd->splits[s].param < 0) return 1;
    Node *n = &g->nodes[p];
    if (!(op_table[n->op].flags & OPF_VIEW) && n->op != OP_Transpose) return 0;
    v = n->in[0];
  }
  return 0;
}

void plan_heads(Graph *g, Guards *gd, int nfwd) {
  int nv = g->nvals, nn = gd->nnodes;
  Blocks bl = {0};
  Tags t;
  t.blk = malloc(sizeof(int) * (nv + 1));
  t.axis = malloc(sizeof(int) * (nv + 1));
  t.hs = malloc(sizeof(int64_t) * (nv + 1));
  for (int v = 0; v < nv; v++) t.blk[v] = -1;
  int nparam_splits = gd->nsplits;
  for (int s = 0; s < nparam_splits; s++) {
    GuardSplit *sp = &gd->splits[s];
    sp->block = split_block(g, gd, &bl, sp);
    if (sp->block >= 0) set_tag(&t, sp->param, sp->block, sp->axis, sp->end[0]);
  }
  for (int i = 0; i < nn && bl.nblocks; i++) {
    Node *n = &g->nodes[i];
    if (n->dead || n->op < 0 || n->op == OP_Assign) continue;
    int kblk;
    int64_t khs = 0;
    tag_node(g, &t, i, &kblk, &khs);
    if (i < nfwd || gd->node_split[i] >= 0) continue;
    int y = n->nout >= 1 ? n->out[0] : -1;
    int b = kblk >= 0 ? kblk : y >= 0 ? t.blk[y] : -1;
    if (b < 0 || !pred_is_block(gd, &bl, gd->node_pred[i], b)) continue;
    int ok = 1;
    for (int j = 0; j < n->nin && ok; j++) {
      int v = n->in[j];
      if (v >= 0 && t.blk[v] != b && from_head_split(g, gd, v)) ok = 0;
    }
    if (!ok) continue;
    gd->node_split[i] = head_split(g, gd, &bl, b, kblk >= 0 ? khs : t.hs[y]);
    gd->node_axis[i] = kblk >= 0 ? GUARD_AXIS_K : t.axis[y];
  }
  free(t.blk);
  free(t.axis);
  free(t.hs);
  free(bl.H);
  free(bl.mods);
}
