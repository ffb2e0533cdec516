/* guards.c: MAT guard branches in the compiled training step.
 *
 *   unit_guards                       mlp, all checks (quick)
 *   unit_guards exact MODEL OPT [heads]   exactness in weights mode
 *   unit_guards stop MODEL            stop mode drops the gradient below a frozen module
 *   unit_guards stop-heads MODEL [H]  per-head stop mode against a per-head-weights reference
 *   unit_guards stop-allon MODEL [heads]  stop mode, all guards on, equals the unguarded step
 *   unit_guards clip MODEL            clipping sees zero for a frozen module's gradient
 *   unit_guards bench MODEL BATCH [heads] step FLOPs and time, 0/25/50/75% of heads frozen,
 *                                     weights and stop mode
 *
 * MODEL is a path to model.onnx; OPT is sgd or adamw (both with weight
 * decay 0.01; SGD with momentum 0.9). With heads = part, the modules come
 * from the partition pass (passes/partition.c, default options). With a
 * number of `heads`, attention projections
 * (*.q/k/v.weight column slices, *.o.weight row slices) are one module per
 * head; every other Gemm/MatMul/Conv weight (with its bias) is one module.
 * This is a stand-in for passes/partition.c.
 *
 * Exactness: for each guard pattern and for 3 steps, from the guarded
 * run's state the same step is run twice: once with every guard on (the
 * reference) and once with the pattern. Parameters and optimizer state of
 * active modules and always-on parameters must equal the reference (the
 * gradient enters both linearly, so a wrong gradient shows); those of
 * frozen modules must be bit-identical to before the step. Step 1 with
 * every guard on must also match a graph compiled without guards. */
#include "../../compiler/exec.h"
#include "../../runtime/rt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXHEADS 64

static int failures;

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}
static double uniform(void) { return (next_rand() >> 11) * (1.0 / 9007199254740992.0); }

/* ---------------------------------------------------------------- stand-in partition */

static int ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

/* The bias added to a MatMul's output: Add(out, b) with b a rank-1 param. */
static int matmul_bias(Graph *g, int node) {
  int y = g->nodes[node].out[0];
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = &g->nodes[i];
    if (n->dead || n->op != OP_Add) continue;
    for (int j = 0; j < 2; j++) {
      int b = n->in[1 - j];
      if (n->in[j] == y && b >= 0 && g->vals[b].kind == V_PARAM && g->vals[b].rank == 1) return b;
    }
  }
  return -1;
}

static Module *add_module(Graph *g, const char *name, ModuleKind kind) {
  Module *grown = arena_alloc(g->arena, sizeof(Module) * (g->nmodules + 1));   /* freed with g */
  if (g->nmodules) memcpy(grown, g->modules, sizeof(Module) * g->nmodules);
  g->modules = grown;
  Module *m = &g->modules[g->nmodules++];
  memset(m, 0, sizeof *m);
  m->name = arena_strdup(g->arena, name);
  m->kind = kind;
  m->slices = arena_alloc(g->arena, sizeof(ParamSlice) * 8);
  return m;
}

static void add_slice(Graph *g, Module *m, int param, int axis, int64_t b, int64_t e) {
  m->slices[m->nslices++] = (ParamSlice){param, axis, b, e};
  Value *p = &g->vals[param];
  m->nparams += axis < 0 ? value_nelem(p) : value_nelem(p) / p->dims[axis] * (e - b);
}

static void partition(Graph *g, int heads) {
  int nfwd = g->nnodes;
  for (int i = 0; i < nfwd; i++) {
    Node *n = &g->nodes[i];
    if (n->dead || n->nin < 2 || (n->op != OP_MatMul && n->op != OP_Gemm && n->op != OP_Conv)) continue;
    int w = n->in[1];
    if (w < 0 || g->vals[w].kind != V_PARAM) continue;
    const char *name = g->vals[w].name;
    int bias = n->op == OP_MatMul ? matmul_bias(g, i) : n->nin > 2 ? n->in[2] : -1;
    if (bias >= 0 && g->vals[bias].kind != V_PARAM) bias = -1;
    int proj = heads > 0 && (ends_with(name, ".q.weight") || ends_with(name, ".k.weight") ||
                             ends_with(name, ".v.weight") || ends_with(name, ".o.weight"));
    if (!proj) {
      Module *m = add_module(g, name, MOD_LAYER);
      add_slice(g, m, w, -1, 0, 0);
      if (bias >= 0) add_slice(g, m, bias, -1, 0, 0);
      continue;
    }
    /* Heads: one module per (prefix, head), found or made on the q weight. */
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%.*s", (int)(strlen(name) - strlen(".q.weight")), name);
    int out_proj = ends_with(name, ".o.weight");
    Value *wv = &g->vals[w];
    int axis = out_proj ? 0 : 1;
    int64_t dh = wv->dims[axis] / heads;
    for (int h = 0; h < heads; h++) {
      char mname[300];
      snprintf(mname, sizeof mname, "%s.head%d", prefix, h);
      Module *m = NULL;
      for (int k = 0; k < g->nmodules; k++)
        if (strcmp(g->modules[k].name, mname) == 0) m = &g->modules[k];
      if (!m) m = add_module(g, mname, MOD_HEAD);
      add_slice(g, m, w, axis, h * dh, (h + 1) * dh);
      if (!out_proj && bias >= 0) add_slice(g, m, bias, 0, h * dh, (h + 1) * dh);
    }
  }
}

/* ---------------------------------------------------------------- compiling */

typedef struct {
  Graph *g;
  Exec *x;
  TrainStep ts;
  int input;
} Step;

static double clip_norm;          /* for the clipping test */
static int split_qkv_heads;       /* the stop-heads reference: per-head Q/K/V weights */
static void split_qkv(Graph *g, int heads);
static const char *freeze_list;   /* initializers the reference does not train */

static int compile(const char *model, int64_t batch, int opt, int heads, int guards, int stop, Step *s) {
  memset(s, 0, sizeof *s);
  Graph *g = s->g = graph_new(model);
  g->profile = getenv("MATC_PROFILE") && *getenv("MATC_PROFILE") == '1';
  if (guards) g->dump_after = getenv("GUARDS_DUMP_AFTER");
  int rc = import_onnx(g, model);
  if (rc) goto bad;
  s->input = g->inputs[0];
  g->vals[s->input].dims[0] = batch;
  rc = bind_inputs(g, batch);
  if (!rc) rc = infer_shapes(g);
  if (rc) goto bad;
  Value *y = &g->vals[g->outputs[0]];
  TrainConfig cfg = {0};
  cfg.optimizer = opt ? OPT_ADAMW : OPT_SGD;
  cfg.momentum = opt ? 0 : 0.9;
  cfg.weight_decay = 0.01;
  cfg.beta1 = 0.9, cfg.beta2 = 0.999, cfg.eps = 1e-8;
  cfg.ignore_index = -100;
  cfg.clip_norm = clip_norm;
  cfg.freeze = freeze_list;
  cfg.target_dt = DT_I64;
  cfg.target_rank = y->rank - 2;
  for (int i = 0; i < cfg.target_rank; i++) cfg.target_dims[i] = y->dims[i + 1];
  if (guards && heads < 0) {
    /* The real partition pass (passes/partition.c), defaults. */
    PartitionOptions po;
    memset(&po, 0, sizeof po);
    rc = partition_modules(g, &po);
    if (rc) goto bad;
  } else if (guards) {
    partition(g, heads);
    if (split_qkv_heads) split_qkv(g, heads);
  }
  rc = build_train_step(g, &cfg, &s->ts);
  if (!rc && guards) rc = insert_guards(g, &s->ts, stop);
  if (!rc) rc = exec_new(g, &s->x);
  if (rc) goto bad;
  return 0;
bad:
  fprintf(stderr, "guards: %s: %s\n", model, g->err);
  return 1;
}

static void step_free(Step *s) {
  exec_free(s->x);
  graph_free(s->g);
  free(s->ts.params);
  free(s->ts.grads);
  free(s->ts.state);
  memset(s, 0, sizeof *s);
}

/* The same random batch for every graph of a test (seeded). */
static void fill_batch(Step *s, uint64_t seed) {
  rng = seed * 2654435761u + 1;
  Graph *g = s->g;
  Value *in = &g->vals[s->input];
  int64_t n = value_nelem(in);
  if (in->dt == DT_I64) {
    for (int64_t i = 0; i < n; i++) ((int64_t *)s->x->bufs[s->input])[i] = (int64_t)(next_rand() % 256);
  } else {
    for (int64_t i = 0; i < n; i++) ((float *)s->x->bufs[s->input])[i] = (float)(2 * uniform() - 1);
  }
  Value *y = &g->vals[s->ts.logits];
  int64_t classes = y->dims[y->rank - 1];
  Value *t = &g->vals[s->ts.target];
  for (int64_t i = 0; i < value_nelem(t); i++) ((int64_t *)s->x->bufs[s->ts.target])[i] = (int64_t)(next_rand() % classes);
}

static void set_scalar(Exec *x, int v, double val) {
  if (x->g->vals[v].dt == DT_F64) *(double *)x->bufs[v] = val;
  else *(float *)x->bufs[v] = (float)val;
}

static void run_step(Step *s, int64_t step, double lr) {
  set_scalar(s->x, s->ts.lr, lr);
  set_scalar(s->x, s->ts.bc1, 1 - pow(0.9, (double)(step + 1)));
  set_scalar(s->x, s->ts.bc2, 1 - pow(0.999, (double)(step + 1)));
  fill_batch(s, (uint64_t)step + 7);
  exec_run(s->x);
}

static void set_guards(Step *s, const uint8_t *on) {
  memcpy(s->x->bufs[s->g->guard_value], on, (size_t)s->g->nmodules);
}

/* Parameters and optimizer state: what a step changes. */
typedef struct {
  int n;
  int *v;
  size_t *bytes;
  char **data;
} Snap;

static void snap_init(Step *s, Snap *sn) {
  sn->n = s->ts.nparams + s->ts.nstate;
  sn->v = malloc(sizeof(int) * sn->n);
  sn->bytes = malloc(sizeof(size_t) * sn->n);
  sn->data = malloc(sizeof(char *) * sn->n);
  for (int i = 0; i < sn->n; i++) {
    int v = i < s->ts.nparams ? s->ts.params[i] : s->ts.state[i - s->ts.nparams];
    sn->v[i] = v;
    sn->bytes[i] = (size_t)value_nelem(&s->g->vals[v]) * dt_size(s->g->vals[v].dt);
    sn->data[i] = malloc(sn->bytes[i]);
  }
}

static void snap_free(Snap *sn) {
  for (int i = 0; i < sn->n; i++) free(sn->data[i]);
  free(sn->v);
  free(sn->bytes);
  free(sn->data);
}

static void snap_take(Step *s, Snap *sn) {
  for (int i = 0; i < sn->n; i++) memcpy(sn->data[i], s->x->bufs[sn->v[i]], sn->bytes[i]);
}

static void snap_put(Step *s, Snap *sn) {
  for (int i = 0; i < sn->n; i++) memcpy(s->x->bufs[sn->v[i]], sn->data[i], sn->bytes[i]);
}

/* The parameter a value is (or whose optimizer state it is). */
static int owner(Graph *g, int v) {
  const char *name = g->vals[v].name, *dot = strrchr(name, '.');
  if (g->vals[v].kind == V_PARAM && dot &&
      (!strcmp(dot, ".momentum") || !strcmp(dot, ".adam_m") || !strcmp(dot, ".adam_v"))) {
    char buf[512];
    snprintf(buf, sizeof buf, "%.*s", (int)(dot - name), name);
    return graph_find_value(g, buf);
  }
  return v;
}

/* Is element i of parameter p in a module that `on` freezes? */
static int frozen_elem(Graph *g, int p, int64_t i, const uint8_t *on) {
  Value *pv = &g->vals[p];
  for (int k = 0; k < g->nmodules; k++) {
    if (on[k]) continue;
    Module *m = &g->modules[k];
    for (int s = 0; s < m->nslices; s++) {
      ParamSlice sl = m->slices[s];
      if (sl.param != p) continue;
      if (sl.axis < 0) return 1;
      int64_t st = 1;
      for (int d = sl.axis + 1; d < pv->rank; d++) st *= pv->dims[d];
      int64_t c = (i / st) % pv->dims[sl.axis];
      if (c >= sl.begin && c < sl.end) return 1;
    }
  }
  return 0;
}

typedef struct {
  int64_t frozen_bad, active_bad, active_bitdiff, active_n, frozen_n;
  double max_rel;
} Cmp;

/* got vs ref (active elements) and vs before (frozen elements). */
/* With zero_floor > 0 (the stop-heads test), an optimizer state tensor
 * whose reference is zero up to rounding (below zero_floor times the
 * largest state entry: the K bias's gradient, exactly zero because softmax
 * ignores a per-row shift of the scores) is compared against that largest
 * entry instead of its own: two computations that round differently agree
 * only on its being noise. */
static double zero_floor;

static void compare_step(Step *s, Snap *before, Snap *ref, const uint8_t *on, Cmp *c, int state_only) {
  Graph *g = s->g;
  double state_max = 0;
  for (int i = 0; zero_floor > 0 && i < before->n; i++) {
    if (g->vals[before->v[i]].dt != DT_F32 || owner(g, before->v[i]) == before->v[i]) continue;
    const float *r = (const float *)ref->data[i];
    for (int64_t e = 0; e < value_nelem(&g->vals[before->v[i]]); e++) state_max = fmax(state_max, fabs(r[e]));
  }
  for (int i = 0; i < before->n; i++) {
    int v = before->v[i], p = owner(g, v);
    if (g->vals[v].dt != DT_F32 || (state_only && p == v)) continue;
    const float *got = s->x->bufs[v], *r = (const float *)ref->data[i], *b = (const float *)before->data[i];
    int64_t n = value_nelem(&g->vals[v]), bad_here = 0, first_bad = -1;
    double scale = 0;
    for (int64_t e = 0; e < n; e++) scale = fmax(scale, fabs(r[e]));
    if (p != v && scale < zero_floor * state_max) scale = state_max;
    for (int64_t e = 0; e < n; e++) {
      if (p >= 0 && frozen_elem(g, p, e, on)) {
        c->frozen_n++;
        if (memcmp(&got[e], &b[e], 4)) c->frozen_bad++;
        continue;
      }
      c->active_n++;
      if (memcmp(&got[e], &r[e], 4)) c->active_bitdiff++;
      /* Normwise: the difference against the tensor's largest entry (a
       * GEMM split per head may round its sums differently). */
      double rel = fabs((double)got[e] - r[e]) / (scale > 0 ? scale : 1e-30);
      if (got[e] == r[e]) rel = 0;
      if (rel > c->max_rel) c->max_rel = rel;
      if (rel > 1e-6 || isnan(got[e])) {
        if (getenv("GUARDS_VERBOSE") && (first_bad < 0 || c->active_bad == 0)) first_bad = e;
        c->active_bad++;
        bad_here++;
      }
    }
    if (bad_here && getenv("GUARDS_VERBOSE"))
      printf("    %s: %lld elements off, first %lld (scale %.3g)\n", g->vals[v].name, (long long)bad_here,
             (long long)first_bad, scale);
  }
}

/* ---------------------------------------------------------------- tests */

static int is_head(Graph *g, int k) { return g->modules[k].kind == MOD_HEAD; }

static void pattern(Graph *g, const char *what, uint8_t *on) {
  int M = g->nmodules;
  memset(on, 1, (size_t)M);
  if (!strcmp(what, "random")) {
    rng = 12345;
    for (int k = 0; k < M; k++) on[k] = next_rand() % 2;
    on[M / 2] = 1;                       /* at least one active, */
    on[(M / 2 + 1) % M] = 0;             /* at least one frozen */
  } else if (!strcmp(what, "one")) {
    memset(on, 0, (size_t)M);
    on[M / 2] = 1;
  } else if (!strcmp(what, "lowest")) {
    on[0] = 0;
  } else if (!strcmp(what, "top")) {
    on[M - 1] = 0;
  } else if (!strcmp(what, "heads-half")) {
    for (int k = 0; k < M; k++)
      if (is_head(g, k) && k % 2) on[k] = 0;
  } else if (!strcmp(what, "none")) {
    memset(on, 0, (size_t)M);
  }
}

/* With exact_stop (stop-allon), the guarded graph is in stop mode and only
 * the all-on step is checked: per-head splits (passes/guard_heads.c) must
 * not change the full gradient. Patterns differ from all-on by design. */
static int exact_stop;

static int test_exact(const char *model, int opt, int heads, int64_t batch) {
  Step plain, gs;
  if (compile(model, batch, opt, 0, 0, 0, &plain) || compile(model, batch, opt, heads, 1, exact_stop, &gs)) return 1;
  Graph *g = gs.g;
  int M = g->nmodules;
  printf("%s %s: %d modules, %d kernels (%d without guards)\n", model, opt ? "adamw" : "sgd", M, g->nkernels,
         plain.g->nkernels);
  /* Step 1, every guard on, against the graph without guards. */
  Snap a, b;
  snap_init(&plain, &a);
  snap_init(&gs, &b);
  uint8_t *on = malloc((size_t)M + 1);
  memset(on, 1, (size_t)M);
  run_step(&plain, 0, 0.05);
  run_step(&gs, 0, 0.05);
  snap_take(&plain, &a);
  Cmp c0 = {0};
  Snap before;
  snap_init(&gs, &before);
  /* All on: every element is compared with the plain run, except AdamW's
   * parameters: its first step is about lr * sign(g), which turns a
   * one-ulp difference in a near-zero gradient (a GEMM split per head
   * rounds its sums differently) into an lr-sized one. The gradient itself
   * is checked through the moments. */
  compare_step(&gs, &before, &a, on, &c0, opt == 1);
  float l0 = *(float *)plain.x->bufs[plain.ts.loss], l1 = *(float *)gs.x->bufs[gs.ts.loss];
  printf("  all on vs no guards: %lld/%lld elements differ in bits, max rel %.3g, loss %.7g vs %.7g\n",
         (long long)c0.active_bitdiff, (long long)c0.active_n, c0.max_rel, l0, l1);
  if (c0.active_bad || l0 != l1) {
    printf("  FAIL: the guarded graph with every guard on differs from the unguarded one\n");
    failures++;
  }
  if (getenv("GUARDS_ONLY_ALLON") || exact_stop) goto done;
  double full = kernels_flops(g);
  const char *pats[] = {"random", "one", "lowest", "top", "heads-half"};
  Snap ref;
  snap_init(&gs, &ref);
  for (size_t p = 0; p < sizeof pats / sizeof *pats; p++) {
    if (!strcmp(pats[p], "heads-half") && !heads) continue;
    pattern(g, pats[p], on);
    Cmp c = {0};
    for (int64_t step = 1; step <= 3; step++) {
      snap_take(&gs, &before);
      uint8_t *all = malloc((size_t)M);
      memset(all, 1, (size_t)M);
      set_guards(&gs, all);
      free(all);
      run_step(&gs, step, 0.05);
      snap_take(&gs, &ref);
      snap_put(&gs, &before);
      set_guards(&gs, on);
      run_step(&gs, step, 0.05);
      compare_step(&gs, &before, &ref, on, &c, 0);
    }
    int nfrozen = 0;
    for (int k = 0; k < M; k++) nfrozen += !on[k];
    double fl = kernels_flops_guarded(g, on);
    printf("  %-10s %2d/%d frozen: active %lld elems (%lld differ in bits, max rel %.3g), frozen %lld elems "
           "(%lld changed); FLOPs %.4g of %.4g (%.1f%%)\n",
           pats[p], nfrozen, M, (long long)c.active_n, (long long)c.active_bitdiff, c.max_rel,
           (long long)c.frozen_n, (long long)c.frozen_bad, fl, full, 100 * fl / full);
    if (c.active_bad || c.frozen_bad || (nfrozen && !(fl < full))) {
      printf("  FAIL: pattern %s\n", pats[p]);
      failures++;
    }
  }
  snap_free(&ref);
done:
  snap_free(&a);
  snap_free(&b);
  snap_free(&before);
  free(on);
  step_free(&plain);
  step_free(&gs);
  return 0;
}

/* stop mode: freeze the middle module; the modules below it get no
 * gradient through it (in a chain like mlp, none at all), while weights
 * mode updates them; modules above are the same in both modes. */
static int test_stop(const char *model) {
  Step w, s;
  if (compile(model, 8, 0, 0, 1, 0, &w) || compile(model, 8, 0, 0, 1, 1, &s)) return 1;
  int M = w.g->nmodules;
  if (M < 3) {
    printf("stop: %s has %d modules, need 3\n", model, M);
    return 1;
  }
  uint8_t *on = malloc((size_t)M);
  memset(on, 1, (size_t)M);
  on[M / 2] = 0;
  set_guards(&w, on);
  set_guards(&s, on);
  Snap bw, bs;
  snap_init(&w, &bw);
  snap_init(&s, &bs);
  snap_take(&w, &bw);
  run_step(&w, 0, 0.05);
  run_step(&s, 0, 0.05);
  snap_take(&s, &bs);
  Graph *g = w.g;
  /* Per module: did its first parameter change from its initial value
   * (weights mode, stop mode), and do the two modes agree? */
  for (int k = 0; k < M; k++) {
    int p = g->modules[k].slices[0].param;
    int i = -1;
    for (int j = 0; j < bw.n; j++)
      if (bw.v[j] == p) i = j;
    float *init = (float *)bw.data[i], *wv = w.x->bufs[p], *sv = (float *)bs.data[i];
    int64_t n = value_nelem(&g->vals[p]), changed_w = 0, changed_s = 0, differ = 0;
    for (int64_t e = 0; e < n; e++) {
      changed_w += wv[e] != init[e];
      changed_s += sv[e] != init[e];
      differ += wv[e] != sv[e];
    }
    const char *where = k < M / 2 ? "below" : k == M / 2 ? "frozen" : "above";
    printf("  %-24s %-6s changed: weights %lld, stop %lld; modes differ in %lld of %lld\n", g->modules[k].name,
           where, (long long)changed_w, (long long)changed_s, (long long)differ, (long long)n);
    int bad = k > M / 2 ? differ != 0 : k == M / 2 ? changed_w || changed_s : differ == 0;
    if (bad) {
      printf("  FAIL: stop mode, module %s (%s)\n", g->modules[k].name, where);
      failures++;
    }
  }
  printf("  step FLOPs: weights %.4g, stop %.4g (full %.4g)\n", kernels_flops_guarded(w.g, on),
         kernels_flops_guarded(s.g, on), kernels_flops(s.g));
  if (!(kernels_flops_guarded(s.g, on) < kernels_flops_guarded(w.g, on))) {
    printf("  FAIL: stop mode does not save work\n");
    failures++;
  }
  snap_free(&bw);
  snap_free(&bs);
  free(on);
  step_free(&w);
  step_free(&s);
  return 0;
}

/* Global-norm clipping must see zero for a frozen module's gradient: with
 * the middle module frozen, the guarded step equals a step compiled with
 * that module's parameters not trained at all (whole-layer modules). */
static int test_clip(const char *model) {
  clip_norm = getenv("GUARDS_CLIP") ? atof(getenv("GUARDS_CLIP")) : 0.05;   /* small: clipping is active */
  Step gs, ref;
  if (compile(model, 8, 0, 0, 1, 0, &gs)) return 1;
  int M = gs.g->nmodules, k = M / 2;
  static char list[4096];
  list[0] = 0;
  Module *m = &gs.g->modules[k];
  for (int s = 0; s < m->nslices; s++) {
    if (s) strcat(list, ",");
    strncat(list, gs.g->vals[m->slices[s].param].name, sizeof list - strlen(list) - 2);
  }
  freeze_list = list;
  int rc = compile(model, 8, 0, 0, 0, 0, &ref);
  freeze_list = NULL;
  clip_norm = 0;
  if (rc) return 1;
  uint8_t *on = malloc((size_t)M);
  memset(on, 1, (size_t)M);
  on[k] = 0;
  set_guards(&gs, on);
  int64_t differ = 0, n = 0;
  for (int64_t step = 0; step < 3; step++) {
    run_step(&gs, step, 0.05);
    run_step(&ref, step, 0.05);
  }
  for (int i = 0; i < ref.ts.nparams; i++) {
    int rv = ref.ts.params[i], gv = graph_find_value(gs.g, ref.g->vals[rv].name);
    int64_t c = value_nelem(&ref.g->vals[rv]);
    double md = 0, mx = 0;
    for (int64_t e = 0; e < c; e++) {
      float a = ((float *)ref.x->bufs[rv])[e], b = ((float *)gs.x->bufs[gv])[e];
      md = fmax(md, fabs((double)a - b));
      mx = fmax(mx, fabs((double)a));
    }
    if (getenv("GUARDS_VERBOSE")) printf("    %s: max diff %.3g (max %.3g)\n", ref.g->vals[rv].name, md, mx);
    differ += memcmp(ref.x->bufs[rv], gs.x->bufs[gv], (size_t)c * 4) != 0;
    n++;
  }
  /* and the frozen ones did not move */
  int64_t moved = 0;
  for (int s = 0; s < m->nslices; s++) {
    int p = m->slices[s].param, rp = graph_find_value(ref.g, gs.g->vals[p].name);
    moved += memcmp(ref.x->bufs[rp], gs.x->bufs[p], (size_t)value_nelem(&gs.g->vals[p]) * 4) != 0;
  }
  printf("clip %s: module %s frozen, 3 steps: %lld of %lld trained tensors differ from the reference "
         "without it, %lld frozen tensors moved\n", model, m->name, (long long)differ, (long long)n,
         (long long)moved);
  if (differ || moved) {
    printf("  FAIL: clipping saw the frozen gradient\n");
    failures++;
  }
  free(on);
  step_free(&gs);
  step_free(&ref);
  return 0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Step FLOPs and time with 0/25/50/75% of the heads (or of all modules)
 * frozen, in weights and in stop mode, and the step compiled without
 * guards. The nine configurations take turns step by step, so a busy
 * machine slows them alike. */
static int bench(const char *model, int64_t batch, int heads, int reps) {
  Step s[2], p;
  if (compile(model, batch, 1, heads, 1, 0, &s[0]) || compile(model, batch, 1, heads, 1, 1, &s[1]) ||
      compile(model, batch, 1, 0, 0, 0, &p))
    return 1;
  Graph *g = s[0].g;
  int M = g->nmodules, nh = 0, *idx = malloc(sizeof(int) * (M + 1));
  for (int k = 0; k < M; k++)
    if (!heads || is_head(g, k)) idx[nh++] = k;
  if (nh == 0) {
    printf("bench: %s has no %s modules\n", model, heads ? "head" : "");
    return 1;
  }
  printf("%s batch %lld, AdamW, %d modules (%d %s), %d threads, %d steps each; kernels: weights %d, stop %d, "
         "no guards %d\n", model, (long long)batch, M, nh, heads ? "heads" : "modules", matc_rt_threads(), reps,
         s[0].g->nkernels, s[1].g->nkernels, p.g->nkernels);
  enum { NPAT = 4, NCONF = 2 * NPAT + 1 };
  uint8_t *on[NPAT];
  double *t[NCONF];
  for (int c = 0; c < NCONF; c++) t[c] = malloc(sizeof(double) * reps);
  for (int c = 0; c < NPAT; c++) {
    on[c] = malloc((size_t)M);
    memset(on[c], 1, (size_t)M);
    /* Freeze a random pct of them (seeded), spread over the layers. */
    int want = nh * 25 * c / 100, done = 0;
    rng = 99;
    while (done < want) {
      int k = idx[next_rand() % nh];
      if (on[c][k]) on[c][k] = 0, done++;
    }
  }
  run_step(&s[0], 0, 1e-4);               /* warm-up */
  run_step(&s[1], 0, 1e-4);
  run_step(&p, 0, 1e-4);
  for (int r = 0; r < reps; r++)
    for (int c = 0; c < NCONF; c++) {
      Step *x = c == 2 * NPAT ? &p : &s[c / NPAT];
      if (c < 2 * NPAT) set_guards(x, on[c % NPAT]);
      double t0 = now_ms();
      run_step(x, r + 1, 1e-4);
      t[c][r] = now_ms() - t0;
    }
  double full = kernels_flops(p.g);
  printf("%-8s %-8s %14s %8s %10s %10s\n", "mode", "frozen", "step FLOPs", "% full", "ms median", "ms min");
  for (int c = 0; c < NCONF; c++) {
    qsort(t[c], reps, sizeof(double), cmp_double);
    double fl = c == 2 * NPAT ? kernels_flops(p.g) : kernels_flops_guarded(s[c / NPAT].g, on[c % NPAT]);
    char label[32];
    if (c == 2 * NPAT) snprintf(label, sizeof label, "-");
    else snprintf(label, sizeof label, "%d%%", 25 * (c % NPAT));
    printf("%-8s %-8s %14.4g %7.1f%% %10.2f %10.2f\n", c == 2 * NPAT ? "noguard" : c < NPAT ? "weights" : "stop",
           label, fl, 100 * fl / full, t[c][reps / 2], t[c][0]);
  }
  if (g->profile) exec_print_profile(s[1].x, stdout, 12);
  return 0;
}

/* ---------------------------------------------------------------- stop mode, per head */

/* The reference for per-head stop mode: each Q/K/V projection X . W
 * becomes H MatMuls X . W_h with W_h = W[:, h*dh:(h+1)*dh] (new whole
 * parameters "<W>.h<h>", each in head h's module) and a Concat, so the
 * existing per-site stop cut drops exactly a frozen head's share of dX.
 * Runs after the stand-in partition: the modules' slices of W become W_h. */
static void split_qkv(Graph *g, int heads) {
  int nn = g->nnodes, *pos = malloc(sizeof(int) * (nn + 1) * (heads + 2)), npos = 0;
  for (int i = 0; i < nn; i++) {
    Node *n = &g->nodes[i];
    int w = n->nin == 2 ? n->in[1] : -1;
    const char *name = w >= 0 ? g->vals[w].name : "";
    if (n->dead || n->op != OP_MatMul || g->vals[w].kind != V_PARAM || g->vals[w].rank != 2 ||
        !(ends_with(name, ".q.weight") || ends_with(name, ".k.weight") || ends_with(name, ".v.weight"))) {
      pos[npos++] = i;
      continue;
    }
    Value *wv = &g->vals[w];
    int64_t din = wv->dims[0], d = wv->dims[1], dh = d / heads;
    int x = n->in[0], y = n->out[0], *parts = malloc(sizeof(int) * heads);
    for (int h = 0; h < heads; h++) {
      char nm[600];
      snprintf(nm, sizeof nm, "%s.h%d", name, h);
      int wh = graph_add_value(g, nm);
      wv = &g->vals[w];
      Value *p = &g->vals[wh];
      int64_t dims[2] = {din, dh};
      p->kind = V_PARAM;
      value_set(p, DT_F32, 2, dims);
      p->data = tensor_new(g->arena, DT_F32, 2, dims);
      for (int64_t r = 0; r < din; r++)
        memcpy((float *)p->data->data + r * dh, (float *)wv->data->data + r * d + h * dh, sizeof(float) * dh);
      snprintf(nm, sizeof nm, "%s.h%d", g->vals[y].name, h);
      parts[h] = graph_add_value(g, nm);
      Value *yv = &g->vals[y], *pv = &g->vals[parts[h]];
      int64_t yd[MATC_MAX_RANK];
      memcpy(yd, yv->dims, sizeof(int64_t) * yv->rank);
      yd[yv->rank - 1] = dh;
      value_set(pv, yv->dt, yv->rank, yd);
      int in[2] = {x, wh};
      snprintf(nm, sizeof nm, "%s/h%d", g->nodes[i].name, h);
      pos[npos++] = graph_add_node(g, "MatMul", nm, 2, in, 1, &parts[h]);
      /* module slices of w, column range h -> the whole of w_h */
      for (int k = 0; k < g->nmodules; k++)
        for (int s = 0; s < g->modules[k].nslices; s++) {
          ParamSlice *sl = &g->modules[k].slices[s];
          if (sl->param == w && sl->axis == 1 && sl->begin == h * dh) *sl = (ParamSlice){wh, -1, 0, 0};
        }
    }
    char nm[600];
    snprintf(nm, sizeof nm, "%s/concat", g->nodes[i].name);
    int c = graph_add_node(g, "Concat", nm, heads, parts, 1, &y);
    Node *cn = &g->nodes[c];
    cn->nattr = 1;
    cn->attr = arena_alloc(g->arena, sizeof(Attr));
    cn->attr[0] = ad_attr_i("axis", -1);
    pos[npos++] = c;
    n = &g->nodes[i];
    n->dead = 1;
    g->vals[x].nuses--;
    g->vals[w].nuses--;
    g->vals[w].kind = V_CONST;              /* not trained: its heads are */
    free(parts);
  }
  /* Nodes in topological order again: each Concat where its MatMul was. */
  Node *order = malloc(sizeof(Node) * npos);
  for (int i = 0; i < npos; i++) order[i] = g->nodes[pos[i]];
  memcpy(g->nodes, order, sizeof(Node) * npos);
  g->nnodes = npos;
  for (int i = 0; i < npos; i++)
    for (int j = 0; j < g->nodes[i].nout; j++)
      if (g->nodes[i].out[j] >= 0 && !g->nodes[i].dead) g->vals[g->nodes[i].out[j]].producer = i;
  free(order);
  free(pos);
}

/* Value of the reference graph holding P's value v (same name), or head h
 * of it ("<param>.h<h>", "<param>.h<h>.<state>"); -1 if none. */
static int ref_value(Graph *p, Graph *r, int v, int h) {
  const char *name = p->vals[v].name, *dot = strrchr(name, '.');
  char buf[600];
  if (h < 0) return graph_find_value(r, name);
  if (dot && (!strcmp(dot, ".momentum") || !strcmp(dot, ".adam_m") || !strcmp(dot, ".adam_v")))
    snprintf(buf, sizeof buf, "%.*s.h%d%s", (int)(dot - name), name, h, dot);
  else
    snprintf(buf, sizeof buf, "%s.h%d", name, h);
  return graph_find_value(r, buf);
}

/* Copies parameters and optimizer state between the per-head stop graph
 * (P) and the reference (R): to R when `to_ref`, else R's into snapshot sn
 * (laid out like P's). */
static void xfer(Step *P, Step *R, Snap *sn, int to_ref, int heads) {
  for (int i = 0; i < sn->n; i++) {
    int v = sn->v[i];
    char *pd = to_ref ? P->x->bufs[v] : sn->data[i];
    int rv = ref_value(P->g, R->g, v, 0) >= 0 ? -1 : ref_value(P->g, R->g, v, -1);
    if (rv >= 0) {
      if (to_ref) memcpy(R->x->bufs[rv], pd, sn->bytes[i]);
      else memcpy(pd, R->x->bufs[rv], sn->bytes[i]);
      continue;
    }
    Value *pv = &P->g->vals[v];
    int64_t din = pv->dims[0], d = pv->dims[1], dh = d / heads;
    for (int h = 0; h < heads; h++) {
      float *hd = R->x->bufs[ref_value(P->g, R->g, v, h)];
      for (int64_t r = 0; r < din; r++) {
        float *a = (float *)pd + r * d + h * dh, *b = hd + r * dh;
        if (to_ref) memcpy(b, a, sizeof(float) * dh);
        else memcpy(a, b, sizeof(float) * dh);
      }
    }
  }
}

/* Per-head stop mode (passes/guard_heads.c) on bert-mini, SGD: for guard
 * patterns with some heads frozen, 3 steps, each from the same state in
 * the per-head graph and in the reference (split_qkv, union stop mode):
 * active parameters and state equal within 1e-6 (normwise), frozen ones
 * bit-identical. Executed FLOPs: freezing k of H heads in every layer
 * saves at least k times a head's attention backward (dCtx, dP, dV, dS.K,
 * dS^T.Q GEMMs, dX through its Q/K/V columns) beyond what the union stop
 * mode saves. */
static int test_stop_heads(const char *model, int heads) {
  int64_t batch = 2;
  Step P, U, R;
  if (compile(model, batch, 0, heads, 1, 1, &P) || compile(model, batch, 0, heads, 1, 2, &U)) return 1;
  split_qkv_heads = 1;
  int rc = compile(model, batch, 0, heads, 1, 2, &R);
  split_qkv_heads = 0;
  if (rc) return 1;
  Graph *g = P.g;
  int M = g->nmodules;
  uint8_t *on = malloc((size_t)M);
  /* FLOPs. Sizes from the first head block's q weight and the attention. */
  int64_t S = g->vals[P.input].dims[1], D = 0, nlayers = 0;
  for (int v = 0; v < g->nvals; v++)
    if (g->vals[v].kind == V_PARAM && ends_with(g->vals[v].name, ".q.weight")) D = g->vals[v].dims[1], nlayers++;
  int64_t dh = D / heads;
  double per_head = 2.0 * batch * (S * D * dh + 4 * S * S * dh + 3 * S * dh * D);
  printf("%s: %d modules, %d kernels (union stop %d, reference %d); a head's attention backward %.4g FLOPs\n",
         model, M, g->nkernels, U.g->nkernels, R.g->nkernels, per_head);
  memset(on, 1, (size_t)M);
  double p0 = kernels_flops_guarded(P.g, on), u0 = kernels_flops_guarded(U.g, on);
  for (int k = 1; k < heads; k++) {
    memset(on, 1, (size_t)M);
    for (int m = 0; m < M; m++) {
      const char *nm = g->modules[m].name, *hp = strstr(nm, ".head");
      if (hp && atoi(hp + 5) < k) on[m] = 0;
    }
    double pk = kernels_flops_guarded(P.g, on), uk = kernels_flops_guarded(U.g, on);
    double want = per_head * k * nlayers;
    printf("  %d of %d heads frozen per layer: per-head stop %.4g FLOPs (saves %.4g), union stop %.4g (saves %.4g); "
           "extra saving %.4g, at least %.4g\n", k, heads, pk, p0 - pk, uk, u0 - uk, (p0 - pk) - (u0 - uk), want);
    if (!((p0 - pk) - (u0 - uk) >= want) || !(p0 - pk >= want)) {
      printf("  FAIL: freezing %d heads per layer does not skip their attention backward\n", k);
      failures++;
    }
  }
  /* Exactness against the reference. */
  zero_floor = 1e-6;
  Snap before, ref;
  snap_init(&P, &before);
  snap_init(&P, &ref);
  const char *pats[] = {"all", "heads-half", "random", "one"};
  for (size_t q = 0; q < sizeof pats / sizeof *pats; q++) {
    pattern(g, pats[q], on);
    Cmp c = {0};
    for (int64_t step = 0; step < 3; step++) {
      snap_take(&P, &before);
      xfer(&P, &R, &before, 1, heads);
      set_guards(&P, on);
      set_guards(&R, on);
      run_step(&P, step, 0.05);
      run_step(&R, step, 0.05);
      xfer(&P, &R, &ref, 0, heads);
      compare_step(&P, &before, &ref, on, &c, 0);
    }
    int nfrozen = 0;
    for (int k = 0; k < M; k++) nfrozen += !on[k];
    printf("  %-10s %2d/%d frozen: active %lld elems (%lld differ in bits, max rel %.3g), frozen %lld elems "
           "(%lld changed); FLOPs per-head %.4g, union %.4g, reference %.4g\n",
           pats[q], nfrozen, M, (long long)c.active_n, (long long)c.active_bitdiff, c.max_rel, (long long)c.frozen_n,
           (long long)c.frozen_bad, kernels_flops_guarded(P.g, on), kernels_flops_guarded(U.g, on),
           kernels_flops_guarded(R.g, on));
    if (c.active_bad || c.frozen_bad || c.active_n == 0) {
      printf("  FAIL: pattern %s\n", pats[q]);
      failures++;
    }
  }
  zero_floor = 0;
  snap_free(&before);
  snap_free(&ref);
  free(on);
  step_free(&P);
  step_free(&U);
  step_free(&R);
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "quick";
#ifndef MATC_SRC_DIR
#define MATC_SRC_DIR "."
#endif
  const char *src = getenv("MATC_SRC") ? getenv("MATC_SRC") : MATC_SRC_DIR;
  char mlp[1024];
  snprintf(mlp, sizeof mlp, "%s/models/mlp/model.onnx", src);
  int rc = 0;
  if (!strcmp(mode, "quick")) {
    rc |= test_exact(mlp, 0, 0, 8);
    rc |= test_exact(mlp, 1, 0, 8);
    rc |= test_stop(mlp);
    rc |= test_clip(mlp);
  } else if (!strcmp(mode, "exact") && argc >= 4) {
    int heads = argc > 4 ? (!strcmp(argv[4], "part") ? -1 : atoi(argv[4])) : 0;
    rc = test_exact(argv[2], !strcmp(argv[3], "adamw"), heads, heads ? 2 : 8);
  } else if (!strcmp(mode, "clip") && argc >= 3) {
    rc = test_clip(argv[2]);
  } else if (!strcmp(mode, "stop") && argc >= 3) {
    rc = test_stop(argv[2]);
  } else if (!strcmp(mode, "stop-allon") && argc >= 3) {
    exact_stop = 1;
    zero_floor = 1e-6;
    rc = test_exact(argv[2], 0, argc > 3 ? (!strcmp(argv[3], "part") ? -1 : atoi(argv[3])) : 0, 2);
  } else if (!strcmp(mode, "stop-heads") && argc >= 3) {
    rc = test_stop_heads(argv[2], argc > 3 ? atoi(argv[3]) : 4);
  } else if (!strcmp(mode, "bench") && argc >= 4) {
    rc = bench(argv[2], atoll(argv[3]), argc > 4 ? (!strcmp(argv[4], "part") ? -1 : atoi(argv[4])) : 0,
               argc > 5 ? atoi(argv[5]) : 5);
  } else {
    fprintf(stderr, "usage: unit_guards [quick | exact MODEL sgd|adamw [heads] | stop MODEL | "
                    "stop-heads MODEL [heads] | stop-allon MODEL [heads] | bench MODEL BATCH [heads [reps]]]\n");
    return 2;
  }
  if (rc || failures) {
    printf("FAILED (%d)\n", failures + rc);
    return 1;
  }
  printf("ok\n");
  return 0;
}
