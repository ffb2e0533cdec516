/* fuse_elementwise.c: inlines a producer kernel's expression into its only
 * consumer, so chains of elementwise ops (GELU, bias + activation,
 * normalisation arithmetic) run as one loop and their intermediates never
 * touch memory.
 *
 * A producer P qualifies when it is a loop kernel without reduction that
 * alone writes all of value T, contiguously, and exactly one other kernel C
 * reads T, at an index that names every element of T once per point of C
 * (identity, transposed or reduced access; no broadcast, which would
 * recompute P). Each load of T in C is then replaced by a copy of P's body
 * with P's vars renamed to C's. C can itself be inlined later. */
#include "matc_internal.h"

#include <stdlib.h>
#include <string.h>

/* Bodies larger than this stay separate: inlining a big expression into a
 * loop that reads it several times would repeat its work. */
#define MAX_FUSED_SIZE 96

typedef struct {
  int *writers;        /* per value: kernels writing it */
  int *writer;         /* the (last) writing kernel */
  int *readers;        /* per value: kernels reading it */
  int *reader;         /* the (last) reading kernel */
  char *aliased;       /* some view points into this value */
} Uses;

static void mark_reads(Expr *e, int k, Uses *u, char *seen) {
  if (!e) return;
  if (e->kind == EX_LOAD) {
    if (!seen[e->val]) {
      seen[e->val] = 1;
      u->readers[e->val]++;
      u->reader[e->val] = k;
    }
    for (int d = 0; d < e->ndyn; d++) mark_reads(e->dyn[d], k, u, seen);
  }
  mark_reads(e->a, k, u, seen);
  mark_reads(e->b, k, u, seen);
  mark_reads(e->c, k, u, seen);
}

static void count_uses(Graph *g, Uses *u) {
  memset(u->writers, 0, sizeof(int) * g->nvals);
  memset(u->readers, 0, sizeof(int) * g->nvals);
  char *seen = calloc(g->nvals, 1);
  for (int i = 0; i < g->nkernels; i++) {
    Kernel *k = &g->kernels[i];
    if (k->dead) continue;
    memset(seen, 0, g->nvals);
    if (k->kind == K_LOOP) {
      u->writers[k->out]++;
      u->writer[k->out] = i;
      mark_reads(k->body, i, u, seen);
      mark_reads(k->post, i, u, seen);
    } else {
      /* An extern may read and write any of its arguments. */
      for (int j = 0; j < k->nargs; j++) {
        int v = k->args[j];
        u->writers[v]++;
        u->writer[v] = i;
        u->readers[v] += 2;
      }
    }
  }
  free(seen);
}

/* Does loop kernel p, without reduction, write every element of v once
 * in order? */
static int writes_all(const Kernel *p, const Value *v) {
  if (p->kind != K_LOOP || p->red != R_NONE || p->out_off != 0 || p->nvar != v->rank) return 0;
  int64_t st[MATC_MAX_RANK];
  shape_strides(v->rank, v->dims, st);
  for (int j = 0; j < v->rank; j++)
    if (p->ext[j] != v->dims[j] || (v->dims[j] > 1 && p->out_stride[j] != st[j])) return 0;
  return 1;
}

static int is_producer(Graph *g, Uses *u, int t, int ci) {
  Value *v = &g->vals[t];
  if (v->kind != V_ACT || v->is_output || u->aliased[t] || u->writers[t] != 1 || u->readers[t] != 1)
    return 0;
  int pi = u->writer[t];
  Kernel *p = &g->kernels[pi];
  return pi < ci && writes_all(p, v) && expr_size(p->body) <= MAX_FUSED_SIZE;
}

/* A constant fill (ConstantOfShape, a zero gradient): inlined into every
 * loop reading it, at any index, since recomputing a constant costs
 * nothing; the fill itself then goes once nothing else reads it. */
static int is_const_producer(Graph *g, Uses *u, int t, int ci) {
  Value *v = &g->vals[t];
  if (v->kind != V_ACT || v->is_output || u->aliased[t] || u->writers[t] != 1) return 0;
  int pi = u->writer[t];
  Kernel *p = &g->kernels[pi];
  if (pi >= ci || p->kind != K_LOOP || p->red != R_NONE || p->out_off != 0 || !p->body ||
      p->body->kind != EX_CONST)
    return 0;
  /* Its loops (often one, flattened) cover the value contiguously. */
  int64_t st[KMAX_VARS], n = 1;
  shape_strides(p->nvar, p->ext, st);
  for (int j = 0; j < p->nvar; j++) {
    if (p->ext[j] > 1 && p->out_stride[j] != st[j]) return 0;
    n *= p->ext[j];
  }
  return n == value_nelem(v);
}

/* Maps each dim of T (size > 1) to the consumer var that walks it; 0 if
 * the load is not such a walk. One consumer var may walk a run of
 * consecutive dims of T at once (a copy kernel whose loops were merged):
 * then group_last[j] is the run's innermost dim, and P's loads must be
 * mergeable over the run too (checked by mergeable()). */
static int map_dims(Graph *g, Kernel *c, Expr *load, int *var_of_dim, int *group_last) {
  Value *v = &g->vals[load->val];
  if (load->off != 0 || load->ndyn) return 0;
  int64_t st[MATC_MAX_RANK];
  shape_strides(v->rank, v->dims, st);
  int nall = c->nvar + c->nred;
  char used[KMAX_VARS] = {0};
  for (int j = 0; j < v->rank; j++) var_of_dim[j] = -1;
  for (int j = 0; j < v->rank;) {
    if (v->dims[j] == 1) { j++; continue; }
    int found = 0;
    for (int x = 0; x < nall && !found; x++) {
      if (used[x] || load->stride[x] == 0) continue;
      /* Does var x walk dims j..j1 of T, for some j1? */
      int64_t n = 1;
      for (int j1 = j; j1 < v->rank; j1++) {
        n *= v->dims[j1];
        if (load->stride[x] == st[j1] && c->ext[x] == n) {
          int inner = j;
          for (int q = j; q <= j1; q++)
            if (v->dims[q] > 1) inner = q;
          for (int q = j; q <= j1; q++) {
            var_of_dim[q] = v->dims[q] > 1 ? x : -1;
            group_last[q] = inner;
          }
          used[x] = 1;
          found = 1;
          j = j1 + 1;
          break;
        }
      }
    }
    if (!found) return 0;
  }
  /* Every other var must not move the address (and must not repeat work). */
  for (int x = 0; x < KMAX_VARS; x++)
    if (!used[x] && load->stride[x] != 0) return 0;
  for (int x = 0; x < nall; x++)
    if (!used[x] && c->ext[x] > 1) return 0;
  return 1;
}

/* Can P's expression follow a group of its vars walked as one? Its loads
 * must be linear over each group (stride of a dim = stride of the next
 * non-unit dim of the group times that dim's size), and an INDEX may name
 * only a var that is alone in its group. Unit dims have var_of_dim -1. */
static int mergeable(Expr *e, const int64_t *dims, const int *var_of_dim, const int *group_last,
                     int rank) {
  if (!e) return 1;
  if (e->kind == EX_INDEX && e->var < rank && var_of_dim[e->var] >= 0) {
    for (int q = 0; q < rank; q++)
      if (q != e->var && var_of_dim[q] == var_of_dim[e->var]) return 0;
  }
  if (e->kind == EX_LOAD) {
    for (int j = 0; j < rank; j++) {
      if (var_of_dim[j] < 0) continue;
      int k = j + 1;
      while (k < rank && dims[k] == 1) k++;
      if (k < rank && var_of_dim[k] == var_of_dim[j] && e->stride[j] != e->stride[k] * dims[k])
        return 0;
    }
    for (int d = 0; d < e->ndyn; d++)
      if (!mergeable(e->dyn[d], dims, var_of_dim, group_last, rank)) return 0;
  }
  return mergeable(e->a, dims, var_of_dim, group_last, rank) &&
         mergeable(e->b, dims, var_of_dim, group_last, rank) &&
         mergeable(e->c, dims, var_of_dim, group_last, rank);
}

/* P's body with P's var j renamed to consumer var var_of_dim[j]; a group of
 * dims walked by one var takes the stride of its innermost dim. */
static Expr *rename_vars(Graph *g, Expr *e, const int *var_of_dim, const int *group_last, int rank) {
  if (!e) return NULL;
  Expr *r = arena_alloc(g->arena, sizeof *r);
  *r = *e;
  r->a = rename_vars(g, e->a, var_of_dim, group_last, rank);
  r->b = rename_vars(g, e->b, var_of_dim, group_last, rank);
  r->c = rename_vars(g, e->c, var_of_dim, group_last, rank);
  if (e->kind == EX_INDEX) {
    if (e->var < rank && var_of_dim[e->var] >= 0) r->var = var_of_dim[e->var];
    else return e_consti(g, DT_I64, 0);       /* a size-1 dim: always 0 */
  }
  if (e->kind == EX_LOAD) {
    memset(r->stride, 0, sizeof r->stride);
    for (int j = 0; j < rank; j++)
      if (var_of_dim[j] >= 0 && group_last[j] == j) r->stride[var_of_dim[j]] += e->stride[j];
    for (int d = 0; d < e->ndyn; d++)
      r->dyn[d] = rename_vars(g, e->dyn[d], var_of_dim, group_last, rank);
  }
  return r;
}

typedef struct {
  Graph *g;
  Uses *u;
  Kernel *c;
  int ci;
  int changed;
} Fuser;

static Expr *fuse_into(Fuser *f, Expr *e) {
  if (!e) return NULL;
  if (e->kind == EX_LOAD && is_const_producer(f->g, f->u, e->val, f->ci)) {
    f->changed = 1;
    return expr_copy(f->g, f->g->kernels[f->u->writer[e->val]].body);
  }
  if (e->kind == EX_LOAD && is_producer(f->g, f->u, e->val, f->ci)) {
    int var_of_dim[MATC_MAX_RANK], group_last[MATC_MAX_RANK];
    Value *t = &f->g->vals[e->val];
    Kernel *p = &f->g->kernels[f->u->writer[e->val]];
    /* MAT guards: the producer's work moves under the consumer's
     * predicate, so the consumer may run only when the producer would. */
    if (guard_pred_implies(f->g, f->c->pred, p->pred) &&
        map_dims(f->g, f->c, e, var_of_dim, group_last) &&
        mergeable(p->body, t->dims, var_of_dim, group_last, t->rank)) {
      f->changed = 1;
      return rename_vars(f->g, p->body, var_of_dim, group_last, t->rank);
    }
  }
  e->a = fuse_into(f, e->a);
  e->b = fuse_into(f, e->b);
  e->c = fuse_into(f, e->c);
  if (e->kind == EX_LOAD)
    for (int d = 0; d < e->ndyn; d++) e->dyn[d] = fuse_into(f, e->dyn[d]);
  return e;
}

int fuse_elementwise(Graph *g) {
  if (getenv("MATC_NO_FUSION")) return MATC_OK;
  Uses u;
  u.writers = calloc(g->nvals, sizeof(int));
  u.writer = calloc(g->nvals, sizeof(int));
  u.readers = calloc(g->nvals, sizeof(int));
  u.reader = calloc(g->nvals, sizeof(int));
  u.aliased = calloc(g->nvals, 1);
  for (int v = 0; v < g->nvals; v++)
    if (g->vals[v].alias_of >= 0) u.aliased[g->vals[v].alias_of] = 1;
  /* Copy every body first: lowerings may share expression nodes between
   * kernels, and fusion rewrites in place. */
  for (int i = 0; i < g->nkernels; i++) {
    g->kernels[i].body = expr_copy(g, g->kernels[i].body);
    g->kernels[i].post = expr_copy(g, g->kernels[i].post);
  }
  count_uses(g, &u);
  for (int i = 0; i < g->nkernels; i++) {
    Kernel *c = &g->kernels[i];
    if (c->dead || c->kind != K_LOOP) continue;
    /* An Assign writes a parameter in place: inlining its source could
     * move a read of another parameter after that one's Assign. */
    if (c->node >= 0 && g->nodes[c->node].op == OP_Assign) continue;
    Fuser f = {g, &u, c, i, 1};
    while (f.changed) {
      f.changed = 0;
      /* The producers this round may consume. */
      char *cand = calloc(g->nvals, 1);
      for (int v = 0; v < g->nvals; v++)
        cand[v] = (u.readers[v] == 1 && u.reader[v] == i && is_producer(g, &u, v, i)) || is_const_producer(g, &u, v, i);
      c->body = fuse_into(&f, c->body);
      c->post = fuse_into(&f, c->post);
      if (f.changed) {
        count_uses(g, &u);
        for (int v = 0; v < g->nvals; v++) {
          if (!cand[v]) continue;
          if (u.readers[v] == 0) {
            g->kernels[u.writer[v]].dead = 1;
            g->vals[v].fused = 1;
          }
        }
        count_uses(g, &u);
      }
      free(cand);
    }
  }
  free(u.writers);
  free(u.writer);
  free(u.readers);
  free(u.reader);
  free(u.aliased);
  return MATC_OK;
}
