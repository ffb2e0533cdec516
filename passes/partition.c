/* partition.c: splits the trainable parameters into MAT modules (MAT.md,
 * "Modules"). Runs on the forward graph after shape inference.
 *
 *   1. layers: every Gemm/MatMul/Conv whose weight is a trainable
 *      parameter, with its bias (Gemm's C, Conv's B, or the Add of a
 *      constant [N] parameter right after a MatMul);
 *   2. attention heads: layers whose output features are cut into heads by
 *      a Reshape [.., D] -> [.., X, Dh] (directly, or after a Split/Slice of
 *      a fused QKV output), where the V stream reaches, through attention
 *      and the Reshape back to [.., D], the input of an output projection:
 *      head h = columns [h*Dh, (h+1)*Dh) of every Q/K/V stream and rows
 *      [h*Dh, (h+1)*Dh) of the output projection;
 *   3. experts: layers named "...experts.<e>..." (one module per e, all its
 *      layers), and MatMuls with a stacked [E, K, N] weight (one per e);
 *   4. the other layers, one module each, except the output layer (the one
 *      that reaches a graph output through no other layer): with norms and
 *      embeddings it stays always on, or, with others_as_modules, becomes a
 *      MOD_OTHER module per layer name.
 * Sites and FLOPs come from the slices (partition_find_sites), so the
 * automatic and the user's modules are described the same way. */
#include "partition.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- names */

/* Strips a trailing ".weight"/"_weight"/".bias"/"_bias" (or similar). */
static char *layer_name_from_param(Graph *g, const char *p) {
  if (!p || strncmp(p, "onnx::", 6) == 0) return NULL;
  static const char *suffix[] = {".weight", "_weight", ".bias", "_bias", ".kernel", ".w", ".b"};
  char *s = arena_strdup(g->arena, p);
  size_t n = strlen(s);
  for (size_t k = 0; k < sizeof suffix / sizeof *suffix; k++) {
    size_t m = strlen(suffix[k]);
    if (n > m && strcmp(s + n - m, suffix[k]) == 0) {
      s[n - m] = 0;
      break;
    }
  }
  return s;
}

/* "/h.0/attn/c_attn/MatMul" -> "h.0.attn.c_attn"; a component that the next
 * one repeats as its prefix is dropped ("/experts.0/experts.0.0/MatMul"). */
static char *layer_name_from_node(Graph *g, int i) {
  const char *nm = g->nodes[i].name;
  char buf[512];
  if (!nm || nm[0] != '/') {
    snprintf(buf, sizeof buf, "%s_%d", g->nodes[i].op_type, i);
    return arena_strdup(g->arena, buf);
  }
  char comp[32][128];
  int nc = 0;
  for (const char *p = nm + 1; *p && nc < 32;) {
    const char *e = strchr(p, '/');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len >= sizeof comp[0]) len = sizeof comp[0] - 1;
    memcpy(comp[nc], p, len);
    comp[nc++][len] = 0;
    p = e ? e + 1 : p + len;
  }
  buf[0] = 0;
  for (int c = 0; c + 1 < nc; c++) {
    size_t l = strlen(comp[c]);
    if (c + 2 < nc && strncmp(comp[c + 1], comp[c], l) == 0 && comp[c + 1][l] == '.') continue;
    if (buf[0]) strncat(buf, ".", sizeof buf - strlen(buf) - 1);
    strncat(buf, comp[c], sizeof buf - strlen(buf) - 1);
  }
  if (!buf[0]) snprintf(buf, sizeof buf, "%s_%d", g->nodes[i].op_type, i);
  return arena_strdup(g->arena, buf);
}

static char *layer_name(Graph *g, const Layer *L) {
  char *s = layer_name_from_param(g, g->vals[L->w].name);
  if (!s && L->b >= 0) s = layer_name_from_param(g, g->vals[L->b].name);
  return s ? s : layer_name_from_node(g, L->node);
}

/* Length of the common prefix of a and b that ends at a '.' boundary. */
static size_t common_dotted(const char *a, const char *b) {
  size_t i = 0, last = 0;
  while (a[i] && a[i] == b[i]) {
    if (a[i] == '.') last = i;
    i++;
  }
  if (!a[i] && (b[i] == '.' || !b[i])) last = i;
  return last;
}

/* ---------------------------------------------------------------- building modules */

typedef struct {
  Graph *g;
  Module *mods;
  int n, cap;
  char *claimed;                 /* per value: in a module */
  char *trainable;               /* per value: a parameter that trains */
} Builder;

static Module *mod_new(Builder *B, const char *name, ModuleKind kind) {
  if (B->n == B->cap) {
    B->cap = B->cap ? 2 * B->cap : 16;
    B->mods = realloc(B->mods, sizeof *B->mods * B->cap);
  }
  Module *m = &B->mods[B->n++];
  memset(m, 0, sizeof *m);
  m->name = arena_strdup(B->g->arena, name);
  m->kind = kind;
  return m;
}

static void mod_slice(Builder *B, Module *m, int param, int axis, int64_t begin, int64_t end) {
  ParamSlice *ns = arena_alloc(B->g->arena, sizeof *ns * (m->nslices + 1));
  if (m->nslices) memcpy(ns, m->slices, sizeof *ns * m->nslices);
  ns[m->nslices++] = (ParamSlice){param, axis, begin, end};
  m->slices = ns;
  B->claimed[param] = 1;
}

static void mod_layer(Builder *B, Module *m, const Layer *L) {
  mod_slice(B, m, L->w, -1, 0, 0);
  if (L->b >= 0 && !B->claimed[L->b]) mod_slice(B, m, L->b, -1, 0, 0);
}

/* A head stream: features [f0, f0+D) of a layer's output, cut into H heads
 * of Dh by the Reshape whose output is `split`. */
typedef struct {
  int layer;                     /* index into the layer list */
  int64_t f0, D, H, Dh;
  int split;                     /* the Reshape's output */
} Stream;

/* The Reshape among v's uses that cuts its last axis (D features) into
 * [.., X, Dh] with X a multiple of D/Dh; its output value, or -1. */
static int head_reshape(Graph *g, const Uses *u, int v, int64_t D, int64_t *Dh) {
  for (int k = u->start[v]; k < u->start[v + 1]; k++) {
    Node *n = &g->nodes[u->node[k]];
    if (n->op != OP_Reshape || u->input[k] != 0) continue;
    Value *in = &g->vals[v], *out = &g->vals[n->out[0]];
    if (in->rank < 1 || in->dims[in->rank - 1] != D || out->rank < 2) continue;
    int64_t dh = out->dims[out->rank - 1], x = out->dims[out->rank - 2];
    if (dh <= 0 || dh >= D || D % dh || x % (D / dh)) continue;
    *Dh = dh;
    return n->out[0];
  }
  return -1;
}

/* Follows a head-split value (head axis `hax`, Dh last) through
 * Transposes and a scaling by constants; returns the value reached and
 * updates *hax, or the value itself when nothing follows. */
static int follow_layout(Graph *g, const Uses *u, int v, int *hax) {
  for (;;) {
    if (uses_count(u, v) != 1) return v;
    int k = u->start[v];
    Node *n = &g->nodes[u->node[k]];
    int r = g->vals[v].rank;
    if (n->op == OP_Transpose) {
      int64_t perm[MATC_MAX_RANK];
      if (attr_ints(n, "perm", perm, MATC_MAX_RANK) != r || perm[r - 1] != r - 1) return v;
      for (int i = 0; i < r; i++)
        if (perm[i] == *hax) { *hax = i; break; }
      v = n->out[0];
    } else if ((n->op == OP_Mul || n->op == OP_Div) && n->nin == 2 && u->input[k] == 0 && n->in[1] >= 0 &&
               value_nelem(&g->vals[n->in[1]]) == 1 && g->vals[n->out[0]].rank == r) {
      v = n->out[0];
    } else {
      return v;
    }
  }
}

/* From a V stream's head-split value to the output projection: attention
 * (MatMul with V as its second input, the head axis a batch axis), back
 * through Transposes, a Reshape [.., X, Dh] -> [.., D] (head axis second
 * last), into a layer's data input. Returns the layer index or -1. */
static int find_output_projection(Graph *g, const Uses *u, const Stream *s, const Layer *layers, int nl) {
  int hax = g->vals[s->split].rank - 2;
  int v = follow_layout(g, u, s->split, &hax);
  if (uses_count(u, v) != 1) return -1;
  Node *mm = &g->nodes[u->node[u->start[v]]];
  int r = g->vals[v].rank;
  if (mm->op != OP_MatMul || u->input[u->start[v]] != 1 || hax >= r - 2) return -1;
  int out = mm->out[0];
  int ro = g->vals[out].rank;
  hax += ro - r;                 /* batch axes align on the right */
  v = follow_layout(g, u, out, &hax);
  if (uses_count(u, v) != 1) return -1;
  Node *rs = &g->nodes[u->node[u->start[v]]];
  Value *in = &g->vals[v];
  if (rs->op != OP_Reshape || hax != in->rank - 2 || in->dims[in->rank - 1] != s->Dh) return -1;
  Value *o = &g->vals[rs->out[0]];
  if (o->rank < 1 || o->dims[o->rank - 1] != s->D) return -1;
  for (int k = u->start[rs->out[0]]; k < u->start[rs->out[0] + 1]; k++)
    for (int l = 0; l < nl; l++)
      if (layers[l].node == u->node[k] && u->input[k] == 0 && !layers[l].stacked && layers[l].K == s->D &&
          g->nodes[layers[l].node].op != OP_Conv)
        return l;
  return -1;
}

/* The streams of layer l: its whole output, or the parts a Split or Slice
 * on the last axis cuts out of it (fused QKV). */
static int layer_streams(Graph *g, const Uses *u, const Layer *L, int l, Stream *out, int max) {
  int ns = 0, y = L->y;
  int64_t Dh;
  int sp = head_reshape(g, u, y, L->N, &Dh);
  if (sp >= 0) {
    out[ns++] = (Stream){l, 0, L->N, L->N / Dh, Dh, sp};
    return ns;
  }
  int r = g->vals[y].rank;
  for (int k = u->start[y]; k < u->start[y + 1] && ns < max; k++) {
    Node *n = &g->nodes[u->node[k]];
    if (u->input[k] != 0) continue;
    if (n->op == OP_Split && norm_axis(attr_i(n, "axis", 0), r) == r - 1) {
      int64_t f0 = 0;
      for (int j = 0; j < n->nout && ns < max; j++) {
        int64_t D = g->vals[n->out[j]].dims[r - 1];
        sp = head_reshape(g, u, n->out[j], D, &Dh);
        if (sp >= 0) out[ns++] = (Stream){l, f0, D, D / Dh, Dh, sp};
        f0 += D;
      }
    } else if (n->op == OP_Slice && n->nin >= 4) {
      Tensor *st = known_value(g, n->in[1]), *ax = known_value(g, n->in[3]);
      Tensor *step = n->nin > 4 ? known_value(g, n->in[4]) : NULL;
      if (!st || !ax || tensor_nelem(ax) != 1 || norm_axis(tensor_get_i(ax, 0), r) != r - 1) continue;
      if (step && tensor_get_i(step, 0) != 1) continue;
      int64_t f0 = tensor_get_i(st, 0);
      if (f0 < 0) f0 += L->N;
      int64_t D = g->vals[n->out[0]].dims[r - 1];
      sp = head_reshape(g, u, n->out[0], D, &Dh);
      if (sp >= 0 && f0 >= 0 && f0 + D <= L->N) out[ns++] = (Stream){l, f0, D, D / Dh, Dh, sp};
    }
  }
  return ns;
}

/* Attention heads (see the top of the file). */
static void find_heads(Builder *B, const Uses *u, Layer *layers, int nl, char *used) {
  Graph *g = B->g;
  enum { MAXS = 64 };
  Stream *st = malloc(sizeof *st * (nl * 4 + 1));
  int nst = 0;
  for (int l = 0; l < nl; l++)
    if (!layers[l].stacked && g->nodes[layers[l].node].op != OP_Conv)
      nst += layer_streams(g, u, &layers[l], l, st + nst, 4);
  int nblock = 0;
  for (int v = 0; v < nst; v++) {
    if (used[st[v].layer]) continue;
    int o = find_output_projection(g, u, &st[v], layers, nl);
    if (o < 0 || used[o]) continue;
    /* the block: the streams of layers reading the same input as V, with
     * the same head shape; each of their layers covered entirely */
    int grp[MAXS], ng = 0, ok = 1;
    for (int s = 0; s < nst && ng < MAXS; s++)
      if (layers[st[s].layer].x == layers[st[v].layer].x && st[s].H == st[v].H && st[s].Dh == st[v].Dh &&
          !used[st[s].layer])
        grp[ng++] = s;
    for (int a = 0; a < ng && ok; a++) {
      int64_t covered = 0;
      for (int c = 0; c < ng; c++)
        if (st[grp[c]].layer == st[grp[a]].layer) covered += st[grp[c]].D;
      if (covered != layers[st[grp[a]].layer].N) ok = 0;
    }
    if (!ok) continue;
    /* name: the dotted prefix shared by the layers' names */
    const char *first = layer_name(g, &layers[o]);
    size_t pre = strlen(first);
    for (int a = 0; a < ng; a++) {
      size_t c = common_dotted(first, layer_name(g, &layers[st[grp[a]].layer]));
      if (c < pre) pre = c;
    }
    char prefix[512];
    if (pre) snprintf(prefix, sizeof prefix, "%.*s", (int)pre, first);
    else snprintf(prefix, sizeof prefix, "attn%d", nblock);
    nblock++;
    int64_t H = st[v].H, Dh = st[v].Dh;
    for (int64_t h = 0; h < H; h++) {
      char name[600];
      snprintf(name, sizeof name, "%s.head%lld", prefix, (long long)h);
      Module *m = mod_new(B, name, MOD_HEAD);
      for (int a = 0; a < ng; a++) {
        Stream *s = &st[grp[a]];
        Layer *L = &layers[s->layer];
        int64_t b = s->f0 + h * Dh, e = b + Dh;
        mod_slice(B, m, L->w, L->out_axis, b, e);
        if (L->b >= 0) mod_slice(B, m, L->b, g->vals[L->b].rank - 1, b, e);
      }
      mod_slice(B, m, layers[o].w, layers[o].in_axis, h * Dh, (h + 1) * Dh);
    }
    for (int a = 0; a < ng; a++) used[st[grp[a]].layer] = 1;
    used[o] = 1;
  }
  free(st);
}

/* "a.experts.3.fc1" -> length of "a.experts.3", or 0. */
static size_t expert_key(const char *name) {
  for (const char *p = name; (p = strstr(p, "expert")); p++) {
    if (p != name && p[-1] != '.') continue;
    const char *q = p + 6;
    if (*q == 's') q++;
    if (*q != '.' || !(q[1] >= '0' && q[1] <= '9')) continue;
    q++;
    while (*q >= '0' && *q <= '9') q++;
    if (*q == '.' || !*q) return (size_t)(q - name);
  }
  return 0;
}

static void find_experts(Builder *B, Layer *layers, int nl, char *used) {
  Graph *g = B->g;
  for (int l = 0; l < nl; l++) {
    if (used[l] || layers[l].stacked) continue;
    const char *nm = layer_name(g, &layers[l]);
    size_t k = expert_key(nm);
    if (!k) continue;
    char key[512];
    snprintf(key, sizeof key, "%.*s", (int)k, nm);
    Module *m = mod_new(B, key, MOD_EXPERT);
    for (int j = l; j < nl; j++) {
      if (used[j] || layers[j].stacked) continue;
      const char *nj = layer_name(g, &layers[j]);
      if (expert_key(nj) == k && strncmp(nj, key, k) == 0) {
        mod_layer(B, m, &layers[j]);
        used[j] = 1;
      }
    }
  }
  /* stacked [E, K, N] weights: expert e of every stacked layer with the
   * same parent name and E */
  for (int l = 0; l < nl; l++) {
    if (used[l] || !layers[l].stacked) continue;
    const char *nm = layer_name(g, &layers[l]);
    const char *dot = strrchr(nm, '.');
    size_t plen = dot ? (size_t)(dot - nm) : strlen(nm);
    int64_t E = layers[l].E;
    int members[64], nm_ = 0;
    for (int j = l; j < nl && nm_ < 64; j++) {
      if (used[j] || !layers[j].stacked || layers[j].E != E) continue;
      const char *nj = layer_name(g, &layers[j]);
      const char *dj = strrchr(nj, '.');
      size_t pj = dj ? (size_t)(dj - nj) : strlen(nj);
      if (pj == plen && strncmp(nj, nm, plen) == 0) members[nm_++] = j;
    }
    for (int64_t e = 0; e < E; e++) {
      char name[600];
      snprintf(name, sizeof name, "%.*s.expert%lld", (int)plen, nm, (long long)e);
      Module *m = mod_new(B, name, MOD_EXPERT);
      for (int a = 0; a < nm_; a++) {
        Layer *L = &layers[members[a]];
        mod_slice(B, m, L->w, 0, e, e + 1);
        if (L->b >= 0) mod_slice(B, m, L->b, 0, e, e + 1);
      }
    }
    for (int a = 0; a < nm_; a++) used[members[a]] = 1;
  }
}

/* Does layer l reach a graph output through no other layer? */
static int is_output_layer(Graph *g, const Uses *u, const Layer *layers, int nl, int l) {
  char *seen = calloc(g->nvals, 1), *is_layer = calloc(g->nnodes, 1);
  for (int j = 0; j < nl; j++) is_layer[layers[j].node] = 1;
  int *stack = malloc(sizeof(int) * (g->nvals + 1)), sp = 0, found = 0;
  stack[sp++] = g->nodes[layers[l].node].out[0];
  seen[stack[0]] = 1;
  while (sp && !found) {
    int v = stack[--sp];
    if (g->vals[v].is_output) found = 1;
    for (int o = 0; o < g->noutputs; o++)
      if (g->outputs[o] == v) found = 1;
    for (int k = u->start[v]; k < u->start[v + 1]; k++) {
      Node *n = &g->nodes[u->node[k]];
      if (is_layer[u->node[k]]) continue;
      for (int j = 0; j < n->nout; j++)
        if (n->out[j] >= 0 && !seen[n->out[j]]) seen[n->out[j]] = 1, stack[sp++] = n->out[j];
    }
  }
  free(seen);
  free(is_layer);
  free(stack);
  return found;
}

/* One MOD_OTHER module per name without its ".weight"-like suffix
 * ("layers.0.ln1" holds ln1.weight and ln1.bias). */
static void add_others(Builder *B) {
  Graph *g = B->g;
  for (int v = 0; v < g->nvals; v++) {
    if (B->claimed[v] || !B->trainable[v]) continue;
    char *nm = layer_name_from_param(g, g->vals[v].name);
    if (!nm) nm = arena_strdup(g->arena, g->vals[v].name);
    Module *m = mod_new(B, nm, MOD_OTHER);
    for (int w = v; w < g->nvals; w++) {
      if (B->claimed[w] || !B->trainable[w]) continue;
      char *nw = layer_name_from_param(g, g->vals[w].name);
      if (strcmp(nw ? nw : g->vals[w].name, nm) == 0) mod_slice(B, m, w, -1, 0, 0);
    }
  }
}

/* Module names must be unique: later duplicates get "#2", "#3"... */
static void unique_names(Builder *B) {
  for (int i = 0; i < B->n; i++) {
    int dup = 1;
    for (int j = 0; j < i; j++)
      if (strcmp(B->mods[i].name, B->mods[j].name) == 0) dup++;
    if (dup > 1) {
      char buf[600];
      snprintf(buf, sizeof buf, "%s#%d", B->mods[i].name, dup);
      B->mods[i].name = arena_strdup(B->g->arena, buf);
    }
  }
}

int partition_modules(Graph *g, const PartitionOptions *o) {
  PartitionOptions none = {0};
  if (!o) o = &none;
  Uses u = uses_build(g);
  Builder B = {.g = g, .claimed = calloc((size_t)g->nvals + 1, 1), .trainable = trainable_mask(g, o->freeze)};
  Layer *layers = malloc(sizeof *layers * (g->nnodes + 1));
  int nl = 0;
  for (int i = 0; i < g->nnodes; i++) {
    Layer L;
    if (!layer_at(g, &u, i, &L) || !B.trainable[L.w]) continue;
    if (L.b >= 0 && !B.trainable[L.b]) L.b = -1;
    layers[nl++] = L;
  }
  /* a parameter used by two layers (tied weights) belongs to neither:
   * freezing one use would still train the other */
  char *used = calloc(nl + 1, 1);
  for (int a = 0; a < nl; a++)
    for (int b = 0; b < nl; b++)
      if (a != b && layers[a].w == layers[b].w) used[a] = 1;
  find_heads(&B, &u, layers, nl, used);
  find_experts(&B, layers, nl, used);
  for (int l = 0; l < nl; l++) {
    if (used[l] || B.claimed[layers[l].w]) continue;
    if (is_output_layer(g, &u, layers, nl, l)) continue;   /* the head stays with the others */
    Module *m = mod_new(&B, layer_name(g, &layers[l]), MOD_LAYER);
    mod_layer(&B, m, &layers[l]);
    used[l] = 1;
  }
  if (o->others_as_modules) add_others(&B);
  unique_names(&B);
  g->modules = arena_alloc(g->arena, sizeof(Module) * (B.n + 1));
  if (B.n) memcpy(g->modules, B.mods, sizeof(Module) * B.n);
  g->nmodules = B.n;
  free(B.mods);
  free(B.claimed);
  free(B.trainable);
  free(layers);
  free(used);
  uses_free(&u);
  for (int k = 0; k < g->nmodules; k++) partition_find_sites(g, &g->modules[k], o->freeze);
  if (o->partition_file) return partition_apply_file(g, o);
  return MATC_OK;
}

