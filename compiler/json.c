/* json.c: a recursive-descent JSON reader. Depth is limited so a hostile
 * file cannot exhaust the stack; every error names the line. */
#include "json.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum { JSON_MAX_DEPTH = 64 };

typedef struct {
  Arena *a;
  const char *p;
  int line;
  char *err;
  size_t errlen;
  int failed;
} Parser;

static void perr(Parser *ps, const char *fmt, ...) {
  if (ps->failed) return;
  ps->failed = 1;
  int k = snprintf(ps->err, ps->errlen, "line %d: ", ps->line);
  va_list ap;
  va_start(ap, fmt);
  if (k >= 0 && (size_t)k < ps->errlen) vsnprintf(ps->err + k, ps->errlen - k, fmt, ap);
  va_end(ap);
}

static void skip_ws(Parser *ps) {
  for (;; ps->p++) {
    if (*ps->p == '\n') ps->line++;
    else if (*ps->p != ' ' && *ps->p != '\t' && *ps->p != '\r') return;
  }
}

static const char *describe(const char *p) {
  return *p ? "an unexpected character" : "the end of the file";
}

static int parse_value(Parser *ps, Json *out, int depth);

static void put_utf8(char *buf, size_t *n, unsigned c) {
  if (c < 0x80) buf[(*n)++] = (char)c;
  else if (c < 0x800) buf[(*n)++] = (char)(0xC0 | c >> 6), buf[(*n)++] = (char)(0x80 | (c & 63));
  else if (c < 0x10000)
    buf[(*n)++] = (char)(0xE0 | c >> 12), buf[(*n)++] = (char)(0x80 | (c >> 6 & 63)),
    buf[(*n)++] = (char)(0x80 | (c & 63));
  else
    buf[(*n)++] = (char)(0xF0 | c >> 18), buf[(*n)++] = (char)(0x80 | (c >> 12 & 63)),
    buf[(*n)++] = (char)(0x80 | (c >> 6 & 63)), buf[(*n)++] = (char)(0x80 | (c & 63));
}

static int hex4(const char *p, unsigned *v) {
  *v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return 0;
    *v = *v * 16 + (unsigned)d;
  }
  return 1;
}

static const char *parse_string(Parser *ps) {
  ps->p++;                                   /* the opening quote */
  size_t cap = 0;
  for (const char *q = ps->p; *q && *q != '"'; q++) {
    cap++;
    if (*q == '\\' && q[1]) q++, cap++;   /* an escaped quote does not end it */
  }
  char *buf = arena_alloc(ps->a, cap * 2 + 8);
  size_t n = 0;
  for (;;) {
    unsigned char c = (unsigned char)*ps->p;
    if (!c) { perr(ps, "unterminated string"); return NULL; }
    if (c == '"') { ps->p++; break; }
    if (c < 0x20) { perr(ps, "control character in a string"); return NULL; }
    if (c != '\\') { buf[n++] = (char)c; ps->p++; continue; }
    char e = ps->p[1];
    ps->p += 2;
    switch (e) {
    case '"': buf[n++] = '"'; break;
    case '\\': buf[n++] = '\\'; break;
    case '/': buf[n++] = '/'; break;
    case 'b': buf[n++] = '\b'; break;
    case 'f': buf[n++] = '\f'; break;
    case 'n': buf[n++] = '\n'; break;
    case 'r': buf[n++] = '\r'; break;
    case 't': buf[n++] = '\t'; break;
    case 'u': {
      unsigned v;
      if (!hex4(ps->p, &v)) { perr(ps, "bad \\u escape"); return NULL; }
      ps->p += 4;
      if (v >= 0xD800 && v < 0xDC00 && ps->p[0] == '\\' && ps->p[1] == 'u') {
        unsigned lo;
        if (hex4(ps->p + 2, &lo) && lo >= 0xDC00 && lo < 0xE000) {
          v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
          ps->p += 6;
        }
      }
      if (v == 0) { perr(ps, "\\u0000 in a string"); return NULL; }
      put_utf8(buf, &n, v);
      break;
    }
    default: perr(ps, "bad escape in a string"); return NULL;
    }
  }
  buf[n] = 0;
  return buf;
}

static int parse_number(Parser *ps, Json *out) {
  const char *s = ps->p;
  if (*s == '-') s++;
  if (!(*s >= '0' && *s <= '9')) { perr(ps, "expected a value, found %s", describe(ps->p)); return 0; }
  if (*s == '0' && s[1] >= '0' && s[1] <= '9') { perr(ps, "number with a leading zero"); return 0; }
  while (*s >= '0' && *s <= '9') s++;
  if (*s == '.') {
    s++;
    if (!(*s >= '0' && *s <= '9')) { perr(ps, "bad number"); return 0; }
    while (*s >= '0' && *s <= '9') s++;
  }
  if (*s == 'e' || *s == 'E') {
    s++;
    if (*s == '+' || *s == '-') s++;
    if (!(*s >= '0' && *s <= '9')) { perr(ps, "bad number"); return 0; }
    while (*s >= '0' && *s <= '9') s++;
  }
  out->kind = JSON_NUMBER;
  out->number = strtod(ps->p, NULL);
  ps->p = s;
  return 1;
}

/* Items are collected in a growing heap array, then copied to the arena. */
static int parse_container(Parser *ps, Json *out, int depth, int object) {
  char close = object ? '}' : ']';
  ps->p++;
  int n = 0, cap = 0;
  Json *items = NULL;
  const char **keys = NULL;
  skip_ws(ps);
  if (*ps->p == close) {
    ps->p++;
  } else {
    for (;;) {
      if (n == cap) {
        cap = cap ? 2 * cap : 8;
        items = realloc(items, sizeof *items * cap);
        keys = realloc(keys, sizeof *keys * cap);
      }
      skip_ws(ps);
      keys[n] = NULL;
      if (object) {
        if (*ps->p != '"') { perr(ps, "expected a member name in quotes, found %s", describe(ps->p)); break; }
        keys[n] = parse_string(ps);
        if (!keys[n]) break;
        skip_ws(ps);
        if (*ps->p != ':') { perr(ps, "expected ':' after \"%s\"", keys[n]); break; }
        ps->p++;
      }
      if (!parse_value(ps, &items[n], depth + 1)) break;
      n++;
      skip_ws(ps);
      if (*ps->p == ',') { ps->p++; continue; }
      if (*ps->p == close) { ps->p++; break; }
      perr(ps, "expected ',' or '%c', found %s", close, describe(ps->p));
      break;
    }
  }
  out->kind = object ? JSON_OBJECT : JSON_ARRAY;
  out->n = n;
  if (n) {
    out->items = arena_alloc(ps->a, sizeof *items * n);
    memcpy(out->items, items, sizeof *items * n);
    if (object) {
      out->keys = arena_alloc(ps->a, sizeof *keys * n);
      memcpy(out->keys, keys, sizeof *keys * n);
    }
  }
  free(items);
  free(keys);
  return !ps->failed;
}

static int parse_value(Parser *ps, Json *out, int depth) {
  memset(out, 0, sizeof *out);
  if (depth > JSON_MAX_DEPTH) { perr(ps, "nested deeper than %d", JSON_MAX_DEPTH); return 0; }
  skip_ws(ps);
  out->line = ps->line;
  switch (*ps->p) {
  case '{': return parse_container(ps, out, depth, 1);
  case '[': return parse_container(ps, out, depth, 0);
  case '"': out->kind = JSON_STRING; out->string = parse_string(ps); return out->string != NULL;
  case 't': if (strncmp(ps->p, "true", 4) == 0) { ps->p += 4; out->kind = JSON_BOOL; out->boolean = 1; return 1; } break;
  case 'f': if (strncmp(ps->p, "false", 5) == 0) { ps->p += 5; out->kind = JSON_BOOL; return 1; } break;
  case 'n': if (strncmp(ps->p, "null", 4) == 0) { ps->p += 4; out->kind = JSON_NULL; return 1; } break;
  default: return parse_number(ps, out);
  }
  perr(ps, "expected a value, found %s", describe(ps->p));
  return 0;
}

Json *json_parse(Arena *a, const char *text, char *err, size_t errlen) {
  Parser ps = {a, text, 1, err, errlen, 0};
  Json *root = arena_alloc(a, sizeof *root);
  if (!parse_value(&ps, root, 0)) return NULL;
  skip_ws(&ps);
  if (*ps.p) { perr(&ps, "unexpected text after the JSON value"); return NULL; }
  return root;
}

const Json *json_get(const Json *obj, const char *key) {
  if (!obj || obj->kind != JSON_OBJECT) return NULL;
  for (int i = 0; i < obj->n; i++)
    if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
  return NULL;
}

const char *json_kind_name(JsonKind k) {
  static const char *names[] = {"null", "boolean", "number", "string", "array", "object"};
  return (unsigned)k < sizeof names / sizeof *names ? names[k] : "?";
}
