/* plan_memory.c: places every intermediate value in one arena, reusing the
 * space of values that are dead. A value is live from the first kernel that
 * touches it (itself or through a view) to the last; graph outputs live to
 * the end. Two values whose live ranges meet never overlap, so a kernel's
 * output never shares bytes with its inputs. Placement is greedy first fit,
 * largest values first, on 64-byte boundaries.
 *
 * Graph inputs, parameters and constants stay outside the arena (the
 * caller owns them); so do values no kernel touches. */
#include "matc_internal.h"

#include <stdlib.h>

#define ALIGN 64

typedef struct {
  int v;
  int first, last;
  int64_t size, off;
} Slot;

static void touch(int *first, int *last, int v, int k) {
  if (first[v] < 0 || k < first[v]) first[v] = k;
  if (k > last[v]) last[v] = k;
}

static void touch_expr(Graph *g, Expr *e, int *first, int *last, int k) {
  if (!e) return;
  if (e->kind == EX_LOAD) {
    touch(first, last, value_root(g, e->val), k);
    for (int d = 0; d < e->ndyn; d++) touch_expr(g, e->dyn[d], first, last, k);
  }
  touch_expr(g, e->a, first, last, k);
  touch_expr(g, e->b, first, last, k);
  touch_expr(g, e->c, first, last, k);
}

static int by_size(const void *a, const void *b) {
  const Slot *x = a, *y = b;
  return x->size < y->size ? 1 : x->size > y->size ? -1 : x->v - y->v;
}

int plan_memory(Graph *g) {
  int nv = g->nvals;
  int *first = malloc(sizeof(int) * nv), *last = malloc(sizeof(int) * nv);
  for (int v = 0; v < nv; v++) {
    first[v] = -1;
    last[v] = -1;
    g->vals[v].mem_off = -1;
  }
  for (int k = 0; k < g->nkernels; k++) {
    Kernel *kn = &g->kernels[k];
    if (kn->dead) continue;
    if (kn->kind == K_LOOP) {
      touch(first, last, value_root(g, kn->out), k);
      touch_expr(g, kn->body, first, last, k);
      touch_expr(g, kn->post, first, last, k);
    } else {
      for (int j = 0; j < kn->nargs; j++) touch(first, last, value_root(g, kn->args[j]), k);
    }
  }
  for (int i = 0; i < g->noutputs; i++) {
    int r = value_root(g, g->outputs[i]);
    if (first[r] < 0) first[r] = 0;
    last[r] = g->nkernels;
  }
  Slot *s = malloc(sizeof(Slot) * (nv + 1));
  int ns = 0;
  int64_t unplanned = 0;
  for (int v = 0; v < nv; v++) {
    Value *x = &g->vals[v];
    if (first[v] < 0 || x->alias_of >= 0 || x->kind != V_ACT || x->fused) continue;
    int64_t bytes = value_nelem(x) * dt_size(x->dt);
    bytes = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    if (bytes == 0) bytes = ALIGN;
    s[ns++] = (Slot){v, first[v], last[v], bytes, -1};
    unplanned += bytes;
  }
  qsort(s, ns, sizeof *s, by_size);
  int64_t total = 0;
  for (int i = 0; i < ns; i++) {
    /* Lowest offset that overlaps no placed slot live at the same time.
     * Candidate offsets: 0 and the end of every conflicting slot. */
    int64_t best = -1;
    for (int c = -1; c < i; c++) {
      int64_t off = c < 0 ? 0 : s[c].off + s[c].size;
      if (c >= 0 && (s[c].last < s[i].first || s[c].first > s[i].last)) continue;
      if (best >= 0 && off >= best) continue;
      int ok = 1;
      for (int j = 0; j < i && ok; j++) {
        if (s[j].last < s[i].first || s[j].first > s[i].last) continue;
        if (off < s[j].off + s[j].size && s[j].off < off + s[i].size) ok = 0;
      }
      if (ok) best = off;
    }
    s[i].off = best;
    g->vals[s[i].v].mem_off = best;
    if (best + s[i].size > total) total = best + s[i].size;
  }
  g->arena_bytes = total;
  g->unplanned_bytes = unplanned;
  free(s);
  free(first);
  free(last);
  return MATC_OK;
}
