/* data_loaders.c: the training data loaders (runtime/data.c): Fashion-MNIST
 * IDX files (Debian's dataset-fashion-mnist), fixtures written here (NPY,
 * ONNX TensorProto, text, plain and gzipped IDX), the seeded sampler
 * (determinism, epochs, the train/eval split), text MLM masking and causal
 * targets, and bad inputs, each of which must give an error naming the
 * file rather than a crash. Prints "N passed, N failed". */
#include "../../runtime/data.h"
#include "onnx.pb-c.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static int passed, failed;

#define CHECK(cond, ...)                                             \
  do {                                                               \
    if (cond) passed++;                                              \
    else {                                                           \
      failed++;                                                      \
      printf("FAIL %s:%d: ", __FILE__, __LINE__);                    \
      printf(__VA_ARGS__);                                           \
      printf("\n");                                                  \
    }                                                                \
  } while (0)

static char tmp[256];

static const char *P(const char *fmt, ...) {
  static char bufs[8][1024];
  static int k;
  char *b = bufs[k++ & 7];
  int n = snprintf(b, 1024, "%s/", tmp);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b + n, 1024 - n, fmt, ap);
  va_end(ap);
  return b;
}

static void write_file(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, n, f) != n) { perror(path); exit(2); }
  fclose(f);
}

static void mkdir_p(const char *path) { mkdir(path, 0755); }

/* Opens spec expecting an error that mentions `needle` (a file name). */
static void expect_error(const char *spec, const char *needle, const char *also) {
  char err[2048] = "";
  Dataset *d = data_open(spec, err, sizeof err);
  CHECK(!d, "%s: opened, but an error was expected", spec);
  if (d) { data_close(d); return; }
  CHECK(strstr(err, needle) != NULL, "%s: error '%s' does not name '%s'", spec, err, needle);
  if (also) CHECK(strstr(err, also) != NULL, "%s: error '%s' does not say '%s'", spec, err, also);
  if (getenv("VERBOSE")) printf("  ok: %s\n", err);
}

static Dataset *open_ok(const char *spec) {
  char err[2048] = "";
  Dataset *d = data_open(spec, err, sizeof err);
  CHECK(d != NULL, "%s: %s", spec, err);
  return d;
}

/* --- IDX ------------------------------------------------------------------ */

static size_t idx_bytes(unsigned char *b, int ndim, const uint32_t *dims, const unsigned char *data,
                        size_t n, unsigned char magic2) {
  size_t k = 0;
  b[k++] = 0; b[k++] = 0; b[k++] = magic2; b[k++] = (unsigned char)ndim;
  for (int i = 0; i < ndim; i++) {
    b[k++] = dims[i] >> 24; b[k++] = dims[i] >> 16; b[k++] = dims[i] >> 8; b[k++] = dims[i];
  }
  memcpy(b + k, data, n);
  return k + n;
}

/* Writes DIR/{train-images,train-labels} with n 4x3 images; `label` gives
 * labels; `cut` trims the image file's data; nlab the label count. */
static void write_idx(const char *dir, int n, int nlab, int cut, int bad_magic, int label_max, int gz) {
  mkdir_p(dir);
  unsigned char *img = malloc((size_t)n * 12 + 64), *pix = malloc((size_t)n * 12 + 1);
  unsigned char lab[256 + 16], labs[256];
  for (int i = 0; i < n * 12; i++) pix[i] = (unsigned char)(i * 7);
  pix[0] = 255;
  pix[1] = 0;
  for (int i = 0; i < nlab; i++) labs[i] = (unsigned char)(i % (label_max + 1));
  uint32_t id[3] = {(uint32_t)n, 4, 3}, ld[1] = {(uint32_t)nlab};
  size_t ni = idx_bytes(img, 3, id, pix, (size_t)n * 12 - (size_t)cut, 0x08);
  size_t nl = idx_bytes(lab, 1, ld, labs, (size_t)nlab, 0x08);
  if (bad_magic) { img[0] = 0x12; img[1] = 0x34; }
  char p[512];
  if (gz) {
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", dir);
    gzFile f = gzopen(p, "wb");
    gzwrite(f, img, (unsigned)ni);
    gzclose(f);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte.gz", dir);
    f = gzopen(p, "wb");
    gzwrite(f, lab, (unsigned)nl);
    gzclose(f);
  } else {
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte", dir);
    write_file(p, img, ni);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte", dir);
    write_file(p, lab, nl);
  }
  free(img);
  free(pix);
}

static void test_fashion_mnist(void) {
  const char *dir = "/usr/share/datasets/fashion-mnist";
  if (access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK)) {
    printf("skip: %s not installed (Debian package dataset-fashion-mnist)\n", dir);
    return;
  }
  Dataset *d = open_ok("idx:/usr/share/datasets/fashion-mnist");
  if (!d) return;
  DataShape in = data_input_shape(d), tg = data_target_shape(d);
  CHECK(data_count(d) == 60000, "train count %lld", (long long)data_count(d));
  CHECK(in.dtype == 1 && in.rank == 3 && in.dims[0] == 1 && in.dims[1] == 28 && in.dims[2] == 28,
        "input shape dtype %d rank %d", in.dtype, in.rank);
  CHECK(tg.dtype == 7 && tg.rank == 0, "target shape dtype %d rank %d", tg.dtype, tg.rank);
  CHECK(data_num_classes(d) == 10, "classes %lld", (long long)data_num_classes(d));
  float *x = malloc(784 * sizeof *x);
  int64_t y = -1, hist[10] = {0}, bad = 0;
  float mn = 1e9f, mx = -1e9f;
  double sum = 0;
  data_example(d, 0, x, &y);
  CHECK(y == 9, "first training label %lld, expected 9 (ankle boot)", (long long)y);
  for (int64_t i = 0; i < 60000; i++) {
    data_example(d, i, x, &y);
    if (y < 0 || y > 9) bad++;
    else hist[y]++;
    for (int j = 0; j < 784; j++) {
      if (x[j] < mn) mn = x[j];
      if (x[j] > mx) mx = x[j];
      sum += x[j];
    }
  }
  CHECK(bad == 0, "%lld labels out of 0..9", (long long)bad);
  for (int c = 0; c < 10; c++) CHECK(hist[c] == 6000, "class %d has %lld examples, expected 6000", c, (long long)hist[c]);
  CHECK(mn == 0.0f && mx == 1.0f, "pixel range [%g, %g], expected [0, 1]", mn, mx);
  double mean = sum / (60000.0 * 784);
  CHECK(mean > 0.27 && mean < 0.30, "mean pixel %g (Fashion-MNIST's is about 0.286)", mean);

  /* the sampler on the real data: split, determinism */
  Sampler a, b, c;
  CHECK(sampler_init(&a, d, 42, 0.1) == 0, "sampler_init");
  CHECK(a.ntrain == 54000 && a.neval == 6000, "split %lld / %lld", (long long)a.ntrain, (long long)a.neval);
  unsigned char *seen = calloc(60000, 1);
  int dup = 0;
  for (int64_t i = 0; i < a.ntrain; i++) dup += seen[a.order[i]]++ != 0;
  for (int64_t i = 0; i < a.neval; i++) dup += seen[a.eval_idx[i]]++ != 0;
  int64_t missing = 0;
  for (int i = 0; i < 60000; i++) missing += seen[i] != 1;
  CHECK(dup == 0 && missing == 0, "train+eval indices are not a partition (%d duplicates, %lld missing)", dup, (long long)missing);
  free(seen);
  sampler_init(&b, d, 42, 0.1);
  sampler_init(&c, d, 43, 0.1);
  size_t nb = 64;
  float *xa = malloc(nb * 784 * 4), *xb = malloc(nb * 784 * 4), *xc = malloc(nb * 784 * 4);
  int64_t ya[64], yb[64], yc[64];
  int same = 1, differ = 0;
  for (int k = 0; k < 5; k++) {
    sampler_next(&a, 64, xa, ya);
    sampler_next(&b, 64, xb, yb);
    sampler_next(&c, 64, xc, yc);
    same &= !memcmp(xa, xb, nb * 784 * 4) && !memcmp(ya, yb, sizeof ya);
    differ |= memcmp(xa, xc, nb * 784 * 4) || memcmp(ya, yc, sizeof ya);
  }
  CHECK(same, "same seed, different batches");
  CHECK(differ, "different seeds, same batches");
  int64_t nbatches = 0, total = 0, n;
  while ((n = sampler_eval_batch(&a, nbatches, 64, xa, ya)) > 0) { nbatches++; total += n; }
  CHECK(nbatches == (6000 + 63) / 64 && total == 6000, "eval: %lld batches, %lld examples", (long long)nbatches, (long long)total);
  sampler_free(&a);
  sampler_free(&b);
  sampler_free(&c);
  free(xa); free(xb); free(xc);
  free(x);
  data_close(d);

  d = open_ok("idx:/usr/share/datasets/fashion-mnist:test");
  if (d) {
    CHECK(data_count(d) == 10000, "test count %lld", (long long)data_count(d));
    CHECK(data_num_classes(d) == 10, "test classes %lld", (long long)data_num_classes(d));
    data_close(d);
  }
  d = open_ok("idx:/usr/share/datasets/fashion-mnist:train:classes=10");
  data_close(d);
  expect_error("idx:/usr/share/datasets/fashion-mnist:classes=9", "train-labels-idx1-ubyte", "out of range");
}

static void test_idx_fixtures(void) {
  char spec[600];
  /* a good plain and a good gzipped fixture */
  write_idx(P("idx_ok"), 20, 20, 0, 0, 4, 0);
  write_idx(P("idx_gz"), 20, 20, 0, 0, 4, 1);
  for (int gz = 0; gz < 2; gz++) {
    snprintf(spec, sizeof spec, "idx:%s", P(gz ? "idx_gz" : "idx_ok"));
    Dataset *d = open_ok(spec);
    if (!d) continue;
    DataShape in = data_input_shape(d);
    CHECK(data_count(d) == 20 && in.rank == 3 && in.dims[0] == 1 && in.dims[1] == 4 && in.dims[2] == 3,
          "idx fixture shape (gz %d)", gz);
    CHECK(data_num_classes(d) == 5, "idx fixture classes %lld", (long long)data_num_classes(d));
    float x[12];
    int64_t y;
    data_example(d, 1, x, &y);
    CHECK(y == 1 && fabsf(x[0] - (float)((12 * 7) & 255) / 255.0f) < 1e-7f, "idx fixture example 1");
    data_example(d, 0, x, &y);
    CHECK(x[0] == 1.0f && x[1] == 0.0f, "idx fixture pixels 255 -> 1, 0 -> 0");
    CHECK(data_example(d, 20, x, &y) == -1, "data_example out of range");
    data_close(d);
  }
  /* missing */
  expect_error("idx:/nonexistent/dir", "/nonexistent/dir/train-images-idx3-ubyte", "missing");
  expect_error("idx:/nonexistent/dir:test", "t10k-images-idx3-ubyte", NULL);
  /* truncated images */
  write_idx(P("idx_trunc"), 20, 20, 100, 0, 4, 0);
  snprintf(spec, sizeof spec, "idx:%s", P("idx_trunc"));
  expect_error(spec, P("idx_trunc/train-images-idx3-ubyte"), "truncated");
  /* truncated gzip stream */
  write_idx(P("idx_gzcut"), 200, 200, 0, 0, 4, 1);
  {
    FILE *f = fopen(P("idx_gzcut/train-images-idx3-ubyte.gz"), "rb");
    unsigned char buf[8192];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    write_file(P("idx_gzcut/train-images-idx3-ubyte.gz"), buf, n / 2);
    snprintf(spec, sizeof spec, "idx:%s", P("idx_gzcut"));
    expect_error(spec, P("idx_gzcut/train-images-idx3-ubyte.gz"), NULL);
  }
  /* a file shorter than the header */
  mkdir_p(P("idx_tiny"));
  write_file(P("idx_tiny/train-images-idx3-ubyte"), "\0\0", 2);
  write_file(P("idx_tiny/train-labels-idx1-ubyte"), "", 0);
  snprintf(spec, sizeof spec, "idx:%s", P("idx_tiny"));
  expect_error(spec, P("idx_tiny/train-images-idx3-ubyte"), "truncated");
  /* bad magic */
  write_idx(P("idx_magic"), 20, 20, 0, 1, 4, 0);
  snprintf(spec, sizeof spec, "idx:%s", P("idx_magic"));
  expect_error(spec, P("idx_magic/train-images-idx3-ubyte"), "magic");
  /* label / image count mismatch */
  write_idx(P("idx_count"), 20, 19, 0, 0, 4, 0);
  snprintf(spec, sizeof spec, "idx:%s", P("idx_count"));
  expect_error(spec, P("idx_count/train-labels-idx1-ubyte"), "labels");
  /* labels out of range for the declared class count */
  write_idx(P("idx_label"), 20, 20, 0, 0, 9, 0);
  snprintf(spec, sizeof spec, "idx:%s:classes=5", P("idx_label"));
  expect_error(spec, P("idx_label/train-labels-idx1-ubyte"), "out of range");
  snprintf(spec, sizeof spec, "idx:%s:classes=x", P("idx_label"));
  expect_error(spec, P("idx_label"), "class count");
  /* a header declaring more than the byte cap: refused before allocating */
  {
    mkdir_p(P("idx_huge"));
    unsigned char img[64], lab[64];
    uint32_t id[3] = {0xFFFFFFFFu, 0xFFFF, 0xFFFF}, ld[1] = {0xFFFFFFFFu};
    size_t ni = idx_bytes(img, 3, id, (const unsigned char *)"abcd", 4, 0x08);
    size_t nl = idx_bytes(lab, 1, ld, (const unsigned char *)"abcd", 4, 0x08);
    write_file(P("idx_huge/train-images-idx3-ubyte"), img, ni);
    write_file(P("idx_huge/train-labels-idx1-ubyte"), lab, nl);
    snprintf(spec, sizeof spec, "idx:%s", P("idx_huge"));
    expect_error(spec, P("idx_huge/train-images-idx3-ubyte"), "limit");
    /* under the cap but the file is short: no giant allocation either */
    id[0] = ld[0] = 1000000; id[1] = id[2] = 28;
    ni = idx_bytes(img, 3, id, (const unsigned char *)"abcd", 4, 0x08);
    nl = idx_bytes(lab, 1, ld, (const unsigned char *)"abcd", 4, 0x08);
    write_file(P("idx_huge/train-images-idx3-ubyte"), img, ni);
    write_file(P("idx_huge/train-labels-idx1-ubyte"), lab, nl);
    expect_error(spec, P("idx_huge/train-labels-idx1-ubyte"), "truncated");
    /* a smaller cap set by the caller */
    write_idx(P("idx_cap"), 20, 20, 0, 0, 4, 0);
    data_set_max_bytes(100);
    snprintf(spec, sizeof spec, "idx:%s", P("idx_cap"));
    expect_error(spec, P("idx_cap/train-images-idx3-ubyte"), "limit");
    data_set_max_bytes(0);
    CHECK(data_max_bytes() == 8ULL << 30, "default cap");
  }
  /* unsupported element type */
  {
    mkdir_p(P("idx_type"));
    unsigned char img[64];
    uint32_t id[3] = {1, 1, 1};
    size_t ni = idx_bytes(img, 3, id, (const unsigned char *)"abcd", 4, 0x0D);
    write_file(P("idx_type/train-images-idx3-ubyte"), img, ni);
    snprintf(spec, sizeof spec, "idx:%s", P("idx_type"));
    expect_error(spec, P("idx_type/train-images-idx3-ubyte"), "not supported");
  }
}

/* --- NPY ------------------------------------------------------------------- */

static void write_npy(const char *path, const char *descr, const char *shape, const void *data, size_t n,
                      int fortran, const char *raw_header) {
  char h[256];
  if (raw_header) snprintf(h, sizeof h, "%s", raw_header);
  else snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }", descr,
                fortran ? "True" : "False", shape);
  size_t hl = strlen(h), total = 10 + hl + 1;
  size_t pad = (64 - total % 64) % 64;
  unsigned char *b = malloc(total + pad + n);
  memcpy(b, "\x93NUMPY\x01\x00", 8);
  size_t L = hl + pad + 1;
  b[8] = (unsigned char)(L & 255);
  b[9] = (unsigned char)(L >> 8);
  memcpy(b + 10, h, hl);
  memset(b + 10 + hl, ' ', pad);
  b[10 + hl + pad] = '\n';
  memcpy(b + total + pad, data, n);
  write_file(path, b, total + pad + n);
  free(b);
}

static void test_npy(void) {
  enum { N = 50 };
  float x[N][3];
  double xd[N][3];
  int64_t y[N];
  int32_t y32[N];
  unsigned char y8[N];
  for (int i = 0; i < N; i++) {
    x[i][0] = (float)i; x[i][1] = i + 0.5f; x[i][2] = -(float)i;
    for (int j = 0; j < 3; j++) xd[i][j] = x[i][j];
    y[i] = i % 7;
    y32[i] = i % 7;
    y8[i] = (unsigned char)(i % 7);
  }
  write_npy(P("x.npy"), "<f4", "(50, 3)", x, sizeof x, 0, NULL);
  write_npy(P("xd.npy"), "<f8", "(50,3)", xd, sizeof xd, 0, NULL);
  write_npy(P("y.npy"), "<i8", "(50,)", y, sizeof y, 0, NULL);
  write_npy(P("y32.npy"), "<i4", "(50,)", y32, sizeof y32, 0, NULL);
  write_npy(P("y8.npy"), "|u1", "(50,)", y8, sizeof y8, 0, NULL);
  char spec[1200];
  const char *ys[] = {"y.npy", "y32.npy", "y8.npy"}, *xs[] = {"x.npy", "xd.npy"};
  for (int a = 0; a < 2; a++)
    for (int b = 0; b < 3; b++) {
      snprintf(spec, sizeof spec, "npy:%s,%s", P("%s", xs[a]), P("%s", ys[b]));
      Dataset *d = open_ok(spec);
      if (!d) continue;
      DataShape in = data_input_shape(d), tg = data_target_shape(d);
      CHECK(data_count(d) == N && in.dtype == 1 && in.rank == 1 && in.dims[0] == 3 && tg.dtype == 7 && tg.rank == 0,
            "npy %s,%s shapes", xs[a], ys[b]);
      CHECK(data_num_classes(d) == 7, "npy classes %lld", (long long)data_num_classes(d));
      float e[3];
      int64_t t;
      data_example(d, 13, e, &t);
      CHECK(e[0] == 13 && e[1] == 13.5f && e[2] == -13 && t == 6, "npy example 13: %g %g %g / %lld", e[0], e[1], e[2], (long long)t);
      data_close(d);
    }

  /* the sampler: an epoch visits each training example once; eval is disjoint */
  snprintf(spec, sizeof spec, "npy:%s,%s", P("x.npy"), P("y.npy"));
  Dataset *d = open_ok(spec);
  if (d) {
    Sampler s, s2;
    sampler_init(&s, d, 7, 0.2);
    CHECK(s.ntrain == 40 && s.neval == 10, "npy split %lld/%lld", (long long)s.ntrain, (long long)s.neval);
    int in_eval[N] = {0};
    for (int64_t i = 0; i < s.neval; i++) in_eval[s.eval_idx[i]] = 1;
    float xb[8][3];
    int64_t yb[8];
    int cnt[N] = {0};
    int64_t first_epoch[40];
    for (int k = 0; k < 5; k++) {
      sampler_next(&s, 8, xb, yb);
      for (int j = 0; j < 8; j++) {
        int i = (int)xb[j][0];
        cnt[i]++;
        first_epoch[k * 8 + j] = i;
        CHECK(yb[j] == i % 7, "target follows its input");
      }
    }
    int ok = 1;
    for (int i = 0; i < N; i++) ok &= in_eval[i] ? cnt[i] == 0 : cnt[i] == 1;
    CHECK(ok, "an epoch does not visit every training example exactly once (or touches eval)");
    CHECK(s.epoch == 0 && s.pos == 40, "after one epoch: epoch %lld pos %lld", (long long)s.epoch, (long long)s.pos);
    /* a batch that crosses into epoch 1, then the rest of epoch 1 */
    memset(cnt, 0, sizeof cnt);
    int64_t second[40];
    int ns = 0;
    for (int k = 0; k < 5; k++) {
      sampler_next(&s, 8, xb, yb);
      for (int j = 0; j < 8; j++) { cnt[(int)xb[j][0]]++; second[ns++] = (int64_t)xb[j][0]; }
    }
    ok = 1;
    for (int i = 0; i < N; i++) ok &= in_eval[i] ? cnt[i] == 0 : cnt[i] == 1;
    CHECK(ok && s.epoch == 1, "second epoch");
    CHECK(memcmp(first_epoch, second, sizeof second) != 0, "epochs are not reshuffled");
    /* eval batches cover the eval set */
    memset(cnt, 0, sizeof cnt);
    int64_t n, k = 0, sizes = 0;
    while ((n = sampler_eval_batch(&s, k++, 4, xb, yb)) > 0) {
      sizes += n;
      for (int j = 0; j < n; j++) cnt[(int)xb[j][0]]++;
    }
    ok = 1;
    for (int i = 0; i < N; i++) ok &= cnt[i] == in_eval[i];
    CHECK(ok && sizes == 10 && k == 4, "eval batches (%lld examples, %lld calls)", (long long)sizes, (long long)k);
    CHECK(sampler_eval_batch(&s, -1, 4, xb, yb) == 0 && sampler_eval_batch(&s, 99, 4, xb, yb) == 0, "eval batch out of range");
    /* seek: resuming gives the batches an uninterrupted run draws */
    sampler_init(&s2, d, 7, 0.2);
    float xa[7][3], xc[7][3];
    for (int j = 0; j < 9; j++) sampler_next(&s2, 7, xa, NULL);
    int64_t ep = s2.epoch, pos = s2.pos;
    sampler_next(&s2, 7, xa, NULL);
    sampler_free(&s2);
    sampler_init(&s2, d, 7, 0.2);
    sampler_seek(&s2, ep, pos);
    sampler_next(&s2, 7, xc, NULL);
    CHECK(!memcmp(xa, xc, sizeof xa), "sampler_seek does not resume the same stream");
    sampler_free(&s2);
    /* split sizes and bad fractions */
    CHECK(sampler_init(&s2, d, 1, 0.0) == 0 && s2.ntrain == 50 && s2.neval == 0, "no eval split");
    sampler_free(&s2);
    CHECK(sampler_init(&s2, d, 1, 1.0) != 0, "eval fraction 1 accepted");
    CHECK(sampler_init(&s2, d, 1, -0.5) != 0, "negative eval fraction accepted");
    CHECK(sampler_init(&s2, d, 1, NAN) != 0, "NaN eval fraction accepted");
    sampler_free(&s);
    data_close(d);
  }
  /* a known order: the split and shuffle use only integer arithmetic,
   * so this list is the same on every platform */
  snprintf(spec, sizeof spec, "npy:%s,%s", P("x.npy"), P("y.npy"));
  d = open_ok(spec);
  if (d) {
    Sampler s;
    sampler_init(&s, d, 12345, 0.1);
    printf("seed 12345 order starts %lld %lld %lld %lld, eval %lld %lld\n", (long long)s.order[0],
           (long long)s.order[1], (long long)s.order[2], (long long)s.order[3], (long long)s.eval_idx[0],
           (long long)s.eval_idx[1]);
    sampler_free(&s);
    data_close(d);
  }

  /* labels: -100 ignored, negatives rejected, declared class count */
  int64_t yn[N];
  memcpy(yn, y, sizeof y);
  yn[3] = -100;
  write_npy(P("yign.npy"), "<i8", "(50,)", yn, sizeof yn, 0, NULL);
  snprintf(spec, sizeof spec, "npy:%s,%s", P("x.npy"), P("yign.npy"));
  d = open_ok(spec);
  data_close(d);
  yn[5] = -3;
  write_npy(P("yneg.npy"), "<i8", "(50,)", yn, sizeof yn, 0, NULL);
  snprintf(spec, sizeof spec, "npy:%s,%s", P("x.npy"), P("yneg.npy"));
  expect_error(spec, P("yneg.npy"), "out of range");
  snprintf(spec, sizeof spec, "npy:%s,%s:classes=6", P("x.npy"), P("y.npy"));
  expect_error(spec, P("y.npy"), "out of range");
  snprintf(spec, sizeof spec, "npy:%s,%s:classes=7", P("x.npy"), P("y.npy"));
  d = open_ok(spec);
  data_close(d);
  /* float targets: regression, no classes */
  snprintf(spec, sizeof spec, "npy:%s,%s", P("x.npy"), P("xd.npy"));
  d = open_ok(spec);
  if (d) {
    CHECK(data_num_classes(d) == 0 && data_target_shape(d).dtype == 1, "float targets");
    data_close(d);
  }

  /* bad inputs */
  snprintf(spec, sizeof spec, "npy:%s,%s", P("missing.npy"), P("y.npy"));
  expect_error(spec, P("missing.npy"), NULL);
  write_npy(P("badhdr.npy"), NULL, NULL, x, sizeof x, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (50,, 3), }");
  snprintf(spec, sizeof spec, "npy:%s,%s", P("badhdr.npy"), P("y.npy"));
  expect_error(spec, P("badhdr.npy"), "header");
  write_npy(P("nodict.npy"), NULL, NULL, x, sizeof x, 0, "garbage");
  snprintf(spec, sizeof spec, "npy:%s,%s", P("nodict.npy"), P("y.npy"));
  expect_error(spec, P("nodict.npy"), "header");
  write_npy(P("noshape.npy"), NULL, NULL, x, sizeof x, 0, "{'descr': '<f4', 'fortran_order': False}");
  snprintf(spec, sizeof spec, "npy:%s,%s", P("noshape.npy"), P("y.npy"));
  expect_error(spec, P("noshape.npy"), "shape");
  write_npy(P("fort.npy"), "<f4", "(50, 3)", x, sizeof x, 1, NULL);
  snprintf(spec, sizeof spec, "npy:%s,%s", P("fort.npy"), P("y.npy"));
  expect_error(spec, P("fort.npy"), "Fortran");
  write_npy(P("c8.npy"), "<c8", "(50, 3)", x, sizeof x, 0, NULL);
  snprintf(spec, sizeof spec, "npy:%s,%s", P("c8.npy"), P("y.npy"));
  expect_error(spec, P("c8.npy"), "not supported");
  write_npy(P("be.npy"), ">f4", "(50, 3)", x, sizeof x, 0, NULL);
  snprintf(spec, sizeof spec, "npy:%s,%s", P("be.npy"), P("y.npy"));
  expect_error(spec, P("be.npy"), "big-endian");
  write_npy(P("short.npy"), "<f4", "(50, 3)", x, sizeof x - 4, 0, NULL);
  snprintf(spec, sizeof spec, "npy:%s,%s", P("short.npy"), P("y.npy"));
  expect_error(spec, P("short.npy"), "truncated");
  write_npy(P("huge.npy"), "<f4", "(4000000000, 4000000000)", x, sizeof x, 0, NULL);
  snprintf(spec, sizeof spec, "npy:%s,%s", P("huge.npy"), P("y.npy"));
  expect_error(spec, P("huge.npy"), "limit");
  write_file(P("magic.npy"), "\x93NUMPZ\x01\x00\x10\x00{}              ", 26);
  snprintf(spec, sizeof spec, "npy:%s,%s", P("magic.npy"), P("y.npy"));
  expect_error(spec, P("magic.npy"), "magic");
  write_file(P("hlen.npy"), "\x93NUMPY\x01\x00\xff\xff{", 11);
  snprintf(spec, sizeof spec, "npy:%s,%s", P("hlen.npy"), P("y.npy"));
  expect_error(spec, P("hlen.npy"), "truncated");
  write_npy(P("y49.npy"), "<i8", "(49,)", y, sizeof y - 8, 0, NULL);
  snprintf(spec, sizeof spec, "npy:%s,%s", P("x.npy"), P("y49.npy"));
  expect_error(spec, P("y49.npy"), "examples");
  snprintf(spec, sizeof spec, "npy:%s", P("x.npy"));
  expect_error(spec, P("x.npy"), NULL);
}

/* --- ONNX TensorProto ------------------------------------------------------ */

static void write_pb(const char *path, int dt, int rank, const int64_t *dims, const float *f, const int64_t *i64,
                     size_t n, int raw, size_t cut) {
  Onnx__TensorProto tp = ONNX__TENSOR_PROTO__INIT;
  tp.has_data_type = 1;
  tp.data_type = dt;
  tp.n_dims = (size_t)rank;
  tp.dims = (int64_t *)dims;
  if (raw) {
    tp.has_raw_data = 1;
    tp.raw_data.len = n * (dt == 1 ? 4 : 8);
    tp.raw_data.data = (uint8_t *)(dt == 1 ? (const void *)f : (const void *)i64);
  } else if (dt == 1) {
    tp.n_float_data = n;
    tp.float_data = (float *)f;
  } else {
    tp.n_int64_data = n;
    tp.int64_data = (int64_t *)i64;
  }
  size_t len = onnx__tensor_proto__get_packed_size(&tp);
  uint8_t *b = malloc(len);
  onnx__tensor_proto__pack(&tp, b);
  write_file(path, b, len - cut);
  free(b);
}

static void test_pb(void) {
  mkdir_p(P("pb"));
  int64_t dims[2] = {2, 2};
  for (int k = 0; k < 5; k++) {
    mkdir_p(P("pb/%d", k));
    float f[4] = {k, k + 1.0f, k + 2.0f, k + 3.0f};
    int64_t lab = k % 3;
    write_pb(P("pb/%d/input_0.pb", k), 1, 2, dims, f, NULL, 4, k & 1, 0);
    write_pb(P("pb/%d/target_0.pb", k), 7, 0, NULL, NULL, &lab, 1, !(k & 1), 0);
  }
  char spec[600];
  snprintf(spec, sizeof spec, "pb:%s", P("pb"));
  Dataset *d = open_ok(spec);
  if (d) {
    DataShape in = data_input_shape(d), tg = data_target_shape(d);
    CHECK(data_count(d) == 5 && in.dtype == 1 && in.rank == 2 && in.dims[0] == 2 && in.dims[1] == 2 &&
          tg.dtype == 7 && tg.rank == 0, "pb shapes");
    CHECK(data_num_classes(d) == 3, "pb classes %lld", (long long)data_num_classes(d));
    float e[4];
    int64_t t;
    int ok = 1;
    for (int k = 0; k < 5; k++) {
      data_example(d, k, e, &t);
      ok &= e[0] == k && e[3] == k + 3 && t == k % 3;
    }
    CHECK(ok, "pb values");
    data_close(d);
  }
  /* a shape that differs, a truncated file, a missing target, no examples */
  mkdir_p(P("pb_bad"));
  for (int k = 0; k < 3; k++) {
    mkdir_p(P("pb_bad/%d", k));
    float f[6] = {0};
    int64_t lab = 0, d2[2] = {2, k == 2 ? 3 : 2};
    write_pb(P("pb_bad/%d/input_0.pb", k), 1, 2, d2, f, NULL, (size_t)(d2[0] * d2[1]), 1, 0);
    write_pb(P("pb_bad/%d/target_0.pb", k), 7, 0, NULL, NULL, &lab, 1, 1, 0);
  }
  snprintf(spec, sizeof spec, "pb:%s", P("pb_bad"));
  expect_error(spec, P("pb_bad/2/input_0.pb"), "differs");
  {
    float f[4] = {0};
    write_pb(P("pb_bad/2/input_0.pb"), 1, 2, dims, f, NULL, 4, 1, 5);
    expect_error(spec, P("pb_bad/2/input_0.pb"), NULL);
    int64_t d3[2] = {2, 3};
    write_pb(P("pb_bad/2/input_0.pb"), 1, 2, d3, f, NULL, 4, 1, 0);   /* 4 elements for 6 */
    expect_error(spec, P("pb_bad/2/input_0.pb"), "elements");
    write_pb(P("pb_bad/2/input_0.pb"), 1, 2, dims, f, NULL, 4, 1, 0);
    write_file(P("pb_bad/1/target_0.pb"), "\xff\xff\xff\xff\xff", 5);
    expect_error(spec, P("pb_bad/1/target_0.pb"), NULL);
    unlink(P("pb_bad/1/target_0.pb"));
    expect_error(spec, P("pb_bad/1/target_0.pb"), NULL);
    int64_t lab = 5;
    write_pb(P("pb_bad/1/target_0.pb"), 7, 0, NULL, NULL, &lab, 1, 1, 0);
    snprintf(spec, sizeof spec, "pb:%s:classes=4", P("pb_bad"));
    expect_error(spec, P("pb_bad/1/target_0.pb"), "out of range");
  }
  mkdir_p(P("pb_empty"));
  snprintf(spec, sizeof spec, "pb:%s", P("pb_empty"));
  expect_error(spec, P("pb_empty"), "no examples");
  expect_error("pb:/nonexistent/pbdir", "/nonexistent/pbdir", "missing");
}

/* --- text ----------------------------------------------------------------- */

static void test_text(void) {
  enum { LEN = 20000, SEQ = 64 };
  unsigned char *t = malloc(LEN);
  uint64_t r = 1;
  for (int i = 0; i < LEN; i++) {
    r = r * 6364136223846793005ULL + 1442695040888963407ULL;
    t[i] = (unsigned char)(' ' + (r >> 33) % 90);
  }
  mkdir_p(P("text"));
  write_file(P("text/a.txt"), t, LEN);
  write_file(P("text/a.dat"), "\0\0\0\2junk", 8);     /* skipped in directories */
  char spec[600];
  snprintf(spec, sizeof spec, "text:%s:causal:%d", P("text"), SEQ);
  Dataset *c = open_ok(spec);
  snprintf(spec, sizeof spec, "text:%s:mlm:%d", P("text"), SEQ);
  Dataset *m = open_ok(spec);
  if (c && m) {
    DataShape in = data_input_shape(m), tg = data_target_shape(m);
    CHECK(data_count(m) == LEN / SEQ && data_count(c) == (LEN - 1) / SEQ, "text counts %lld %lld",
          (long long)data_count(m), (long long)data_count(c));
    CHECK(in.dtype == 7 && in.rank == 1 && in.dims[0] == SEQ && tg.dtype == 7 && tg.rank == 1 && tg.dims[0] == SEQ,
          "text shapes");
    CHECK(data_num_classes(m) == 256, "text classes");
    /* causal: the next byte */
    int64_t x[SEQ], y[SEQ];
    int ok = 1;
    for (int64_t k = 0; k < data_count(c); k++) {
      data_example(c, k, x, y);
      for (int j = 0; j < SEQ; j++) ok &= x[j] == t[k * SEQ + j] && y[j] == t[k * SEQ + j + 1];
    }
    CHECK(ok, "causal targets are not the next byte");
    /* MLM over one epoch of a sampler */
    Sampler s, s2;
    sampler_init(&s, m, 99, 0.0);
    sampler_init(&s2, m, 99, 0.0);
    int64_t nex = data_count(m), npos = 0, nmask = 0, nmasktok = 0, nkept = 0, bad = 0, diff = 0;
    int64_t bx[SEQ], by[SEQ], bx2[SEQ], by2[SEQ];
    for (int64_t k = 0; k < nex; k++) {
      int64_t idx = s.order[s.pos];
      sampler_next(&s, 1, bx, by);
      sampler_next(&s2, 1, bx2, by2);
      diff += memcmp(bx, bx2, sizeof bx) || memcmp(by, by2, sizeof by);
      for (int j = 0; j < SEQ; j++) {
        int64_t orig = t[idx * SEQ + j];
        npos++;
        if (by[j] == -100) {
          bad += bx[j] != orig;
        } else {
          nmask++;
          bad += by[j] != orig;
          nmasktok += bx[j] == 257;
          nkept += bx[j] == orig;
          bad += bx[j] < 0 || (bx[j] > 255 && bx[j] != 257);
        }
      }
    }
    double rate = (double)nmask / npos, mrate = (double)nmasktok / nmask;
    printf("mlm: %.2f%% of %lld positions masked, %.1f%% of those MASK, %.1f%% kept\n", 100 * rate,
           (long long)npos, 100 * mrate, 100.0 * nkept / nmask);
    CHECK(rate > 0.135 && rate < 0.165, "mlm mask rate %.4f", rate);
    CHECK(mrate > 0.75 && mrate < 0.85, "mlm MASK share %.4f", mrate);
    CHECK((double)nkept / nmask > 0.07 && (double)nkept / nmask < 0.14, "mlm kept share");
    CHECK(bad == 0, "%lld mlm positions wrong (unmasked input changed or target not the original)", (long long)bad);
    CHECK(diff == 0, "same seed gave different masks");
    /* another epoch masks differently; another seed too */
    sampler_next(&s, 1, bx, by);
    Sampler s3;
    sampler_init(&s3, m, 100, 0.0);
    int64_t idx3 = s3.order[0];
    sampler_next(&s3, 1, bx2, by2);
    int64_t x0[SEQ], y0[SEQ];
    data_example(m, idx3, x0, y0);
    CHECK(memcmp(by2, y0, sizeof y0) != 0, "masks do not depend on the seed");
    sampler_free(&s);
    sampler_free(&s2);
    sampler_free(&s3);
  }
  data_close(c);
  data_close(m);
  /* several paths, comma separated */
  write_file(P("b.txt"), "hello world, hello", 18);
  snprintf(spec, sizeof spec, "text:%s,%s:causal:8", P("b.txt"), P("b.txt"));
  Dataset *d = open_ok(spec);
  if (d) {
    CHECK(data_count(d) == 35 / 8, "two files: %lld windows", (long long)data_count(d));
    int64_t x[8], y[8];
    data_example(d, 2, x, y);
    CHECK(x[0] == 'l' && x[2] == 'h' && y[7] == 'w', "window across the file boundary");
    data_close(d);
  }
  /* fortunes (Debian package fortunes) */
  if (!access("/usr/share/games/fortunes/fortunes", R_OK)) {
    d = open_ok("text:/usr/share/games/fortunes:mlm:128");
    if (d) {
      CHECK(data_count(d) > 10000, "fortunes: %lld windows", (long long)data_count(d));
      data_close(d);
    }
  } else {
    printf("skip: /usr/share/games/fortunes not installed (Debian package fortunes)\n");
  }
  /* bad inputs */
  snprintf(spec, sizeof spec, "text:%s:causal:8", P("missing.txt"));
  expect_error(spec, P("missing.txt"), "missing");
  snprintf(spec, sizeof spec, "text:%s:causal:18", P("b.txt"));
  expect_error(spec, P("b.txt"), "window");
  snprintf(spec, sizeof spec, "text:%s:mlm:0", P("b.txt"));
  expect_error(spec, P("b.txt"), "sequence length");
  snprintf(spec, sizeof spec, "text:%s:bert:8", P("b.txt"));
  expect_error(spec, P("b.txt"), "mlm");
  mkdir_p(P("text_empty"));
  snprintf(spec, sizeof spec, "text:%s:mlm:8", P("text_empty"));
  expect_error(spec, P("text_empty"), "no text");
  free(t);
}

static void test_specs(void) {
  const char *bad[] = {"", "foo:bar", "idx:", "npy:", "npy:,", "pb:", "text:", "text:a", "text::mlm:4",
                       "idx:/x:classes=0", "idx:/x:classes=-1", "npy:a.npy,b.npy:classes=99999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char err[256] = "";
    Dataset *d = data_open(bad[i], err, sizeof err);
    CHECK(!d && err[0], "spec '%s' accepted or no message", bad[i]);
    data_close(d);
  }
  char small[16];
  Dataset *d = data_open("idx:/a/very/long/path/that/does/not/exist", small, sizeof small);
  CHECK(!d && strlen(small) == 15, "short error buffers are filled and terminated");
  data_close(NULL);
  CHECK(data_count(NULL) == 0 && data_num_classes(NULL) == 0, "NULL dataset");
}

int main(void) {
  const char *base = getenv("TMPDIR");
  snprintf(tmp, sizeof tmp, "%s/matc_data_XXXXXX", base && *base ? base : "/tmp");
  if (!mkdtemp(tmp)) { perror("mkdtemp"); return 2; }
  test_specs();
  test_idx_fixtures();
  test_npy();
  test_pb();
  test_text();
  test_fashion_mnist();
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmp);
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
