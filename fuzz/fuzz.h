/* fuzz.h: what the fuzz targets share (fuzz/common.c). Each target is a
 * libFuzzer entry point, LLVMFuzzerTestOneInput, built two ways: with
 * clang -fsanitize=fuzzer (MATC_FUZZ=ON, build-fuzz/) to fuzz, and with
 * fuzz/replay.c's main to replay a corpus in any build (the fuzz/TARGET tests). */
#ifndef MATC_FUZZ_H
#define MATC_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Inputs that stand for several files separate them with this line. */
#define FUZZ_SPLIT "\n--matc-fuzz-split--\n"

/* Splits data at FUZZ_SPLIT into at most max parts; returns the count
 * (1 when there is no separator). */
int fuzz_split(const uint8_t *data, size_t size, const uint8_t **part, size_t *len, int max);

/* A scratch directory of this process (under /dev/shm when it exists),
 * removed at exit, and files in it: fuzz_write("a/b.pb", ...) makes DIR/a,
 * writes DIR/a/b.pb and puts its path in `path`. fuzz_clear empties the
 * directory. */
const char *fuzz_dir(void);
void fuzz_write(const char *rel, const void *data, size_t size, char *path, size_t pathlen);
void fuzz_clear(void);

/* Aborts (a crash the fuzzer reports) when a loader failed without saying
 * why: every refusal must be a clear message. */
void fuzz_require_message(int failed, const char *err);

#endif
