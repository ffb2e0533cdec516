/* pipeline.c: runs passes in order, with the IR verifier after each one
 * (debug builds, or MATC_VERIFY=1) and --dump-after=PASS. */
#include "matc_internal.h"

#include <stdlib.h>
#include <string.h>

int run_passes(Graph *g, const Pass *passes, int n) {
#ifdef NDEBUG
  const char *env = getenv("MATC_VERIFY");
  int verify = env && *env == '1';
#else
  int verify = 1;
#endif
  for (int i = 0; i < n; i++) {
    int rc = passes[i].run(g);
    if (rc) return rc;
    if (verify && graph_verify(g)) return MATC_ERR;
    if (g->dump_after && strcmp(g->dump_after, passes[i].name) == 0) {
      fprintf(stderr, "; after %s\n", passes[i].name);
      graph_dump(g, stderr);
      if (g->nkernels) kernels_dump(g, stderr);
    }
  }
  return MATC_OK;
}
