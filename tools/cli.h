/* cli.h: what the command-line driver's files share. */
#ifndef MATC_CLI_H
#define MATC_CLI_H

#include "../compiler/exec.h"
#include "../runtime/data.h"
#include "../runtime/mat.h"

#define EXIT_UNSUPPORTED 77

typedef struct {
  const char *cmd, *model, *data, *dump_after;
  const char *model_name;         /* how messages name the model, when not by its path (a
                                     compiled trainer reads its own from an in-memory file) */
  int64_t batch;
  double rtol, atol;
  int json, verbose, repeat, threads, fd, f64, allow_random, atol_set;
  double tol;
  /* train */
  int64_t steps, warmup, eval_every, seed;
  double lr, momentum, weight_decay, clip, eval_fraction;
  int nesterov, no_shuffle, freeze_bn, seed_set;
  const char *optimizer, *schedule, *log, *freeze;
  const char *checkpoint, *resume, *out, *eval_data;   /* --checkpoint DIR, --resume DIR, --out TRAINED.onnx */
  int64_t checkpoint_every;
  /* inspect: the MAT partition (tools/inspect_modules.c) */
  const char *partition;          /* --partition FILE.json */
  int others_as_modules, dot;     /* --others-as-modules, --dot */
  /* train: Modular Adaptive Training (tools/mat_train.c) */
  int mat_on, mat_stop;           /* --mat on|off, --mat-mode weights|stop */
  MatOptions mat;                 /* --mat-warmup, --mat-refresh, --mat-alpha, ... */
  int64_t mat_probe_samples;      /* --mat-probe-samples */
  /* train: data parallel over MPI (runtime/dp.h) */
  double mpi_timeout;             /* --mpi-timeout SECONDS */
  double mpi_bucket_mb;           /* --mpi-bucket-mb MB */
  /* compile (tools/aot_compile.c): -o TRAINER, --target-cpu native|generic|CPU;
   * compile_only: cmd_train builds every graph, then returns */
  const char *output, *target_cpu;
  int compile_only;
} Options;

/* The model as messages and checkpoints name it. */
static inline const char *model_label(const Options *o) { return o->model_name ? o->model_name : o->model; }

extern const Pass front_passes[];

int report(Graph *g, int rc);
int read_tensors(Graph *g, const char *dir, const char *prefix, Tensor **out, const char ***names, int *n);
int bind_data(Graph *g, const char *dir, Tensor *ins, const char **names, int nin, int *bound);
int check_outputs(Graph *g, Exec *x, Tensor *outs, int nout, double rtol, double atol);
int compare(const char *name, const Tensor *want, const void *got, DType dt, double rtol, double atol);
double now_ms(void);

/* Checkpoints and trained models (tools/checkpoint.c). */
typedef struct {
  char model[1024];               /* the model file it was written for */
  char optimizer[32];
  uint64_t fingerprint;           /* of the model's initializer names, types and shapes */
  int ninit;
  int64_t step, epoch, pos, seed, ntrain;
  int64_t ranks;                  /* data-parallel ranks that wrote it (1 without MPI) */
  int64_t batch;                  /* --batch (per rank); 0: not recorded */
} CkptMeta;
typedef struct Ckpt Ckpt;
uint64_t model_fingerprint(const Graph *g, int *ninit);   /* over its V_PARAM values */
int ckpt_prepare_dir(const char *dir, char *err, size_t errlen);
/* Writes vals (from x's storage) and m to DIR/checkpoint.matc atomically. */
int ckpt_save(const char *dir, const CkptMeta *m, Exec *x, const int *vals, int nvals, char *err,
              size_t errlen);
/* Reads and checks DIR/checkpoint.matc (DIR may also name the file). */
Ckpt *ckpt_read(const char *dir, char *err, size_t errlen);
/* The same on a checkpoint already in memory (takes buf, malloc'd; path
 * names it in errors). */
Ckpt *ckpt_parse(const char *path, unsigned char *buf, size_t len, char *err, size_t errlen);
/* The same on every data-parallel rank: rank 0 reads, the others receive. */
Ckpt *ckpt_read_dp(const char *dir, char *err, size_t errlen);
const CkptMeta *ckpt_meta(const Ckpt *c);
const char *ckpt_file(const Ckpt *c);
int ckpt_check_model(const Ckpt *c, const CkptMeta *want, char *err, size_t errlen);
/* Copies the checkpoint's tensors into x's storage of vals: every one must be there. */
int ckpt_restore(const Ckpt *c, Exec *x, const int *vals, int nvals, char *err, size_t errlen);
void ckpt_free(Ckpt *c);
/* The model file orig with the initializers in vals replaced by their values in x. */
int write_trained_onnx(const char *orig, const char *out, Exec *x, const int *vals, int nvals, char *err,
                       size_t errlen);

/* The partition in `matc inspect` (tools/inspect_modules.c). */
void print_modules_text(Graph *g, const Options *o, FILE *f);
void print_modules_json(Graph *g, const Options *o, FILE *f);
void print_modules_dot(Graph *g, FILE *f);

/* Data parallel (tools/train_dp.c): does every rank run the same training
 * (matc and compiled step, model, data, options)? 0 when they do; else
 * rank 0 names the first difference. Every rank must call it. */
int dp_check_same_run(const Options *o, Graph *step, const CkptMeta *meta, Dataset *ds, const Sampler *sm,
                      const Sampler *es);

int cmd_gradcheck(Options *o);
int cmd_train(Options *o);
int cmd_compile(Options *o, int argc, char **argv);       /* tools/aot_compile.c */
int matc_parse_args(int argc, char **argv, Options *o);  /* tools/matc.c */

#endif
