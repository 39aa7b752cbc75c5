# The CUDA backend (engine/cuda/). MOESERVE_ENABLE_CUDA defaults to ON when CMake finds nvcc
# (check_language) and no sanitizer or fuzz build is asked for, so `ci` and `dev` compile it
# wherever the toolkit is installed; the asan, tsan and fuzz presets also set it OFF. With it on,
# this file enables the CUDA language for sm_90 (never `native`: CI has no GPU, TOOLING.md quirk
# 5), finds the toolkit (CUDA::cudart, CUDA::cublasLt) and sets MOESERVE_HAVE_CUDA=ON, which
# engine/ (the backend registry) and expert-shard/ (NCCL) read.
include(CheckLanguage)
set(moeserve_cuda_doc "Build the CUDA backend (default: ON when nvcc is found, OFF with sanitizers)")
# Build folders configured before this file kept the old option's OFF default; treat that entry
# as unset once so they get the automatic default too (sanitizer builds still come out OFF).
get_property(moeserve_cuda_old_doc CACHE MOESERVE_ENABLE_CUDA PROPERTY HELPSTRING)
if(moeserve_cuda_old_doc STREQUAL "Build the CUDA backend when nvcc is present")
  unset(MOESERVE_ENABLE_CUDA CACHE)
endif()
if(NOT DEFINED CACHE{MOESERVE_ENABLE_CUDA})
  set(moeserve_cuda_default OFF)
  if(NOT MOESERVE_SANITIZE AND NOT MOESERVE_FUZZ)
    check_language(CUDA)
    if(CMAKE_CUDA_COMPILER)
      set(moeserve_cuda_default ON)
    endif()
  endif()
  set(MOESERVE_ENABLE_CUDA ${moeserve_cuda_default} CACHE BOOL "${moeserve_cuda_doc}")
endif()

set(MOESERVE_HAVE_CUDA OFF CACHE INTERNAL "The CUDA backend is built")
if(MOESERVE_ENABLE_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90)
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  set(MOESERVE_HAVE_CUDA ON CACHE INTERNAL "The CUDA backend is built")
  message(STATUS "CUDA backend: nvcc ${CMAKE_CUDA_COMPILER_VERSION}, sm_${CMAKE_CUDA_ARCHITECTURES}")
endif()
