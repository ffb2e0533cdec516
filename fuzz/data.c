/* data.c: a data set the way `matc train` uses one: opened (checked),
 * split, shuffled, and every example drawn in training and evaluation
 * batches. */
#include "fuzz.h"
#include "fuzz_data.h"
#include "../runtime/data.h"

#include <stdlib.h>

void fuzz_dataset(const char *spec) {
  /* Keep the fuzzer's memory small; the limit's own errors are tested
   * (tests/bad_inputs.sh). */
  data_set_max_bytes(64 << 20);
  char err[2048] = "";
  Dataset *d = data_open(spec, err, sizeof err);
  fuzz_require_message(!d, err);
  if (!d) return;
  DataShape si = data_input_shape(d), st = data_target_shape(d);
  size_t ib = si.dtype == 1 ? 4 : 8, tb = st.dtype == 1 ? 4 : 8;
  for (int i = 0; i < si.rank; i++) ib *= (size_t)si.dims[i];
  for (int i = 0; i < st.rank; i++) tb *= (size_t)st.dims[i];
  int64_t n = data_count(d), batch = 3;
  unsigned char *in = malloc(ib * batch), *tg = malloc(tb * batch);
  if (!in || !tg) abort();
  data_example(d, 0, in, tg);
  data_example(d, n - 1, in, tg);
  Sampler s;
  if (sampler_init(&s, d, 7, 0.25) == 0) {
    for (int64_t k = 0; k < n + 2 && k < 96; k += batch) sampler_next(&s, batch, in, tg);
    for (int64_t k = 0; k < 32 && sampler_eval_batch(&s, k, batch, in, tg) > 0; k++) {}
    sampler_seek(&s, 3, n + 1);
    sampler_next(&s, 1, in, tg);
    sampler_free(&s);
  }
  free(in);
  free(tg);
  data_close(d);
}
