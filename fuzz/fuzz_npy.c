/* fuzz_npy.c: the NPY loader (`--data npy:X.npy,Y.npy`). Input: the
 * inputs array, FUZZ_SPLIT, the targets array (without a separator, one
 * file is both). */
#include "fuzz.h"
#include "fuzz_data.h"

#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *part[2];
  size_t len[2];
  int n = fuzz_split(data, size, part, len, 2);
  char x[512], y[512], spec[1100];
  fuzz_clear();
  fuzz_write("x.npy", part[0], len[0], x, sizeof x);
  if (n > 1) fuzz_write("y.npy", part[1], len[1], y, sizeof y);
  snprintf(spec, sizeof spec, "npy:%s,%s", x, n > 1 ? y : x);
  fuzz_dataset(spec);
  return 0;
}
