/* fuse_elementwise.c: placeholder-free first version: merges nothing yet. */
#include "matc_internal.h"

int fuse_elementwise(Graph *g) {
  (void)g;
  return MATC_OK;
}
