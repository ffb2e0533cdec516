/* rt.h: what generated code and trainers link against. No LLVM here: an
 * ahead-of-time trainer runs with this runtime alone. */
#ifndef MATC_RT_H
#define MATC_RT_H

#include <stdint.h>

/* A loop kernel's body over outer iterations [lo, hi). */
typedef void (*MatcTaskFn)(void **bufs, int64_t lo, int64_t hi);

/* Runs fn over [0, n) on the thread pool when the work (n * cost, in
 * rough element operations) is large enough to pay for it, else inline. */
void matc_rt_parallel_for(MatcTaskFn fn, void **bufs, int64_t n, int64_t cost);
void matc_rt_set_threads(int n);   /* 0 = one per core */
int matc_rt_threads(void);

/* Extern kernels: void fn(void **ptrs, const int64_t *params). */

/* Batched GEMM, C = alpha * op(A) op(B) + beta * C, over up to
 * GEMM_MAX_BATCH nested batch levels, each with its own element strides
 * for A, B and C (stride 0 broadcasts); ptrs = {A, B, C}. */
#define GEMM_MAX_BATCH 6
enum {
  GEMM_DT, GEMM_TA, GEMM_TB, GEMM_M, GEMM_N, GEMM_K, GEMM_LDA, GEMM_LDB, GEMM_LDC,
  GEMM_ALPHA, GEMM_BETA, /* doubles stored bit-for-bit */
  GEMM_NB,               /* number of batch levels */
  GEMM_BATCH,            /* then per level: count, strideA, strideB, strideC */
  GEMM_NPARAMS = GEMM_BATCH + 4 * GEMM_MAX_BATCH
};
void matc_rt_gemm(void **ptrs, const int64_t *p);

/* TopK along an axis: ptrs = {X, Values, Indices(int64)}. */
enum { TOPK_DT, TOPK_OUTER, TOPK_N, TOPK_INNER, TOPK_K, TOPK_LARGEST, TOPK_NPARAMS };
void matc_rt_topk(void **ptrs, const int64_t *p);

/* Scatters updates into out, which already holds a copy of the data;
 * ptrs = {out, indices, updates}. Indices are int32 or int64 (SCAT_IDX64)
 * and may be negative; ones still out of range are skipped. dt is the
 * ONNX data type code. Runs in order, so duplicate indices with a
 * reduction accumulate. */
enum { SCAT_NONE, SCAT_ADD, SCAT_MUL, SCAT_MAX, SCAT_MIN };
/* ScatterElements: out[... idx ...] (axis) op= updates[i], over indices'
 * shape. Params: data dims then indices dims, SCAT_MAX_RANK each. */
#define SCAT_MAX_RANK 8
enum { SCAT_DT, SCAT_RED, SCAT_IDX64, SCAT_RANK, SCAT_AXIS, SCAT_DIMS,
       SCAT_NPARAMS = SCAT_DIMS + 2 * SCAT_MAX_RANK };
void matc_rt_scatter_elements(void **ptrs, const int64_t *p);
/* ScatterND: N index tuples of K entries, each addressing a slab of SLICE
 * elements; params end with the first K data dims. */
enum { SCND_DT, SCND_RED, SCND_IDX64, SCND_K, SCND_N, SCND_SLICE, SCND_DIMS,
       SCND_NPARAMS = SCND_DIMS + SCAT_MAX_RANK };
void matc_rt_scatter_nd(void **ptrs, const int64_t *p);

/* memcpy: ptrs = {dst, src}, p[0] = bytes. */
void matc_rt_copy(void **ptrs, const int64_t *p);

/* Data parallel (runtime/dp.h): a gradient is complete (put: into its
 * all-reduce bucket) or about to be read (get: the sum across ranks);
 * ptrs = {gradient}, p[0] = its index in the bound plan. */
void matc_rt_grad_put(void **ptrs, const int64_t *p);
void matc_rt_grad_get(void **ptrs, const int64_t *p);

/* Kernel profiling: generated code brackets kernel i with these when
 * compiled with profiling on; matc_rt_prof_get returns the nanoseconds
 * and calls accumulated for kernel i. */
void matc_rt_prof_begin(int64_t i);
void matc_rt_prof_end(int64_t i);
void matc_rt_prof_get(int64_t i, double *ns, int64_t *calls);
void matc_rt_prof_reset(void);

int64_t matc_rt_f64_bits(double x);
double matc_rt_bits_f64(int64_t b);

#endif
