/* sgemm_peak.c: the OpenBLAS SGEMM rate on this machine, for benchmarks
 * that quote a fraction of it (tools/bench_train.py). Square N x N x N
 * products with the given thread count; prints the median GFLOP/s.
 * usage: sgemm_peak [THREADS] [N] [REPEAT] */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

void openblas_set_num_threads(int);

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 1, n = argc > 2 ? atoi(argv[2]) : 1024;
  int repeat = argc > 3 ? atoi(argv[3]) : 9;
  if (threads < 1 || n < 16 || repeat < 1 || repeat > 1000) {
    fprintf(stderr, "usage: sgemm_peak [THREADS>=1] [N>=16] [REPEAT 1..1000]\n");
    return 2;
  }
  openblas_set_num_threads(threads);
  float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
  double *rate = malloc(sizeof(double) * repeat);
  if (!a || !b || !c || !rate) return 1;
  for (long i = 0; i < (long)n * n; i++) a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.1f;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);   /* warm-up */
  for (int r = 0; r < repeat; r++) {
    double t = now_s();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    rate[r] = 2.0 * n * n * n / (now_s() - t) / 1e9;
  }
  qsort(rate, repeat, sizeof *rate, cmp);
  printf("%.2f\n", rate[repeat / 2]);
  free(a), free(b), free(c), free(rate);
  return 0;
}
