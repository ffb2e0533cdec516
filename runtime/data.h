/* data.h: training data for the runtime (no LLVM, no protobuf beyond the
 * TensorProto reader). A Dataset is a set of examples, each a fixed-shape
 * input tensor and a fixed-shape target tensor; batches are drawn in a
 * seeded shuffled order, with a held-out evaluation split.
 *
 * Sources (DataSpec strings, as given to `matc train --data SPEC`):
 *   idx:DIR[:train|test]    IDX files (optionally .gz): DIR/train-images-idx3-ubyte[.gz] and
 *                           DIR/train-labels-idx1-ubyte[.gz] (or t10k-* for test); images
 *                           become float32 [1, H, W] in [0, 1], labels int64 scalars
 *   text:PATH[,PATH...]:mlm:SEQ   byte tokens of text files (a directory: every regular file
 *   text:PATH...:causal:SEQ       in it that is not *.dat), cut into SEQ-byte windows; mlm:
 *                           inputs with 15% of positions masked (80% MASK=257, 10% random
 *                           byte, 10% kept), targets the original byte at masked positions
 *                           and -100 (ignored) elsewhere; causal: targets are the next byte
 *   npy:INPUTS.npy,TARGETS.npy   NPY arrays (float32/float64/int64/int32/uint8, C order);
 *                           the first dimension indexes examples
 *   pb:DIR                  DIR/<k>/input_0.pb and DIR/<k>/target_0.pb for k = 0, 1, ...
 *                           (ONNX TensorProto files; every example the same shapes)
 *
 * idx, npy and pb specs may end in `:classes=N`, declaring the number of
 * classes: integer targets must then lie in [0, N) (or be -100, ignored).
 * Without it, integer targets must be -100 or in [0, 2^31), and the class
 * count is the largest label + 1. Floating-point arrays (npy, pb) load as
 * float32 and integer ones as int64; text tokens are int64 (bytes 0..255,
 * MASK = 257), and text's class count is 256. Everything is held in
 * memory, at most data_max_bytes() bytes (8 GiB unless changed).
 */
#ifndef MATC_DATA_H
#define MATC_DATA_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  int dtype;                /* ONNX TensorProto.DataType code (1 float32, 7 int64) */
  int rank;
  int64_t dims[8];          /* of one example (no batch dim) */
} DataShape;

typedef struct Dataset Dataset;

/* Opens a data source. On error returns NULL and writes a message naming
 * the file (and what is wrong: missing, short, bad magic, wrong shape...)
 * into err. */
Dataset *data_open(const char *spec, char *err, size_t errlen);
void data_close(Dataset *d);

int64_t data_count(const Dataset *d);               /* examples */
DataShape data_input_shape(const Dataset *d);
DataShape data_target_shape(const Dataset *d);
/* Largest class label + 1 for classification targets, or 0. */
int64_t data_num_classes(const Dataset *d);

/* Copies example i (0 <= i < data_count) into input and target (either
 * may be NULL); text MLM examples are masked as by seed 0. Returns 0, or
 * -1 when i is out of range. */
int data_example(const Dataset *d, int64_t i, void *input, void *target);

/* The cap on a data set's bytes in memory (default 8 GiB); files that
 * declare more are refused with an error before anything is allocated. */
uint64_t data_max_bytes(void);
void data_set_max_bytes(uint64_t bytes);

/* Splits off the last `eval_fraction` of a seeded permutation as the
 * evaluation set; the rest is the training set. */
typedef struct {
  Dataset *d;
  uint64_t seed;
  int64_t *order;           /* training example indices, reshuffled each epoch */
  int64_t ntrain, neval;
  int64_t *eval_idx;
  int64_t epoch, pos;       /* position in the current epoch (for checkpoints) */
  int sequential;           /* no shuffling: examples in file order */
} Sampler;

int sampler_init(Sampler *s, Dataset *d, uint64_t seed, double eval_fraction);
/* Every example of d for evaluation, in file order (a separate test set:
 * --eval-data); no training examples. */
int sampler_init_eval(Sampler *s, Dataset *d);
void sampler_free(Sampler *s);
/* Fills `inputs` and `targets` (batch * example sizes, packed) with the
 * next training batch; starts a new shuffled epoch when one ends. Text
 * MLM masking is drawn from the sampler's seed, so it is reproducible. */
void sampler_next(Sampler *s, int64_t batch, void *inputs, void *targets);
/* Data parallel: draws the next `batch` examples as sampler_next does,
 * but fills only examples [lo, lo + count) of them (one rank's part of
 * the global batch). */
void sampler_next_part(Sampler *s, int64_t batch, int64_t lo, int64_t count, void *inputs, void *targets);
/* Evaluation batch k (of ceil(neval / batch)); returns its size. */
int64_t sampler_eval_batch(Sampler *s, int64_t k, int64_t batch, void *inputs, void *targets);
/* Moves to position `pos` of epoch `epoch` (resuming from a checkpoint):
 * the batches that follow are those an uninterrupted run would draw. */
void sampler_seek(Sampler *s, int64_t epoch, int64_t pos);
/* Draws training examples in file order from now on (for reproducing a
 * reference run exactly). */
void sampler_sequential(Sampler *s);

#endif
