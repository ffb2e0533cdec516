/* fuzz_checkpoint.c: checkpoint files (`matc train --resume`): parsing,
 * then matching and restoring into a run whose parameters are those of
 * the seed checkpoints (tests/data/bad/good.onnx trained with momentum:
 * float32 w [4,3] and w.momentum [4,3]). The FNV-1a checksum is
 * recomputed over the input first, so the fuzzer gets past it into the
 * records (a wrong checksum is tests/bad_inputs.sh's resume-damaged). */
#include "fuzz.h"
#include "../tools/cli.h"

#include <stdlib.h>
#include <string.h>

static Graph *g;
static Exec x;
static int vals[3];

static void setup(void) {
  g = graph_new("fuzz.onnx");
  const char *names[] = {"w", "w.momentum", "step"};
  int64_t dims[] = {4, 3};
  for (int i = 0; i < 3; i++) {
    vals[i] = graph_add_value(g, names[i]);
    value_set(&g->vals[vals[i]], i < 2 ? DT_F32 : DT_I64, i < 2 ? 2 : 0, dims);
  }
  x.g = g;
  x.bufs = calloc((size_t)g->nvals, sizeof(void *));
  for (int i = 0; i < 3; i++)
    x.bufs[vals[i]] = calloc((size_t)value_nelem(&g->vals[vals[i]]), (size_t)dt_size(g->vals[vals[i]].dt));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!g) setup();
  unsigned char *buf = malloc(size ? size : 1);
  if (!buf) abort();
  memcpy(buf, data, size);
  if (size >= 32) {
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < size - 16; i++) h = (h ^ buf[i]) * 1099511628211ull;
    memcpy(buf + size - 16, &h, 8);
  }
  char err[2048] = "";
  Ckpt *c = ckpt_parse("fuzz.matc", buf, size, err, sizeof err);
  fuzz_require_message(!c, err);
  if (!c) return 0;
  CkptMeta want = {.fingerprint = ckpt_meta(c)->fingerprint};
  snprintf(want.model, sizeof want.model, "fuzz.onnx");
  if (ckpt_check_model(c, &want, err, sizeof err)) abort();
  for (int n = 1; n <= 3; n++) {
    err[0] = 0;
    int rc = ckpt_restore(c, &x, vals, n, err, sizeof err);
    fuzz_require_message(rc != 0, err);
  }
  ckpt_free(c);
  return 0;
}
