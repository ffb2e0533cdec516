/* json_reader.c: the JSON reader the partition file uses (compiler/json.c):
 * values of every kind, escapes and \u sequences (surrogate pairs to
 * UTF-8), numbers, nesting, and malformed text, which must give an error
 * with the right line, never a crash. Prints "N passed, N failed". */
#include "../../compiler/json.h"

#include <math.h>
#include <string.h>

static int failures, checks;

#define CHECK(cond, ...)                                      \
  do {                                                        \
    checks++;                                                 \
    if (!(cond)) {                                            \
      failures++;                                             \
      printf("FAIL %s:%d: ", __FILE__, __LINE__);             \
      printf(__VA_ARGS__);                                    \
      printf("\n");                                           \
    }                                                         \
  } while (0)

static Json *parse(Arena *a, const char *text, char *err) {
  err[0] = 0;
  return json_parse(a, text, err, 256);
}

static void good(Arena *a) {
  char err[256];
  Json *j = parse(a, " {\"a\": [1, -2.5e2, 0.125, true, false, null], \"b\": {\"c\": \"x\"}, \"\": []}\n", err);
  CHECK(j && j->kind == JSON_OBJECT && j->n == 3, "object: %s", err);
  if (!j) return;
  const Json *arr = json_get(j, "a");
  CHECK(arr && arr->kind == JSON_ARRAY && arr->n == 6, "array");
  if (arr && arr->n == 6) {
    CHECK(arr->items[0].kind == JSON_NUMBER && arr->items[0].number == 1, "1");
    CHECK(arr->items[1].number == -250, "-2.5e2 is %g", arr->items[1].number);
    CHECK(arr->items[2].number == 0.125, "0.125");
    CHECK(arr->items[3].kind == JSON_BOOL && arr->items[3].boolean == 1, "true");
    CHECK(arr->items[4].kind == JSON_BOOL && arr->items[4].boolean == 0, "false");
    CHECK(arr->items[5].kind == JSON_NULL, "null");
  }
  const Json *c = json_get(json_get(j, "b"), "c");
  CHECK(c && c->kind == JSON_STRING && strcmp(c->string, "x") == 0, "nested member");
  CHECK(json_get(j, "") && json_get(j, "")->n == 0, "empty key, empty array");
  CHECK(json_get(j, "zz") == NULL && json_get(arr, "a") == NULL, "absent member, non-object");

  j = parse(a, "\"q\\\"b\\\\s\\/n\\n\\t\\u00e9\\u20ac\\ud83d\\ude00\"", err);
  CHECK(j && j->kind == JSON_STRING &&
            strcmp(j->string, "q\"b\\s/n\n\t\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80") == 0,
        "escapes: %s", j ? j->string : err);
  j = parse(a, "\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\"", err);   /* escaped quotes only */
  CHECK(j && strcmp(j->string, "\"\"\"\"\"\"\"\"") == 0, "escaped quotes");

  j = parse(a, "[\n1,\n2\n]", err);
  CHECK(j && j->items[1].line == 3, "line numbers");
  j = parse(a, "-0", err);
  CHECK(j && j->number == 0 && signbit(j->number), "-0");
  char deep[200];
  memset(deep, '[', 60);
  memset(deep + 60, ']', 60);
  deep[120] = 0;
  CHECK(parse(a, deep, err) != NULL, "60 levels: %s", err);
}

static void bad(Arena *a, const char *text, int line, const char *what) {
  char err[256];
  Json *j = parse(a, text, err);
  char want[64];
  snprintf(want, sizeof want, "line %d: ", line);
  CHECK(!j && strncmp(err, want, strlen(want)) == 0 && strstr(err, what),
        "'%s': got '%s', want '%s...%s'", text, j ? "(parsed)" : err, want, what);
}

int main(void) {
  Arena *a = arena_new();
  good(a);
  bad(a, "", 1, "expected a value");
  bad(a, "   \n  ", 2, "expected a value");
  bad(a, "{\"a\" 1}", 1, "expected ':'");
  bad(a, "{\"a\": 1,\n}", 2, "member name");
  bad(a, "[1 2]", 1, "expected ','");
  bad(a, "[1,]", 1, "expected a value");
  bad(a, "{a: 1}", 1, "member name");
  bad(a, "\"abc", 1, "unterminated");
  bad(a, "\"a\nb\"", 1, "control character");
  bad(a, "\"\\x\"", 1, "bad escape");
  bad(a, "\"\\u12g4\"", 1, "bad \\u escape");
  bad(a, "\"\\u0000\"", 1, "\\u0000");
  bad(a, "01", 1, "leading zero");
  bad(a, "1.", 1, "bad number");
  bad(a, "1e", 1, "bad number");
  bad(a, "tru", 1, "expected a value");
  bad(a, "[] []", 1, "after the JSON value");
  bad(a, "\n\n[1,\n", 4, "expected a value");
  char deep[201];
  memset(deep, '[', 100);
  memset(deep + 100, ']', 100);
  deep[200] = 0;
  bad(a, deep, 1, "nested deeper than 64");
  arena_free(a);
  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures ? 1 : 0;
}
