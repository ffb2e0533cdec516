/* onnx_import.c: ModelProto (protobuf-c, generated at build time from the
 * system onnx.proto) -> graph IR. Everything is copied into the graph's
 * arena, so the protobuf message is freed before import returns. */
#include "matc_internal.h"
#include "onnx.pb-c.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Models larger than this are refused before reading: protobuf messages
 * are limited to 2 GiB and matc does not support external data. */
#define MATC_MAX_MODEL_BYTES ((size_t)2 << 30)

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
  if ((size_t)st.st_size > MATC_MAX_MODEL_BYTES) {
    snprintf(err, errlen, "%s: file is %lld bytes, over the 2 GiB protobuf limit", path,
             (long long)st.st_size);
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
  int64_t n = 1;
  for (int i = 0; i < t->rank; i++) {
    int64_t d = tp->dims[i];
    if (d < 0 || (d > 0 && n > INT64_MAX / 8 / d)) {
      snprintf(err, errlen, "tensor '%s' has a bad dimension %lld", tp->name ? tp->name : "",
               (long long)d);
      return -1;
    }
    t->dims[i] = d;
    n *= d;
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
    memcpy(t->data, tp->raw_data.data, bytes);
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

static int import_graph(Graph *g, const Onnx__GraphProto *gp) {
  char err[512];
  if (gp->n_sparse_initializer)
    return unsupported(g, -1, -1, "sparse initializers are not supported");
  for (size_t i = 0; i < gp->n_initializer; i++) {
    const Onnx__TensorProto *tp = gp->initializer[i];
    if (!tp->name || !*tp->name) return fail(g, -1, -1, "initializer %zu has no name", i);
    int v = graph_add_value(g, tp->name);
    Value *x = &g->vals[v];
    x->kind = V_PARAM;
    x->data = arena_alloc(g->arena, sizeof(Tensor));
    int rc = convert_tensor(g->arena, tp, x->data, err, sizeof err);
    if (rc == -2) return unsupported(g, -1, -1, "initializer: %s", err);
    if (rc) return fail(g, -1, -1, "initializer: %s", err);
    value_set(x, x->data->dt, x->data->rank, x->data->dims);
  }
  g->inputs = arena_alloc(g->arena, sizeof(int) * (gp->n_input + 1));
  for (size_t i = 0; i < gp->n_input; i++) {
    const char *name = gp->input[i]->name ? gp->input[i]->name : "";
    int v = graph_find_value(g, name);
    if (v >= 0 && g->vals[v].kind == V_PARAM) continue; /* initializer listed as input */
    v = graph_add_value(g, name);
    g->vals[v].kind = V_INPUT;
    int rc = import_value_info(g, v, gp->input[i]);
    if (rc) return rc;
    g->inputs[g->ninputs++] = v;
  }
  for (size_t i = 0; i < gp->n_node; i++) {
    const Onnx__NodeProto *np = gp->node[i];
    int in[64], out[64];
    if (np->n_input > 64 || np->n_output > 64)
      return fail(g, -1, -1, "node %zu '%s' has %zu inputs and %zu outputs, over the limit of 64",
                  i, np->name ? np->name : "", np->n_input, np->n_output);
    if (!np->op_type) return fail(g, -1, -1, "node %zu has no op_type", i);
    for (size_t j = 0; j < np->n_input; j++) {
      const char *name = np->input[j];
      if (!name || !*name) { in[j] = -1; continue; }
      in[j] = graph_find_value(g, name);
      if (in[j] < 0) {
        /* Make the node first so the message can name it. */
        int id = graph_add_node(g, np->op_type, np->name, 0, in, 0, out);
        return fail(g, id, -1, "input %zu '%s' is not produced by any node, initializer "
                    "or graph input", j, name);
      }
    }
    for (size_t j = 0; j < np->n_output; j++) {
      const char *name = np->output[j];
      out[j] = (name && *name) ? graph_add_value(g, name) : -1;
    }
    int id = graph_add_node(g, np->op_type, np->name, (int)np->n_input, in,
                            (int)np->n_output, out);
    Node *n = &g->nodes[id];
    n->domain = arena_strdup(g->arena, np->domain ? np->domain : "");
    n->nattr = (int)np->n_attribute;
    n->attr = arena_alloc(g->arena, sizeof(Attr) * (np->n_attribute + 1));
    for (size_t j = 0; j < np->n_attribute; j++) {
      int rc = import_attr(g, id, &n->attr[j], np->attribute[j]);
      if (rc) return rc;
    }
  }
  g->outputs = arena_alloc(g->arena, sizeof(int) * (gp->n_output + 1));
  for (size_t i = 0; i < gp->n_output; i++) {
    const char *name = gp->output[i]->name ? gp->output[i]->name : "";
    int v = graph_find_value(g, name);
    if (v < 0) return fail(g, -1, -1, "graph output '%s' is not produced by any node", name);
    /* A declared output type is only a hint; shape inference decides. */
    g->vals[v].is_output = 1;
    g->outputs[g->noutputs++] = v;
  }
  return MATC_OK;
}

int import_onnx(Graph *g, const char *path) {
  char err[512];
  size_t len = 0;
  unsigned char *buf = read_file(path, &len, err, sizeof err);
  if (!buf) {
    snprintf(g->err, sizeof g->err, "%s", err);
    return MATC_ERR;
  }
  if (len == 0) {
    free(buf);
    return fail(g, -1, -1, "the file is empty, not an ONNX model");
  }
  Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, buf);
  free(buf);
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
    if (!d || !*d || strcmp(d, "ai.onnx") == 0) g->opset = (int)m->opset_import[i]->version;
  }
  if (g->opset == 0 && m->n_opset_import > 0) {
    /* Valid ONNX (e.g. only ai.onnx.preview.training), just not matc's. */
    rc = unsupported(g, -1, -1, "the model imports only opset domain '%s', not the default one",
                     m->opset_import[0]->domain);
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
