/* train_dp.c: the start of a data-parallel `matc train` (README,
 * "Data-parallel training"): before the first step, every rank must be
 * about to run the same training, or their gradients would be summed
 * nonsense: the same matc and compiled step, model, data, and the options
 * that shape the run. Each rank describes its own in a few named fields;
 * all ranks gather everyone's, so every rank reaches the same verdict,
 * and rank 0 names the first difference. */
#include "cli.h"
#include "../runtime/dp.h"

#include <stdlib.h>
#include <string.h>

enum { NFIELDS = 16, FIELD = 160 };

typedef struct {
  char value[NFIELDS][FIELD];
} Fields;

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *c = p;
  for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 1099511628211ull;
  return h;
}

/* A hash of 32 examples spread over the data set: different files differ. */
static uint64_t data_sample_hash(Dataset *ds) {
  DataShape in = data_input_shape(ds), tg = data_target_shape(ds);
  size_t ib = (size_t)shape_nelem(in.rank, in.dims) * dt_size((DType)in.dtype);
  size_t tb = (size_t)shape_nelem(tg.rank, tg.dims) * dt_size((DType)tg.dtype);
  char *x = malloc(ib + 1), *y = malloc(tb + 1);
  uint64_t h = 14695981039346656037ull;
  int64_t n = data_count(ds);
  for (int64_t j = 0; x && y && j < 32 && j < n; j++) {
    int64_t i = n <= 32 ? j : j * (n - 1) / 31;
    data_example(ds, i, x, y);
    h = fnv(h, x, ib);
    h = fnv(h, y, tb);
  }
  free(x);
  free(y);
  return h;
}

int dp_check_same_run(const Options *o, Graph *step, const CkptMeta *meta, Dataset *ds, const Sampler *sm,
                      const Sampler *es) {
  static const char *names[NFIELDS] = {
      "the model", "--data", "the evaluation set", "--batch", "--steps", "--lr, --schedule, --warmup",
      "--seed, --no-shuffle", "--optimizer and its options", "--eval-every", "--checkpoint-every", "--mat",
      "--mat-* policy options", "--clip", "--mpi-bucket-mb", "the matc build or the compiled step (its plan)",
      "the step's gradient exchange"};
  Fields *mine = calloc(1, sizeof *mine);
  int n = 0;
#define PUT(...) snprintf(mine->value[n++], FIELD, __VA_ARGS__)
  PUT("%d initializers, fingerprint %016llx", meta->ninit, (unsigned long long)meta->fingerprint);
  PUT("%lld examples (sample hash %016llx), %lld for training", (long long)data_count(ds),
      (unsigned long long)data_sample_hash(ds), (long long)sm->ntrain);
  PUT("%lld examples", (long long)es->neval);
  PUT("%lld", (long long)o->batch);
  PUT("%lld", (long long)o->steps);
  PUT("%g, %s, %lld", o->lr, o->schedule, (long long)o->warmup);
  PUT("%lld, %s", (long long)o->seed, o->no_shuffle ? "sequential" : "shuffled");
  PUT("%s, momentum %g%s, weight decay %g", o->optimizer, o->momentum, o->nesterov ? " nesterov" : "",
      o->weight_decay);
  PUT("%lld", (long long)o->eval_every);
  PUT("%lld", (long long)(o->checkpoint ? o->checkpoint_every : 0));
  PUT("%s, %s mode, %lld probe samples", o->mat_on ? "on" : "off", o->mat_stop ? "stop" : "weights",
      (long long)o->mat_probe_samples);
  PUT("warmup %lld refresh %lld alpha %g ref %d group %d beta %g patience %d reentry %d min %d",
      (long long)o->mat.warmup, (long long)o->mat.refresh, o->mat.alpha, (int)o->mat.ref, o->mat.by_group,
      o->mat.beta, o->mat.patience, o->mat.reentry, o->mat.min_active);
  PUT("%g", o->clip);
  PUT("%g", o->mpi_bucket_mb);
  PUT("plan %016llx", (unsigned long long)exec_plan_fingerprint(step));
  PUT("%d gradients in %d buckets", step->dp_plan ? step->dp_plan->ngrads : 0, dp_nbuckets());
#undef PUT
  int ranks = dp_size();
  Fields *all = calloc((size_t)ranks, sizeof *all);
  dp_allgather(mine, sizeof *mine, all, "the start-up check that every rank runs the same training");
  int bad = 0;
  for (int r = 1; r < ranks && !bad; r++)
    for (int f = 0; f < n && !bad; f++) {
      if (strncmp(all[r].value[f], all[0].value[f], FIELD) == 0) continue;
      bad = 1;
      if (dp_rank() == 0)
        fprintf(stderr, "matc: rank %d (%s) would run other training than rank 0 (%s): %s is \"%.*s\" there, "
                "\"%.*s\" on rank 0; start every rank with the same options, model and data\n", r, dp_host(r),
                dp_host(0), names[f], FIELD, all[r].value[f], FIELD, all[0].value[f]);
    }
  free(mine);
  free(all);
  return bad;
}
