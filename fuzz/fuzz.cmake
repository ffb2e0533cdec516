# fuzz.cmake: the libFuzzer targets (MATC_FUZZ=ON), one per kind of
# untrusted input, each built with AddressSanitizer and UBSan. Included by
# CMakeLists.txt instead of everything else: no LLVM library, no matc.
#   cmake -S . -B build-fuzz -DMATC_FUZZ=ON -DCMAKE_C_COMPILER=clang
#   cmake --build build-fuzz -j2
#   sh tools/fuzz.sh [SECONDS] [TARGET...]
if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "MATC_FUZZ needs clang (libFuzzer): configure with -DCMAKE_C_COMPILER=clang")
endif()
# The LLVM C headers only (exec.h names LLVM types); nothing links LLVM.
find_program(LLVM_CONFIG NAMES llvm-config-19 REQUIRED)
execute_process(COMMAND ${LLVM_CONFIG} --includedir OUTPUT_VARIABLE LLVM_INCLUDE OUTPUT_STRIP_TRAILING_WHITESPACE)

add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
  -fno-omit-frame-pointer)
add_library(matc_fuzz STATIC ${AOT_COMPILER_SRC} ${RUNTIME_SRC} ${GEN}/onnx.pb-c.c
  tools/checkpoint.c fuzz/common.c fuzz/data.c)
target_include_directories(matc_fuzz PUBLIC ${GEN} ${PROTOBUF_C_INCLUDE} ${CBLAS_INCLUDE} ${LLVM_INCLUDE}
  ${CMAKE_SOURCE_DIR}/compiler)
target_link_libraries(matc_fuzz PUBLIC ${PROTOBUF_C_LIB} ${OPENBLAS_LIB} ZLIB::ZLIB Threads::Threads m)
foreach(t ${MATC_FUZZ_TARGETS})
  add_executable(fuzz_${t} fuzz/fuzz_${t}.c)
  target_link_libraries(fuzz_${t} PRIVATE matc_fuzz)
  target_link_options(fuzz_${t} PRIVATE -fsanitize=fuzzer,address,undefined)
endforeach()
