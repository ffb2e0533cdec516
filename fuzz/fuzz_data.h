/* fuzz_data.h: opens a data spec the way `matc train --data` does and
 * draws every kind of batch from it (fuzz/data.c). */
#ifndef MATC_FUZZ_DATA_H
#define MATC_FUZZ_DATA_H

void fuzz_dataset(const char *spec);

#endif
