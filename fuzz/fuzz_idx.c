/* fuzz_idx.c: the IDX loader (`--data idx:DIR`). Input: the images file,
 * FUZZ_SPLIT, the labels file (plain or gzipped, as gzread reads both). */
#include "fuzz.h"
#include "fuzz_data.h"

#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *part[2];
  size_t len[2];
  int n = fuzz_split(data, size, part, len, 2);
  char p[512];
  fuzz_clear();
  fuzz_write("train-images-idx3-ubyte", part[0], len[0], p, sizeof p);
  if (n > 1) fuzz_write("train-labels-idx1-ubyte", part[1], len[1], p, sizeof p);
  char spec[600];
  snprintf(spec, sizeof spec, "idx:%s:train", fuzz_dir());
  fuzz_dataset(spec);
  return 0;
}
