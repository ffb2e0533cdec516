/* fuzz_onnx.c: the ONNX importer and shape inference (with constant
 * folding), as `matc inspect` runs them: a ModelProto in, a graph with
 * static shapes or a clear error out. */
#include "fuzz.h"
#include "matc_internal.h"

#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  Graph *g = graph_new("fuzz.onnx");
  int rc = import_onnx_buffer(g, data, size);
  if (!rc) rc = bind_inputs(g, 2);
  if (!rc) rc = infer_shapes(g);
  if (!rc && graph_verify(g)) {
    /* Shape inference succeeded but left a graph the verifier rejects. */
    fprintf(stderr, "fuzz: the verifier rejects an inferred graph: %s\n", g->err);
    abort();
  }
  fuzz_require_message(rc != MATC_OK, g->err);
  if (rc && getenv("FUZZ_VERBOSE")) fprintf(stderr, "%s\n", g->err);
  graph_free(g);
  return 0;
}
