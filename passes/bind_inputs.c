/* bind_inputs.c: gives every graph input a concrete shape. Symbolic
 * dimensions take the batch size (--batch, or the size of the data the
 * caller bound); inputs with bound data must agree with their declared
 * type. matc compiles for static shapes: all later passes rely on it. */
#include "matc_internal.h"

int bind_inputs(Graph *g, int64_t batch) {
  if (batch > 0) g->batch = batch;
  for (int i = 0; i < g->ninputs; i++) {
    Value *v = &g->vals[g->inputs[i]];
    Tensor *t = v->data;
    if (!dt_supported(v->dt) && v->dt != DT_UNDEF)
      return unsupported(g, -1, -1, "graph input '%s' has data type %s, which matc does not "
                         "support", v->name, dt_name(v->dt));
    if (t) {
      if (v->dt != DT_UNDEF && t->dt != v->dt)
        return fail(g, -1, -1, "input '%s': the data is %s but the model declares %s", v->name,
                    dt_name(t->dt), dt_name(v->dt));
      if (v->rank >= 0 && t->rank != v->rank)
        return fail(g, -1, -1, "input '%s': the data has rank %d but the model declares rank %d",
                    v->name, t->rank, v->rank);
      for (int d = 0; v->rank >= 0 && d < v->rank; d++)
        if (v->dims[d] >= 0 && v->dims[d] != t->dims[d])
          return fail(g, -1, -1, "input '%s': dimension %d of the data is %lld but the model "
                      "declares %lld", v->name, d, (long long)t->dims[d], (long long)v->dims[d]);
      value_set(v, t->dt, t->rank, t->dims);
      continue;
    }
    if (v->rank < 0)
      return fail(g, -1, -1, "input '%s' has no declared shape; give its data", v->name);
    for (int d = 0; d < v->rank; d++) {
      if (v->dims[d] >= 0) continue;
      if (d != 0 || g->batch <= 0)
        return fail(g, -1, -1, "input '%s': dimension %d is symbolic; bind it with --batch "
                    "(dimension 0 only) or give input data", v->name, d);
      v->dims[d] = g->batch;
    }
    if (shape_nelem_checked(v->rank, v->dims) < 0) {
      char sh[256];
      return fail(g, -1, -1, "input '%s' of shape %s passes the limit of %lld elements "
                  "(2^40)", v->name, shape_str(v->rank, v->dims, sh, sizeof sh),
                  (long long)MATC_MAX_ELEMS);
    }
  }
  return MATC_OK;
}
