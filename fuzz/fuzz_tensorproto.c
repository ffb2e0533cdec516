/* fuzz_tensorproto.c: TensorProto files, as both readers see them: the
 * compiler's (`matc run --data DIR`: import_tensor_file) and the training
 * loader's (`--data pb:DIR`: DIR/<k>/input_0.pb, target_0.pb). Input: up
 * to four TensorProtos separated by FUZZ_SPLIT: example 0's input and
 * target, then example 1's. */
#include "fuzz.h"
#include "fuzz_data.h"
#include "matc_internal.h"

#include <stdlib.h>

volatile double fuzz_sink;   /* keeps the reads */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *part[4];
  size_t len[4];
  int n = fuzz_split(data, size, part, len, 4);
  char p[512], spec[600];
  fuzz_clear();
  for (int i = 0; i < n; i++) {
    char rel[64];
    snprintf(rel, sizeof rel, "%d/%s_0.pb", i / 2, i % 2 ? "target" : "input");
    fuzz_write(rel, part[i], len[i], p, sizeof p);
    Arena *a = arena_new();
    Tensor t;
    const char *name = NULL;
    char err[1024] = "";
    int rc = import_tensor_file(a, p, &t, &name, err, sizeof err);
    fuzz_require_message(rc != MATC_OK, err);
    if (rc == MATC_OK) {
      /* Touch every element: the data must be as long as the shape says. */
      double s = 0;
      int64_t ne = tensor_nelem(&t);
      for (int64_t k = 0; k < ne; k++) s += dt_is_float(t.dt) ? tensor_get_f(&t, k) : (double)tensor_get_i(&t, k);
      fuzz_sink = s;
    }
    arena_free(a);
  }
  snprintf(spec, sizeof spec, "pb:%s", fuzz_dir());
  fuzz_dataset(spec);
  return 0;
}
