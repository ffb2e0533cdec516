/* aot_trainer.c: main of a trainer made by `matc compile` (in libmatc_aot.a,
 * which has no LLVM). It checks the embedded model, parses the compiled-in
 * options followed by the command line's (so the command line overrides
 * the run-time ones), refuses a different value of an option that changes
 * the compiled graph, and runs `matc train`'s loop with a backend that
 * binds the precompiled entry of each graph after checking that the graph
 * built at startup has the fingerprint the compiled one had. */
#define _GNU_SOURCE
#include "aot.h"
#include "cli.h"
#include "../runtime/rt.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static const char *prog = "trainer";
static int next_graph;

static int aot_bind(Graph *g, void **handle, MatcEntryFn *entry) {
  *handle = NULL;
  int i = next_graph++;
  if (i >= matc_plan_ngraphs)
    return fail(g, -1, -1, "%s: this run builds more graphs than the %d compiled in (its options differ from "
                "compile time); run matc compile again", prog, matc_plan_ngraphs);
  uint64_t fp = exec_plan_fingerprint(g);
  if (fp != matc_plan_fingerprints[i]) {
    char *have = exec_describe_inputs(g);
    if (strcmp(have, matc_plan_inputs[i]))
      fail(g, -1, -1, "%s: graph %d was compiled for inputs %s; this run gives %s (--data's examples or targets "
           "differ in shape or type from compile time); run matc compile again", prog, i, matc_plan_inputs[i],
           have);
    else
      fail(g, -1, -1, "%s: graph %d does not match its compiled code (plan fingerprint %016llx, compiled "
           "%016llx): the trainer was built by another matc or with other options; run matc compile again",
           prog, i, (unsigned long long)fp, (unsigned long long)matc_plan_fingerprints[i]);
    free(have);
    return MATC_ERR;
  }
  *entry = matc_plan_entries[i];
  return MATC_OK;
}

static const ExecBackend aot_backend = {aot_bind, NULL};

static int str_differs(const char *a, const char *b) {
  return strcmp(a ? a : "", b ? b : "") != 0;
}

/* The options that change the compiled graphs: c compiled in, o this run's. */
static int check_fixed(const Options *c, const Options *o) {
  char have[256] = "", want[256] = "";
  const char *name = NULL;
  int64_t cb = c->batch > 0 ? c->batch : 32, ob = o->batch > 0 ? o->batch : 32;
#define NUM(field, opt) \
  if (!name && c->field != o->field) { \
    name = opt; \
    snprintf(have, sizeof have, "%g", (double)o->field); \
    snprintf(want, sizeof want, "%s %g", opt, (double)c->field); \
  }
#define STR(field, opt) \
  if (!name && str_differs(c->field, o->field)) { \
    name = opt; \
    snprintf(have, sizeof have, "%s", o->field ? o->field : "(none)"); \
    snprintf(want, sizeof want, "%s %s", opt, c->field ? c->field : "(none)"); \
  }
#define FLAG(field, opt, on, off) \
  if (!name && c->field != o->field) { \
    name = opt; \
    snprintf(have, sizeof have, "%s", o->field ? on : off); \
    snprintf(want, sizeof want, "%s %s", opt, c->field ? on : off); \
  }
  if (cb != ob) {
    name = "--batch";
    snprintf(have, sizeof have, "%lld", (long long)ob);
    snprintf(want, sizeof want, "--batch %lld", (long long)cb);
  }
  STR(optimizer, "--optimizer")
  NUM(momentum, "--momentum")
  FLAG(nesterov, "--nesterov", "on", "off")
  NUM(weight_decay, "--weight-decay")
  NUM(clip, "--clip")
  STR(freeze, "--freeze")
  FLAG(freeze_bn, "--freeze-bn", "on", "off")
  FLAG(mat_on, "--mat", "on", "off")
  FLAG(mat_stop, "--mat-mode", "stop", "weights")
  STR(partition, "--partition")
  FLAG(others_as_modules, "--others-as-modules", "on", "off")
  NUM(mat_probe_samples, "--mat-probe-samples")
#undef NUM
#undef STR
#undef FLAG
  if (!name) return 0;
  fprintf(stderr, "%s: %s %s: this trainer was compiled with %s, and %s changes the compiled graph (run matc "
          "compile again to change it)\n", prog, name, have, want, name);
  return 1;
}

static void help(void) {
  printf("usage: %s [options]\n\n"
         "A trainer for %s made by `matc compile` (target CPU %s); it needs no LLVM.\n"
         "It takes the options of `matc train` without the model, which is inside.\n\n"
         "compiled-in options (the defaults of this trainer):\n ",
         prog, matc_plan_model_name, matc_plan_target_cpu);
  for (int i = 0; matc_plan_args[i]; i++) printf(" %s", matc_plan_args[i]);
  printf("\n\nfixed at compile time (another value is an error): --batch --optimizer --momentum --nesterov\n"
         "  --weight-decay --clip --freeze --freeze-bn --mat --mat-mode --partition --others-as-modules\n"
         "  --mat-probe-samples, and the shape and type of --data's examples and targets\n\n"
         "run-time options:\n"
         "  --data SPEC --eval-data SPEC --eval-fraction F --eval-every N --steps N --lr X\n"
         "  --schedule constant|cosine|linear --warmup N --seed S --no-shuffle --log FILE.jsonl\n"
         "  --checkpoint DIR --checkpoint-every N --resume DIR --out TRAINED.onnx --threads N -v\n"
         "  --mat-warmup N --mat-refresh N --mat-alpha A --mat-beta B --mat-patience N\n"
         "  --mat-min-active N --mat-ref R --mat-reentry on|off\n"
         "  --mpi-timeout S --mpi-bucket-mb M (under mpirun -np N: data parallel, --batch per rank)\n");
}

/* Options from argv[1..] after the compiled-in ones: argv for matc's parser. */
static int parse(int argc, char **argv, const char *model, Options *o, int with_cmdline) {
  int n = 0;
  while (matc_plan_args[n]) n++;
  char **av = calloc((size_t)n + argc + 4, sizeof(char *));
  int k = 0;
  av[k++] = (char *)prog;
  av[k++] = "train";
  av[k++] = (char *)model;
  for (int i = 0; i < n; i++) av[k++] = (char *)matc_plan_args[i];
  for (int i = 1; with_cmdline && i < argc; i++) av[k++] = argv[i];
  av[k] = NULL;
  int rc = matc_parse_args(k, av, o);   /* its strings point into argv/the plan: av can go */
  free(av);
  return rc;
}

int matc_trainer_main(int argc, char **argv) {
  prog = argv[0];
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      help();
      return 0;
    }
  /* The embedded model, checked, as a file the importer and --out can read. */
  size_t size = (size_t)(matc_plan_model_end - matc_plan_model);
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < size; i++) h = (h ^ matc_plan_model[i]) * 0x100000001b3ULL;
  if (h != matc_plan_model_hash) {
    fprintf(stderr, "%s: the embedded model is corrupted (checksum %016llx, compiled %016llx); this trainer "
            "file was damaged: run matc compile again\n", prog, (unsigned long long)h,
            (unsigned long long)matc_plan_model_hash);
    return 1;
  }
  int fd = memfd_create("model.onnx", 0);
  size_t done = 0;
  while (fd >= 0 && done < size) {
    ssize_t w = write(fd, matc_plan_model + done, size - done);
    if (w <= 0) break;
    done += (size_t)w;
  }
  if (fd < 0 || done < size) {
    fprintf(stderr, "%s: cannot make an in-memory file for the embedded model\n", prog);
    return 1;
  }
  char model[64];
  snprintf(model, sizeof model, "/proc/self/fd/%d", fd);
  Options compiled, o;
  if (parse(argc, argv, model, &compiled, 0)) return 2;
  int rc = parse(argc, argv, model, &o, 1);
  if (rc) return rc;
  if (o.output || o.target_cpu) {
    fprintf(stderr, "%s: %s is an option of matc compile, not of the trainer\n", prog,
            o.output ? "-o" : "--target-cpu");
    return 2;
  }
  if (check_fixed(&compiled, &o)) return 2;
  o.model_name = matc_plan_model_name;
  if (o.threads > 0) matc_rt_set_threads(o.threads);
  exec_backend = &aot_backend;
  next_graph = 0;
  rc = cmd_train(&o);
  if (!rc && next_graph != matc_plan_ngraphs) {
    fprintf(stderr, "%s: this run built %d graphs, %d were compiled in\n", prog, next_graph, matc_plan_ngraphs);
    rc = 1;
  }
  close(fd);
  return rc;
}
