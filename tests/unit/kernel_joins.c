/* kernel_joins.c: when codegen may run loop kernels in one loop nest.
 * Joined members store one element each per iteration, so they must store
 * to disjoint elements of their buffer; kernel_joins checks that from the
 * stores' offsets and strides. Each case builds kernels over one buffer
 * and compares kernel_joins's answer with a brute-force answer: every
 * element each kernel stores to, marked in a bitmap. */
#include "../../compiler/exec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures, checks;

typedef struct {
  int nvar;
  int64_t ext[3], stride[3];
  int64_t off[4];     /* members' out_off */
  int n;              /* members */
  int64_t view_off;   /* the last member stores through a view this far into the buffer */
} Case;

/* Brute force: do any two members store to one element? */
static int overlap_by_marking(const Case *c, int64_t size) {
  unsigned char *owner = calloc((size_t)size, 1);
  int hit = 0;
  for (int m = 0; m < c->n && !hit; m++) {
    int64_t base = c->off[m] + (m == c->n - 1 ? c->view_off : 0);
    int64_t idx[3] = {0, 0, 0};
    for (;;) {
      int64_t at = base;
      for (int v = 0; v < c->nvar; v++) at += idx[v] * c->stride[v];
      if (owner[at] && owner[at] != m + 1) hit = 1;
      owner[at] = (unsigned char)(m + 1);
      int v = c->nvar - 1;
      while (v >= 0 && ++idx[v] == c->ext[v]) idx[v--] = 0;
      if (v < 0) break;
    }
  }
  free(owner);
  return hit;
}

static void check(const char *name, const Case *c, int expect_join) {
  int64_t size = 0;
  for (int m = 0; m < c->n; m++) {
    int64_t hi = c->off[m] + (m == c->n - 1 ? c->view_off : 0);
    for (int v = 0; v < c->nvar; v++)
      if (c->stride[v] > 0) hi += (c->ext[v] - 1) * c->stride[v];
    if (hi + 1 > size) size = hi + 1;
  }
  Graph *g = graph_new("<unit>");
  int src = graph_add_value(g, "src"), buf = graph_add_value(g, "buf"), view = graph_add_value(g, "view");
  value_set(&g->vals[src], DT_F32, 1, (int64_t[]){8});
  g->vals[src].kind = V_ACT;
  value_set(&g->vals[buf], DT_F32, 1, &size);
  g->vals[buf].kind = V_ACT;
  int64_t vsize = size - c->view_off;
  value_set(&g->vals[view], DT_F32, 1, &vsize);
  g->vals[view].kind = V_ACT;
  g->vals[view].alias_of = buf;
  g->vals[view].alias_off = c->view_off;
  int node = graph_add_node(g, "Unit", "unit", 1, &src, 1, &buf);
  g->nodes[node].op = 0;
  int run[4];
  for (int m = 0; m < c->n; m++) {
    Kernel *k = k_loop(g, node, m == c->n - 1 && c->view_off ? view : buf, c->nvar, c->ext);
    k->out_off = c->off[m];
    memcpy(k->out_stride, c->stride, sizeof c->stride);
    k->body = e_load(g, src, 0, (int64_t[KMAX_VARS]){0}, KMAX_VARS);
    k->join = m > 0;
    run[m] = (int)(k - g->kernels);
  }
  int joins = kernel_joins(g, run, c->n - 1, run[c->n - 1]);
  int disjoint = !overlap_by_marking(c, size);
  checks++;
  if (joins != expect_join || (joins && !disjoint)) {
    printf("FAIL %s: kernel_joins says %d, expected %d (stores %s)\n", name, joins, expect_join,
           disjoint ? "disjoint" : "overlap");
    failures++;
  } else {
    printf("ok   %s: %s\n", name, joins ? "joined (stores disjoint)" : "kept apart");
  }
  graph_free(g);
}

int main(void) {
  /* Winograd-style blocks: each member fills a block of its own. */
  check("blocks", &(Case){2, {4, 6}, {6, 1}, {0, 24, 48}, 3, 0}, 1);
  /* The same blocks, the last one a block too early: it overwrites the
   * second member's last row. */
  check("blocks overlapping", &(Case){2, {4, 6}, {6, 1}, {0, 24, 42}, 3, 0}, 0);
  /* Interleaved within rows (Winograd's output points: columns 2x + c,
   * rows 2y + r), whose store intervals overlap though the elements don't. */
  check("interleaved", &(Case){2, {3, 4}, {16, 2}, {0, 1, 8, 9}, 4, 0}, 1);
  /* Interleaved, but one member lands on another's column. */
  check("interleaved colliding", &(Case){2, {3, 4}, {16, 2}, {0, 1, 8, 2}, 4, 0}, 0);
  /* A store 2 rows down collides with the first member's third row. */
  check("row collision", &(Case){2, {3, 4}, {16, 2}, {0, 32}, 2, 0}, 0);
  /* Three vars whose strides do not nest (8 < 3 * 4): offset 12 is
   * reachable as 12 = 4 + 8 and as 3 * 4. */
  check("non-nesting strides", &(Case){3, {2, 2, 4}, {8, 5, 4}, {0, 12}, 2, 0}, 0);
  check("non-nesting, disjoint", &(Case){3, {2, 2, 2}, {8, 5, 3}, {0, 1}, 2, 0}, 1);
  /* The last member stores through a view whose own offset makes it
   * collide: the offsets must be taken in the root buffer. */
  check("view collides", &(Case){2, {4, 6}, {6, 1}, {0, 0}, 2, 3}, 0);
  check("view disjoint", &(Case){2, {4, 6}, {6, 1}, {0, 0}, 2, 24}, 1);
  /* The joined kernel below the first one, and negative strides (rows
   * stored bottom up): the same answers with the signs turned round. */
  check("block below", &(Case){2, {4, 6}, {6, 1}, {24, 0}, 2, 0}, 1);
  check("block below, overlapping", &(Case){2, {4, 6}, {6, 1}, {24, 6}, 2, 0}, 0);
  check("negative stride", &(Case){2, {4, 6}, {-6, 1}, {18, 42}, 2, 0}, 1);
  check("negative stride, colliding", &(Case){2, {4, 6}, {-6, 1}, {18, 36}, 2, 0}, 0);
  printf("%d checks, %d failures\n", checks, failures);
  return failures ? 1 : 0;
}
