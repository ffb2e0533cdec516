/* data_internal.h: what the data loader sources (data*.c) share. Not part
 * of the runtime's public API. */
#ifndef MATC_DATA_INTERNAL_H
#define MATC_DATA_INTERNAL_H

#include "data.h"

#include <stdio.h>

/* ONNX TensorProto.DataType codes used here. */
enum {
  DDT_F32 = 1, DDT_U8 = 2, DDT_I8 = 3, DDT_U16 = 4, DDT_I16 = 5, DDT_I32 = 6, DDT_I64 = 7,
  DDT_BOOL = 9, DDT_F64 = 11
};

enum { DS_TENSOR, DS_TEXT_MLM, DS_TEXT_CAUSAL };

#define DATA_MASK_TOKEN 257
#define DATA_IGNORE (-100)
#define DATA_MAX_LABEL 2147483647LL

struct Dataset {
  int kind;
  int64_t n;                /* examples */
  DataShape in, tg;
  size_t in_bytes, tg_bytes;/* of one example */
  unsigned char *inputs;    /* DS_TENSOR: n * in_bytes, packed */
  unsigned char *targets;   /* DS_TENSOR: n * tg_bytes */
  unsigned char *text;      /* DS_TEXT_*: the byte tokens */
  size_t text_len;
  int64_t seq;
  int64_t num_classes;
  char tg_file[1200];       /* the targets' file, for label errors */
  int tg_pb;                /* tg_file is a pb directory: name DIR/<k>/target_0.pb */
};

/* Writes the message into err and returns -1. */
int data_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Element size of a supported source dtype, 0 if unsupported. */
int data_dt_size(int dt);
const char *data_dt_name(int dt);
int data_dt_is_float(int dt);
/* Converts n little-endian elements of src_dt into float32 (dst_dt 1) or
 * int64 (dst_dt 7). */
void data_convert_le(const unsigned char *src, int src_dt, size_t n, void *dst, int dst_dt);

/* Element count of a shape, or -1 when it overflows the byte cap. */
int64_t data_shape_nelem(int rank, const int64_t *dims);
int64_t data_shape_nelem_checked(int rank, const int64_t *dims, size_t elem_size);

/* Reads a whole regular file (at most `cap` bytes). */
int data_read_file(const char *path, unsigned char **buf, size_t *len, uint64_t cap, char *err,
                   size_t errlen);

/* Checks integer targets (-100 or in [0, classes), classes = declared or
 * DATA_MAX_LABEL + 1), sets d->num_classes. `what` names the file. */
int data_check_labels(Dataset *d, int64_t declared, const char *what, char *err, size_t errlen);

int data_open_idx(Dataset *d, const char *dir, int test, char *err, size_t errlen);
int data_open_text(Dataset *d, const char *paths, int mlm, int64_t seq, char *err, size_t errlen);
int data_open_npy(Dataset *d, const char *inputs, const char *targets, char *err, size_t errlen);
int data_open_pb(Dataset *d, const char *dir, char *err, size_t errlen);

#endif
