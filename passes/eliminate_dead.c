/* eliminate_dead.c: removes nodes whose outputs nothing needs. */
#include "matc_internal.h"

#include <stdlib.h>

int eliminate_dead(Graph *g) {
  char *live = calloc(g->nvals, 1);
  for (int i = 0; i < g->noutputs; i++) live[g->outputs[i]] = 1;
  for (int i = g->nnodes - 1; i >= 0; i--) {
    Node *n = &g->nodes[i];
    if (n->dead) continue;
    int needed = n->op >= 0 && (op_table[n->op].flags & OPF_EFFECT);
    for (int j = 0; j < n->nout; j++)
      if (n->out[j] >= 0 && live[n->out[j]]) needed = 1;
    if (!needed) {
      n->dead = 1;
      continue;
    }
    for (int j = 0; j < n->nin; j++)
      if (n->in[j] >= 0) live[n->in[j]] = 1;
  }
  for (int v = 0; v < g->nvals; v++) g->vals[v].nuses = 0;
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = &g->nodes[i];
    if (n->dead) continue;
    for (int j = 0; j < n->nin; j++)
      if (n->in[j] >= 0) g->vals[n->in[j]].nuses++;
  }
  free(live);
  return MATC_OK;
}
