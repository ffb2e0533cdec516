/* onnx_import.c: ModelProto (protobuf-c, generated at build time from the
 * system onnx.proto) -> graph IR. Everything is copied into the graph's
 * arena, so the protobuf message is freed before import returns.
 *
 * The file is untrusted: its size, nesting depth and message count are
 * checked before protobuf-c unpacks it, and every count and shape after,
 * against the limits in matc_internal.h, before anything is allocated
 * from them. */
#include "matc_internal.h"
#include "onnx.pb-c.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Nested messages (all levels together) a model may hold: bounds what
 * protobuf-c allocates (an empty NodeProto is 2 bytes on the wire and
 * about a hundred in memory). */
#define MATC_MAX_PROTO_MESSAGES (1 << 23)

static unsigned char *read_file(const char *path, size_t *len, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "%s: not a regular file", path);
    fclose(f);
    return NULL;
  }
  if ((uint64_t)st.st_size > MATC_MAX_MODEL_BYTES) {
    snprintf(err, errlen, "%s: the file is %lld bytes, over the limit of %zu bytes (2 GiB, "
             "protobuf's own)", path, (long long)st.st_size, MATC_MAX_MODEL_BYTES);
    fclose(f);
    return NULL;
  }
  size_t n = (size_t)st.st_size;
  unsigned char *buf = malloc(n ? n : 1);
  if (!buf) {
    snprintf(err, errlen, "%s: out of memory reading %zu bytes", path, n);
    fclose(f);
    return NULL;
  }
  if (fread(buf, 1, n, f) != n) {
    snprintf(err, errlen, "%s: read error", path);
    free(buf);
    fclose(f);
    return NULL;
  }
  fclose(f);
  *len = n;
  return buf;
}

/* protobuf-c unpacks nested messages recursively, with no depth limit: a
 * few MB of nested TypeProtos or subgraphs would overflow the stack. This
 * walks the wire format first, iteratively, following the generated
 * descriptors, and counts the nesting depth and the messages. Returns 0
 * with *depth and *count (counting stops past the limits), or -1 when the
 * bytes are malformed (protobuf-c then reports them). */
static int proto_scan(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
                      int *depth, int64_t *count) {
  struct { const ProtobufCMessageDescriptor *d; size_t end; } st[MATC_MAX_PROTO_DEPTH + 2];
  int top = 0;
  size_t p = 0;
  st[0].d = desc;
  st[0].end = len;
  *depth = 1;
  *count = 1;
  for (;;) {
    if (p == st[top].end) {
      if (top == 0) return 0;
      top--;
      continue;
    }
    uint64_t key = 0, v = 0;
    for (int sh = 0;; sh += 7) {          /* the field's key, a varint */
      if (p >= st[top].end || sh > 63) return -1;
      key |= (uint64_t)(buf[p] & 0x7f) << sh;
      if (!(buf[p++] & 0x80)) break;
    }
    uint32_t field = (uint32_t)(key >> 3);
    if (field == 0 || key >> 32) return -1;
    switch (key & 7) {
    case 0:                               /* varint */
      for (int n = 0;; n++) {
        if (p >= st[top].end || n >= 10) return -1;
        if (!(buf[p++] & 0x80)) break;
      }
      break;
    case 1: if (st[top].end - p < 8) return -1; p += 8; break;
    case 5: if (st[top].end - p < 4) return -1; p += 4; break;
    case 2: {                             /* length-delimited */
      for (int sh = 0;; sh += 7) {
        if (p >= st[top].end || sh > 63) return -1;
        v |= (uint64_t)(buf[p] & 0x7f) << sh;
        if (!(buf[p++] & 0x80)) break;
      }
      if (v > st[top].end - p) return -1;
      const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(st[top].d, field);
      if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
        if (++*count > MATC_MAX_PROTO_MESSAGES) return 0;
        if (top + 2 > *depth) *depth = top + 2;
        if (*depth > MATC_MAX_PROTO_DEPTH) return 0;
        top++;
        st[top].d = f->descriptor;
        st[top].end = p + (size_t)v;
      } else {
        p += (size_t)v;
      }
      break;
    }
    default: return -1;                   /* groups (3, 4) and unknown wire types */
    }
  }
}

/* Converts a TensorProto into t (data in arena a). Returns 0 on success,
 * else writes a message (without the file name) into err. */
static int convert_tensor(Arena *a, const Onnx__TensorProto *tp, Tensor *t, char *err,
                          size_t errlen) {
  memset(t, 0, sizeof *t);
  if (tp->n_dims > MATC_MAX_RANK) {
    snprintf(err, errlen, "tensor '%s' has rank %zu, over the limit of %d",
             tp->name ? tp->name : "", tp->n_dims, MATC_MAX_RANK);
    return -1;
  }
  t->dt = (DType)tp->data_type;
  t->rank = (int)tp->n_dims;
  for (int i = 0; i < t->rank; i++) {
    if (tp->dims[i] < 0) {
      snprintf(err, errlen, "tensor '%s' has a negative dimension %lld", tp->name ? tp->name : "",
               (long long)tp->dims[i]);
      return -1;
    }
    t->dims[i] = tp->dims[i];
  }
  int64_t n = shape_nelem_checked(t->rank, t->dims);
  if (n < 0) {
    char sh[256];
    shape_str(t->rank, t->dims, sh, sizeof sh);
    snprintf(err, errlen, "tensor '%s' of shape %s passes the limit of %lld elements "
             "(2^40)", tp->name ? tp->name : "", sh, (long long)MATC_MAX_ELEMS);
    return -1;
  }
  if (tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL || tp->n_external_data) {
    snprintf(err, errlen, "tensor '%s' uses external data, which matc does not support "
             "(save the model with all tensors inside the file)", tp->name ? tp->name : "");
    return -2;
  }
  if (tp->segment) {
    snprintf(err, errlen, "tensor '%s' is segmented, which matc does not support",
             tp->name ? tp->name : "");
    return -2;
  }
  int es = dt_size(t->dt);
  if (!es || !dt_supported(t->dt)) {
    snprintf(err, errlen, "tensor '%s' has data type %s, which matc does not support",
             tp->name ? tp->name : "", dt_name(t->dt));
    return -2;
  }
  size_t bytes = (size_t)n * es;
  /* Check the element count against what the message holds before
   * allocating anything sized by the (untrusted) dims. */
  size_t have;
  if (tp->has_raw_data) have = tp->raw_data.len / es;
  else if (t->dt == DT_F32) have = tp->n_float_data;
  else if (t->dt == DT_F64) have = tp->n_double_data;
  else if (t->dt == DT_I64) have = tp->n_int64_data;
  else if (t->dt == DT_U32 || t->dt == DT_U64) have = tp->n_uint64_data;
  else have = tp->n_int32_data;
  if ((int64_t)have != n || (tp->has_raw_data && tp->raw_data.len != bytes)) {
    snprintf(err, errlen, "tensor '%s' holds %zu elements but its shape needs %lld",
             tp->name ? tp->name : "", have, (long long)n);
    return -1;
  }
  t->data = arena_alloc(a, bytes ? bytes : 1);
  if (tp->has_raw_data) {
    if (bytes) memcpy(t->data, tp->raw_data.data, bytes);
    return 0;
  }
  for (int64_t i = 0; i < n; i++) {
    switch (t->dt) {
    case DT_F32: ((float *)t->data)[i] = tp->float_data[i]; break;
    case DT_F64: ((double *)t->data)[i] = tp->double_data[i]; break;
    case DT_I64: ((int64_t *)t->data)[i] = tp->int64_data[i]; break;
    case DT_U64: ((uint64_t *)t->data)[i] = tp->uint64_data[i]; break;
    case DT_U32: ((uint32_t *)t->data)[i] = (uint32_t)tp->uint64_data[i]; break;
    case DT_I32: ((int32_t *)t->data)[i] = tp->int32_data[i]; break;
    case DT_I16: ((int16_t *)t->data)[i] = (int16_t)tp->int32_data[i]; break;
    case DT_U16: ((uint16_t *)t->data)[i] = (uint16_t)tp->int32_data[i]; break;
    case DT_I8: ((int8_t *)t->data)[i] = (int8_t)tp->int32_data[i]; break;
    case DT_U8: case DT_BOOL: ((uint8_t *)t->data)[i] = (uint8_t)tp->int32_data[i]; break;
    default: break;
    }
  }
  return 0;
}

static int import_attr(Graph *g, int node, Attr *dst, const Onnx__AttributeProto *ap) {
  Arena *a = g->arena;
  char err[512];
  dst->name = arena_strdup(a, ap->name ? ap->name : "");
  dst->type = ap->has_type ? (AttrType)ap->type : A_UNDEF;
  if (ap->ref_attr_name && *ap->ref_attr_name)
    return unsupported(g, node, -1, "attribute '%s' refers to a function attribute", dst->name);
  size_t most = ap->n_ints > ap->n_floats ? ap->n_ints : ap->n_floats;
  if (ap->n_strings > most) most = ap->n_strings;
  if (most > MATC_MAX_ATTR_ELEMS)
    return fail(g, node, -1, "attribute '%s' has %zu elements, over the limit of %d", dst->name,
                most, MATC_MAX_ATTR_ELEMS);
  /* Some writers leave `type` unset; infer it from the fields present. */
  if (dst->type == A_UNDEF) {
    if (ap->n_ints) dst->type = A_INTS;
    else if (ap->n_floats) dst->type = A_FLOATS;
    else if (ap->t) dst->type = A_TENSOR;
    else if (ap->has_s) dst->type = A_STRING;
    else if (ap->has_f) dst->type = A_FLOAT;
    else dst->type = A_INT;
  }
  switch (dst->type) {
  case A_FLOAT: dst->f = ap->f; break;
  case A_INT: dst->i = ap->i; break;
  case A_STRING: {
    char *s = arena_alloc(a, ap->s.len + 1);
    if (ap->s.len) memcpy(s, ap->s.data, ap->s.len);
    dst->s = s;
    break;
  }
  case A_INTS:
    dst->n = (int)ap->n_ints;
    dst->ints = arena_alloc(a, sizeof(int64_t) * (ap->n_ints + 1));
    if (ap->n_ints) memcpy(dst->ints, ap->ints, sizeof(int64_t) * ap->n_ints);
    break;
  case A_FLOATS:
    dst->n = (int)ap->n_floats;
    dst->floats = arena_alloc(a, sizeof(float) * (ap->n_floats + 1));
    if (ap->n_floats) memcpy(dst->floats, ap->floats, sizeof(float) * ap->n_floats);
    break;
  case A_STRINGS:
    dst->n = (int)ap->n_strings;
    dst->strings = arena_alloc(a, sizeof(char *) * (ap->n_strings + 1));
    for (size_t i = 0; i < ap->n_strings; i++) {
      char *s = arena_alloc(a, ap->strings[i].len + 1);
      if (ap->strings[i].len) memcpy(s, ap->strings[i].data, ap->strings[i].len);
      dst->strings[i] = s;
    }
    break;
  case A_TENSOR: {
    if (!ap->t) return fail(g, node, -1, "attribute '%s' has no tensor", dst->name);
    dst->t = arena_alloc(a, sizeof(Tensor));
    int rc = convert_tensor(a, ap->t, dst->t, err, sizeof err);
    if (rc == -2) return unsupported(g, node, -1, "attribute '%s': %s", dst->name, err);
    if (rc) return fail(g, node, -1, "attribute '%s': %s", dst->name, err);
    break;
  }
  case A_GRAPH: case A_GRAPHS:
    return unsupported(g, node, -1, "attribute '%s' is a subgraph; control flow (If, Loop, "
                       "Scan) is not supported", dst->name);
  case A_SPARSE: case A_SPARSES:
    return unsupported(g, node, -1, "attribute '%s' is a sparse tensor, not supported", dst->name);
  default:
    return unsupported(g, node, -1, "attribute '%s' has type %d, not supported", dst->name,
                       (int)dst->type);
  }
  return MATC_OK;
}

/* Reads a value's declared type (graph input/output) into v. */
static int import_value_info(Graph *g, int v, const Onnx__ValueInfoProto *vi) {
  Value *x = &g->vals[v];
  if (!vi->type || vi->type->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE)
    return unsupported(g, -1, -1, "graph value '%s' is not a tensor (sequences, maps and "
                       "optionals are not supported)", x->name);
  Onnx__TypeProto__Tensor *tt = vi->type->tensor_type;
  x->dt = tt->has_elem_type ? (DType)tt->elem_type : DT_UNDEF;
  if (!tt->shape) return MATC_OK;               /* rank unknown */
  if (tt->shape->n_dim > MATC_MAX_RANK)
    return fail(g, -1, -1, "graph value '%s' has rank %zu, over the limit of %d", x->name,
                tt->shape->n_dim, MATC_MAX_RANK);
  x->rank = (int)tt->shape->n_dim;
  for (int i = 0; i < x->rank; i++) {
    Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[i];
    if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE && d->dim_value >= 0)
      x->dims[i] = d->dim_value;
    else
      x->dims[i] = -1;                           /* symbolic: bound later */
  }
  return MATC_OK;
}

/* Value names during import: an open-addressing table of value id + 1,
 * so a graph of many nodes imports in linear time. A name added again
 * maps to its latest value, as graph_find_value would find it. */
typedef struct {
  int *slot;
  size_t cap, used;
} NameMap;

static size_t name_hash(const char *s) {
  uint64_t h = 14695981039346656037ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return (size_t)h;
}

static int names_find(Graph *g, const NameMap *m, const char *name) {
  if (!m->cap) return -1;
  for (size_t i = name_hash(name) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    int v = m->slot[i] - 1;
    if (v < 0) return -1;
    if (strcmp(g->vals[v].name, name) == 0) return v;
  }
}

static void names_put(Graph *g, NameMap *m, int v) {
  if (2 * (m->used + 1) > m->cap) {
    NameMap n = {calloc(m->cap ? 2 * m->cap : 1024, sizeof(int)), m->cap ? 2 * m->cap : 1024, 0};
    if (!n.slot) matc_die(__FILE__, __LINE__, "out of memory");
    for (size_t i = 0; i < m->cap; i++)
      if (m->slot[i]) names_put(g, &n, m->slot[i] - 1);
    free(m->slot);
    *m = n;
  }
  size_t i = name_hash(g->vals[v].name) & (m->cap - 1);
  for (; m->slot[i]; i = (i + 1) & (m->cap - 1))
    if (strcmp(g->vals[m->slot[i] - 1].name, g->vals[v].name) == 0) {
      m->slot[i] = v + 1;
      return;
    }
  m->slot[i] = v + 1;
  m->used++;
}

static int add_value(Graph *g, NameMap *m, const char *name) {
  int v = graph_add_value(g, name);
  names_put(g, m, v);
  return v;
}

/* Counts a graph may hold (MATC_MAX_NODES each). */
static int check_counts(Graph *g, const Onnx__GraphProto *gp) {
  struct { const char *what; size_t n; } c[] = {
    {"nodes", gp->n_node}, {"initializers", gp->n_initializer}, {"inputs", gp->n_input},
    {"outputs", gp->n_output}, {"value_info entries", gp->n_value_info},
  };
  for (size_t i = 0; i < sizeof c / sizeof *c; i++)
    if (c[i].n > MATC_MAX_NODES)
      return fail(g, -1, -1, "the graph has %zu %s, over the limit of %d", c[i].n, c[i].what,
                  MATC_MAX_NODES);
  return MATC_OK;
}

static int import_graph(Graph *g, const Onnx__GraphProto *gp) {
  char err[512];
  NameMap names = {0};
  int rc = check_counts(g, gp);
  if (rc) return rc;
  if (gp->n_sparse_initializer)
    return unsupported(g, -1, -1, "sparse initializers are not supported");
  for (size_t i = 0; i < gp->n_initializer && !rc; i++) {
    const Onnx__TensorProto *tp = gp->initializer[i];
    if (!tp->name || !*tp->name) {
      rc = fail(g, -1, -1, "initializer %zu has no name", i);
      break;
    }
    int v = add_value(g, &names, tp->name);
    Value *x = &g->vals[v];
    x->kind = V_PARAM;
    x->data = arena_alloc(g->arena, sizeof(Tensor));
    int crc = convert_tensor(g->arena, tp, x->data, err, sizeof err);
    if (crc == -2) rc = unsupported(g, -1, -1, "initializer: %s", err);
    else if (crc) rc = fail(g, -1, -1, "initializer: %s", err);
    else value_set(x, x->data->dt, x->data->rank, x->data->dims);
  }
  g->inputs = arena_alloc(g->arena, sizeof(int) * (gp->n_input + 1));
  for (size_t i = 0; i < gp->n_input && !rc; i++) {
    const char *name = gp->input[i]->name ? gp->input[i]->name : "";
    int v = names_find(g, &names, name);
    if (v >= 0 && g->vals[v].kind == V_PARAM) continue; /* initializer listed as input */
    v = add_value(g, &names, name);
    g->vals[v].kind = V_INPUT;
    rc = import_value_info(g, v, gp->input[i]);
    if (!rc) g->inputs[g->ninputs++] = v;
  }
  for (size_t i = 0; i < gp->n_node && !rc; i++) {
    const Onnx__NodeProto *np = gp->node[i];
    int in[MATC_MAX_NODE_IO], out[MATC_MAX_NODE_IO];
    if (np->n_input > MATC_MAX_NODE_IO || np->n_output > MATC_MAX_NODE_IO) {
      rc = fail(g, -1, -1, "node %zu '%s' has %zu inputs and %zu outputs, over the limit of %d",
                i, np->name ? np->name : "", np->n_input, np->n_output, MATC_MAX_NODE_IO);
      break;
    }
    if (np->n_attribute > MATC_MAX_ATTRS) {
      rc = fail(g, -1, -1, "node %zu '%s' has %zu attributes, over the limit of %d", i,
                np->name ? np->name : "", np->n_attribute, MATC_MAX_ATTRS);
      break;
    }
    if (!np->op_type) {
      rc = fail(g, -1, -1, "node %zu has no op_type", i);
      break;
    }
    for (size_t j = 0; j < np->n_input && !rc; j++) {
      const char *name = np->input[j];
      if (!name || !*name) { in[j] = -1; continue; }
      in[j] = names_find(g, &names, name);
      if (in[j] < 0) {
        /* Make the node first so the message can name it. */
        int id = graph_add_node(g, np->op_type, np->name, 0, in, 0, out);
        rc = fail(g, id, -1, "input %zu '%s' is not produced by any node, initializer "
                  "or graph input", j, name);
      }
    }
    if (rc) break;
    for (size_t j = 0; j < np->n_output; j++) {
      const char *name = np->output[j];
      out[j] = (name && *name) ? add_value(g, &names, name) : -1;
    }
    int id = graph_add_node(g, np->op_type, np->name, (int)np->n_input, in,
                            (int)np->n_output, out);
    Node *n = &g->nodes[id];
    n->domain = arena_strdup(g->arena, np->domain ? np->domain : "");
    n->nattr = (int)np->n_attribute;
    n->attr = arena_alloc(g->arena, sizeof(Attr) * (np->n_attribute + 1));
    for (size_t j = 0; j < np->n_attribute && !rc; j++)
      rc = import_attr(g, id, &n->attr[j], np->attribute[j]);
  }
  g->outputs = arena_alloc(g->arena, sizeof(int) * (gp->n_output + 1));
  for (size_t i = 0; i < gp->n_output && !rc; i++) {
    const char *name = gp->output[i]->name ? gp->output[i]->name : "";
    int v = names_find(g, &names, name);
    if (v < 0) {
      rc = fail(g, -1, -1, "graph output '%s' is not produced by any node", name);
      break;
    }
    /* A declared output type is only a hint; shape inference decides. */
    g->vals[v].is_output = 1;
    g->outputs[g->noutputs++] = v;
  }
  free(names.slot);
  return rc;
}

int import_onnx(Graph *g, const char *path) {
  char err[512];
  size_t len = 0;
  unsigned char *buf = read_file(path, &len, err, sizeof err);
  if (!buf) {
    snprintf(g->err, sizeof g->err, "%s", err);
    return MATC_ERR;
  }
  int rc = import_onnx_buffer(g, buf, len);
  free(buf);
  return rc;
}

int import_onnx_buffer(Graph *g, const void *buf, size_t len) {
  if (len == 0) return fail(g, -1, -1, "the file is empty, not an ONNX model");
  if (len > MATC_MAX_MODEL_BYTES)
    return fail(g, -1, -1, "the model is %zu bytes, over the limit of %zu bytes (2 GiB, "
                "protobuf's own)", len, MATC_MAX_MODEL_BYTES);
  int depth;
  int64_t count;
  if (proto_scan(&onnx__model_proto__descriptor, buf, len, &depth, &count) == 0) {
    if (depth > MATC_MAX_PROTO_DEPTH)
      return fail(g, -1, -1, "protobuf messages nested more than %d deep (subgraphs or types "
                  "inside each other), over the limit", MATC_MAX_PROTO_DEPTH);
    if (count > MATC_MAX_PROTO_MESSAGES)
      return fail(g, -1, -1, "more than %d protobuf messages (nodes, attributes, tensors, "
                  "types), over the limit", MATC_MAX_PROTO_MESSAGES);
  } else {
    return fail(g, -1, -1, "not a valid ONNX model: the protobuf data is malformed or "
                "truncated (%zu bytes)", len);
  }
  Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, buf);
  if (!m)
    return fail(g, -1, -1, "not a valid ONNX model: the protobuf data is malformed or "
                "truncated (%zu bytes)", len);
  int rc = MATC_OK;
  if (!m->graph) {
    rc = fail(g, -1, -1, "not an ONNX model: it has no graph");
    goto out;
  }
  g->opset = 0;
  for (size_t i = 0; i < m->n_opset_import; i++) {
    const char *d = m->opset_import[i]->domain;
    if (d && *d && strcmp(d, "ai.onnx") != 0) continue;
    int64_t ver = m->opset_import[i]->version;
    if (ver < 1 || ver > 1000) {
      rc = fail(g, -1, -1, "the model imports opset version %lld of the default domain, "
                "which no ONNX release has", (long long)ver);
      goto out;
    }
    g->opset = (int)ver;
  }
  if (g->opset == 0 && m->n_opset_import > 0) {
    /* Valid ONNX (e.g. only ai.onnx.preview.training), just not matc's. */
    rc = unsupported(g, -1, -1, "the model imports only opset domain '%s', not the default one",
                     m->opset_import[0]->domain ? m->opset_import[0]->domain : "");
    goto out;
  }
  if (g->opset == 0) {
    rc = fail(g, -1, -1, "the model imports no version of the default ONNX opset");
    goto out;
  }
  rc = import_graph(g, m->graph);
out:
  onnx__model_proto__free_unpacked(m, NULL);
  return rc;
}

int import_tensor_file(Arena *a, const char *path, Tensor *t, const char **name, char *err,
                       size_t errlen) {
  char e[512];
  size_t len = 0;
  unsigned char *buf = read_file(path, &len, e, sizeof e);
  if (!buf) {
    snprintf(err, errlen, "%s", e);
    return MATC_ERR;
  }
  Onnx__TensorProto *tp = onnx__tensor_proto__unpack(NULL, len, buf);
  free(buf);
  if (!tp || len == 0) {
    snprintf(err, errlen, "%s: not a valid ONNX TensorProto (malformed or truncated)", path);
    if (tp) onnx__tensor_proto__free_unpacked(tp, NULL);
    return MATC_ERR;
  }
  int rc = convert_tensor(a, tp, t, e, sizeof e);
  if (name) *name = arena_strdup(a, tp->name ? tp->name : "");
  onnx__tensor_proto__free_unpacked(tp, NULL);
  if (rc) {
    snprintf(err, errlen, "%s: %s", path, e);
    return rc == -2 ? MATC_UNSUPPORTED : MATC_ERR;
  }
  return MATC_OK;
}

int write_tensor_file(const char *path, const char *name, const Tensor *t) {
  Onnx__TensorProto tp = ONNX__TENSOR_PROTO__INIT;
  tp.name = (char *)name;
  tp.has_data_type = 1;
  tp.data_type = t->dt;
  tp.n_dims = t->rank;
  tp.dims = (int64_t *)t->dims;
  tp.has_raw_data = 1;
  tp.raw_data.len = (size_t)tensor_nelem(t) * dt_size(t->dt);
  tp.raw_data.data = t->data;
  size_t n = onnx__tensor_proto__get_packed_size(&tp);
  unsigned char *buf = malloc(n ? n : 1);
  if (!buf) return MATC_ERR;
  onnx__tensor_proto__pack(&tp, buf);
  FILE *f = fopen(path, "wb");
  int ok = f && fwrite(buf, 1, n, f) == n;
  if (f && fclose(f) != 0) ok = 0;
  free(buf);
  return ok ? MATC_OK : MATC_ERR;
}
