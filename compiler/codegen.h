/* codegen.h: the LLVM side of the compiler (code generation and JIT). */
#ifndef MATC_CODEGEN_H
#define MATC_CODEGEN_H

#include "matc_internal.h"
#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

/* Emits every kernel of g and an entry function `void entry(void **bufs)`. */
int codegen_module(Graph *g, LLVMContextRef cx, LLVMModuleRef mod, const char *entry);
/* Part `part` of nparts modules that together hold what codegen_module
 * emits: the loop kernels split between them by size, with external
 * names k<index>; part 0 also has the entry function. The JIT optimizes
 * and compiles the parts on separate threads. */
int codegen_module_part(Graph *g, LLVMContextRef cx, LLVMModuleRef mod, const char *entry, int part,
                        int nparts);

typedef void (*MatcEntryFn)(void **bufs);
typedef struct Jit Jit;

/* Generates, optimizes for the host CPU, and JIT-compiles g's kernels. */
int jit_compile(Graph *g, Jit **out, MatcEntryFn *entry);
void jit_free(Jit *j);
/* `matc compile` (tools/aot_compile.c): the O3 pipeline, and g as object
 * files <prefix>_0.o .. <prefix>_<*nobj - 1>.o, one per part as the JIT
 * splits g, whose only default-visibility symbol is `entry` (kernels
 * called across parts are hidden, named after entry); cpu "native" or an
 * LLVM CPU name. */
int jit_emit_objects(Graph *g, const char *entry, const char *cpu, const char *prefix, int *nobj);

#endif
