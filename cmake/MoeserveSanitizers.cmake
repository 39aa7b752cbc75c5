# MOESERVE_SANITIZE: ON or "address" (AddressSanitizer + UBSan), "thread" (ThreadSanitizer).
if(MOESERVE_SANITIZE STREQUAL "thread")
  # -O1 keeps TSan's slowdown bearable; the test binaries only (see the tsan preset).
  # -Wno-tsan: GCC warns that TSan does not model atomic_thread_fence (used by abseil headers).
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer -O1 -Wno-tsan)
  add_link_options(-fsanitize=thread)
elseif(MOESERVE_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# MOESERVE_FUZZ: every object gets libFuzzer's coverage instrumentation plus ASan and UBSan; only the
# fuzz targets link libFuzzer's driver (-fsanitize=fuzzer, tests/fuzz/CMakeLists.txt).
if(MOESERVE_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "MOESERVE_FUZZ needs clang (the fuzz preset uses clang++-14)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
