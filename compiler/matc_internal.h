/* matc_internal.h: the compiler's one internal header, in sections.
 *
 *   1. utilities: arena, diagnostics
 *   2. data types
 *   3. graph IR: values, nodes, attributes, the graph
 *   4. op table (ops.def, an X-macro)
 *   5. kernel IR: the loop nests every op lowers to
 *   6. passes and drivers
 *
 * Data flows one way: ONNX file -> Graph (import) -> shapes + constant
 * folding -> kernels (lower) -> fused kernels -> LLVM (codegen) -> JIT.
 */
#ifndef MATC_INTERNAL_H
#define MATC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---------------------------------------------------------------- 1. utilities */

typedef struct Arena Arena;
Arena *arena_new(void);
void arena_free(Arena *a);
void *arena_alloc(Arena *a, size_t n);          /* zeroed, 16-byte aligned */
char *arena_strdup(Arena *a, const char *s);

/* Broken internal invariant: dies loudly with file:line. Never for bad input. */
#define MATC_ASSERT(c) \
  do { if (!(c)) matc_die(__FILE__, __LINE__, #c); } while (0)
void matc_die(const char *file, int line, const char *what);

/* Library code returns a status; only tools/matc.c exits. */
enum { MATC_OK = 0, MATC_ERR = 1, MATC_UNSUPPORTED = 2 };

/* Limits on untrusted input (README, "Hostile inputs and fuzzing"). A model
 * past one is refused with an error that names the file, what exceeded
 * and the limit, before anything is allocated from the number. */
#define MATC_MAX_MODEL_BYTES ((size_t)2 << 30)  /* protobuf's own 2 GiB */
#define MATC_MAX_PROTO_DEPTH 100     /* nested messages (subgraphs, types) */
#define MATC_MAX_NODES (1 << 20)     /* nodes; also initializers, inputs, outputs */
#define MATC_MAX_NODE_IO 64          /* inputs or outputs of one node */
#define MATC_MAX_ATTRS 256           /* attributes of one node */
#define MATC_MAX_ATTR_ELEMS (1 << 20)   /* ints, floats or strings in one attribute */
#define MATC_MAX_ELEMS ((int64_t)1 << 40)  /* elements of one tensor (product of its dims) */
/* and MATC_MAX_RANK (section 3): dimensions of one tensor */
/* Constant folding (infer_shapes) interprets at most this many scalar
 * operations per model; larger constant work is left to run time. */
#define MATC_MAX_FOLD_OPS ((double)(1 << 26))

/* ---------------------------------------------------------------- 2. data types */

/* Values are the ONNX TensorProto.DataType codes. */
typedef enum {
  DT_UNDEF = 0, DT_F32 = 1, DT_U8 = 2, DT_I8 = 3, DT_U16 = 4, DT_I16 = 5,
  DT_I32 = 6, DT_I64 = 7, DT_STRING = 8, DT_BOOL = 9, DT_F16 = 10,
  DT_F64 = 11, DT_U32 = 12, DT_U64 = 13, DT_BF16 = 16
} DType;

int dt_size(DType t);            /* bytes per element, 0 if unsupported */
int dt_supported(DType t);       /* can matc compute with it? */
int dt_is_float(DType t);
int dt_is_signed(DType t);       /* signed integer */
const char *dt_name(DType t);

/* ---------------------------------------------------------------- 3. graph IR */

#define MATC_MAX_RANK 8

/* A dense tensor constant: initializers, Constant values, folded results. */
typedef struct {
  DType dt;
  int rank;
  int64_t dims[MATC_MAX_RANK];
  void *data;                    /* nelem * dt_size(dt) bytes, row-major */
} Tensor;

int64_t tensor_nelem(const Tensor *t);
Tensor *tensor_new(Arena *a, DType dt, int rank, const int64_t *dims);   /* zeroed data */
double tensor_get_f(const Tensor *t, int64_t i);     /* element as double */
int64_t tensor_get_i(const Tensor *t, int64_t i);    /* element as integer */

typedef enum {
  A_UNDEF = 0, A_FLOAT = 1, A_INT = 2, A_STRING = 3, A_TENSOR = 4,
  A_GRAPH = 5, A_FLOATS = 6, A_INTS = 7, A_STRINGS = 8, A_TENSORS = 9,
  A_GRAPHS = 10, A_SPARSE = 11, A_SPARSES = 12, A_TYPE = 13, A_TYPES = 14
} AttrType;                      /* ONNX AttributeProto.AttributeType codes */

typedef struct {
  const char *name;
  AttrType type;
  float f;
  int64_t i;
  const char *s;
  Tensor *t;
  int n;                         /* count of ints/floats/strings */
  int64_t *ints;
  float *floats;
  const char **strings;
} Attr;

typedef enum {
  V_ACT = 0,       /* computed by a node at run time */
  V_INPUT,         /* graph input: fed by the caller */
  V_PARAM,         /* initializer: a trainable parameter or fixed weight */
  V_CONST,         /* compile-time constant (Constant node, folded value) */
} ValueKind;

typedef struct {
  const char *name;
  ValueKind kind;
  DType dt;
  int rank;                      /* -1 until shape inference */
  int64_t dims[MATC_MAX_RANK];
  Tensor *data;                  /* PARAM/CONST value; bound INPUT value */
  int producer;                  /* node index, -1 if none */
  int nuses;
  int is_output;
  /* A view (Reshape, Identity, Squeeze...) shares the storage of another
   * value; codegen and memory planning follow alias_of. */
  int alias_of;                  /* -1 when the value owns its storage */
  int64_t alias_off;             /* element offset into alias_of */
  int fused;                     /* computed inside its consumer: no storage */
  int64_t mem_off;               /* byte offset in the activation arena, or -1
                                    (set by plan_memory) */
} Value;

typedef struct {
  int op;                        /* OP_* */
  const char *name;              /* node name, or a made-up one */
  const char *op_type;
  const char *domain;
  int nin, nout;
  int *in;                       /* value ids; -1 for an absent optional input */
  int *out;
  int nattr;
  Attr *attr;
  int dead;                      /* removed by a pass */
  int opset;                     /* opset its semantics follow; 0 = the graph's.
                                    Nodes made by passes (autodiff) set it. */
} Node;

/* The opset a node's semantics follow (ops changed meaning across opsets). */
#define NODE_OPSET(g, n) ((n)->opset ? (n)->opset : (g)->opset)

typedef struct Graph {
  Arena *arena;
  const char *path;              /* model file, for diagnostics */
  int opset;                     /* default-domain opset */
  Value *vals; int nvals, capvals;
  Node *nodes; int nnodes, capnodes;
  int *inputs; int ninputs;      /* graph inputs that are not initializers */
  int *outputs; int noutputs;
  int64_t batch;                 /* binding for symbolic dims; 0 = unset */
  /* kernels, filled by lowering */
  struct Kernel *kernels; int nkernels, capkernels;
  struct Expr **exprpool;        /* not used: exprs live in the arena */
  /* diagnostics */
  char err[2048];
  int unsupported;               /* last error is "unsupported", not "wrong" */
  int verbose;
  int profile;                   /* time every kernel (MATC_PROFILE=1) */
  int jit_parts;                 /* modules the JIT compiled the kernels in, on as many
                                    threads (0: not JIT-compiled) */
  int64_t arena_bytes;           /* activation arena size (plan_memory) */
  int rng_seed1;                 /* 1 + id of the int64 seed input random ops
                                    read (graph_rng_seed), 0 while none */
  int uses_rng;                  /* some output depends on random numbers */
  int64_t unplanned_bytes;       /* what the same values take without reuse */
  double fold_ops;               /* constant folding's work so far (MATC_MAX_FOLD_OPS) */
  const char *dump_after;        /* --dump-after=PASS */
  /* modules (passes/partition.c); module k's guard bit is byte k of the
   * DT_U8 [nmodules] graph input `matc.guards` (guard_value, -1 if none) */
  struct Module *modules; int nmodules;
  int guard_value;
  struct Guards *guards;         /* predicates of nodes and kernels, NULL if none */
  /* Data parallel (passes/insert_allreduce.c): the trained parameters and
   * their gradients before clipping (build_train_step), summed across
   * ranks between backward and the update; the put/get kernels' plan. */
  int nsync;
  int *sync_param, *sync_grad;
  struct DpPlan *dp_plan;
} Graph;

Graph *graph_new(const char *path);
void graph_free(Graph *g);
int graph_add_value(Graph *g, const char *name);
/* The value whose storage v uses (v itself unless v is a view). */
int value_root(const Graph *g, int v);
int graph_find_value(Graph *g, const char *name);    /* -1 if none */
/* A scalar graph input the runtime sets (learning rate, seeds), with an
 * initial value. */
int graph_scalar_input(Graph *g, const char *name, DType dt, double init);
/* The int64 scalar input that seeds random ops (Dropout in training mode);
 * made on first use, 0 unless the runtime sets it (once per step). */
int graph_rng_seed(Graph *g);
int graph_add_node(Graph *g, const char *op_type, const char *name,
                   int nin, const int *in, int nout, const int *out);
void graph_dump(Graph *g, FILE *f);
int graph_verify(Graph *g);                          /* MATC_OK or MATC_ERR */

/* Diagnostics. Every message names the file, and the node, op and input
 * where there is one. fail() returns MATC_ERR, unsupported() returns
 * MATC_UNSUPPORTED, so `return fail(...)` reads naturally. */
int fail(Graph *g, int node, int input, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int unsupported(Graph *g, int node, int input, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Attribute access. */
const Attr *attr_get(const Node *n, const char *name);
int64_t attr_i(const Node *n, const char *name, int64_t dflt);
float attr_f(const Node *n, const char *name, float dflt);
const char *attr_s(const Node *n, const char *name, const char *dflt);
/* ints attribute: copies up to max entries and returns how many (-1 when
 * absent). Shape-like attributes longer than a rank allows are refused by
 * infer_shapes before any op reads them. */
int attr_ints(const Node *n, const char *name, int64_t *out, int max);

/* Shape helpers. */
int64_t shape_nelem(int rank, const int64_t *dims);
/* Element count, or -1 when a dim is negative, a dim or the product
 * passes MATC_MAX_ELEMS (never overflows). */
int64_t shape_nelem_checked(int rank, const int64_t *dims);
/* a * b for dims and element counts (a, b >= 0), or -1 when either is
 * negative or the product passes MATC_MAX_ELEMS (never overflows). */
static inline int64_t dim_mul(int64_t a, int64_t b) {
  if (a < 0 || b < 0 || (a && b > MATC_MAX_ELEMS / a)) return -1;
  return a * b;
}
/* A float as an int64, saturating (NaN is 0): C leaves out-of-range
 * conversions undefined, and hostile models hold any value. */
static inline int64_t f2i_sat(double x) {
  if (!(x == x)) return 0;
  if (x >= 9223372036854775807.0) return INT64_MAX;
  if (x <= -9223372036854775808.0) return INT64_MIN;
  return (int64_t)x;
}
/* "[2,3,4]" into buf (truncated to n bytes); returns buf. */
const char *shape_str(int rank, const int64_t *dims, char *buf, size_t n);
int value_nelem_known(const Value *v);
int64_t value_nelem(const Value *v);
/* Sets v's dtype and shape; returns MATC_OK. */
void value_set(Value *v, DType dt, int rank, const int64_t *dims);
/* Numpy broadcasting of a and b into out; MATC_ERR (with message) when the
 * shapes do not broadcast. */
int broadcast_shapes(Graph *g, int node, int ra, const int64_t *a, int rb,
                     const int64_t *b, int *rout, int64_t *out);
/* Normalises a possibly negative axis; -1 when out of range. */
int norm_axis(int64_t axis, int rank);
/* Value of an input known at compile time (constant, parameter or bound
 * input), or NULL. Shape inference uses it for shape-like inputs. */
Tensor *known_value(Graph *g, int v);

/* ---------------------------------------------------------------- 4. op table */

typedef struct AD AD;
typedef int (*InferFn)(Graph *g, int node);   /* set output dtypes/shapes */
typedef int (*LowerFn)(Graph *g, int node);   /* append kernels */
/* Appends the backward of `node`: dy[j] is the gradient of output j (-1
 * if none), the rule sets dx[i] for each input i that ad_needs(). */
typedef int (*GradFn)(AD *ad, int node, const int *dy, int *dx);

enum {
#define OP(name, infer, lower, grad, flags) OP_##name,
#include "ops.def"
#undef OP
  OP_COUNT
};

/* op flags */
enum {
  OPF_ELEMENTWISE = 1,   /* output[i] depends only on inputs at i (fusable) */
  OPF_VIEW = 2,          /* output aliases an input's storage */
  OPF_NOFOLD = 4,        /* never constant-folded (random ops) */
  OPF_EFFECT = 8,        /* writes state (Assign): never dead, never folded */
};

typedef struct {
  const char *name;
  InferFn infer;
  LowerFn lower;
  GradFn grad;
  int flags;
} OpInfo;

extern const OpInfo op_table[OP_COUNT];
int op_lookup(const char *op_type);           /* -1 when unknown */
int grad_none(AD *ad, int node, const int *dy, int *dx);  /* "no gradient rule" */

/* ---------------------------------------------------------------- 5. kernel IR */

/* Every op lowers to kernels. A loop kernel is a loop nest over its output
 * (vars 0..nvar-1), optionally with reduction vars (nvar..nvar+nred-1), and
 * an expression tree computed at every point. Loads address tensors with an
 * affine map of the loop vars (a stride per var; stride 0 broadcasts) plus
 * optional data-dependent terms (Gather indices, clamped conv windows).
 * Fusion inlines one kernel's expression into another's loads; codegen
 * turns each kernel into one LLVM function; the interpreter evaluates
 * kernels directly for constant folding. GEMM-class work is an extern
 * kernel that calls the runtime (OpenBLAS). */

#define KMAX_VARS 16
#define KMAX_DYN 4

#define MATC_UNARY_OPS(X) \
  X(NEG) X(ABS) X(EXP) X(LOG) X(SQRT) X(RECIP) X(TANH) X(ERF) X(SIGMOID) \
  X(SIN) X(COS) X(TAN) X(ASIN) X(ACOS) X(ATAN) X(SINH) X(COSH) X(ASINH) \
  X(ACOSH) X(ATANH) X(FLOOR) X(CEIL) X(ROUND) X(NOT) X(SIGN) X(ISNAN) \
  X(ISINF) X(ISPOSINF) X(ISNEGINF) X(SOFTPLUS) X(BITNOT)

#define MATC_BINARY_OPS(X) \
  X(ADD) X(SUB) X(MUL) X(DIV) X(MAX) X(MIN) X(POW) X(FMOD) X(IMOD) \
  X(AND) X(OR) X(XOR) X(EQ) X(NE) X(LT) X(LE) X(GT) X(GE) X(SHL) X(SHR) \
  X(BITAND) X(BITOR) X(BITXOR) \
  X(HASH)   /* int64 hash of (a, b): splitmix64 of a + b * golden ratio */

enum {
#define X(n) U_##n,
  MATC_UNARY_OPS(X)
#undef X
  U_COUNT
};
enum {
#define X(n) B_##n,
  MATC_BINARY_OPS(X)
#undef X
  B_COUNT
};

typedef enum {
  EX_CONST, EX_LOAD, EX_INDEX, EX_UN, EX_BIN, EX_SEL, EX_CAST, EX_ACC
} ExprKind;

typedef struct Expr Expr;
struct Expr {
  ExprKind kind;
  DType dt;                      /* result type (BOOL for comparisons) */
  int op;                        /* U_* or B_* */
  Expr *a, *b, *c;               /* operands; SEL: c ? a : b */
  double f;                      /* CONST (float types) */
  int64_t i;                     /* CONST (integer and bool types) */
  int var;                       /* INDEX: the loop var's value (int64) */
  /* LOAD: element val[off + sum_v stride[v]*var_v + sum_d dstride[d]*dyn[d]] */
  int val;
  int64_t off;
  int64_t stride[KMAX_VARS];
  int ndyn;
  Expr *dyn[KMAX_DYN];           /* int64 expressions */
  int64_t dstride[KMAX_DYN];
};

typedef enum { R_NONE, R_SUM, R_PROD, R_MAX, R_MIN, R_ARGMAX, R_ARGMIN } ReduceKind;

/* Extern kernels: runtime functions with the signature
 *   void fn(void **ptrs, const int64_t *params)
 * shared by JIT code and the interpreter. */
#define MATC_EXTERNS(X) \
  X(gemm, matc_rt_gemm)         /* batched (d|s)gemm, see runtime/rt.h */ \
  X(topk, matc_rt_topk) \
  X(copy, matc_rt_copy) \
  X(scatter_elements, matc_rt_scatter_elements) \
  X(scatter_nd, matc_rt_scatter_nd) \
  X(grad_put, matc_rt_grad_put) /* data parallel, see runtime/dp.h */ \
  X(grad_get, matc_rt_grad_get)

enum {
#define X(n, fn) EXT_##n,
  MATC_EXTERNS(X)
#undef X
  EXT_COUNT
};

#define KMAX_EXT_ARGS 8
#define KMAX_EXT_PARAMS 40

typedef enum { K_LOOP, K_EXTERN } KernelKind;

typedef struct Kernel {
  KernelKind kind;
  int node;                      /* source node, for diagnostics and dumps */
  int dead;                      /* fused into another kernel */
  /* loop kernels */
  int nvar, nred;
  int64_t ext[KMAX_VARS];        /* extent of each var */
  int out;                       /* value stored to */
  DType out_dt;
  int64_t out_off;
  int64_t out_stride[KMAX_VARS]; /* zero for reduction vars */
  Expr *body;                    /* element value, or reduction operand */
  ReduceKind red;
  Expr *post;                    /* applied to the accumulator (EX_ACC) */
  /* extern kernels */
  int ext_fn;
  int nargs;
  int args[KMAX_EXT_ARGS];       /* value ids */
  int64_t argoff[KMAX_EXT_ARGS]; /* element offsets */
  int np;
  int64_t p[KMAX_EXT_PARAMS];
  int pred;                      /* guard predicate (passes/guards.c), 0 = always runs */
  int no_unroll;                 /* loop kernels: LLVM must not unroll its loops (data
                                    movement over large constant extents, where unrolling
                                    the vectorized loops costs seconds of compile time) */
  int join;                      /* loop kernels: may share the loop nest of the kernels
                                    before it (kernel_joins); set by lowerings that emit
                                    several passes over the same data into disjoint parts
                                    of one buffer (Winograd's 16 tile points) */
} Kernel;

/* A scratch value of a node (a row statistic, an im2col buffer): produced
 * by the node, so memory planning and exec allocate it like any of the
 * node's outputs. Named "<node>/<what>" in dumps. */
int value_scratch(Graph *g, int node, const char *what, DType dt, int rank, const int64_t *dims);

/* Builders, for op lower functions. */
Kernel *k_loop(Graph *g, int node, int out, int nvar, const int64_t *ext);
Kernel *k_elementwise(Graph *g, int node, int out);  /* vars = out's dims */
Kernel *k_extern(Graph *g, int node, int fn);
void k_arg(Kernel *k, int val, int64_t off);

Expr *e_const(Graph *g, DType dt, double v);
Expr *e_consti(Graph *g, DType dt, int64_t v);
Expr *e_index(Graph *g, int var);
Expr *e_un(Graph *g, int op, Expr *a);
Expr *e_bin(Graph *g, int op, Expr *a, Expr *b);  /* comparisons give BOOL */
Expr *e_sel(Graph *g, Expr *c, Expr *a, Expr *b);
Expr *e_cast(Graph *g, DType dt, Expr *a);
Expr *e_acc(Graph *g, DType dt);
/* A load with explicit strides (nvar entries; the rest zero). */
Expr *e_load(Graph *g, int val, int64_t off, const int64_t *stride, int nvar);
/* A load of val broadcast (numpy rules, right-aligned) against the loop
 * vars 0..rank-1 of a kernel whose output has `rank` dims. */
Expr *e_load_bcast(Graph *g, int val, int rank);
/* Adds a data-dependent term: offset += dstride * dyn. */
void e_load_dyn(Expr *load, Expr *dyn, int64_t dstride);
/* Row-major strides of a shape. */
void shape_strides(int rank, const int64_t *dims, int64_t *strides);

/* Whether e loads from the storage of value `root` (through any view). */
int expr_loads(const Graph *g, const Expr *e, int root);

/* Whether loop kernel j can run in the loop nest of the n kernels run[]
 * (run[0] first, j the next live kernel after them): j asked to (join),
 * and all are elementwise over the same vars and strides into the same
 * buffer, which none of them reads, and no two store to one element
 * (checked from the offsets and strides; tests/unit/kernel_joins.c). */
int kernel_joins(Graph *g, const int *run, int n, int j);

/* Operations one run of g's kernels executes (GEMM 2MNK, loops counted). */
double kernels_flops(Graph *g);
/* Scalar operations interpreting kernels k0..k1-1 takes (copies count). */
double kernels_cost(Graph *g, int k0, int k1);

/* Interpreter: runs kernels k0..k1-1 of g with storage ptrs[v] per value. */
int kernels_interpret(Graph *g, int k0, int k1, void **ptrs);

/* ---------------------------------------------------------------- 6. autodiff builders
 * Gradient rules write the backward pass in forward ops: each builder
 * appends one node (in the canonical opset AD_OPSET, whatever the model's),
 * infers its shape at once, and returns its output value. Errors are
 * sticky: after one, builders return -1 and autodiff reports ad->g->err. */

#define AD_OPSET 17

struct AD {
  Graph *g;
  char *needs;                  /* per value: a gradient must flow through it */
  int node;                     /* forward node whose rule is running */
  int status;                   /* first error, MATC_OK while none */
};

int ad_needs(AD *ad, int node, int input);      /* does input i need dx? */
int ad_node(AD *ad, const char *op, int nin, const int *in, int nattr, const Attr *attr);
int ad_node_n(AD *ad, const char *op, int nin, const int *in, int nattr, const Attr *attr,
              int nout, int *out);             /* several outputs */
Attr ad_attr_i(const char *name, int64_t v);
Attr ad_attr_f(const char *name, float v);
Attr ad_attr_s(const char *name, const char *s);
Attr ad_attr_ints(AD *ad, const char *name, int n, const int64_t *v);
int ad_const(AD *ad, DType dt, double v);                      /* scalar */
int ad_const_ints(AD *ad, int n, const int64_t *v);            /* int64 [n] */
int ad_add(AD *ad, int a, int b);
int ad_sub(AD *ad, int a, int b);
int ad_mul(AD *ad, int a, int b);
int ad_div(AD *ad, int a, int b);
int ad_neg(AD *ad, int a);
int ad_unary(AD *ad, const char *op, int a);
int ad_scale(AD *ad, int a, double s);                        /* a * s */
int ad_matmul(AD *ad, int a, int b);
int ad_transpose(AD *ad, int x, const int64_t *perm);          /* perm of x's rank */
int ad_swap_last(AD *ad, int x);                               /* transpose last two dims */
int ad_reshape(AD *ad, int x, int rank, const int64_t *dims);
int ad_reduce_sum(AD *ad, int x, int naxes, const int64_t *axes, int keepdims);
/* Sums a broadcast gradient back to the shape of the value it came from. */
int ad_sum_to(AD *ad, int grad, int like);
int ad_zeros_like(AD *ad, int like);

/* ---------------------------------------------------------------- 7. passes */

int import_onnx(Graph *g, const char *path);                 /* compiler/onnx_import.c */
int import_onnx_buffer(Graph *g, const void *buf, size_t len);  /* g->path names it */
int import_tensor_file(Arena *a, const char *path, Tensor *t, const char **name,
                       char *err, size_t errlen);             /* one TensorProto */
int write_tensor_file(const char *path, const char *name, const Tensor *t);

int bind_inputs(Graph *g, int64_t batch);                     /* passes/bind_inputs.c */
int infer_shapes(Graph *g);                                   /* passes/infer_shapes.c */
int lower_kernels(Graph *g);                                  /* passes/lower_kernels.c */
int fuse_elementwise(Graph *g);                               /* passes/fuse_elementwise.c */
int assign_in_place(Graph *g);                                /* passes/assign_in_place.c */
int merge_loops(Graph *g);                                    /* passes/merge_loops.c */
int plan_memory(Graph *g);                                    /* passes/plan_memory.c */
/* Appends the gradients of sum_i <outs[i], seeds[i]> with respect to each
 * wrt[j] (float values) to g; grads[j] gets the gradient value. */
int autodiff(Graph *g, int nouts, const int *outs, const int *seeds, int nwrt, const int *wrt,
             int *grads);                                     /* passes/autodiff.c */
/* The training step (passes/build_train_step.c): loss, gradients,
 * clipping and the optimizer update, appended to a forward graph. */
typedef enum { OPT_SGD, OPT_ADAMW } Optimizer;
typedef enum { LOSS_AUTO, LOSS_CROSS_ENTROPY, LOSS_MSE, LOSS_OUTPUT } LossKind;
typedef struct {
  Optimizer optimizer;
  LossKind loss;
  double momentum, weight_decay, beta1, beta2, eps, clip_norm;
  int nesterov;
  int64_t ignore_index;           /* cross-entropy targets to skip */
  const char *freeze;             /* comma-separated initializers not to train */
  int bn_frozen;                  /* BatchNormalization keeps its stored statistics */
  DType target_dt;
  int target_rank;                /* of one example */
  int64_t target_dims[MATC_MAX_RANK];
} TrainConfig;
typedef struct {
  int loss, logits, target;       /* values: scalar loss, model output, target input */
  int lr, bc1, bc2;               /* scalar inputs the runtime sets each step */
  int nparams;
  int *params, *grads;            /* trained initializers and their gradients */
  int nstate;
  int *state;                     /* optimizer state (V_PARAM, "<param>.momentum", ".adam_m", ".adam_v") */
  int64_t nparam_elems, nstate_elems;
} TrainStep;
int build_train_step(Graph *g, const TrainConfig *cfg, TrainStep *ts);
int expand_gradient(Graph *g, int node);                     /* passes/autodiff.c */
int promote_f64(Graph *g);                                    /* passes/promote_f64.c */
Expr *expr_copy(Graph *g, Expr *e);                           /* compiler/kir.c */
int expr_size(const Expr *e);
int eliminate_dead(Graph *g);                                 /* passes/eliminate_dead.c */

void kernels_dump(Graph *g, FILE *f);

/* ---------------------------------------------------------------- 8. modules (MAT)
 * A module is a named set of parameter slices that MAT freezes and thaws
 * as one (MAT.md). The partition pass (passes/partition.c) finds them on
 * the forward graph; the guard pass (passes/guards.c) makes the backward
 * and optimizer work of each module conditional on its guard bit; the
 * probe (runtime/mntk.c) computes each module's Gram matrix from the
 * sites' inputs and output gradients. */

typedef enum { MOD_LAYER, MOD_HEAD, MOD_EXPERT, MOD_OTHER } ModuleKind;

typedef struct {
  int param;                     /* V_PARAM value id */
  int axis;                      /* sliced axis, -1 for the whole tensor */
  int64_t begin, end;            /* [begin, end) along axis */
} ParamSlice;

/* Where the module's parameters meet activations: a Gemm/MatMul/Conv node
 * whose weight input is (a slice of) the module's parameter. The structured
 * Gram formula reads x (the node's data input) and dy (the gradient of its
 * output), restricted to the slice: out-features [begin, end) of y for a
 * column slice (Q/K/V heads, expert rows of a stacked weight), in-features
 * [begin, end) of x for a row slice (the head's rows of the output
 * projection). bias, if any, is the bias parameter slice added to y. */
typedef struct {
  int node;
  int weight;                    /* index into the module's slices */
  int bias;                      /* index into slices, -1 if none */
  int slice_out;                 /* 1: slice of y's features, 0: of x's */
  int64_t begin, end;            /* feature range, or 0, 0 for all */
  int stacked;                   /* 1: the weight is a stacked [E, K, N] MatMul
                                    weight and [begin, end) are experts: the
                                    expert axis of y (third from last) and of x
                                    (where x broadcasts it, size 1: all of x) */
} ProbeSite;

typedef struct Module {
  const char *name;              /* "layers.0.attn.head2", "fc1" */
  ModuleKind kind;
  int nslices;
  ParamSlice *slices;
  int nsites;
  ProbeSite *sites;
  int64_t nparams;               /* elements over all slices */
  double fwd_flops, bwd_flops;   /* one training step, batch as bound */
} Module;

const char *module_kind_name(ModuleKind k);

/* Partition (passes/partition.c): runs on the forward graph after shape
 * inference. Finds whole Gemm/MatMul/Conv layers, attention heads and
 * experts; then applies the user's partition file, if any. Parameters in
 * no module are always on. */
typedef struct {
  int others_as_modules;         /* embeddings, norms, output layer...: one
                                    MOD_OTHER module per layer name */
  const char *freeze;            /* comma-separated initializers that do not
                                    train (never in a module) */
  const char *partition_file;    /* JSON, see README "Partition file" */
} PartitionOptions;
int partition_modules(Graph *g, const PartitionOptions *o);
/* Does parameter v train (float, used, not a BatchNormalization running
 * statistic, not in the freeze list)? */
int partition_trainable(Graph *g, int v, const char *freeze);
/* The user's partition file (passes/partition_file.c), applied to the
 * automatic modules in g. */
int partition_apply_file(Graph *g, const PartitionOptions *o);
/* Fills a module's sites for its slices that meet a Gemm/MatMul/Conv
 * weight, its parameter count and FLOPs (passes/partition_layers.c). */
void partition_find_sites(Graph *g, Module *m, const char *freeze);
/* GEMM/conv FLOPs of all layers with a trainable weight (one step). */
void partition_total_flops(Graph *g, const char *freeze, double *fwd, double *bwd);

/* The mNTK probe graph (passes/build_probe.c): appended to a forward
 * graph bound to n samples, it computes sum_i loss_i (each sample's own
 * training loss) and, by one backward pass, the output gradient of every
 * probe site. Outputs: the sum, then each site node's x and dy. With
 * nvec > 0 the scalar outputs are instead the logits contracted with nvec
 * vectors (inputs the runtime fills with Rademacher signs), one backward
 * pass each. */
typedef struct {
  int64_t n;                     /* samples */
  int target;                    /* target input [n, target dims]; -1 with vectors */
  int total;                     /* sum_i loss_i (scalar) */
  int *x;                        /* per node id: site input, -1 if not a site */
  int *dy;                       /* [nvec][dy_stride]: site output gradient by node id, -1 if not a site */
  int dy_stride;
  int nvec;                      /* backward passes: 1, or the number of vectors */
  int *vectors, *totals;         /* per pass: vector input (-1 for the loss), scalar output */
} ProbeGraph;
int build_probe(Graph *g, const TrainConfig *cfg, int nvec, ProbeGraph *pg);
/* Fills an empty m->sites from its slices: every Gemm/MatMul/Conv that
 * uses a sliced parameter as its weight, with the bias slice attached. */
int find_probe_sites(Graph *g, Module *m);

/* Guards (passes/guards.c, passes/guard_kernels.c). A predicate is a set
 * of modules: its work runs iff some module of the set is active (guard
 * byte nonzero); a negated one runs iff none is (it zeroes what a skipped
 * kernel would have written, for readers that run anyway). Predicate 0 is
 * "always". insert_guards runs after build_train_step and gives every node
 * a predicate and a per-slice split plan; guard_kernels (after lowering)
 * gives kernels theirs, splits the weight-gradient and optimizer kernels
 * of sliced parameters per slice, and adds the zeroing kernels. */
typedef struct Guards Guards;
int insert_guards(Graph *g, const TrainStep *ts, int stop_mode);
int guard_kernels(Graph *g);
/* Data parallel: after guard_kernels, a put kernel after the last writer
 * of every gradient in g->sync_grad and a get kernel before its first
 * reader, and g->dp_plan (passes/insert_allreduce.c). */
int insert_allreduce(Graph *g);
/* Does predicate `pred` run under these guard bytes? */
int guard_pred_runs(const Graph *g, int pred, const uint8_t *guards);
/* Is it a zeroing kernel's predicate (runs iff none of its modules is)? */
int guard_pred_negated(const Graph *g, int pred);
/* Does pred a running imply pred b runs (a's set within b's)? */
int guard_pred_implies(const Graph *g, int a, int b);
/* The modules of a predicate, for dumps: "{0,3}", "!{2}", "always". */
const char *guard_pred_str(const Graph *g, int pred, char *buf, size_t len);
/* Operations one run executes with these guard bytes (kernels_flops is
 * the full count). */
double kernels_flops_guarded(Graph *g, const uint8_t *guards);

/* Pass pipeline with verification and --dump-after. */
typedef struct {
  const char *name;
  int (*run)(Graph *g);
} Pass;
int run_passes(Graph *g, const Pass *passes, int n);

#endif
