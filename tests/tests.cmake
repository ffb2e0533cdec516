# tests.cmake: every test is registered through matc_test(); a test passes
# on exit 0, is skipped on exit 77 (the model uses something matc does not
# support), and fails on anything else.
#
# A sanitizer build (-DMATC_SANITIZE=ON: build-asan/, AddressSanitizer,
# LeakSanitizer and UBSan, any report fatal) registers only the tests this
# expression matches: every hostile-input test, every fuzz replay and unit
# test, the bundled models' forward passes and mlp's gradients, the ONNX
# backend's pytorch-converted, pytorch-operator and simple suites (140
# models), checkpoints, partition and MAT training. README, "Hostile inputs
# and fuzzing".
set(MATC_SANITIZE_TESTS "^(bad-inputs|fuzz/.*|unit/.*|model/(mlp|vgg-small|bert-mini|switch-mini)/forward|model/mlp/gradcheck|onnx/(pytorch-converted|pytorch-operator|simple)/.*|train/(checkpoint|inplace)|partition/.*|mat/train)$")
function(matc_test name)
  set(env "MATC_VERIFY=1;OPENBLAS_NUM_THREADS=1")
  if(MATC_SANITIZE)
    if(NOT name MATCHES "${MATC_SANITIZE_TESTS}")
      return()
    endif()
    list(APPEND env "ASAN_OPTIONS=detect_leaks=1" "UBSAN_OPTIONS=print_stacktrace=1")
  endif()
  add_test(NAME ${name} COMMAND ${ARGN})
  set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300 ENVIRONMENT "${env}")
endfunction()
# Labels for `ctest -L`, on tests this build registered.
function(matc_labels name labels)
  if(TEST ${name})
    set_tests_properties(${name} PROPERTIES LABELS "${labels}")
  endif()
endfunction()

set(MATC_SRC ${CMAKE_SOURCE_DIR})

# ONNX backend node tests, one CTest test each (label onnx).
set(ONNX_TEST_ROOT /usr/include/onnx/backend/test/data CACHE PATH "ONNX backend test data (libonnx-testdata)")
foreach(suite node pytorch-converted pytorch-operator simple)
  file(GLOB dirs LIST_DIRECTORIES true ${ONNX_TEST_ROOT}/${suite}/*)
  foreach(d ${dirs})
    if(IS_DIRECTORY ${d} AND EXISTS ${d}/model.onnx)
      get_filename_component(t ${d} NAME)
      matc_test(onnx/${suite}/${t} sh ${MATC_SRC}/tests/run_onnx_test.sh $<TARGET_FILE:matc> ${d})
      matc_labels(onnx/${suite}/${t} onnx)
    endif()
  endforeach()
endforeach()

# The bundled models against their PyTorch reference outputs.
foreach(m mlp vgg-small bert-mini switch-mini)
  if(EXISTS ${MATC_SRC}/models/${m}/model.onnx)
    matc_test(model/${m}/forward $<TARGET_FILE:matc> run ${MATC_SRC}/models/${m}/model.onnx
      --data ${MATC_SRC}/models/${m}/test_data_set_0 --rtol 1e-4 --atol 1e-5)
    matc_labels(model/${m}/forward model)
  endif()
endforeach()

# Bad input: clear errors, no crashes.
matc_test(bad-inputs sh ${MATC_SRC}/tests/bad_inputs.sh $<TARGET_FILE:matc> ${MATC_SRC}/tests/data/bad)

# The fuzz targets (fuzz/) without libFuzzer: every input of the committed
# corpus and every input a fuzzer once crashed on (fuzz/regress/<target>)
# runs once; a crash, hang or sanitizer report fails the test.
foreach(t ${MATC_FUZZ_TARGETS})
  add_executable(fuzz_replay_${t} ${MATC_SRC}/fuzz/replay.c ${MATC_SRC}/fuzz/fuzz_${t}.c
    ${MATC_SRC}/fuzz/common.c ${MATC_SRC}/fuzz/data.c)
  target_include_directories(fuzz_replay_${t} PRIVATE ${GEN} ${PROTOBUF_C_INCLUDE} ${LLVM_INCLUDE}
    ${MATC_SRC}/compiler)
  target_link_libraries(fuzz_replay_${t} PRIVATE matc_aot ${PROTOBUF_C_LIB} ${OPENBLAS_LIB} ZLIB::ZLIB
    Threads::Threads m)
  matc_test(fuzz/${t} fuzz_replay_${t} ${MATC_SRC}/fuzz/corpus/${t} ${MATC_SRC}/fuzz/regress/${t})
  matc_labels(fuzz/${t} fuzz)
endforeach()

# Unit tests of the compiler internals (C programs in tests/unit).
file(GLOB unit_tests CONFIGURE_DEPENDS ${MATC_SRC}/tests/unit/*.c)
foreach(src ${unit_tests})
  get_filename_component(t ${src} NAME_WE)
  add_executable(unit_${t} ${src})
  target_link_libraries(unit_${t} PRIVATE matc_compiler matc_runtime ${LLVM_LIB} ${PROTOBUF_C_LIB}
    ${OPENBLAS_LIB} Threads::Threads m)
  set_target_properties(unit_${t} PROPERTIES ENABLE_EXPORTS ON)
  matc_test(unit/${t} unit_${t})
endforeach()

# Training-mode Dropout keeps 1 - ratio of the elements (statistical check).
matc_test(dropout-rate $<TARGET_FILE:matc> run ${MATC_SRC}/tests/data/dropout_rate/model.onnx
  --data ${MATC_SRC}/tests/data/dropout_rate/test_data_set_0 --allow-random --rtol 0 --atol 0.02)

# Fusion turns an elementwise chain plus transpose into one kernel.
matc_test(fusion sh ${MATC_SRC}/tests/fusion.sh $<TARGET_FILE:matc> ${MATC_SRC}/tests/data/fusion)
# Winograd's transform kernels run joined, one loop nest per transform.
matc_test(join sh ${MATC_SRC}/tests/join.sh $<TARGET_FILE:matc> ${MATC_SRC}/tests/data/join)
# The JIT compiling a graph in several parts on several threads computes
# what one module does.
matc_test(jit-parts sh ${MATC_SRC}/tests/jit_parts.sh $<TARGET_FILE:matc> ${MATC_SRC})

# Layout edge cases the ONNX tests miss, checked against pure-Python
# references (python3 standard library only).
# Debian's /usr/bin/python3 first (the one the project's tools are written
# for), not whichever python3 leads PATH.
find_program(PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
find_program(PYTHON3 NAMES python3)
if(PYTHON3)
  matc_test(layout-edge-cases ${PYTHON3} ${MATC_SRC}/tests/layout/edge.py $<TARGET_FILE:matc>)
endif()

# Gradient checks. Per-op models under tests/grad/<family>/<case>/ (made by
# tests/grad/<family>.py): analytic gradients of every float initializer
# against float64 central differences. Bundled models: against PyTorch's
# float64 autograd reference (grad_*.pb).
file(GLOB grad_cases LIST_DIRECTORIES true ${MATC_SRC}/tests/grad/*/*)
foreach(d ${grad_cases})
  if(EXISTS ${d}/model.onnx)
    get_filename_component(case ${d} NAME)
    get_filename_component(fam ${d} DIRECTORY)
    get_filename_component(fam ${fam} NAME)
    matc_test(grad/${fam}/${case} $<TARGET_FILE:matc> gradcheck ${d}/model.onnx --data ${d}/test_data_set_0 --fd)
    matc_labels(grad/${fam}/${case} grad)
  endif()
endforeach()
foreach(m mlp vgg-small bert-mini switch-mini)
  if(EXISTS ${MATC_SRC}/models/${m}/test_data_set_0/grad_0.pb)
    matc_test(model/${m}/gradcheck $<TARGET_FILE:matc> gradcheck ${MATC_SRC}/models/${m}/model.onnx
      --data ${MATC_SRC}/models/${m}/test_data_set_0 --tol 1e-4)
    matc_labels(model/${m}/gradcheck "model;grad")
  endif()
endforeach()

# Foreign models under tests/models/<name>/ (PyTorch exports written the
# way other people write them; made by tools/export_models.py --foreign):
# forward against the PyTorch output, gradients against PyTorch's float64
# autograd reference (grad_*.pb).
file(GLOB foreign_models LIST_DIRECTORIES true ${MATC_SRC}/tests/models/*)
foreach(d ${foreign_models})
  if(EXISTS ${d}/model.onnx)
    get_filename_component(m ${d} NAME)
    matc_test(model/${m}/forward $<TARGET_FILE:matc> run ${d}/model.onnx
      --data ${d}/test_data_set_0 --rtol 1e-4 --atol 1e-5)
    matc_labels(model/${m}/forward "model;foreign")
    if(EXISTS ${d}/test_data_set_0/grad_0.pb)
      matc_test(model/${m}/gradcheck $<TARGET_FILE:matc> gradcheck ${d}/model.onnx
        --data ${d}/test_data_set_0 --tol 1e-4)
      matc_labels(model/${m}/gradcheck "model;grad;foreign")
    endif()
  endif()
endforeach()

# Checkpoints: N + N resumed steps == 2N steps bit for bit, SIGINT, SIGKILL,
# --out TRAINED.onnx.
matc_test(train/checkpoint sh ${MATC_SRC}/tests/checkpoint.sh $<TARGET_FILE:matc> ${MATC_SRC})
matc_labels(train/checkpoint train)
# Optimizer updates in place: no Assign copies, the same losses and model.
matc_test(train/inplace sh ${MATC_SRC}/tests/inplace.sh $<TARGET_FILE:matc> ${MATC_SRC})
matc_labels(train/inplace train)

# Training: the first 20 steps of matc against PyTorch's (tests/train,
# made by tools/make_train_refs.py), SGD-momentum and AdamW, loss per step
# within 1e-3 relative. switch-mini's AdamW run is left out: its top-1
# routing is an argmax, and AdamW's normalised steps on near-zero gradients
# amplify float32 round-off until a token changes expert (1.04e-3 at step
# 18); its SGD run is checked.
foreach(m mlp vgg-small bert-mini switch-mini)
  foreach(opt sgd adamw)
    if(EXISTS ${MATC_SRC}/tests/train/${m}/reference.json AND NOT (m STREQUAL "switch-mini" AND opt STREQUAL "adamw"))
      set(extra "")
      if(m STREQUAL "switch-mini")
        set(extra --freeze causal_mask,expert_ids)
      endif()
      if(PYTHON3)
        matc_test(train/${m}/${opt} ${PYTHON3} ${MATC_SRC}/tests/train_match.py $<TARGET_FILE:matc>
          ${MATC_SRC}/models/${m}/model.onnx ${MATC_SRC}/tests/train/${m} ${opt} ${extra})
        matc_labels(train/${m}/${opt} train)
      endif()
    endif()
  endforeach()
endforeach()

# MAT partition (passes/partition.c, passes/partition_file.c): the modules
# `matc inspect --json` finds in each model, exact slices and FLOPs, the
# partition file's override/add/replace and every error, and --dot.
if(PYTHON3)
  foreach(m mlp vgg-small bert-mini switch-mini gpt-tiny vit-tiny switch-tiny resnet-tiny moe-stacked file dot)
    matc_test(partition/${m} ${PYTHON3} ${MATC_SRC}/tests/partition_check.py $<TARGET_FILE:matc> ${MATC_SRC} ${m})
    matc_labels(partition/${m} partition)
  endforeach()
endif()
matc_test(partition/moe-stacked/forward $<TARGET_FILE:matc> run ${MATC_SRC}/tests/partition/moe-stacked/model.onnx
  --data ${MATC_SRC}/tests/partition/moe-stacked/test_data_set_0 --rtol 1e-4 --atol 1e-5)
matc_labels(partition/moe-stacked/forward partition)

# The mNTK probe against explicit per-sample Jacobians from PyTorch
# (tests/mntk/<model>/, made by tools/make_mntk_refs.py).
add_executable(mntk_check ${MATC_SRC}/tests/mntk/mntk_check.c)
target_link_libraries(mntk_check PRIVATE matc_compiler matc_runtime ${LLVM_LIB} ${PROTOBUF_C_LIB}
  ${OPENBLAS_LIB} Threads::Threads m)
set_target_properties(mntk_check PROPERTIES ENABLE_EXPORTS ON)
foreach(m mlp vgg-small bert-mini switch-mini gpt-tiny vit-tiny switch-tiny resnet-tiny cnn-bn-train
    moe-stacked mlp-rademacher gpt-tiny-rademacher)
  if(EXISTS ${MATC_SRC}/tests/mntk/${m}/reference.txt)
    matc_test(mntk/${m} mntk_check ${MATC_SRC} ${m})
  endif()
endforeach()

# MAT guard branches (tests/unit/guards.c): exactness of active modules'
# updates and bit-identical frozen state under guard patterns, stop mode.
target_compile_definitions(unit_guards PRIVATE MATC_SRC_DIR="${MATC_SRC}")
foreach(opt sgd adamw)
  matc_test(guards/vgg-small/${opt} unit_guards exact ${MATC_SRC}/models/vgg-small/model.onnx ${opt})
  matc_test(guards/bert-mini-heads/${opt} unit_guards exact ${MATC_SRC}/models/bert-mini/model.onnx ${opt} 4)
endforeach()
matc_test(guards/bert-mini-layers/adamw unit_guards exact ${MATC_SRC}/models/bert-mini/model.onnx adamw)
matc_test(guards/stop/mlp unit_guards stop ${MATC_SRC}/models/mlp/model.onnx)
# stop mode per head (passes/guard_heads.c): bert-mini with 4 head modules per
# layer against a reference with per-head Q/K/V weights; executed FLOPs
# fall by at least a head's attention backward per frozen head.
matc_test(guards/stop/bert-mini-heads unit_guards stop-heads ${MATC_SRC}/models/bert-mini/model.onnx 4)
# ... and with every guard on it changes nothing: the partition pass's heads
# (fused QKV in gpt-tiny, a causal mask and experts in switch-mini).
matc_test(guards/stop/gpt-tiny-part unit_guards stop-allon ${MATC_SRC}/tests/models/gpt-tiny/model.onnx part)
matc_test(guards/stop/vit-tiny-part unit_guards stop-allon ${MATC_SRC}/tests/models/vit-tiny/model.onnx part)
matc_test(guards/stop/switch-mini-part unit_guards stop-allon ${MATC_SRC}/models/switch-mini/model.onnx part)
matc_test(guards/clip/mlp unit_guards clip ${MATC_SRC}/models/mlp/model.onnx)

# matc train --mat on end to end (tests/mat_train.py): probe log, frozen
# modules untouched, bit-exact resume with MAT, the plot, bad options.
if(PYTHON3)
  matc_test(mat/train ${PYTHON3} ${MATC_SRC}/tests/mat_train.py $<TARGET_FILE:matc> ${MATC_SRC})
  matc_labels(mat/train mat)
endif()
# The same with the modules of the partition pass (passes/partition.c).
matc_test(guards/bert-mini-part/adamw unit_guards exact ${MATC_SRC}/models/bert-mini/model.onnx adamw part)
matc_test(guards/switch-mini-part/adamw unit_guards exact ${MATC_SRC}/models/switch-mini/model.onnx adamw part)


# matc compile (tests/compile.sh): trainers without LLVM equal matc train
# bit for bit (mlp SGD-momentum, vgg-small AdamW), checkpoint/resume in the
# trainer, fixed options, damaged trainers, bad compile arguments.
matc_test(compile/trainer sh ${MATC_SRC}/tests/compile.sh $<TARGET_FILE:matc> ${MATC_SRC})
matc_labels(compile/trainer compile)

# Data-parallel training under mpirun (tests/mpi_train.py): -np 2 equals one
# process with the global batch (MAT off and on), frozen modules' gradients
# are not sent (bytes counted where they are sent), resume and resharding,
# a stopped or killed rank and bad launches end with clear errors, and a
# compiled trainer runs under mpirun. Without MPI in the build: matc
# started as one of several processes says so.
if(PYTHON3 AND MATC_MPI)
  foreach(part equal mat resume failures compile)
    matc_test(mpi/${part} ${PYTHON3} ${MATC_SRC}/tests/mpi_train.py $<TARGET_FILE:matc> ${MATC_SRC} ${part})
    matc_labels(mpi/${part} mpi)
  endforeach()
elseif(NOT MATC_MPI)
  matc_test(mpi/without-mpi sh -c "OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_RANK=0 $<TARGET_FILE:matc> train \
${MATC_SRC}/models/mlp/model.onnx --data pb:${MATC_SRC}/tests/train/mlp/data --steps 1 2>&1 | grep -q 'built without MPI'")
  matc_labels(mpi/without-mpi mpi)
endif()
