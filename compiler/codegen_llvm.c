/* codegen_llvm.c: kernels -> one LLVM module (LLVM C API).
 *
 * Each loop kernel becomes `void k<N>(ptr bufs, i64 lo, i64 hi)`, a loop
 * nest over its (merged) vars whose outermost var runs over [lo, hi), so the
 * runtime thread pool can split it. The module's entry point
 *   void matc_graph_run(ptr bufs)
 * calls every kernel in order: loop kernels through matc_rt_parallel_for,
 * extern kernels (GEMM...) directly. bufs[v] is value v's storage.
 *
 * Strides and extents are compile-time constants, so LLVM sees simple
 * counted loops with constant strides and vectorizes the inner ones.
 * Loop counters and accumulators live in allocas that SROA promotes. */
#include "codegen.h"
#include "../passes/guards.h"
#include "../runtime/rt.h"

#include <llvm-c/Core.h>
#include <llvm-c/DebugInfo.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  Graph *g;
  LLVMContextRef cx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
  LLVMTypeRef i1, i8, i16, i32, i64, f32, f64, ptr, vd;
  LLVMTypeRef task_ty;                  /* void(ptr, i64, i64) */
  LLVMTypeRef ext_ty;                   /* void(ptr, ptr) */
  LLVMValueRef fn;                      /* function being built */
  LLVMValueRef bufs;                    /* its bufs argument */
  LLVMValueRef *base;                   /* per value: base pointer, or NULL */
  LLVMValueRef var[KMAX_VARS];          /* allocas of the loop vars */
  LLVMValueRef acc;                     /* value of the accumulator in post */
  /* Scoped no-alias metadata of the kernel being built: its store and the
   * loads of other buffers never overlap, which lets LLVM vectorize. */
  int out_root;
  LLVMValueRef scope;
  /* memo of emitted expressions within one emission of a body */
  Expr **memo_e;
  LLVMValueRef *memo_v;
  int nmemo, capmemo;
  int no_unroll;                        /* the kernel being built has Kernel.no_unroll */
  int shared;                           /* kernels are called from other modules (parts) */
  const char *entry;                    /* the entry function's name; shared kernels are
                                           named after it, unique across graphs */
} CG;

static LLVMTypeRef ty_of(CG *c, DType dt) {
  switch (dt) {
  case DT_F32: return c->f32;
  case DT_F64: return c->f64;
  case DT_I64: case DT_U64: return c->i64;
  case DT_I32: case DT_U32: return c->i32;
  case DT_I16: case DT_U16: return c->i16;
  case DT_I8: case DT_U8: return c->i8;
  case DT_BOOL: return c->i1;
  default: MATC_ASSERT(0); return NULL;
  }
}

/* In memory, bool is a byte. */
static LLVMTypeRef mem_ty(CG *c, DType dt) { return dt == DT_BOOL ? c->i8 : ty_of(c, dt); }

static LLVMValueRef ci64(CG *c, int64_t v) { return LLVMConstInt(c->i64, (unsigned long long)v, 1); }

static LLVMValueRef intrinsic(CG *c, const char *name, LLVMTypeRef t, int nargs,
                              LLVMValueRef *args) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  MATC_ASSERT(id != 0);
  LLVMTypeRef ts[1] = {t};
  LLVMValueRef f = LLVMGetIntrinsicDeclaration(c->mod, id, ts, 1);
  LLVMTypeRef ft = LLVMIntrinsicGetType(c->cx, id, ts, 1);
  return LLVMBuildCall2(c->b, ft, f, args, nargs, "");
}

/* A libm function, for what LLVM has no intrinsic for (tanh, erf...). */
static LLVMValueRef libm(CG *c, const char *name, LLVMTypeRef t, int nargs, LLVMValueRef *args) {
  char buf[32];
  snprintf(buf, sizeof buf, "%s%s", name, t == c->f32 ? "f" : "");
  LLVMTypeRef ps[2] = {t, t};
  LLVMTypeRef ft = LLVMFunctionType(t, ps, nargs, 0);
  LLVMValueRef f = LLVMGetNamedFunction(c->mod, buf);
  if (!f) f = LLVMAddFunction(c->mod, buf, ft);
  return LLVMBuildCall2(c->b, ft, f, args, nargs, "");
}

static LLVMValueRef fconst(CG *c, LLVMTypeRef t, double v) { return LLVMConstReal(t, v); }


/* ---------------------------------------------------------------- float32 math
 * exp, erf and tanh for float32 as straight-line arithmetic, so loops that
 * use them (softmax, GELU, attention) vectorize; libm calls would not.
 * float64 keeps libm. Errors are a few ulp (tests/unit checks them against
 * libm through the interpreter). */

static LLVMValueRef fma3(CG *c, LLVMValueRef a, LLVMValueRef b, LLVMValueRef d) {
  LLVMValueRef args[3] = {a, b, d};
  unsigned id = LLVMLookupIntrinsicID("llvm.fma", 8);
  LLVMTypeRef ts[1] = {c->f32};
  return LLVMBuildCall2(c->b, LLVMIntrinsicGetType(c->cx, id, ts, 1),
                        LLVMGetIntrinsicDeclaration(c->mod, id, ts, 1), args, 3, "");
}

static LLVMValueRef f32c(CG *c, double v) { return LLVMConstReal(c->f32, v); }

/* Horner: coef[0] + x*(coef[1] + x*(...)) */
static LLVMValueRef poly(CG *c, LLVMValueRef x, const double *coef, int n) {
  LLVMValueRef p = f32c(c, coef[n - 1]);
  for (int i = n - 2; i >= 0; i--) p = fma3(c, p, x, f32c(c, coef[i]));
  return p;
}

/* exp(x) = 2^n * exp(r), n = round(x / ln 2), |r| <= ln2 / 2, with a
 * degree-7 Taylor polynomial (truncation error < 3e-8 relative). */
static LLVMValueRef fast_exp_f32(CG *c, LLVMValueRef x) {
  LLVMValueRef xc = x;
  LLVMValueRef lim[2];
  lim[0] = xc; lim[1] = f32c(c, 88.72);
  xc = intrinsic(c, "llvm.minnum", c->f32, 2, lim);
  lim[0] = xc; lim[1] = f32c(c, -86.5);
  xc = intrinsic(c, "llvm.maxnum", c->f32, 2, lim);
  LLVMValueRef t = LLVMBuildFMul(c->b, xc, f32c(c, 1.4426950408889634), "");
  LLVMValueRef n = intrinsic(c, "llvm.rint", c->f32, 1, &t);
  LLVMValueRef r = fma3(c, n, f32c(c, -0.693145751953125), xc);
  r = fma3(c, n, f32c(c, -1.428606765330187045e-06), r);
  static const double k[] = {1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040};
  LLVMValueRef p = poly(c, r, k, 8);
  LLVMValueRef ni = LLVMBuildFPToSI(c->b, n, c->i32, "");
  /* 2^n as 2^(n-1) * 2, so n = 128 (x near 88.7) does not overflow the
   * exponent field; the lower clamp keeps n - 1 >= -126 (normal floats). */
  LLVMValueRef bits = LLVMBuildShl(c->b, LLVMBuildAdd(c->b, ni, LLVMConstInt(c->i32, 126, 0), ""),
                                   LLVMConstInt(c->i32, 23, 0), "");
  LLVMValueRef scale = LLVMBuildBitCast(c->b, bits, c->f32, "");
  LLVMValueRef y = LLVMBuildFMul(c->b, LLVMBuildFMul(c->b, p, scale, ""), f32c(c, 2.0), "");
  /* Beyond the clamps: 0 below (exp(-86.5) is 3e-38), +inf above; NaN stays NaN. */
  y = LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealOLT, x, f32c(c, -86.5), ""), f32c(c, 0), y, "");
  y = LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealOGT, x, f32c(c, 88.72), ""), f32c(c, 1.0 / 0.0), y, "");
  return LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealUNO, x, x, ""), x, y, "");
}

/* erf: Taylor series below |x| = 0.5; above, 1 - erfc(|x|) with the
 * classic fitted form erfc(z) ~ t exp(-z^2 + P(t)), t = 1 / (1 + z/2), P of
 * degree 9 (fractional error below 1.2e-7), sign restored. */
static LLVMValueRef fast_erf_f32(CG *c, LLVMValueRef x) {
  LLVMValueRef ax = intrinsic(c, "llvm.fabs", c->f32, 1, &x);
  /* small |x|: 2/sqrt(pi) * (x - x^3/3 + x^5/10 - x^7/42 + x^9/216 - x^11/1320) */
  LLVMValueRef x2 = LLVMBuildFMul(c->b, x, x, "");
  static const double s[] = {1.0, -1.0 / 3, 1.0 / 10, -1.0 / 42, 1.0 / 216, -1.0 / 1320};
  LLVMValueRef small = LLVMBuildFMul(c->b, LLVMBuildFMul(c->b, x, poly(c, x2, s, 6), ""),
                                     f32c(c, 1.1283791670955126), "");
  /* large |x|: erfc(z) = t * exp(-z^2 - 1.26551223 + t*(...)), t = 1/(1+z/2) */
  LLVMValueRef t = LLVMBuildFDiv(c->b, f32c(c, 1.0),
                                 fma3(c, ax, f32c(c, 0.5), f32c(c, 1.0)), "");
  static const double q[] = {-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
                             0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277};
  LLVMValueRef e = LLVMBuildFSub(c->b, poly(c, t, q, 10), x2, "");
  LLVMValueRef erfc = LLVMBuildFMul(c->b, t, fast_exp_f32(c, e), "");
  LLVMValueRef big = LLVMBuildFSub(c->b, f32c(c, 1.0), erfc, "");
  LLVMValueRef neg = LLVMBuildFCmp(c->b, LLVMRealOLT, x, f32c(c, 0), "");
  big = LLVMBuildSelect(c->b, neg, LLVMBuildFNeg(c->b, big, ""), big, "");
  LLVMValueRef y = LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealOLT, ax, f32c(c, 0.5), ""), small, big, "");
  return LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealUNO, x, x, ""), x, y, "");
}

/* tanh: odd Taylor series below |x| = 0.3 (no cancellation), else
 * 1 - 2 / (exp(2|x|) + 1) with the sign restored. */
static LLVMValueRef fast_tanh_f32(CG *c, LLVMValueRef x) {
  LLVMValueRef ax = intrinsic(c, "llvm.fabs", c->f32, 1, &x);
  LLVMValueRef x2 = LLVMBuildFMul(c->b, x, x, "");
  static const double s[] = {1.0, -1.0 / 3, 2.0 / 15, -17.0 / 315, 62.0 / 2835, -1382.0 / 155925};
  LLVMValueRef small = LLVMBuildFMul(c->b, x, poly(c, x2, s, 6), "");
  LLVMValueRef e = fast_exp_f32(c, LLVMBuildFMul(c->b, ax, f32c(c, 2.0), ""));
  LLVMValueRef big = LLVMBuildFSub(c->b, f32c(c, 1.0),
                                   LLVMBuildFDiv(c->b, f32c(c, 2.0), LLVMBuildFAdd(c->b, e, f32c(c, 1.0), ""), ""), "");
  LLVMValueRef neg = LLVMBuildFCmp(c->b, LLVMRealOLT, x, f32c(c, 0), "");
  big = LLVMBuildSelect(c->b, neg, LLVMBuildFNeg(c->b, big, ""), big, "");
  LLVMValueRef y = LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealOLT, ax, f32c(c, 0.3), ""), small, big, "");
  return LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealUNO, x, x, ""), x, y, "");
}

static LLVMValueRef emit(CG *c, Expr *e);

static LLVMValueRef emit_index(CG *c, Expr *e) {
  LLVMValueRef idx = ci64(c, e->off);
  for (int v = 0; v < KMAX_VARS; v++) {
    if (!e->stride[v]) continue;
    MATC_ASSERT(c->var[v]);
    LLVMValueRef x = LLVMBuildLoad2(c->b, c->i64, c->var[v], "");
    idx = LLVMBuildAdd(c->b, idx, LLVMBuildMul(c->b, x, ci64(c, e->stride[v]), ""), "");
  }
  for (int d = 0; d < e->ndyn; d++) {
    LLVMValueRef x = emit(c, e->dyn[d]);
    idx = LLVMBuildAdd(c->b, idx, LLVMBuildMul(c->b, x, ci64(c, e->dstride[d]), ""), "");
  }
  return idx;
}

/* A one-scope list, !{!{"kN", !{"kN"}}}, unique to kernel idx. */
static LLVMValueRef kernel_scope(CG *c, int idx) {
  char name[32];
  int len = snprintf(name, sizeof name, "matc.k%d", idx);
  LLVMMetadataRef str = LLVMMDStringInContext2(c->cx, name, len);
  LLVMMetadataRef dom = LLVMMDNodeInContext2(c->cx, &str, 1);
  LLVMMetadataRef scope = LLVMMDNodeInContext2(c->cx, (LLVMMetadataRef[]){str, dom}, 2);
  return LLVMMetadataAsValue(c->cx, LLVMMDNodeInContext2(c->cx, &scope, 1));
}

static LLVMValueRef emit_load(CG *c, Expr *e) {
  LLVMValueRef base = c->base[e->val];
  MATC_ASSERT(base);
  DType dt = c->g->vals[e->val].dt;
  LLVMTypeRef mt = mem_ty(c, dt);
  LLVMValueRef p = LLVMBuildGEP2(c->b, mt, base, (LLVMValueRef[]){emit_index(c, e)}, 1, "");
  LLVMValueRef x = LLVMBuildLoad2(c->b, mt, p, "");
  if (c->scope && value_root(c->g, e->val) != c->out_root)
    LLVMSetMetadata(x, LLVMGetMDKindIDInContext(c->cx, "noalias", 7), c->scope);
  if (dt == DT_BOOL) x = LLVMBuildICmp(c->b, LLVMIntNE, x, LLVMConstInt(c->i8, 0, 0), "");
  return x;
}

static LLVMValueRef emit_un(CG *c, Expr *e) {
  LLVMValueRef x = emit(c, e->a);
  DType dt = e->a->dt;
  LLVMTypeRef t = ty_of(c, dt);
  LLVMValueRef args[2] = {x, NULL};
  if (dt_is_float(dt)) {
    switch (e->op) {
    case U_NEG: return LLVMBuildFNeg(c->b, x, "");
    case U_ABS: return intrinsic(c, "llvm.fabs", t, 1, args);
    case U_EXP: return dt == DT_F32 ? fast_exp_f32(c, x) : intrinsic(c, "llvm.exp", t, 1, args);
    case U_LOG: return intrinsic(c, "llvm.log", t, 1, args);
    case U_SQRT: return intrinsic(c, "llvm.sqrt", t, 1, args);
    case U_RECIP: return LLVMBuildFDiv(c->b, fconst(c, t, 1.0), x, "");
    case U_TANH: return dt == DT_F32 ? fast_tanh_f32(c, x) : libm(c, "tanh", t, 1, args);
    case U_ERF: return dt == DT_F32 ? fast_erf_f32(c, x) : libm(c, "erf", t, 1, args);
    case U_SIGMOID: {
      LLVMValueRef n = LLVMBuildFNeg(c->b, x, "");
      LLVMValueRef ex = dt == DT_F32 ? fast_exp_f32(c, n) : intrinsic(c, "llvm.exp", t, 1, &n);
      return LLVMBuildFDiv(c->b, fconst(c, t, 1.0), LLVMBuildFAdd(c->b, fconst(c, t, 1.0), ex, ""), "");
    }
    case U_SIN: return intrinsic(c, "llvm.sin", t, 1, args);
    case U_COS: return intrinsic(c, "llvm.cos", t, 1, args);
    case U_TAN: return libm(c, "tan", t, 1, args);
    case U_ASIN: return libm(c, "asin", t, 1, args);
    case U_ACOS: return libm(c, "acos", t, 1, args);
    case U_ATAN: return libm(c, "atan", t, 1, args);
    case U_SINH: return libm(c, "sinh", t, 1, args);
    case U_COSH: return libm(c, "cosh", t, 1, args);
    case U_ASINH: return libm(c, "asinh", t, 1, args);
    case U_ACOSH: return libm(c, "acosh", t, 1, args);
    case U_ATANH: return libm(c, "atanh", t, 1, args);
    case U_FLOOR: return intrinsic(c, "llvm.floor", t, 1, args);
    case U_CEIL: return intrinsic(c, "llvm.ceil", t, 1, args);
    case U_ROUND: return intrinsic(c, "llvm.roundeven", t, 1, args);
    case U_SIGN: {
      LLVMValueRef pos = LLVMBuildFCmp(c->b, LLVMRealOGT, x, fconst(c, t, 0), "");
      LLVMValueRef neg = LLVMBuildFCmp(c->b, LLVMRealOLT, x, fconst(c, t, 0), "");
      return LLVMBuildSelect(c->b, pos, fconst(c, t, 1),
                             LLVMBuildSelect(c->b, neg, fconst(c, t, -1), fconst(c, t, 0), ""), "");
    }
    case U_SOFTPLUS: {
      /* log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), stable for any x */
      LLVMValueRef ax = intrinsic(c, "llvm.fabs", t, 1, args);
      LLVMValueRef n = LLVMBuildFNeg(c->b, ax, "");
      LLVMValueRef ex = intrinsic(c, "llvm.exp", t, 1, &n);
      LLVMValueRef lp = libm(c, "log1p", t, 1, &ex);
      LLVMValueRef mx[2] = {x, fconst(c, t, 0)};
      return LLVMBuildFAdd(c->b, intrinsic(c, "llvm.maxnum", t, 2, mx), lp, "");
    }
    case U_ISNAN: return LLVMBuildFCmp(c->b, LLVMRealUNO, x, x, "");
    case U_ISINF: {
      LLVMValueRef ax = intrinsic(c, "llvm.fabs", t, 1, args);
      return LLVMBuildFCmp(c->b, LLVMRealOEQ, ax, fconst(c, t, 1.0 / 0.0), "");
    }
    case U_ISPOSINF: return LLVMBuildFCmp(c->b, LLVMRealOEQ, x, fconst(c, t, 1.0 / 0.0), "");
    case U_ISNEGINF: return LLVMBuildFCmp(c->b, LLVMRealOEQ, x, fconst(c, t, -1.0 / 0.0), "");
    default: MATC_ASSERT(0);
    }
  }
  LLVMValueRef zero = LLVMConstInt(t, 0, 0);
  switch (e->op) {
  case U_NEG: return LLVMBuildNeg(c->b, x, "");
  case U_ABS:
    if (!dt_is_signed(dt)) return x;
    return LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, x, zero, ""),
                           LLVMBuildNeg(c->b, x, ""), x, "");
  case U_SIGN: {
    LLVMValueRef one = LLVMConstInt(t, 1, 0);
    LLVMValueRef pos = LLVMBuildICmp(c->b, dt_is_signed(dt) ? LLVMIntSGT : LLVMIntUGT, x, zero, "");
    if (!dt_is_signed(dt)) return LLVMBuildSelect(c->b, pos, one, zero, "");
    LLVMValueRef neg = LLVMBuildICmp(c->b, LLVMIntSLT, x, zero, "");
    return LLVMBuildSelect(c->b, pos, one,
                           LLVMBuildSelect(c->b, neg, LLVMConstInt(t, (unsigned long long)-1, 1), zero, ""), "");
  }
  case U_NOT: case U_BITNOT: return LLVMBuildNot(c->b, x, "");
  case U_ISNAN: case U_ISINF: case U_ISPOSINF: case U_ISNEGINF: return LLVMConstInt(c->i1, 0, 0);
  default: MATC_ASSERT(0);
  }
  return NULL;
}

static LLVMValueRef emit_bin(CG *c, Expr *e) {
  LLVMValueRef x = emit(c, e->a), y = emit(c, e->b);
  DType dt = e->a->dt;
  LLVMTypeRef t = ty_of(c, dt);
  LLVMValueRef args[2] = {x, y};
  if (dt_is_float(dt)) {
    switch (e->op) {
    case B_ADD: return LLVMBuildFAdd(c->b, x, y, "");
    case B_SUB: return LLVMBuildFSub(c->b, x, y, "");
    case B_MUL: return LLVMBuildFMul(c->b, x, y, "");
    case B_DIV: return LLVMBuildFDiv(c->b, x, y, "");
    case B_MAX: return intrinsic(c, "llvm.maximum", t, 2, args);
    case B_MIN: return intrinsic(c, "llvm.minimum", t, 2, args);
    case B_POW: return intrinsic(c, "llvm.pow", t, 2, args);
    case B_FMOD: return LLVMBuildFRem(c->b, x, y, "");
    case B_EQ: return LLVMBuildFCmp(c->b, LLVMRealOEQ, x, y, "");
    case B_NE: return LLVMBuildFCmp(c->b, LLVMRealUNE, x, y, "");
    case B_LT: return LLVMBuildFCmp(c->b, LLVMRealOLT, x, y, "");
    case B_LE: return LLVMBuildFCmp(c->b, LLVMRealOLE, x, y, "");
    case B_GT: return LLVMBuildFCmp(c->b, LLVMRealOGT, x, y, "");
    case B_GE: return LLVMBuildFCmp(c->b, LLVMRealOGE, x, y, "");
    default: MATC_ASSERT(0);
    }
  }
  int s = dt_is_signed(dt);
  LLVMValueRef zero = LLVMConstInt(t, 0, 0), one = LLVMConstInt(t, 1, 0);
  switch (e->op) {
  case B_ADD: return LLVMBuildAdd(c->b, x, y, "");
  case B_SUB: return LLVMBuildSub(c->b, x, y, "");
  case B_MUL: return LLVMBuildMul(c->b, x, y, "");
  case B_DIV: case B_FMOD: case B_IMOD: {
    /* Division by zero traps on x86; ONNX leaves it undefined, matc gives 0.
     * MIN / -1 traps too: a signed division by -1 is a (wrapping) negation,
     * its remainder 0, as in the interpreter. */
    LLVMValueRef isz = LLVMBuildICmp(c->b, LLVMIntEQ, y, zero, "");
    LLVMValueRef neg1 = s ? LLVMBuildICmp(c->b, LLVMIntEQ, y, LLVMConstAllOnes(t), "") : NULL;
    LLVMValueRef d = LLVMBuildSelect(c->b, s ? LLVMBuildOr(c->b, isz, neg1, "") : isz, one, y, "");
    LLVMValueRef r;
    if (e->op == B_DIV) r = s ? LLVMBuildSDiv(c->b, x, d, "") : LLVMBuildUDiv(c->b, x, d, "");
    else r = s ? LLVMBuildSRem(c->b, x, d, "") : LLVMBuildURem(c->b, x, d, "");
    if (e->op == B_DIV && s) r = LLVMBuildSelect(c->b, neg1, LLVMBuildNeg(c->b, x, ""), r, "");
    if (e->op == B_IMOD && s) {
      /* Python-style: the remainder takes the divisor's sign. */
      LLVMValueRef nz = LLVMBuildICmp(c->b, LLVMIntNE, r, zero, "");
      LLVMValueRef rs = LLVMBuildICmp(c->b, LLVMIntSLT, r, zero, "");
      LLVMValueRef ds = LLVMBuildICmp(c->b, LLVMIntSLT, d, zero, "");
      LLVMValueRef fix = LLVMBuildAnd(c->b, nz, LLVMBuildXor(c->b, rs, ds, ""), "");
      r = LLVMBuildSelect(c->b, fix, LLVMBuildAdd(c->b, r, d, ""), r, "");
    }
    return LLVMBuildSelect(c->b, isz, zero, r, "");
  }
  case B_MAX: return LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, s ? LLVMIntSGT : LLVMIntUGT, x, y, ""), x, y, "");
  case B_MIN: return LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, s ? LLVMIntSLT : LLVMIntULT, x, y, ""), x, y, "");
  case B_POW: {
    LLVMValueRef fx = s ? LLVMBuildSIToFP(c->b, x, c->f64, "") : LLVMBuildUIToFP(c->b, x, c->f64, "");
    LLVMValueRef fy = s ? LLVMBuildSIToFP(c->b, y, c->f64, "") : LLVMBuildUIToFP(c->b, y, c->f64, "");
    LLVMValueRef pa[2] = {fx, fy};
    LLVMValueRef p = intrinsic(c, "llvm.pow", c->f64, 2, pa);
    return s ? LLVMBuildFPToSI(c->b, p, t, "") : LLVMBuildFPToUI(c->b, p, t, "");
  }
  case B_HASH: {
    /* splitmix64 of x + y * golden ratio (the interpreter does the same) */
    LLVMValueRef s = LLVMBuildAdd(c->b, x, LLVMBuildMul(c->b, y, LLVMConstInt(t, 0x9E3779B97F4A7C15ull, 0), ""), "");
    s = LLVMBuildMul(c->b, LLVMBuildXor(c->b, s, LLVMBuildLShr(c->b, s, LLVMConstInt(t, 30, 0), ""), ""),
                     LLVMConstInt(t, 0xBF58476D1CE4E5B9ull, 0), "");
    s = LLVMBuildMul(c->b, LLVMBuildXor(c->b, s, LLVMBuildLShr(c->b, s, LLVMConstInt(t, 27, 0), ""), ""),
                     LLVMConstInt(t, 0x94D049BB133111EBull, 0), "");
    return LLVMBuildXor(c->b, s, LLVMBuildLShr(c->b, s, LLVMConstInt(t, 31, 0), ""), "");
  }
  case B_AND: case B_BITAND: return LLVMBuildAnd(c->b, x, y, "");
  case B_OR: case B_BITOR: return LLVMBuildOr(c->b, x, y, "");
  case B_XOR: case B_BITXOR: return LLVMBuildXor(c->b, x, y, "");
  case B_SHL: case B_SHR: {
    unsigned bits = LLVMGetIntTypeWidth(t);
    LLVMValueRef big = LLVMBuildICmp(c->b, LLVMIntUGE, y, LLVMConstInt(t, bits, 0), "");
    LLVMValueRef sy = LLVMBuildSelect(c->b, big, zero, y, "");
    LLVMValueRef r = e->op == B_SHL ? LLVMBuildShl(c->b, x, sy, "") : LLVMBuildLShr(c->b, x, sy, "");
    return LLVMBuildSelect(c->b, big, zero, r, "");
  }
  case B_EQ: return LLVMBuildICmp(c->b, LLVMIntEQ, x, y, "");
  case B_NE: return LLVMBuildICmp(c->b, LLVMIntNE, x, y, "");
  case B_LT: return LLVMBuildICmp(c->b, s ? LLVMIntSLT : LLVMIntULT, x, y, "");
  case B_LE: return LLVMBuildICmp(c->b, s ? LLVMIntSLE : LLVMIntULE, x, y, "");
  case B_GT: return LLVMBuildICmp(c->b, s ? LLVMIntSGT : LLVMIntUGT, x, y, "");
  case B_GE: return LLVMBuildICmp(c->b, s ? LLVMIntSGE : LLVMIntUGE, x, y, "");
  default: MATC_ASSERT(0);
  }
  return NULL;
}

static LLVMValueRef emit_cast(CG *c, DType to, DType from, LLVMValueRef x) {
  if (to == from) return x;
  LLVMTypeRef tt = ty_of(c, to);
  if (to == DT_BOOL) {
    if (dt_is_float(from)) return LLVMBuildFCmp(c->b, LLVMRealUNE, x, fconst(c, ty_of(c, from), 0), "");
    return LLVMBuildICmp(c->b, LLVMIntNE, x, LLVMConstInt(ty_of(c, from), 0, 0), "");
  }
  if (dt_is_float(to)) {
    if (dt_is_float(from)) return LLVMBuildFPCast(c->b, x, tt, "");
    if (dt_is_signed(from)) return LLVMBuildSIToFP(c->b, x, tt, "");
    return LLVMBuildUIToFP(c->b, x, tt, "");
  }
  if (dt_is_float(from)) {
    /* fptosi of NaN or an out-of-range value is poison; the saturating
     * intrinsics give a defined answer (NaN -> 0). */
    LLVMTypeRef ts[2] = {tt, ty_of(c, from)};
    const char *nm = dt_is_signed(to) ? "llvm.fptosi.sat" : "llvm.fptoui.sat";
    unsigned id = LLVMLookupIntrinsicID(nm, strlen(nm));
    LLVMValueRef f = LLVMGetIntrinsicDeclaration(c->mod, id, ts, 2);
    LLVMTypeRef ft = LLVMIntrinsicGetType(c->cx, id, ts, 2);
    if (!dt_is_signed(to) && to != DT_BOOL) {
      /* ONNX (and numpy) cast negative floats to unsigned by wrapping. */
      LLVMTypeRef ts2[2] = {tt, ty_of(c, from)};
      unsigned id2 = LLVMLookupIntrinsicID("llvm.fptosi.sat", 15);
      LLVMValueRef f2 = LLVMGetIntrinsicDeclaration(c->mod, id2, ts2, 2);
      return LLVMBuildCall2(c->b, LLVMIntrinsicGetType(c->cx, id2, ts2, 2), f2, &x, 1, "");
    }
    return LLVMBuildCall2(c->b, ft, f, &x, 1, "");
  }
  unsigned wt = LLVMGetIntTypeWidth(tt), wf = LLVMGetIntTypeWidth(ty_of(c, from));
  if (wt == wf) return x;
  if (wt < wf) return LLVMBuildTrunc(c->b, x, tt, "");
  return (dt_is_signed(from)) ? LLVMBuildSExt(c->b, x, tt, "") : LLVMBuildZExt(c->b, x, tt, "");
}

static LLVMValueRef emit(CG *c, Expr *e) {
  for (int i = 0; i < c->nmemo; i++)
    if (c->memo_e[i] == e) return c->memo_v[i];
  LLVMValueRef r = NULL;
  switch (e->kind) {
  case EX_CONST:
    if (dt_is_float(e->dt)) r = fconst(c, ty_of(c, e->dt), e->f);
    else r = LLVMConstInt(ty_of(c, e->dt), (unsigned long long)e->i, dt_is_signed(e->dt));
    break;
  case EX_INDEX:
    r = LLVMBuildLoad2(c->b, c->i64, c->var[e->var], "");
    break;
  case EX_ACC: r = c->acc; break;
  case EX_LOAD: r = emit_load(c, e); break;
  case EX_UN: r = emit_un(c, e); break;
  case EX_BIN: r = emit_bin(c, e); break;
  case EX_SEL: {
    LLVMValueRef cond = emit(c, e->c);
    LLVMValueRef a = emit(c, e->a), b = emit(c, e->b);
    r = LLVMBuildSelect(c->b, cond, a, b, "");
    break;
  }
  case EX_CAST: r = emit_cast(c, e->dt, e->a->dt, emit(c, e->a)); break;
  }
  if (c->nmemo == c->capmemo) {
    c->capmemo = c->capmemo ? c->capmemo * 2 : 64;
    c->memo_e = realloc(c->memo_e, sizeof(Expr *) * c->capmemo);
    c->memo_v = realloc(c->memo_v, sizeof(LLVMValueRef) * c->capmemo);
  }
  c->memo_e[c->nmemo] = e;
  c->memo_v[c->nmemo] = r;
  c->nmemo++;
  return r;
}

/* ---------------------------------------------------------------- loops */

typedef struct {
  LLVMBasicBlockRef header, body, exit;
  LLVMValueRef var;
  LLVMValueRef end;
} Loop;

/* for (*var = start; *var < end; ++*var) { ...caller emits body... } */
static void loop_begin(CG *c, Loop *l, LLVMValueRef var, LLVMValueRef start, LLVMValueRef end) {
  l->var = var;
  l->end = end;
  l->header = LLVMAppendBasicBlockInContext(c->cx, c->fn, "loop");
  l->body = LLVMAppendBasicBlockInContext(c->cx, c->fn, "body");
  l->exit = LLVMAppendBasicBlockInContext(c->cx, c->fn, "exit");
  LLVMBuildStore(c->b, start, var);
  LLVMBuildBr(c->b, l->header);
  LLVMPositionBuilderAtEnd(c->b, l->header);
  LLVMValueRef i = LLVMBuildLoad2(c->b, c->i64, var, "");
  LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, i, end, ""), l->body, l->exit);
  LLVMPositionBuilderAtEnd(c->b, l->body);
}

static void loop_end(CG *c, Loop *l) {
  LLVMValueRef i = LLVMBuildLoad2(c->b, c->i64, l->var, "");
  LLVMBuildStore(c->b, LLVMBuildAdd(c->b, i, ci64(c, 1), ""), l->var);
  LLVMValueRef br = LLVMBuildBr(c->b, l->header);
  if (c->no_unroll) {
    /* loop ID !{self, !{"llvm.loop.unroll.disable"}} on the back edge; the
     * vectorizer keeps it on the loops it makes */
    LLVMMetadataRef self = LLVMTemporaryMDNode(c->cx, NULL, 0);
    LLVMMetadataRef s = LLVMMDStringInContext2(c->cx, "llvm.loop.unroll.disable", 24);
    LLVMMetadataRef ops[2] = {self, LLVMMDNodeInContext2(c->cx, &s, 1)};
    LLVMMetadataRef id = LLVMMDNodeInContext2(c->cx, ops, 2);
    LLVMMetadataReplaceAllUsesWith(self, id);
    LLVMSetMetadata(br, LLVMGetMDKindIDInContext(c->cx, "llvm.loop", 9), LLVMMetadataAsValue(c->cx, id));
  }
  LLVMPositionBuilderAtEnd(c->b, l->exit);
}

static LLVMValueRef entry_alloca(CG *c, LLVMTypeRef t) {
  LLVMBasicBlockRef cur = LLVMGetInsertBlock(c->b);
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(c->fn);
  LLVMValueRef first = LLVMGetFirstInstruction(entry);
  if (first) LLVMPositionBuilderBefore(c->b, first);
  else LLVMPositionBuilderAtEnd(c->b, entry);
  LLVMValueRef a = LLVMBuildAlloca(c->b, t, "");
  LLVMPositionBuilderAtEnd(c->b, cur);
  return a;
}

static void collect_vals(Expr *e, char *used) {
  if (!e) return;
  if (e->kind == EX_LOAD) {
    used[e->val] = 1;
    for (int d = 0; d < e->ndyn; d++) collect_vals(e->dyn[d], used);
  }
  collect_vals(e->a, used);
  collect_vals(e->b, used);
  collect_vals(e->c, used);
}

static LLVMValueRef red_init(CG *c, ReduceKind red, DType dt) {
  LLVMTypeRef t = ty_of(c, dt);
  int f = dt_is_float(dt), s = dt_is_signed(dt);
  unsigned bits = f ? 0 : LLVMGetIntTypeWidth(t);
  switch (red) {
  case R_SUM: return f ? fconst(c, t, 0) : LLVMConstInt(t, 0, 0);
  case R_PROD: return f ? fconst(c, t, 1) : LLVMConstInt(t, 1, 0);
  case R_MAX: case R_ARGMAX:
    if (f) return fconst(c, t, -1.0 / 0.0);
    return s ? LLVMConstInt(t, 1ull << (bits - 1), 0) : LLVMConstInt(t, 0, 0);
  case R_MIN: case R_ARGMIN:
    if (f) return fconst(c, t, 1.0 / 0.0);
    return s ? LLVMConstInt(t, (1ull << (bits - 1)) - 1, 0) : LLVMConstAllOnes(t);
  default: MATC_ASSERT(0);
  }
  return NULL;
}

static void set_reassoc(LLVMValueRef inst) {
  if (LLVMCanValueUseFastMathFlags(inst))
    LLVMSetFastMathFlags(inst, LLVMFastMathAllowReassoc | LLVMFastMathNoSignedZeros);
}

static LLVMValueRef combine(CG *c, ReduceKind red, DType dt, LLVMValueRef acc, LLVMValueRef x) {
  int f = dt_is_float(dt), s = dt_is_signed(dt);
  LLVMValueRef r;
  switch (red) {
  case R_SUM:
    r = f ? LLVMBuildFAdd(c->b, acc, x, "") : LLVMBuildAdd(c->b, acc, x, "");
    if (f) set_reassoc(r);
    return r;
  case R_PROD:
    r = f ? LLVMBuildFMul(c->b, acc, x, "") : LLVMBuildMul(c->b, acc, x, "");
    if (f) set_reassoc(r);
    return r;
  case R_MAX: {
    if (f) {
      LLVMValueRef a[2] = {acc, x};
      return intrinsic(c, "llvm.maximum", ty_of(c, dt), 2, a);
    }
    return LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, s ? LLVMIntSGT : LLVMIntUGT, x, acc, ""), x, acc, "");
  }
  case R_MIN: {
    if (f) {
      LLVMValueRef a[2] = {acc, x};
      return intrinsic(c, "llvm.minimum", ty_of(c, dt), 2, a);
    }
    return LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, s ? LLVMIntSLT : LLVMIntULT, x, acc, ""), x, acc, "");
  }
  default: MATC_ASSERT(0);
  }
  return NULL;
}

/* A loop kernel's function name: k<index>, or <entry>_k<index> when the
 * parts of a graph call each other's kernels (an AOT trainer links several
 * graphs' parts into one program). */
static void kernel_name(const CG *c, int k, char *name, size_t len) {
  if (c->shared) snprintf(name, len, "%.120s_k%d", c->entry, k);
  else snprintf(name, len, "k%d", k);
}

/* Emits kernel idx[0] and the n - 1 kernels joined to it (see
 * kernel_joins) as one function: one loop nest, every member's body and
 * store in its innermost loop. */
static void emit_loop_kernel(CG *c, const int *idx, int n) {
  Graph *g = c->g;
  Kernel *k = &g->kernels[idx[0]];
  char name[160];
  kernel_name(c, idx[0], name, sizeof name);
  c->fn = LLVMAddFunction(c->mod, name, c->task_ty);
  if (c->shared) LLVMSetVisibility(c->fn, LLVMHiddenVisibility);
  else LLVMSetLinkage(c->fn, LLVMInternalLinkage);
  c->bufs = LLVMGetParam(c->fn, 0);
  LLVMValueRef lo = LLVMGetParam(c->fn, 1), hi = LLVMGetParam(c->fn, 2);
  LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(c->cx, c->fn, "entry");
  LLVMPositionBuilderAtEnd(c->b, entry);
  c->out_root = value_root(g, k->out);
  c->scope = kernel_scope(c, idx[0]);
  c->no_unroll = k->no_unroll;

  /* Base pointers of every value the kernel touches, loaded once. */
  char *used = calloc(g->nvals, 1);
  for (int m = 0; m < n; m++) {
    collect_vals(g->kernels[idx[m]].body, used);
    collect_vals(g->kernels[idx[m]].post, used);
    used[g->kernels[idx[m]].out] = 1;
  }
  memset(c->base, 0, sizeof(LLVMValueRef) * g->nvals);
  for (int v = 0; v < g->nvals; v++) {
    if (!used[v]) continue;
    LLVMValueRef slot = LLVMBuildGEP2(c->b, c->ptr, c->bufs, (LLVMValueRef[]){ci64(c, v)}, 1, "");
    c->base[v] = LLVMBuildLoad2(c->b, c->ptr, slot, g->vals[v].name);
  }
  free(used);
  memset(c->var, 0, sizeof c->var);
  int nall = k->nvar + k->nred;
  for (int v = 0; v < nall; v++) c->var[v] = LLVMBuildAlloca(c->b, c->i64, "");

  Loop loops[KMAX_VARS];
  for (int v = 0; v < k->nvar; v++)
    loop_begin(c, &loops[v], c->var[v], v == 0 ? lo : ci64(c, 0), v == 0 ? hi : ci64(c, k->ext[v]));
  if (k->nvar == 0) {
    /* A scalar kernel: run once, by whoever gets iteration 0. */
    LLVMBasicBlockRef run = LLVMAppendBasicBlockInContext(c->cx, c->fn, "run");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->cx, c->fn, "done");
    LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, lo, hi, ""), run, done);
    LLVMPositionBuilderAtEnd(c->b, run);
    loops[0].exit = done;
  }

  /* The output index depends only on the outer vars. */
  Expr store = {0};
  store.kind = EX_LOAD;
  store.off = k->out_off;
  for (int v = 0; v < k->nvar; v++) store.stride[v] = k->out_stride[v];
  c->nmemo = 0;
  LLVMValueRef oidx = emit_index(c, &store);
  LLVMValueRef val;
  DType bdt = k->body->dt;
  if (k->red == R_NONE) {
    val = emit(c, k->body);
  } else {
    LLVMValueRef acc = entry_alloca(c, ty_of(c, bdt));
    LLVMValueRef best = NULL, cnt = NULL;
    LLVMBuildStore(c->b, red_init(c, k->red, bdt), acc);
    int arg = k->red == R_ARGMAX || k->red == R_ARGMIN;
    if (arg) {
      best = entry_alloca(c, c->i64);
      cnt = entry_alloca(c, c->i64);
      LLVMBuildStore(c->b, ci64(c, -1), best);
      LLVMBuildStore(c->b, ci64(c, 0), cnt);
    }
    Loop rl[KMAX_VARS];
    for (int v = k->nvar; v < nall; v++) loop_begin(c, &rl[v], c->var[v], ci64(c, 0), ci64(c, k->ext[v]));
    c->nmemo = 0;
    LLVMValueRef x = emit(c, k->body);
    LLVMValueRef a = LLVMBuildLoad2(c->b, ty_of(c, bdt), acc, "");
    if (arg) {
      /* First index wins ties; NaN is never "better". */
      LLVMValueRef better;
      int f = dt_is_float(bdt), s = dt_is_signed(bdt);
      if (k->red == R_ARGMAX)
        better = f ? LLVMBuildFCmp(c->b, LLVMRealOGT, x, a, "")
                   : LLVMBuildICmp(c->b, s ? LLVMIntSGT : LLVMIntUGT, x, a, "");
      else
        better = f ? LLVMBuildFCmp(c->b, LLVMRealOLT, x, a, "")
                   : LLVMBuildICmp(c->b, s ? LLVMIntSLT : LLVMIntULT, x, a, "");
      LLVMValueRef bi = LLVMBuildLoad2(c->b, c->i64, best, "");
      better = LLVMBuildOr(c->b, better, LLVMBuildICmp(c->b, LLVMIntSLT, bi, ci64(c, 0), ""), "");
      LLVMValueRef q = LLVMBuildLoad2(c->b, c->i64, cnt, "");
      LLVMBuildStore(c->b, LLVMBuildSelect(c->b, better, x, a, ""), acc);
      LLVMBuildStore(c->b, LLVMBuildSelect(c->b, better, q, bi, ""), best);
      LLVMBuildStore(c->b, LLVMBuildAdd(c->b, q, ci64(c, 1), ""), cnt);
    } else {
      LLVMBuildStore(c->b, combine(c, k->red, bdt, a, x), acc);
    }
    for (int v = nall - 1; v >= k->nvar; v--) loop_end(c, &rl[v]);
    if (arg) {
      LLVMValueRef bi = LLVMBuildLoad2(c->b, c->i64, best, "");
      c->acc = bi;
    } else {
      c->acc = LLVMBuildLoad2(c->b, ty_of(c, bdt), acc, "");
    }
    c->nmemo = 0;
    val = k->post ? emit(c, k->post) : c->acc;
  }
  DType vdt = bdt;
  if (k->red != R_NONE && k->post) vdt = k->post->dt;
  else if (k->red == R_ARGMAX || k->red == R_ARGMIN) vdt = DT_I64;
  val = emit_cast(c, k->out_dt, vdt, val);
  if (k->out_dt == DT_BOOL) val = LLVMBuildZExt(c->b, val, c->i8, "");
  LLVMTypeRef mt = mem_ty(c, k->out_dt);
  LLVMValueRef p = LLVMBuildGEP2(c->b, mt, c->base[k->out], &oidx, 1, "");
  LLVMValueRef st = LLVMBuildStore(c->b, val, p);
  LLVMSetMetadata(st, LLVMGetMDKindIDInContext(c->cx, "alias.scope", 11), c->scope);
  /* The joined kernels: plain elementwise bodies over the same vars and
   * output strides; only the offset differs. */
  for (int m = 1; m < n; m++) {
    Kernel *km = &g->kernels[idx[m]];
    store.off = km->out_off;
    c->nmemo = 0;
    LLVMValueRef mi = emit_index(c, &store);
    LLVMValueRef mv = emit_cast(c, km->out_dt, km->body->dt, emit(c, km->body));
    if (km->out_dt == DT_BOOL) mv = LLVMBuildZExt(c->b, mv, c->i8, "");
    LLVMValueRef mp = LLVMBuildGEP2(c->b, mem_ty(c, km->out_dt), c->base[km->out], &mi, 1, "");
    LLVMValueRef ms = LLVMBuildStore(c->b, mv, mp);
    LLVMSetMetadata(ms, LLVMGetMDKindIDInContext(c->cx, "alias.scope", 11), c->scope);
  }
  if (k->nvar == 0) {
    LLVMBuildBr(c->b, loops[0].exit);
    LLVMPositionBuilderAtEnd(c->b, loops[0].exit);
  }
  for (int v = k->nvar - 1; v >= 0; v--) loop_end(c, &loops[v]);
  LLVMBuildRetVoid(c->b);
}

static LLVMValueRef declare(CG *c, const char *name, LLVMTypeRef ft) {
  LLVMValueRef f = LLVMGetNamedFunction(c->mod, name);
  return f ? f : LLVMAddFunction(c->mod, name, ft);
}

static const char *extern_names[] = {
#define X(n, fn) #fn,
    MATC_EXTERNS(X)
#undef X
};

static int64_t kernel_cost(Kernel *k) {
  int64_t c = 1;
  for (int v = 1; v < k->nvar + k->nred; v++) c *= k->ext[v];
  return c;
}

/* MAT guards: true when the kernel's predicate holds, the OR of its
 * modules' guard bytes (negated for a zeroing kernel). */
static LLVMValueRef guard_cond(CG *c, LLVMValueRef guards, int pred) {
  Graph *g = c->g;
  const Guards *gd = g->guards;
  const uint64_t *set = gd->sets + (size_t)pred * gd->nwords;
  LLVMValueRef any = NULL;
  for (int m = 0; m < g->nmodules; m++) {
    if (!((set[m / 64] >> (m % 64)) & 1)) continue;
    LLVMValueRef p = LLVMBuildGEP2(c->b, c->i8, guards, (LLVMValueRef[]){ci64(c, m)}, 1, "");
    LLVMValueRef byte = LLVMBuildLoad2(c->b, c->i8, p, "");
    LLVMValueRef on = LLVMBuildICmp(c->b, LLVMIntNE, byte, LLVMConstInt(c->i8, 0, 0), "");
    any = any ? LLVMBuildOr(c->b, any, on, "") : on;
  }
  if (!any) any = LLVMConstInt(c->i1, 0, 0);
  return gd->negate[pred] ? LLVMBuildNot(c->b, any, "") : any;
}

/* Ends a guarded kernel's block (and its timing) and continues after it. */
static void guard_close(CG *c, LLVMBasicBlockRef after, int *prev, LLVMTypeRef prof_ty, LLVMValueRef prof_end) {
  if (!after) return;
  if (c->g->profile && *prev >= 0) {
    LLVMBuildCall2(c->b, prof_ty, prof_end, (LLVMValueRef[]){ci64(c, *prev)}, 1, "");
    *prev = -1;
  }
  LLVMBuildBr(c->b, after);
  LLVMPositionBuilderAtEnd(c->b, after);
}

/* Expression nodes: a kernel's share of optimization and code generation
 * time, for splitting kernels between parts. */
static int64_t expr_nodes(const Expr *e) {
  if (!e) return 0;
  int64_t n = 1;
  if (e->kind == EX_LOAD)
    for (int d = 0; d < e->ndyn; d++) n += expr_nodes(e->dyn[d]);
  return n + expr_nodes(e->a) + expr_nodes(e->b) + expr_nodes(e->c);
}

static void emit_entry(CG *c, const char *entry, LLVMValueRef *kfn, const char *joined);

int codegen_module(Graph *g, LLVMContextRef cx, LLVMModuleRef mod, const char *entry) {
  return codegen_module_part(g, cx, mod, entry, 0, 1);
}

int codegen_module_part(Graph *g, LLVMContextRef cx, LLVMModuleRef mod, const char *entry, int part,
                        int nparts) {
  CG c = {0};
  c.shared = nparts > 1;
  c.entry = entry;
  c.g = g;
  c.cx = cx;
  c.mod = mod;
  c.b = LLVMCreateBuilderInContext(cx);
  c.i1 = LLVMInt1TypeInContext(cx);
  c.i8 = LLVMInt8TypeInContext(cx);
  c.i16 = LLVMInt16TypeInContext(cx);
  c.i32 = LLVMInt32TypeInContext(cx);
  c.i64 = LLVMInt64TypeInContext(cx);
  c.f32 = LLVMFloatTypeInContext(cx);
  c.f64 = LLVMDoubleTypeInContext(cx);
  c.ptr = LLVMPointerTypeInContext(cx, 0);
  c.vd = LLVMVoidTypeInContext(cx);
  c.task_ty = LLVMFunctionType(c.vd, (LLVMTypeRef[]){c.ptr, c.i64, c.i64}, 3, 0);
  c.ext_ty = LLVMFunctionType(c.vd, (LLVMTypeRef[]){c.ptr, c.ptr}, 2, 0);
  c.base = calloc(g->nvals, sizeof(LLVMValueRef));

  LLVMValueRef *kfn = calloc(g->nkernels + 1, sizeof(LLVMValueRef));
  /* MATC_NO_JOIN=1 emits every kernel alone (for tests and side-by-side
   * measurements). */
  const char *nj = getenv("MATC_NO_JOIN");
  int may_join = !(nj && *nj && *nj != '0');
  char *joined = calloc(g->nkernels + 1, 1);
  int *run = malloc(sizeof(int) * (g->nkernels + 1));
  /* Each run of joined kernels goes to the part with the least work so
   * far (every part computes the same split); part 0 also has the entry
   * function, which declares the kernels the other parts define. */
  int64_t *load = calloc((size_t)nparts, sizeof(int64_t));
  for (int i = 0; i < g->nkernels; i++) {
    if (g->kernels[i].kind != K_LOOP || g->kernels[i].dead || joined[i]) continue;
    int n = 0;
    run[n++] = i;
    for (int j = i + 1; j < g->nkernels; j++) {
      if (g->kernels[j].dead) continue;
      if (!may_join || !kernel_joins(g, run, n, j)) break;
      run[n++] = j;
      joined[j] = 1;
    }
    int64_t work = 16;
    for (int m = 0; m < n; m++)
      work += expr_nodes(g->kernels[run[m]].body) + expr_nodes(g->kernels[run[m]].post);
    int owner = 0;
    for (int p = 1; p < nparts; p++)
      if (load[p] < load[owner]) owner = p;
    load[owner] += work;
    if (owner == part) {
      emit_loop_kernel(&c, run, n);
      kfn[i] = c.fn;
    } else if (part == 0) {
      char name[160];
      kernel_name(&c, i, name, sizeof name);
      kfn[i] = LLVMAddFunction(mod, name, c.task_ty);
      LLVMSetVisibility(kfn[i], LLVMHiddenVisibility);
    }
  }
  free(run);
  free(load);
  if (part == 0) emit_entry(&c, entry, kfn, joined);
  free(kfn);
  free(joined);
  free(c.base);
  free(c.memo_e);
  free(c.memo_v);
  LLVMDisposeBuilder(c.b);
  return MATC_OK;
}

/* The entry function `void entry(void **bufs)`: every live kernel in
 * order, loop kernels through the thread pool (kfn: their functions,
 * defined here or declared from another part), extern kernels called
 * directly, each under its guard and profiling timers. */
static void emit_entry(CG *c, const char *entry, LLVMValueRef *kfn, const char *joined) {
  Graph *g = c->g;
  LLVMContextRef cx = c->cx;
  LLVMModuleRef mod = c->mod;
  LLVMTypeRef main_ty = LLVMFunctionType(c->vd, (LLVMTypeRef[]){c->ptr}, 1, 0);
  LLVMValueRef mainf = LLVMAddFunction(mod, entry, main_ty);
  c->fn = mainf;
  LLVMValueRef bufs = LLVMGetParam(mainf, 0);
  LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(cx, mainf, "entry"));
  LLVMTypeRef pf_ty = LLVMFunctionType(c->vd, (LLVMTypeRef[]){c->ptr, c->ptr, c->i64, c->i64}, 4, 0);
  LLVMValueRef pf = declare(c, "matc_rt_parallel_for", pf_ty);
  LLVMValueRef argv = LLVMBuildAlloca(c->b, LLVMArrayType(c->ptr, KMAX_EXT_ARGS), "argv");
  /* With profiling on, every kernel call is bracketed by timer calls. */
  LLVMTypeRef prof_ty = LLVMFunctionType(c->vd, (LLVMTypeRef[]){c->i64}, 1, 0);
  LLVMValueRef prof_begin = g->profile ? declare(c, "matc_rt_prof_begin", prof_ty) : NULL;
  LLVMValueRef prof_end = g->profile ? declare(c, "matc_rt_prof_end", prof_ty) : NULL;
  int prev = -1;
  /* MAT guards: the guard bytes, read once per step (the runtime writes
   * them between steps). */
  LLVMValueRef guards = NULL;
  if (g->guards && g->guard_value >= 0) {
    LLVMValueRef slot = LLVMBuildGEP2(c->b, c->ptr, bufs, (LLVMValueRef[]){ci64(c, g->guard_value)}, 1, "");
    guards = LLVMBuildLoad2(c->b, c->ptr, slot, "guards");
  }
  for (int i = 0; i < g->nkernels; i++) {
    Kernel *k = &g->kernels[i];
    if (k->dead || joined[i]) continue;
    /* A guarded kernel: branch around its call (and its timing). */
    LLVMBasicBlockRef after = NULL;
    if (guards && k->pred > 0) {
      if (g->profile && prev >= 0) {
        LLVMBuildCall2(c->b, prof_ty, prof_end, (LLVMValueRef[]){ci64(c, prev)}, 1, "");
        prev = -1;
      }
      LLVMValueRef cond = guard_cond(c, guards, k->pred);
      LLVMBasicBlockRef run = LLVMAppendBasicBlockInContext(cx, mainf, "guarded");
      after = LLVMAppendBasicBlockInContext(cx, mainf, "next");
      LLVMBuildCondBr(c->b, cond, run, after);
      LLVMPositionBuilderAtEnd(c->b, run);
    }
    if (g->profile) {
      if (prev >= 0) LLVMBuildCall2(c->b, prof_ty, prof_end, (LLVMValueRef[]){ci64(c, prev)}, 1, "");
      LLVMBuildCall2(c->b, prof_ty, prof_begin, (LLVMValueRef[]){ci64(c, i)}, 1, "");
      prev = i;
    }
    if (k->kind == K_LOOP) {
      int64_t n = k->nvar ? k->ext[0] : 1;
      LLVMValueRef args[4] = {kfn[i], bufs, ci64(c, n), ci64(c, kernel_cost(k))};
      LLVMBuildCall2(c->b, pf_ty, pf, args, 4, "");
      guard_close(c, after, &prev, prof_ty, prof_end);
      continue;
    }
    for (int j = 0; j < k->nargs; j++) {
      LLVMValueRef slot = LLVMBuildGEP2(c->b, c->ptr, bufs, (LLVMValueRef[]){ci64(c, k->args[j])}, 1, "");
      LLVMValueRef p = LLVMBuildLoad2(c->b, c->ptr, slot, "");
      p = LLVMBuildGEP2(c->b, c->i8, p,
                        (LLVMValueRef[]){ci64(c, k->argoff[j] * dt_size(g->vals[k->args[j]].dt))}, 1, "");
      LLVMValueRef dst = LLVMBuildGEP2(c->b, c->ptr, argv, (LLVMValueRef[]){ci64(c, j)}, 1, "");
      LLVMBuildStore(c->b, p, dst);
    }
    LLVMValueRef *pv = malloc(sizeof(LLVMValueRef) * (k->np + 1));
    for (int j = 0; j < k->np; j++) pv[j] = ci64(c, k->p[j]);
    LLVMValueRef arr = LLVMConstArray2(c->i64, pv, k->np);
    free(pv);
    LLVMValueRef gv = LLVMAddGlobal(mod, LLVMTypeOf(arr), "");
    LLVMSetInitializer(gv, arr);
    LLVMSetGlobalConstant(gv, 1);
    LLVMSetLinkage(gv, LLVMPrivateLinkage);
    LLVMValueRef f = declare(c, extern_names[k->ext_fn], c->ext_ty);
    LLVMBuildCall2(c->b, c->ext_ty, f, (LLVMValueRef[]){argv, gv}, 2, "");
    guard_close(c, after, &prev, prof_ty, prof_end);
  }
  if (g->profile && prev >= 0)
    LLVMBuildCall2(c->b, prof_ty, prof_end, (LLVMValueRef[]){ci64(c, prev)}, 1, "");
  LLVMBuildRetVoid(c->b);
}
