/* codegen.h: the LLVM side of the compiler (code generation and JIT). */
#ifndef MATC_CODEGEN_H
#define MATC_CODEGEN_H

#include "matc_internal.h"
#include <llvm-c/Core.h>

/* Emits every kernel of g and an entry function `void entry(void **bufs)`. */
int codegen_module(Graph *g, LLVMContextRef cx, LLVMModuleRef mod, const char *entry);

typedef void (*MatcEntryFn)(void **bufs);
typedef struct Jit Jit;

/* Generates, optimizes for the host CPU, and JIT-compiles g's kernels. */
int jit_compile(Graph *g, Jit **out, MatcEntryFn *entry);
void jit_free(Jit *j);

#endif
