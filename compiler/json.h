/* json.h: a small JSON reader (RFC 8259) for configuration files such as
 * the partition file. The tree lives in the caller's arena. */
#ifndef MATC_JSON_H
#define MATC_JSON_H

#include "matc_internal.h"

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonKind;

typedef struct Json {
  JsonKind kind;
  int line;                      /* where the value starts, for messages */
  int boolean;
  double number;
  const char *string;            /* UTF-8, NUL-terminated (no embedded NUL) */
  int n;                         /* array items / object members */
  struct Json *items;
  const char **keys;             /* object member names */
} Json;

/* Parses text; NULL on error with "line L: what" in err. */
Json *json_parse(Arena *a, const char *text, char *err, size_t errlen);
/* Member of an object, or NULL. */
const Json *json_get(const Json *obj, const char *key);
const char *json_kind_name(JsonKind k);

#endif
