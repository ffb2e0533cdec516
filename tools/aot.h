/* aot.h: the plan a trainer made by `matc compile` carries. plan.c, which
 * tools/aot_compile.c generates and links into the trainer, defines these;
 * tools/aot_trainer.c reads them. */
#ifndef MATC_AOT_H
#define MATC_AOT_H

#include <stdint.h>

#define AOT_MAX_GRAPHS 16

extern const unsigned char matc_plan_model[], matc_plan_model_end[];  /* the ONNX bytes */
extern const uint64_t matc_plan_model_hash;          /* FNV-1a of those bytes */
extern const char matc_plan_model_name[];            /* the path given to compile */
extern const char matc_plan_target_cpu[];
extern const char *const matc_plan_args[];           /* compile's options, NULL-terminated */
extern const int matc_plan_ngraphs;                  /* in the order cmd_train builds them */
extern void (*const matc_plan_entries[])(void **);
extern const uint64_t matc_plan_fingerprints[];      /* exec_plan_fingerprint of each */
extern const char *const matc_plan_inputs[];         /* exec_describe_inputs of each */

int matc_trainer_main(int argc, char **argv);

#endif
