/* partition_file.c: the user's partition file (placeholder). */
#include "matc_internal.h"

int partition_apply_file(Graph *g, const PartitionOptions *o) {
  return fail(g, -1, -1, "%s: partition files are not supported yet", o->partition_file);
}
