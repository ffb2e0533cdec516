/* partition_file.c: the user's partition file (README, "Partition file").
 *
 *   {"replace": false,
 *    "modules": [{"name": "enc.head0", "kind": "head",
 *                 "slices": [{"param": "q.weight", "axis": 1, "begin": 0, "end": 64},
 *                            {"param": "q.bias", "axis": 0, "begin": 0, "end": 64}]}]}
 *
 * (or just the list of modules). A module overrides the automatic module of
 * the same name or adds one; with "replace": true only the file's modules
 * exist. A slice without "axis" is the whole tensor; "begin"/"end" default
 * to the whole axis. Every error names the file and the module. */
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  Graph *g;
  const char *file;
  const char *freeze;
} Ctx;

#define FAIL(c, mod, ...) file_error(c, mod, __VA_ARGS__)

static int file_error(Ctx *c, const char *mod, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int file_error(Ctx *c, const char *mod, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (mod) return fail(c->g, -1, -1, "partition file %s: module '%s': %s", c->file, mod, msg);
  return fail(c->g, -1, -1, "partition file %s: %s", c->file, msg);
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap + 1);
  for (size_t k; (k = fread(buf + n, 1, cap - n, f)) > 0;) {
    n += k;
    if (n == cap) buf = realloc(buf, (cap *= 2) + 1);
  }
  fclose(f);
  buf[n] = 0;
  *len = n;
  return buf;
}

static int only_keys(Ctx *c, const char *mod, const Json *obj, const char *what, const char *const *keys) {
  for (int i = 0; i < obj->n; i++) {
    int ok = 0;
    for (const char *const *k = keys; *k; k++) ok |= strcmp(obj->keys[i], *k) == 0;
    if (!ok) return FAIL(c, mod, "line %d: unknown key \"%s\" in %s", obj->items[i].line, obj->keys[i], what);
  }
  return MATC_OK;
}

/* An integer member: *v unchanged when absent. */
static int get_int(Ctx *c, const char *mod, const Json *obj, const char *key, int64_t *v) {
  const Json *j = json_get(obj, key);
  if (!j) return MATC_OK;
  /* range first: converting an out-of-range double to int64 is undefined */
  if (j->kind != JSON_NUMBER || !(j->number > -9e15 && j->number < 9e15) || j->number != (double)(int64_t)j->number)
    return FAIL(c, mod, "line %d: \"%s\" must be an integer", j->line, key);
  *v = (int64_t)j->number;
  return MATC_OK;
}

static int slices_overlap(const ParamSlice *a, const ParamSlice *b) {
  if (a->param != b->param) return 0;
  if (a->axis < 0 || b->axis < 0 || a->axis != b->axis) return 1;   /* cuts across */
  return a->begin < b->end && b->begin < a->end;
}

static void slice_text(Graph *g, const ParamSlice *s, char *buf, size_t n) {
  if (s->axis < 0) snprintf(buf, n, "%s", g->vals[s->param].name);
  else snprintf(buf, n, "%s[axis %d, %lld:%lld]", g->vals[s->param].name, s->axis, (long long)s->begin,
                (long long)s->end);
}

static int read_slice(Ctx *c, const char *mod, const Json *js, ParamSlice *out) {
  Graph *g = c->g;
  static const char *const keys[] = {"param", "axis", "begin", "end", NULL};
  if (js->kind != JSON_OBJECT) return FAIL(c, mod, "line %d: a slice must be an object", js->line);
  if (only_keys(c, mod, js, "a slice", keys)) return MATC_ERR;
  const Json *p = json_get(js, "param");
  if (!p || p->kind != JSON_STRING) return FAIL(c, mod, "line %d: a slice needs \"param\" (a string)", js->line);
  int v = graph_find_value(g, p->string);
  if (v < 0 || g->vals[v].kind != V_PARAM) return FAIL(c, mod, "unknown initializer '%s'", p->string);
  Value *x = &g->vals[v];
  if (!dt_is_float(x->dt))
    return FAIL(c, mod, "initializer '%s' is %s, not float: it does not train", p->string, dt_name(x->dt));
  if (!partition_trainable(g, v, c->freeze))
    return FAIL(c, mod, "initializer '%s' does not train (a BatchNormalization statistic, unused, or in --freeze)",
                p->string);
  int64_t axis = -1, begin = 0, end = -1;
  if (get_int(c, mod, js, "axis", &axis) || get_int(c, mod, js, "begin", &begin) ||
      get_int(c, mod, js, "end", &end))
    return MATC_ERR;
  if (!json_get(js, "axis") && (json_get(js, "begin") || json_get(js, "end")))
    return FAIL(c, mod, "slice of '%s': \"begin\"/\"end\" need an \"axis\"", p->string);
  if (json_get(js, "axis") && (axis < 0 || axis >= x->rank))
    return FAIL(c, mod, "slice of '%s': axis %lld out of range for rank %d", p->string, (long long)axis, x->rank);
  if (axis >= 0) {
    int64_t dim = x->dims[axis];
    if (end < 0 && !json_get(js, "end")) end = dim;
    if (begin < 0 || end > dim || begin >= end)
      return FAIL(c, mod, "slice of '%s': [%lld, %lld) out of range: axis %lld has %lld (need 0 <= begin < end <= %lld)",
                  p->string, (long long)begin, (long long)end, (long long)axis, (long long)dim, (long long)dim);
  }
  *out = (ParamSlice){v, (int)axis, axis < 0 ? 0 : begin, axis < 0 ? 0 : end};
  return MATC_OK;
}

static int read_module(Ctx *c, const Json *jm, int index, Module *m) {
  Graph *g = c->g;
  static const char *const keys[] = {"name", "kind", "slices", NULL};
  char fallback[32];
  snprintf(fallback, sizeof fallback, "#%d", index + 1);
  if (jm->kind != JSON_OBJECT) return FAIL(c, fallback, "line %d: a module must be an object", jm->line);
  const Json *name = json_get(jm, "name");
  if (!name || name->kind != JSON_STRING || !name->string[0])
    return FAIL(c, fallback, "line %d: a module needs \"name\" (a non-empty string)", jm->line);
  const char *mod = name->string;
  if (only_keys(c, mod, jm, "a module", keys)) return MATC_ERR;
  memset(m, 0, sizeof *m);
  m->name = arena_strdup(g->arena, mod);
  m->kind = MOD_OTHER;
  const Json *kind = json_get(jm, "kind");
  if (kind) {
    int k = -1;
    for (int t = MOD_LAYER; t <= MOD_OTHER && kind->kind == JSON_STRING; t++)
      if (strcmp(kind->string, module_kind_name((ModuleKind)t)) == 0) k = t;
    if (k < 0) return FAIL(c, mod, "line %d: \"kind\" must be \"layer\", \"head\", \"expert\" or \"other\"", kind->line);
    m->kind = (ModuleKind)k;
  }
  const Json *sl = json_get(jm, "slices");
  if (!sl || sl->kind != JSON_ARRAY || sl->n == 0)
    return FAIL(c, mod, "line %d: a module needs \"slices\" (a non-empty list)", jm->line);
  m->slices = arena_alloc(g->arena, sizeof(ParamSlice) * sl->n);
  for (int s = 0; s < sl->n; s++) {
    if (read_slice(c, mod, &sl->items[s], &m->slices[s])) return MATC_ERR;
    for (int t = 0; t < s; t++)
      if (slices_overlap(&m->slices[s], &m->slices[t])) {
        char a[256], b[256];
        slice_text(g, &m->slices[s], a, sizeof a);
        slice_text(g, &m->slices[t], b, sizeof b);
        return FAIL(c, mod, "overlapping slices: %s and %s", a, b);
      }
    m->nslices++;
  }
  return MATC_OK;
}

/* The first overlap between a slice of a and one of b, as an error. */
static int check_disjoint(Ctx *c, const Module *a, const Module *b) {
  for (int s = 0; s < a->nslices; s++)
    for (int t = 0; t < b->nslices; t++)
      if (slices_overlap(&a->slices[s], &b->slices[t])) {
        char x[256], y[256];
        slice_text(c->g, &a->slices[s], x, sizeof x);
        slice_text(c->g, &b->slices[t], y, sizeof y);
        return FAIL(c, a->name, "overlapping slices: %s overlaps %s of module '%s'", x, y, b->name);
      }
  return MATC_OK;
}

int partition_apply_file(Graph *g, const PartitionOptions *o) {
  Ctx c = {g, o->partition_file, o->freeze};
  size_t len;
  char *text = read_file(o->partition_file, &len);
  if (!text) return FAIL(&c, NULL, "cannot read the file");
  if (strlen(text) != len) {
    free(text);
    return FAIL(&c, NULL, "malformed JSON: a NUL byte in the file");
  }
  char err[512];
  Json *root = json_parse(g->arena, text, err, sizeof err);
  free(text);
  if (!root) return FAIL(&c, NULL, "malformed JSON: %s", err);
  const Json *list = root;
  int replace = 0;
  if (root->kind == JSON_OBJECT) {
    static const char *const keys[] = {"modules", "replace", NULL};
    if (only_keys(&c, NULL, root, "the top-level object", keys)) return MATC_ERR;
    const Json *r = json_get(root, "replace");
    if (r && r->kind != JSON_BOOL) return FAIL(&c, NULL, "line %d: \"replace\" must be true or false", r->line);
    replace = r && r->boolean;
    list = json_get(root, "modules");
    if (!list) return FAIL(&c, NULL, "the top-level object needs \"modules\" (a list)");
  }
  if (list->kind != JSON_ARRAY)
    return FAIL(&c, NULL, "line %d: expected a list of modules, found %s", list->line, json_kind_name(list->kind));
  Module *user = arena_alloc(g->arena, sizeof(Module) * (list->n + 1));
  for (int i = 0; i < list->n; i++) {
    if (read_module(&c, &list->items[i], i, &user[i])) return MATC_ERR;
    for (int j = 0; j < i; j++) {
      if (strcmp(user[i].name, user[j].name) == 0) return FAIL(&c, user[i].name, "defined twice");
      if (check_disjoint(&c, &user[i], &user[j])) return MATC_ERR;
    }
  }
  /* the result: automatic modules (each replaced by the file's module of
   * the same name), then the file's new modules */
  Module *out = arena_alloc(g->arena, sizeof(Module) * (g->nmodules + list->n + 1));
  int n = 0;
  char *placed = calloc(list->n + 1, 1);
  for (int k = 0; k < g->nmodules && !replace; k++) {
    int u = -1;
    for (int i = 0; i < list->n; i++)
      if (strcmp(user[i].name, g->modules[k].name) == 0) u = i;
    if (u >= 0) placed[u] = 1;
    out[n++] = u >= 0 ? user[u] : g->modules[k];
  }
  for (int i = 0; i < list->n; i++)
    if (!placed[i]) out[n++] = user[i];
  free(placed);
  /* the file's modules must not overlap the automatic ones that remain */
  for (int a = 0; a < n; a++)
    for (int b = 0; b < n; b++) {
      int a_user = 0, b_user = 0;
      for (int i = 0; i < list->n; i++) {
        a_user |= strcmp(out[a].name, user[i].name) == 0;
        b_user |= strcmp(out[b].name, user[i].name) == 0;
      }
      if (a_user && !b_user && check_disjoint(&c, &out[a], &out[b])) {
        size_t l = strlen(g->err);
        snprintf(g->err + l, sizeof g->err - l, " (an automatic module: override it by name, or use \"replace\": true)");
        return MATC_ERR;
      }
    }
  g->modules = out;
  g->nmodules = n;
  for (int k = 0; k < n; k++)
    for (int i = 0; i < list->n; i++)
      if (strcmp(out[k].name, user[i].name) == 0) partition_find_sites(g, &g->modules[k], c.freeze);
  return MATC_OK;
}
