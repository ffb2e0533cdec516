/* jit.c: optimizes a generated module for the host CPU (it has AVX2 and
 * FMA) and loads it with ORC LLJIT. Runtime symbols (matc_rt_*, libm) are
 * resolved from the running process. */
#include "codegen.h"
#include "exec.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <stdlib.h>
#include <string.h>

struct Jit {
  LLVMOrcLLJITRef jit;
};

static int llvm_error(Graph *g, const char *what, LLVMErrorRef e) {
  char *m = LLVMGetErrorMessage(e);
  snprintf(g->err, sizeof g->err, "%s: LLVM %s: %s", g->path ? g->path : "", what, m);
  LLVMDisposeErrorMessage(m);
  return MATC_ERR;
}

static LLVMTargetMachineRef host_machine(void) {
  static int init;
  if (!init) {
    LLVMInitializeNativeTarget();
    LLVMInitializeNativeAsmPrinter();
    init = 1;
  }
  char *triple = LLVMGetDefaultTargetTriple();
  char *cpu = LLVMGetHostCPUName();
  char *feat = LLVMGetHostCPUFeatures();
  LLVMTargetRef t;
  char *err = NULL;
  LLVMTargetMachineRef tm = NULL;
  if (!LLVMGetTargetFromTriple(triple, &t, &err))
    tm = LLVMCreateTargetMachine(t, triple, cpu, feat, LLVMCodeGenLevelAggressive, LLVMRelocPIC,
                                 LLVMCodeModelJITDefault);
  LLVMDisposeMessage(err);
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(feat);
  return tm;
}

/* Runs LLVM's O3 pipeline with the host machine's cost model. */
int jit_optimize(Graph *g, LLVMModuleRef mod, LLVMTargetMachineRef tm) {
  char *triple = LLVMGetTargetMachineTriple(tm);
  LLVMSetTarget(mod, triple);
  LLVMDisposeMessage(triple);
  LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(tm);
  LLVMSetModuleDataLayout(mod, dl);
  LLVMDisposeTargetData(dl);
  char *msg = NULL;
  if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg)) {
    snprintf(g->err, sizeof g->err, "%s: internal error: generated code fails LLVM's verifier: %.1500s",
             g->path ? g->path : "", msg);
    LLVMDisposeMessage(msg);
    return MATC_ERR;
  }
  LLVMDisposeMessage(msg);
  LLVMPassBuilderOptionsRef o = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(o, 1);
  LLVMPassBuilderOptionsSetSLPVectorization(o, 1);
  LLVMErrorRef e = LLVMRunPasses(mod, "default<O3>", tm, o);
  LLVMDisposePassBuilderOptions(o);
  if (e) return llvm_error(g, "optimization", e);
  return MATC_OK;
}

int jit_compile(Graph *g, Jit **out, MatcEntryFn *entry) {
  LLVMTargetMachineRef tm = host_machine();
  if (!tm) {
    snprintf(g->err, sizeof g->err, "LLVM: no target machine for this host");
    return MATC_ERR;
  }
  LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
  LLVMContextRef cx = LLVMOrcThreadSafeContextGetContext(tsc);
  LLVMModuleRef mod = LLVMModuleCreateWithNameInContext("matc", cx);
  int rc = codegen_module(g, cx, mod, "matc_graph_run");
  if (!rc) rc = jit_optimize(g, mod, tm);
  LLVMDisposeTargetMachine(tm);
  if (getenv("MATC_DUMP_LLVM")) LLVMDumpModule(mod);
  if (rc) {
    LLVMDisposeModule(mod);
    LLVMOrcDisposeThreadSafeContext(tsc);
    return rc;
  }
  LLVMOrcLLJITBuilderRef jb = LLVMOrcCreateLLJITBuilder();
  LLVMOrcJITTargetMachineBuilderRef jtmb;
  LLVMErrorRef e = LLVMOrcJITTargetMachineBuilderDetectHost(&jtmb);
  if (e) {
    LLVMOrcDisposeLLJITBuilder(jb);
    LLVMDisposeModule(mod);
    LLVMOrcDisposeThreadSafeContext(tsc);
    return llvm_error(g, "host detection", e);
  }
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(jb, jtmb);
  Jit *j = calloc(1, sizeof *j);
  e = LLVMOrcCreateLLJIT(&j->jit, jb);
  if (e) {
    free(j);
    LLVMDisposeModule(mod);
    LLVMOrcDisposeThreadSafeContext(tsc);
    return llvm_error(g, "JIT creation", e);
  }
  LLVMOrcDefinitionGeneratorRef gen;
  e = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
      &gen, LLVMOrcLLJITGetGlobalPrefix(j->jit), NULL, NULL);
  if (e) {
    jit_free(j);
    LLVMDisposeModule(mod);
    LLVMOrcDisposeThreadSafeContext(tsc);
    return llvm_error(g, "symbol search", e);
  }
  LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(j->jit), gen);
  LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(mod, tsc);
  LLVMOrcDisposeThreadSafeContext(tsc);
  e = LLVMOrcLLJITAddLLVMIRModule(j->jit, LLVMOrcLLJITGetMainJITDylib(j->jit), tsm);
  if (e) {
    jit_free(j);
    return llvm_error(g, "adding the module", e);
  }
  LLVMOrcExecutorAddress addr;
  e = LLVMOrcLLJITLookup(j->jit, &addr, "matc_graph_run");
  if (e) {
    jit_free(j);
    return llvm_error(g, "symbol lookup", e);
  }
  *out = j;
  *entry = (MatcEntryFn)(uintptr_t)addr;
  return MATC_OK;
}

void jit_free(Jit *j) {
  if (!j) return;
  if (j->jit) LLVMOrcDisposeLLJIT(j->jit);
  free(j);
}

static int jit_bind(Graph *g, void **handle, MatcEntryFn *entry) {
  Jit *j = NULL;
  int rc = jit_compile(g, &j, entry);
  *handle = j;
  return rc;
}

static void jit_release(void *handle) { jit_free(handle); }

const ExecBackend exec_jit_backend = {jit_bind, jit_release};

/* `matc compile`: g's kernels and entry function `entry` as a relocatable
 * object file. cpu "native" is the JIT's choice (host CPU and features,
 * so the trainer computes bit for bit what `matc train` does); "generic"
 * runs on any x86-64. */
int jit_emit_object(Graph *g, const char *entry, const char *cpu, const char *path) {
  LLVMTargetMachineRef host = host_machine();   /* initializes the target */
  if (!host) {
    snprintf(g->err, sizeof g->err, "LLVM: no target machine for this host");
    return MATC_ERR;
  }
  LLVMTargetMachineRef tm = host;
  if (strcmp(cpu, "native") != 0) {
    char *triple = LLVMGetDefaultTargetTriple();
    LLVMTargetRef t;
    char *err = NULL;
    tm = NULL;
    if (!LLVMGetTargetFromTriple(triple, &t, &err))
      tm = LLVMCreateTargetMachine(t, triple, cpu, "", LLVMCodeGenLevelAggressive, LLVMRelocPIC,
                                   LLVMCodeModelDefault);
    LLVMDisposeMessage(err);
    LLVMDisposeMessage(triple);
    LLVMDisposeTargetMachine(host);
    if (!tm) {
      snprintf(g->err, sizeof g->err, "LLVM: no target machine for CPU '%s'", cpu);
      return MATC_ERR;
    }
  }
  LLVMContextRef cx = LLVMContextCreate();
  LLVMModuleRef mod = LLVMModuleCreateWithNameInContext(entry, cx);
  int rc = codegen_module(g, cx, mod, entry);
  if (!rc) rc = jit_optimize(g, mod, tm);
  if (!rc) {
    char *msg = NULL;
    if (LLVMTargetMachineEmitToFile(tm, mod, (char *)path, LLVMObjectFile, &msg)) {
      snprintf(g->err, sizeof g->err, "LLVM: cannot write the object file %s: %s", path, msg ? msg : "");
      rc = MATC_ERR;
    }
    LLVMDisposeMessage(msg);
  }
  LLVMDisposeModule(mod);
  LLVMContextDispose(cx);
  LLVMDisposeTargetMachine(tm);
  return rc;
}
