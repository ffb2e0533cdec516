/* inspect_modules.c: `matc inspect` shows the MAT partition: each module
 * with its slices, size and FLOPs, as text, JSON or Graphviz. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  int64_t params, in_modules, always_on, fixed;   /* float initializer elements */
  double fwd, bwd, mod_fwd, mod_bwd;
} Totals;

static void totals(Graph *g, const Options *o, Totals *t) {
  memset(t, 0, sizeof *t);
  for (int v = 0; v < g->nvals; v++) {
    Value *x = &g->vals[v];
    if (x->kind != V_PARAM || !dt_is_float(x->dt)) continue;
    t->params += value_nelem(x);
    if (!partition_trainable(g, v, o->freeze)) t->fixed += value_nelem(x);
  }
  for (int k = 0; k < g->nmodules; k++) {
    t->in_modules += g->modules[k].nparams;
    t->mod_fwd += g->modules[k].fwd_flops;
    t->mod_bwd += g->modules[k].bwd_flops;
  }
  t->always_on = t->params - t->fixed - t->in_modules;
  partition_total_flops(g, o->freeze, &t->fwd, &t->bwd);
}

static void print_slice(Graph *g, const ParamSlice *s, FILE *f) {
  if (s->axis < 0) fprintf(f, "%s", g->vals[s->param].name);
  else fprintf(f, "%s[%d %lld:%lld]", g->vals[s->param].name, s->axis, (long long)s->begin, (long long)s->end);
}

/* JSON string body with the characters JSON needs escaped. */
static void json_str(const char *s, FILE *f) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
    else if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
    else fputc(*s, f);
  }
  fputc('"', f);
}

void print_modules_text(Graph *g, const Options *o, FILE *f) {
  Totals t;
  totals(g, o, &t);
  int nkind[4] = {0};
  for (int k = 0; k < g->nmodules; k++) nkind[g->modules[k].kind]++;
  fprintf(f, "modules    %d (%d layer, %d head, %d expert, %d other)\n", g->nmodules, nkind[MOD_LAYER],
          nkind[MOD_HEAD], nkind[MOD_EXPERT], nkind[MOD_OTHER]);
  for (int k = 0; k < g->nmodules; k++) {
    Module *m = &g->modules[k];
    fprintf(f, "  %-32s %-6s %9lld params  fwd %.4g  bwd %.4g FLOPs  ", m->name, module_kind_name(m->kind),
            (long long)m->nparams, m->fwd_flops, m->bwd_flops);
    for (int s = 0; s < m->nslices; s++) {
      if (s) fputs(", ", f);
      print_slice(g, &m->slices[s], f);
    }
    fputc('\n', f);
  }
  fprintf(f, "in modules %lld params, fwd %.4g bwd %.4g FLOPs (%.1f%% of the layers' %.4g + %.4g)\n",
          (long long)t.in_modules, t.mod_fwd, t.mod_bwd,
          t.fwd + t.bwd > 0 ? 100 * (t.mod_fwd + t.mod_bwd) / (t.fwd + t.bwd) : 0.0, t.fwd, t.bwd);
  fprintf(f, "always on  %lld params, fwd %.4g bwd %.4g FLOPs\n", (long long)t.always_on, t.fwd - t.mod_fwd,
          t.bwd - t.mod_bwd);
  fprintf(f, "not trained %lld params (BatchNormalization statistics, --freeze)\n", (long long)t.fixed);
}

/* Appends ,"modules":[...],"module_totals":{...} to the inspect object. */
void print_modules_json(Graph *g, const Options *o, FILE *f) {
  Totals t;
  totals(g, o, &t);
  fputs(",\"modules\":[", f);
  for (int k = 0; k < g->nmodules; k++) {
    Module *m = &g->modules[k];
    fprintf(f, "%s{\"name\":", k ? "," : "");
    json_str(m->name, f);
    fprintf(f, ",\"kind\":\"%s\",\"params\":%lld,\"fwd_flops\":%.17g,\"bwd_flops\":%.17g,\"slices\":[",
            module_kind_name(m->kind), (long long)m->nparams, m->fwd_flops, m->bwd_flops);
    for (int s = 0; s < m->nslices; s++) {
      ParamSlice *ps = &m->slices[s];
      fprintf(f, "%s{\"param\":", s ? "," : "");
      json_str(g->vals[ps->param].name, f);
      if (ps->axis >= 0)
        fprintf(f, ",\"axis\":%d,\"begin\":%lld,\"end\":%lld", ps->axis, (long long)ps->begin, (long long)ps->end);
      fputc('}', f);
    }
    fputs("],\"sites\":[", f);
    for (int s = 0; s < m->nsites; s++) {
      ProbeSite *ps = &m->sites[s];
      fprintf(f, "%s{\"node\":", s ? "," : "");
      json_str(g->nodes[ps->node].name, f);
      fprintf(f, ",\"weight\":%d,\"bias\":%d,\"slice_out\":%d,\"begin\":%lld,\"end\":%lld,\"stacked\":%d}",
              ps->weight, ps->bias, ps->slice_out, (long long)ps->begin, (long long)ps->end, ps->stacked);
    }
    fputs("]}", f);
  }
  fprintf(f, "],\"module_totals\":{\"modules\":%d,\"params_in_modules\":%lld,\"params_always_on\":%lld,"
          "\"params_not_trained\":%lld,\"fwd_flops_modules\":%.17g,\"bwd_flops_modules\":%.17g,"
          "\"fwd_flops_layers\":%.17g,\"bwd_flops_layers\":%.17g}",
          g->nmodules, (long long)t.in_modules, (long long)t.always_on, (long long)t.fixed, t.mod_fwd, t.mod_bwd,
          t.fwd, t.bwd);
}

/* Graphviz: the graph's nodes; a node that reads the parameters of exactly
 * one module sits in that module's cluster; nodes shared by several
 * modules (a fused QKV projection) stay outside, linked by dashed edges to
 * each module's label. */
void print_modules_dot(Graph *g, FILE *f) {
  int *owner = malloc(sizeof(int) * (g->nnodes + 1));   /* -1 none, -2 shared */
  for (int i = 0; i < g->nnodes; i++) {
    owner[i] = -1;
    Node *n = &g->nodes[i];
    for (int k = 0; k < g->nmodules; k++)
      for (int s = 0; s < g->modules[k].nslices; s++)
        for (int j = 0; j < n->nin; j++)
          if (n->in[j] == g->modules[k].slices[s].param && owner[i] != k)
            owner[i] = owner[i] == -1 ? k : -2;
  }
  /* a parameter-free node between two nodes of one module (the ReLU
   * between an expert's two layers) joins that module's cluster */
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = &g->nodes[i];
    if (owner[i] != -1 || n->dead) continue;
    int k = -1, ok = 1;
    for (int j = 0; j < n->nin && ok; j++) {
      int p = n->in[j] >= 0 ? g->vals[n->in[j]].producer : -1;
      if (p < 0 || g->nodes[p].op == OP_Constant) continue;
      if (owner[p] < 0 || (k >= 0 && owner[p] != k)) ok = 0;
      else k = owner[p];
    }
    for (int c = 0; c < g->nnodes && ok && k >= 0; c++)
      for (int j = 0; j < g->nodes[c].nin; j++)
        for (int o = 0; o < n->nout; o++)
          if (n->out[o] >= 0 && g->nodes[c].in[j] == n->out[o] && owner[c] != k) ok = 0;
    if (ok && k >= 0) owner[i] = k;
  }
  fprintf(f, "digraph model {\n  rankdir=TB;\n  node [shape=box, fontsize=10];\n");
  for (int k = 0; k < g->nmodules; k++) {
    Module *m = &g->modules[k];
    fprintf(f, "  subgraph cluster_%d {\n    label=", k);
    json_str(m->name, f);
    fprintf(f, ";\n    style=rounded; color=%s;\n", m->kind == MOD_HEAD ? "blue" : m->kind == MOD_EXPERT ? "darkgreen"
                                                       : m->kind == MOD_LAYER ? "red" : "gray");
    fprintf(f, "    m%d [shape=note, label=\"%s %lld params\"];\n", k, module_kind_name(m->kind), (long long)m->nparams);
    for (int i = 0; i < g->nnodes; i++)
      if (owner[i] == k && !g->nodes[i].dead) fprintf(f, "    n%d;\n", i);
    fprintf(f, "  }\n");
  }
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = &g->nodes[i];
    if (n->dead || n->op == OP_Constant) continue;
    fprintf(f, "  n%d [label=\"%s\\n", i, n->op_type);
    for (const char *c = n->name; c && *c; c++)
      if (*c == '"' || *c == '\\') fprintf(f, "\\%c", *c);
      else fputc(*c, f);
    fprintf(f, "\"];\n");
    for (int j = 0; j < n->nin; j++) {
      int v = n->in[j];
      if (v >= 0 && g->vals[v].producer >= 0 && g->nodes[g->vals[v].producer].op != OP_Constant)
        fprintf(f, "  n%d -> n%d;\n", g->vals[v].producer, i);
    }
    if (owner[i] == -2)
      for (int k = 0; k < g->nmodules; k++)
        for (int s = 0; s < g->modules[k].nslices; s++) {
          int hit = 0;
          for (int j = 0; j < n->nin; j++) hit |= n->in[j] == g->modules[k].slices[s].param;
          if (hit) {
            fprintf(f, "  m%d -> n%d [style=dashed, arrowhead=none];\n", k, i);
            break;
          }
        }
  }
  fprintf(f, "}\n");
  free(owner);
}
