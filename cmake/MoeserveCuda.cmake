# The CUDA backend (engine/cuda/). MOESERVE_ENABLE_CUDA defaults to ON when CMake finds nvcc
# (check_language), so `ci` and `dev` compile it wherever the toolkit is installed; the sanitizer
# and fuzz presets turn it OFF. With it on, this file enables the CUDA language for sm_90 (never
# `native`: CI has no GPU, TOOLING.md quirk 5), finds the toolkit (CUDA::cudart, CUDA::cublasLt)
# and sets MOESERVE_HAVE_CUDA=ON, which engine/ (backend registry) and expert-shard/ (NCCL) read.
include(CheckLanguage)
if(NOT DEFINED CACHE{MOESERVE_ENABLE_CUDA})
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(moeserve_cuda_default ON)
  else()
    set(moeserve_cuda_default OFF)
  endif()
  set(MOESERVE_ENABLE_CUDA ${moeserve_cuda_default} CACHE BOOL
      "Build the CUDA backend (default: ON when nvcc is found)")
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
