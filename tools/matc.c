/* matc.c: the command-line driver. The only place that prints errors and
 * exits; everything below returns a status.
 *
 * Exit status: 0 success; 1 error or wrong numbers; 2 usage; 77 the model
 * uses something matc does not support (so test drivers can skip it). */
#include "../compiler/exec.h"
#include "../runtime/rt.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


static const char *usage_text =
    "usage: matc COMMAND MODEL.onnx [options]\n"
    "\n"
    "commands:\n"
    "  inspect MODEL [--json] [--batch N]      graph summary, shapes, parameters, MAT modules\n"
    "      [--dot] [--partition FILE.json]      (--dot: Graphviz with a cluster per module)\n"
    "      [--others-as-modules] [--freeze NAME,...]\n"
    "  run MODEL --data DIR [--batch N]        forward pass on DIR/input_*.pb;\n"
    "      [--rtol R] [--atol A] [--repeat N]  compares with DIR/output_*.pb if present\n"
    "      [--allow-random]                    (compare even outputs that depend on\n"
    "                                          random numbers, e.g. statistics)\n"
    "  gradcheck MODEL --data DIR [--tol T]    gradient of sum_i <output_i, cotangent_i>\n"
    "      [--fd] [--f64] [--atol A]           against DIR/grad_*.pb (or, with --fd,\n"
    "                                          float64 central differences)\n"
    "  train MODEL --data SPEC [--steps N]      train with the model's loss or cross-entropy\n"
    "      [--batch B] [--optimizer sgd|adamw]  (int targets) / MSE (float targets);\n"
    "      [--lr X] [--momentum M] [--nesterov] SPEC: idx:DIR[:train|test],\n"
    "      [--weight-decay W] [--clip C]        text:PATH:mlm|causal:SEQ, npy:IN.npy,TGT.npy,\n"
    "      [--warmup N] [--schedule constant|cosine|linear] [--eval-every N]\n"
    "      [--eval-fraction F] [--seed S] [--log FILE.jsonl] [--no-shuffle]\n"
    "      [--freeze NAME,NAME...]              initializers that are buffers, not parameters\n"
    "      [--freeze-bn]                        BatchNormalization keeps its stored statistics\n"
    "      [--checkpoint DIR] [--checkpoint-every N] [--resume DIR] [--out TRAINED.onnx]\n"
    "      [--mpi-timeout S] [--mpi-bucket-mb M] under mpirun: data parallel, --batch per rank\n"
    "  compile MODEL -o TRAINER --data SPEC    a native trainer (no LLVM needed to run it)\n"
    "      [--target-cpu native|generic]        that takes train's options; those that\n"
    "      [train's options]                    change the graph are fixed (README)\n"
    "\n"
    "common options:\n"
    "  --dump-after=PASS   print the IR after PASS (infer-shapes, eliminate-dead,\n"
    "                      lower-kernels, fuse-elementwise, assign-in-place, merge-loops)\n"
    "  --threads N         worker threads (default: one per core)\n"
    "  -v                  verbose\n";

#include "cli.h"


static int usage(const char *msg) {
  if (msg) fprintf(stderr, "matc: %s\n\n", msg);
  fputs(usage_text, stderr);
  return 2;
}

/* --mat and --mat-* (README "MAT options"). Returns 2 after a usage message. */
static int parse_mat_option(Options *o, const char *a, const char *v) {
  char *end;
  double d = strtod(v, &end);
  int num = *v && !*end;
  MatOptions *m = &o->mat;
  if (!strcmp(a, "--mat") && (!strcmp(v, "on") || !strcmp(v, "off"))) o->mat_on = !strcmp(v, "on");
  else if (!strcmp(a, "--mat-mode") && (!strcmp(v, "weights") || !strcmp(v, "stop"))) o->mat_stop = !strcmp(v, "stop");
  else if (!strcmp(a, "--mat-ref") && mat_ref_parse(v) >= 0) m->ref = (MatRef)mat_ref_parse(v);
  else if (!strcmp(a, "--mat-group") && (!strcmp(v, "kind") || !strcmp(v, "all"))) m->by_group = !strcmp(v, "kind");
  else if (!strcmp(a, "--mat-reentry") && (!strcmp(v, "on") || !strcmp(v, "off"))) m->reentry = !strcmp(v, "on");
  else if (!strcmp(a, "--mat-warmup") && num && d >= 0) m->warmup = (int64_t)d;
  else if (!strcmp(a, "--mat-refresh") && num && d >= 1) m->refresh = (int64_t)d;
  else if (!strcmp(a, "--mat-alpha") && num && d >= 0) m->alpha = d;
  else if (!strcmp(a, "--mat-beta") && num && d >= 0) m->beta = d;
  else if (!strcmp(a, "--mat-patience") && num && d >= 1) m->patience = (int)d;
  else if (!strcmp(a, "--mat-min-active") && num && d >= 0) m->min_active = (int)d;
  else if (!strcmp(a, "--mat-probe-samples") && num && d >= 1) o->mat_probe_samples = (int64_t)d;
  else {
    fprintf(stderr, "matc: %s %s: not a valid MAT option value (see README, \"MAT options\")\n", a, v);
    return 2;
  }
  return 0;
}

static int parse_args(int argc, char **argv, Options *o) {
  memset(o, 0, sizeof *o);
  o->rtol = 1e-3;
  o->atol = 1e-7;
  o->repeat = 1;
  o->steps = 100;
  o->checkpoint_every = 100;
  o->lr = 0.01;
  o->eval_fraction = 0.1;
  o->optimizer = "sgd";
  o->schedule = "constant";
  mat_options_default(&o->mat);
  o->mat_probe_samples = 16;
  o->mpi_timeout = 300;
  o->mpi_bucket_mb = 2;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *next = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDARG() do { if (!next) return usage("missing value after option"); i++; } while (0)
    if (strcmp(a, "--data") == 0) { NEEDARG(); o->data = next; }
    else if (strcmp(a, "--batch") == 0) { NEEDARG(); o->batch = atoll(next); }
    else if (strcmp(a, "--rtol") == 0) { NEEDARG(); o->rtol = atof(next); }
    else if (strcmp(a, "--atol") == 0) { NEEDARG(); o->atol = atof(next); o->atol_set = 1; }
    else if (strcmp(a, "--tol") == 0) { NEEDARG(); o->tol = atof(next); o->rtol = o->tol; }
    else if (strcmp(a, "--steps") == 0) { NEEDARG(); o->steps = atoll(next); }
    else if (strcmp(a, "--lr") == 0) { NEEDARG(); o->lr = atof(next); }
    else if (strcmp(a, "--optimizer") == 0) { NEEDARG(); o->optimizer = next; }
    else if (strcmp(a, "--momentum") == 0) { NEEDARG(); o->momentum = atof(next); }
    else if (strcmp(a, "--nesterov") == 0) o->nesterov = 1;
    else if (strcmp(a, "--weight-decay") == 0) { NEEDARG(); o->weight_decay = atof(next); }
    else if (strcmp(a, "--clip") == 0) { NEEDARG(); o->clip = atof(next); }
    else if (strcmp(a, "--warmup") == 0) { NEEDARG(); o->warmup = atoll(next); }
    else if (strcmp(a, "--schedule") == 0) { NEEDARG(); o->schedule = next; }
    else if (strcmp(a, "--eval-every") == 0) { NEEDARG(); o->eval_every = atoll(next); }
    else if (strcmp(a, "--eval-data") == 0) { NEEDARG(); o->eval_data = next; }
    else if (strcmp(a, "--eval-fraction") == 0) { NEEDARG(); o->eval_fraction = atof(next); }
    else if (strcmp(a, "--seed") == 0) { NEEDARG(); o->seed = atoll(next); o->seed_set = 1; }
    else if (strcmp(a, "--checkpoint") == 0) { NEEDARG(); o->checkpoint = next; }
    else if (strcmp(a, "--checkpoint-every") == 0) { NEEDARG(); o->checkpoint_every = atoll(next); }
    else if (strcmp(a, "--resume") == 0) { NEEDARG(); o->resume = next; }
    else if (strcmp(a, "--out") == 0) { NEEDARG(); o->out = next; }
    else if (strcmp(a, "--log") == 0) { NEEDARG(); o->log = next; }
    else if (strcmp(a, "--no-shuffle") == 0) o->no_shuffle = 1;
    else if (strcmp(a, "--freeze-bn") == 0) o->freeze_bn = 1;
    else if (strcmp(a, "--freeze") == 0) { NEEDARG(); o->freeze = next; }
    else if (strcmp(a, "--fd") == 0) o->fd = 1;
    else if (strcmp(a, "--allow-random") == 0) o->allow_random = 1;
    else if (strcmp(a, "--f64") == 0) o->f64 = 1;
    else if (strcmp(a, "--repeat") == 0) { NEEDARG(); o->repeat = atoi(next); }
    else if (strcmp(a, "--threads") == 0) { NEEDARG(); o->threads = atoi(next); }
    else if (strncmp(a, "--dump-after=", 13) == 0) o->dump_after = a + 13;
    else if (strcmp(a, "--dump-after") == 0) { NEEDARG(); o->dump_after = next; }
    else if (strcmp(a, "--json") == 0) o->json = 1;
    else if (strcmp(a, "--dot") == 0) o->dot = 1;
    else if (strcmp(a, "--partition") == 0) { NEEDARG(); o->partition = next; }
    else if (strcmp(a, "--others-as-modules") == 0) o->others_as_modules = 1;
    else if (strncmp(a, "--mat", 5) == 0) { NEEDARG(); if (parse_mat_option(o, a, next)) return 2; }
    else if (strcmp(a, "--mpi-timeout") == 0 || strcmp(a, "--mpi-bucket-mb") == 0) {
      NEEDARG();
      char *end;
      double d = strtod(next, &end);
      if (*end || !(d > 0) || d > 1e9) {
        fprintf(stderr, "matc: %s %s: needs a positive number (%s)\n", a, next,
                a[6] == 't' ? "seconds" : "megabytes");
        return 2;
      }
      if (a[6] == 't') o->mpi_timeout = d;
      else o->mpi_bucket_mb = d;
    }
    else if (strcmp(a, "-v") == 0) o->verbose = 1;
    else if (strcmp(a, "-o") == 0) { NEEDARG(); o->output = next; }
    else if (strcmp(a, "--target-cpu") == 0) { NEEDARG(); o->target_cpu = next; }
    else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { fputs(usage_text, stdout); exit(0); }
    else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "matc: unknown option '%s'\n", a);
      return 2;
    }
    else if (!o->cmd) o->cmd = a;
    else if (!o->model) o->model = a;
    else return usage("too many arguments");
#undef NEEDARG
  }
  if (!o->cmd) return usage(NULL);
  if (!o->model) return usage("no model given");
  return 0;
}

int matc_parse_args(int argc, char **argv, Options *o) { return parse_args(argc, argv, o); }

int report(Graph *g, int rc) {
  fprintf(stderr, "matc: %s\n", g->err[0] ? g->err : "error");
  return rc == MATC_UNSUPPORTED || g->unsupported ? EXIT_UNSUPPORTED : 1;
}

/* Reads DIR/<prefix>_<i>.pb for i = 0, 1, ... until one is missing. */
int read_tensors(Graph *g, const char *dir, const char *prefix, Tensor **out,
                        const char ***names, int *n) {
  *n = 0;
  *out = NULL;
  *names = NULL;
  for (int i = 0;; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s_%d.pb", dir, prefix, i);
    FILE *f = fopen(path, "rb");
    if (!f) break;
    fclose(f);
    *out = realloc(*out, sizeof(Tensor) * (i + 1));
    *names = realloc(*names, sizeof(char *) * (i + 1));
    char err[1024];
    int rc = import_tensor_file(g->arena, path, &(*out)[i], &(*names)[i], err, sizeof err);
    if (rc) {
      snprintf(g->err, sizeof g->err, "%s", err);
      g->unsupported = rc == MATC_UNSUPPORTED;
      return rc;
    }
    (*n)++;
  }
  return MATC_OK;
}

double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}



static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

const Pass front_passes[] = {
    {"infer-shapes", infer_shapes},
};

int compare(const char *name, const Tensor *want, const void *got, DType dt,
                   double rtol, double atol) {
  int64_t n = tensor_nelem(want);
  Tensor gt = *want;
  gt.data = (void *)got;
  gt.dt = dt;
  double max_abs = 0, max_rel = 0;
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < n; i++) {
    double a = tensor_get_f(&gt, i), b = tensor_get_f(want, i);
    if (isnan(a) && isnan(b)) continue;
    if (isinf(a) && isinf(b) && (a > 0) == (b > 0)) continue;
    double d = fabs(a - b);
    if (isnan(d)) d = INFINITY;
    double r = d / (fabs(b) > 0 ? fabs(b) : 1);
    if (d > max_abs) max_abs = d;
    if (r > max_rel) max_rel = r;
    if (d > atol + rtol * fabs(b)) {
      if (first < 0) first = i;
      bad++;
    }
  }
  printf("output '%s': %lld elements, max abs err %.3g, max rel err %.3g: %s\n", name,
         (long long)n, max_abs, max_rel, bad ? "MISMATCH" : "ok");
  if (bad) {
    printf("  %lld elements differ; first at %lld: got %.9g, want %.9g\n", (long long)bad,
           (long long)first, tensor_get_f(&gt, first), tensor_get_f(want, first));
  }
  return bad ? 1 : 0;
}

/* Binds DIR's input tensors to the graph inputs: by name, else by position. */
int bind_data(Graph *g, const char *dir, Tensor *ins, const char **names, int nin, int *bound) {
  if (nin == 0 && g->ninputs > 0) {
    fprintf(stderr, "matc: %s: no input_0.pb in %s\n", g->path, dir);
    return 1;
  }
  for (int i = 0; i < nin; i++) {
    int v = -1;
    for (int j = 0; j < g->ninputs; j++)
      if (names[i][0] && strcmp(g->vals[g->inputs[j]].name, names[i]) == 0) v = g->inputs[j];
    if (v < 0 && i < g->ninputs) v = g->inputs[i];
    if (v < 0) {
      fprintf(stderr, "matc: %s/input_%d.pb: the model has no input '%s'\n", dir, i, names[i]);
      return 1;
    }
    g->vals[v].data = &ins[i];
    bound[i] = v;
  }
  for (int j = 0; j < g->ninputs; j++)
    if (!g->vals[g->inputs[j]].data) {
      fprintf(stderr, "matc: %s: no data for input '%s'\n", dir, g->vals[g->inputs[j]].name);
      return 1;
    }
  return 0;
}

/* Compares the graph outputs with the reference tensors; 1 on mismatch. */
int check_outputs(Graph *g, Exec *x, Tensor *outs, int nout, double rtol, double atol) {
  int bad = 0;
  if (nout > 0 && nout != g->noutputs) {
    printf("the data has %d outputs, the model %d\n", nout, g->noutputs);
    bad = 1;
  }
  for (int i = 0; i < nout && i < g->noutputs; i++) {
    int v = g->outputs[i];
    Value *val = &g->vals[v];
    if (val->rank != outs[i].rank || value_nelem(val) != tensor_nelem(&outs[i])) {
      printf("output '%s': shape differs from the reference (rank %d vs %d, %lld vs %lld elements)\n",
             val->name, val->rank, outs[i].rank, (long long)value_nelem(val),
             (long long)tensor_nelem(&outs[i]));
      bad = 1;
      continue;
    }
    if (val->dt != outs[i].dt) {
      printf("output '%s': data type %s, reference %s\n", val->name, dt_name(val->dt), dt_name(outs[i].dt));
      bad = 1;
      continue;
    }
    bad |= compare(val->name, &outs[i], x->bufs[v], val->dt, rtol, atol);
  }
  if (nout == 0) {
    for (int i = 0; i < g->noutputs; i++) {
      Value *val = &g->vals[g->outputs[i]];
      printf("output '%s': %s [", val->name, dt_name(val->dt));
      for (int d = 0; d < val->rank; d++) printf("%s%lld", d ? "," : "", (long long)val->dims[d]);
      printf("]\n");
    }
  }
  return bad;
}

static int cmd_run(Options *o) {
  if (!o->data) return usage("run needs --data DIR");
  Graph *g = graph_new(o->model);
  g->dump_after = o->dump_after;
  g->verbose = o->verbose;
  g->profile = getenv("MATC_PROFILE") && *getenv("MATC_PROFILE") == '1';
  Tensor *ins = NULL, *outs = NULL;
  const char **in_names = NULL, **out_names = NULL;
  int nin = 0, nout = 0, status = 1;
  int *bound = NULL;
  Exec *x = NULL;
  int rc = import_onnx(g, o->model);
  if (!rc) rc = read_tensors(g, o->data, "input", &ins, &in_names, &nin);
  if (!rc) rc = read_tensors(g, o->data, "output", &outs, &out_names, &nout);
  if (rc) { status = report(g, rc); goto done; }
  bound = calloc(nin + 1, sizeof(int));
  if (bind_data(g, o->data, ins, in_names, nin, bound)) goto done;
  double t0 = now_ms();
  rc = bind_inputs(g, o->batch);
  if (!rc) rc = run_passes(g, front_passes, 1);
  if (!rc) rc = exec_new(g, &x);
  if (rc) { status = report(g, rc); goto done; }
  double t1 = now_ms();
  for (int i = 0; i < nin; i++) {
    Value *v = &g->vals[bound[i]];
    if (x->bufs[bound[i]] && v->kind == V_INPUT)
      memcpy(x->bufs[bound[i]], ins[i].data, (size_t)tensor_nelem(&ins[i]) * dt_size(ins[i].dt));
  }
  int reps = o->repeat > 0 ? o->repeat : 1;
  double *times = calloc(reps, sizeof(double));
  for (int r = 0; r < reps; r++) {
    double s = now_ms();
    exec_run(x);
    times[r] = now_ms() - s;
    if (r == 0 && reps > 1 && g->profile) matc_rt_prof_reset();   /* drop the cold run */
  }
  if (o->verbose)
    fprintf(stderr, "activations: %.2f MB in the arena (%.2f MB without reuse); %.4g FLOPs per run\n",
            g->arena_bytes / 1e6, g->unplanned_bytes / 1e6, kernels_flops(g));
  if (o->verbose || reps > 1) {
    qsort(times, reps, sizeof(double), cmp_double);
    fprintf(stderr, "compile %.1f ms, run median %.3f ms, best %.3f ms (%d runs)\n", t1 - t0,
            times[reps / 2], times[0], reps);
  }
  free(times);
  if (g->profile) exec_print_profile(x, stderr, getenv("MATC_PROFILE_TOP") ? atoi(getenv("MATC_PROFILE_TOP")) : 25);
  if (g->uses_rng && nout > 0 && !o->allow_random) {
    /* Training-mode Dropout draws from matc's own generator: its outputs
     * cannot match a reference made with another. Not a wrong answer. */
    fprintf(stderr, "matc: %s: the outputs depend on random numbers (training-mode Dropout), "
            "which cannot match the reference's generator; not compared\n", o->model);
    status = EXIT_UNSUPPORTED;
    goto done;
  }
  status = check_outputs(g, x, outs, nout, o->rtol, o->atol);
done:
  exec_free(x);
  graph_free(g);
  free(bound);
  free(ins);
  free(outs);
  free(in_names);
  free(out_names);
  return status;
}

static int cmd_inspect(Options *o) {
  Graph *g = graph_new(o->model);
  g->dump_after = o->dump_after;
  int rc = import_onnx(g, o->model);
  if (!rc) rc = bind_inputs(g, o->batch > 0 ? o->batch : 1);
  if (!rc) rc = run_passes(g, front_passes, 1);
  PartitionOptions po = {o->others_as_modules, o->freeze, o->partition};
  if (!rc) rc = partition_modules(g, &po);
  if (rc) { int e = report(g, rc); graph_free(g); return e; }
  if (o->dot) { print_modules_dot(g, stdout); graph_free(g); return 0; }
  int64_t nparams = 0, nbytes = 0;
  int nparam_tensors = 0;
  for (int v = 0; v < g->nvals; v++) {
    Value *x = &g->vals[v];
    if (x->kind != V_PARAM || !dt_is_float(x->dt)) continue;
    nparams += value_nelem(x);
    nbytes += value_nelem(x) * dt_size(x->dt);
    nparam_tensors++;
  }
  int counts[OP_COUNT] = {0};
  int nnodes = 0;
  for (int i = 0; i < g->nnodes; i++) {
    if (g->nodes[i].op >= 0) counts[g->nodes[i].op]++;
    nnodes++;
  }
  if (o->json) {
    printf("{\"model\":\"%s\",\"opset\":%d,\"nodes\":%d,\"parameters\":%lld,\"parameter_bytes\":%lld,",
           o->model, g->opset, nnodes, (long long)nparams, (long long)nbytes);
    printf("\"inputs\":[");
    for (int i = 0; i < g->ninputs; i++) {
      Value *x = &g->vals[g->inputs[i]];
      printf("%s{\"name\":\"%s\",\"dtype\":\"%s\",\"shape\":[", i ? "," : "", x->name, dt_name(x->dt));
      for (int d = 0; d < x->rank; d++) printf("%s%lld", d ? "," : "", (long long)x->dims[d]);
      printf("]}");
    }
    printf("],\"outputs\":[");
    for (int i = 0; i < g->noutputs; i++) {
      Value *x = &g->vals[g->outputs[i]];
      printf("%s{\"name\":\"%s\",\"dtype\":\"%s\",\"shape\":[", i ? "," : "", x->name, dt_name(x->dt));
      for (int d = 0; d < x->rank; d++) printf("%s%lld", d ? "," : "", (long long)x->dims[d]);
      printf("]}");
    }
    printf("],\"ops\":{");
    int first = 1;
    for (int k = 0; k < OP_COUNT; k++)
      if (counts[k]) { printf("%s\"%s\":%d", first ? "" : ",", op_table[k].name, counts[k]); first = 0; }
    printf("}");
    print_modules_json(g, o, stdout);
    printf("}\n");
  } else {
    printf("model      %s\nopset      %d\nnodes      %d\n", o->model, g->opset, nnodes);
    printf("parameters %lld in %d tensors (%.2f MB)\n", (long long)nparams, nparam_tensors, nbytes / 1e6);
    for (int i = 0; i < g->ninputs; i++) {
      Value *x = &g->vals[g->inputs[i]];
      printf("input      %s: %s [", x->name, dt_name(x->dt));
      for (int d = 0; d < x->rank; d++) printf("%s%lld", d ? "," : "", (long long)x->dims[d]);
      printf("]\n");
    }
    for (int i = 0; i < g->noutputs; i++) {
      Value *x = &g->vals[g->outputs[i]];
      printf("output     %s: %s [", x->name, dt_name(x->dt));
      for (int d = 0; d < x->rank; d++) printf("%s%lld", d ? "," : "", (long long)x->dims[d]);
      printf("]\n");
    }
    printf("ops       ");
    for (int k = 0; k < OP_COUNT; k++)
      if (counts[k]) printf(" %s:%d", op_table[k].name, counts[k]);
    printf("\n");
    print_modules_text(g, o, stdout);
    if (o->verbose) graph_dump(g, stdout);
  }
  graph_free(g);
  return 0;
}

#ifndef MATC_NO_MAIN   /* libmatc_aot.a: the trainer has its own main */
int main(int argc, char **argv) {
  Options o;
  int rc = parse_args(argc, argv, &o);
  if (rc) return rc;
  if (o.threads > 0) matc_rt_set_threads(o.threads);
  if ((o.output || o.target_cpu) && strcmp(o.cmd, "compile") != 0)
    return usage(o.output ? "-o is an option of compile" : "--target-cpu is an option of compile");
  if (strcmp(o.cmd, "run") == 0) return cmd_run(&o);
  if (strcmp(o.cmd, "inspect") == 0) return cmd_inspect(&o);
  if (strcmp(o.cmd, "gradcheck") == 0) return cmd_gradcheck(&o);
  if (strcmp(o.cmd, "train") == 0) return cmd_train(&o);
  if (strcmp(o.cmd, "compile") == 0) return cmd_compile(&o, argc, argv);
  fprintf(stderr, "matc: unknown command '%s'\n\n", o.cmd);
  return usage(NULL);
}
#endif
