/* jit.c: optimizes generated code for the host CPU (it has AVX2 and FMA),
 * compiles it to objects and links them with ORC LLJIT (or, for `matc
 * compile`, writes them out). Runtime symbols (matc_rt_*, libm) are
 * resolved from the running process. A large graph is generated as one
 * module per thread (codegen_module_part), each optimized and compiled on
 * its own thread: O3 and instruction selection are most of matc's
 * start-up, and the kernels are independent functions, so nothing is lost
 * by splitting them. A small graph is one module, the same way. */
#include "codegen.h"
#include "exec.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/rt.h"

struct Jit {
  LLVMOrcLLJITRef jit;
};

static int llvm_error(Graph *g, const char *what, LLVMErrorRef e) {
  char *m = LLVMGetErrorMessage(e);
  snprintf(g->err, sizeof g->err, "%s: LLVM %s: %s", g->path ? g->path : "", what, m);
  LLVMDisposeErrorMessage(m);
  return MATC_ERR;
}

static void init_target(void) {
  LLVMInitializeNativeTarget();
  LLVMInitializeNativeAsmPrinter();
}

/* The host's target machine. Safe from the compile threads: LLVM's
 * target registration is not, so it runs once under pthread_once. */
static LLVMTargetMachineRef host_machine(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, init_target);
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
static int optimize(LLVMModuleRef mod, LLVMTargetMachineRef tm, const char *path, char *err, size_t errlen) {
  char *triple = LLVMGetTargetMachineTriple(tm);
  LLVMSetTarget(mod, triple);
  LLVMDisposeMessage(triple);
  LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(tm);
  LLVMSetModuleDataLayout(mod, dl);
  LLVMDisposeTargetData(dl);
  char *msg = NULL;
  if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg)) {
    snprintf(err, errlen, "%s: internal error: generated code fails LLVM's verifier: %.1500s", path, msg);
    LLVMDisposeMessage(msg);
    return MATC_ERR;
  }
  LLVMDisposeMessage(msg);
  LLVMPassBuilderOptionsRef o = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(o, 1);
  LLVMPassBuilderOptionsSetSLPVectorization(o, 1);
  LLVMErrorRef e = LLVMRunPasses(mod, "default<O3>", tm, o);
  LLVMDisposePassBuilderOptions(o);
  if (e) {
    char *m = LLVMGetErrorMessage(e);
    snprintf(err, errlen, "%s: LLVM optimization: %s", path, m);
    LLVMDisposeErrorMessage(m);
    return MATC_ERR;
  }
  return MATC_OK;
}

/* One part of a graph's code (codegen_module_part): optimized and
 * compiled to an object in memory on a thread of its own. */
typedef struct {
  LLVMContextRef cx;
  LLVMModuleRef mod;
  LLVMMemoryBufferRef obj;
  const char *path, *cpu;
  int dump;                      /* print the optimized module (MATC_DUMP_LLVM) */
  int rc;
  char err[1600];
} Part;

/* A target machine for cpu: "native" is the host CPU with its features
 * (what the JIT uses); another name is that LLVM CPU ("generic": any
 * x86-64). NULL when LLVM has none. */
static LLVMTargetMachineRef make_machine(const char *cpu) {
  LLVMTargetMachineRef host = host_machine();   /* initializes the target */
  if (!host || strcmp(cpu, "native") == 0) return host;
  LLVMDisposeTargetMachine(host);
  char *triple = LLVMGetDefaultTargetTriple();
  LLVMTargetRef t;
  char *err = NULL;
  LLVMTargetMachineRef tm = NULL;
  if (!LLVMGetTargetFromTriple(triple, &t, &err))
    tm = LLVMCreateTargetMachine(t, triple, cpu, "", LLVMCodeGenLevelAggressive, LLVMRelocPIC,
                                 LLVMCodeModelDefault);
  LLVMDisposeMessage(err);
  LLVMDisposeMessage(triple);
  return tm;
}

static void *compile_part(void *arg) {
  Part *p = arg;
  LLVMTargetMachineRef tm = make_machine(p->cpu);
  if (!tm) {
    snprintf(p->err, sizeof p->err, "LLVM: no target machine for CPU '%s'", p->cpu);
    p->rc = MATC_ERR;
    return NULL;
  }
  p->rc = optimize(p->mod, tm, p->path, p->err, sizeof p->err);
  if (p->dump) LLVMDumpModule(p->mod);
  char *msg = NULL;
  if (!p->rc && LLVMTargetMachineEmitToMemoryBuffer(tm, p->mod, LLVMObjectFile, &msg, &p->obj)) {
    snprintf(p->err, sizeof p->err, "%s: LLVM code generation: %s", p->path, msg ? msg : "");
    p->rc = MATC_ERR;
  }
  LLVMDisposeMessage(msg);
  LLVMDisposeTargetMachine(tm);
  return NULL;
}

/* How many parts to compile g in: one per thread matc runs with (at most
 * 8), for graphs big enough to be worth it. MATC_JIT_PARTS overrides;
 * MATC_DUMP_LLVM prints one module, so it takes one part. */
static int jit_parts(Graph *g) {
  const char *env = getenv("MATC_JIT_PARTS");
  if (getenv("MATC_DUMP_LLVM")) return 1;
  int live = 0;
  for (int i = 0; i < g->nkernels; i++) live += !g->kernels[i].dead;
  int n = env && *env ? atoi(env) : (live >= 64 ? matc_rt_threads() : 1);
  return n < 1 ? 1 : n > 8 ? 8 : n;
}

/* g's code in nparts modules (codegen_module_part; one module is all of
 * it), each optimized and compiled to an object in memory, on nparts
 * threads at once. */
static int compile_parts(Graph *g, const char *entry, const char *cpu, Part *parts, int nparts) {
  pthread_t tid[8];
  int started[8] = {0};
  memset(parts, 0, sizeof(Part) * (size_t)nparts);
  int rc = MATC_OK;
  for (int p = 0; p < nparts && !rc; p++) {
    parts[p].cx = LLVMContextCreate();
    parts[p].mod = LLVMModuleCreateWithNameInContext(entry, parts[p].cx);
    parts[p].path = g->path ? g->path : "";
    parts[p].cpu = cpu;
    parts[p].dump = getenv("MATC_DUMP_LLVM") != NULL;
    rc = codegen_module_part(g, parts[p].cx, parts[p].mod, entry, p, nparts);
  }
  if (rc) return rc;
  for (int p = 1; p < nparts; p++) started[p] = pthread_create(&tid[p], NULL, compile_part, &parts[p]) == 0;
  compile_part(&parts[0]);
  for (int p = 1; p < nparts; p++) {
    if (started[p]) pthread_join(tid[p], NULL);
    else compile_part(&parts[p]);
  }
  for (int p = 0; p < nparts; p++)
    if (parts[p].rc) {
      snprintf(g->err, sizeof g->err, "%s", parts[p].err);
      return parts[p].rc;
    }
  return MATC_OK;
}

/* Frees what compile_parts made; objects still held are disposed. */
static void free_parts(Part *parts, int nparts) {
  for (int p = 0; p < nparts; p++) {
    if (parts[p].obj) LLVMDisposeMemoryBuffer(parts[p].obj);
    if (parts[p].mod) LLVMDisposeModule(parts[p].mod);
    if (parts[p].cx) LLVMContextDispose(parts[p].cx);
  }
}

/* g compiled in nparts parts, their objects added to j. */
static int jit_add_parts(Graph *g, Jit *j, int nparts) {
  Part parts[8];
  int rc = compile_parts(g, "matc_graph_run", "native", parts, nparts);
  LLVMOrcJITDylibRef lib = LLVMOrcLLJITGetMainJITDylib(j->jit);
  for (int p = 0; p < nparts && !rc; p++) {
    LLVMErrorRef e = LLVMOrcLLJITAddObjectFile(j->jit, lib, parts[p].obj);
    parts[p].obj = NULL;   /* the JIT owns it now, added or not */
    if (e) rc = llvm_error(g, "adding an object", e);
  }
  free_parts(parts, nparts);
  return rc;
}

/* An LLJIT for the host that resolves runtime symbols from this process. */
static int jit_new(Graph *g, Jit **out) {
  LLVMOrcLLJITBuilderRef jb = LLVMOrcCreateLLJITBuilder();
  LLVMOrcJITTargetMachineBuilderRef jtmb;
  LLVMErrorRef e = LLVMOrcJITTargetMachineBuilderDetectHost(&jtmb);
  if (e) {
    LLVMOrcDisposeLLJITBuilder(jb);
    return llvm_error(g, "host detection", e);
  }
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(jb, jtmb);
  Jit *j = calloc(1, sizeof *j);
  e = LLVMOrcCreateLLJIT(&j->jit, jb);
  if (e) {
    free(j);
    return llvm_error(g, "JIT creation", e);
  }
  LLVMOrcDefinitionGeneratorRef gen;
  e = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
      &gen, LLVMOrcLLJITGetGlobalPrefix(j->jit), NULL, NULL);
  if (e) {
    jit_free(j);
    return llvm_error(g, "symbol search", e);
  }
  LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(j->jit), gen);
  *out = j;
  return MATC_OK;
}

int jit_compile(Graph *g, Jit **out, MatcEntryFn *entry) {
  LLVMTargetMachineRef tm = host_machine();
  if (!tm) {
    snprintf(g->err, sizeof g->err, "LLVM: no target machine for this host");
    return MATC_ERR;
  }
  LLVMDisposeTargetMachine(tm);
  Jit *j = NULL;
  int rc = jit_new(g, &j);
  if (rc) return rc;
  int nparts = jit_parts(g);
  rc = jit_add_parts(g, j, nparts);
  g->jit_parts = nparts;
  if (rc) {
    jit_free(j);
    return rc;
  }
  LLVMOrcExecutorAddress addr;
  LLVMErrorRef e = LLVMOrcLLJITLookup(j->jit, &addr, "matc_graph_run");
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

/* `matc compile`: g's kernels and entry function `entry` as relocatable
 * object files <prefix>_0.o ... <prefix>_<n-1>.o (*nobj = n: one per part,
 * as the JIT would split g). cpu "native" is the JIT's choice (host CPU
 * and features, so the trainer computes bit for bit what `matc train`
 * does); "generic" runs on any x86-64. */
int jit_emit_objects(Graph *g, const char *entry, const char *cpu, const char *prefix, int *nobj) {
  *nobj = 0;
  int nparts = jit_parts(g);
  char path[4300];
  Part parts[8];
  int rc = compile_parts(g, entry, cpu, parts, nparts);
  for (int p = 0; p < nparts && !rc; p++) {
    snprintf(path, sizeof path, "%s_%d.o", prefix, p);
    FILE *f = fopen(path, "wb");
    size_t n = LLVMGetBufferSize(parts[p].obj);
    int bad = !f || fwrite(LLVMGetBufferStart(parts[p].obj), 1, n, f) != n;
    if (f && fclose(f)) bad = 1;
    if (bad) {
      snprintf(g->err, sizeof g->err, "cannot write the object file %.1500s", path);
      rc = MATC_ERR;
    }
    if (!rc) *nobj = p + 1;
  }
  free_parts(parts, nparts);
  return rc;
}
