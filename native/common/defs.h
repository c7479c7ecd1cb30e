// Portability macros shared by the C++ engine and the CUDA kernels.
#pragma once
#include <stdint.h>
#include <stddef.h>

// Shared numerics are header-only and compiled into every translation unit that uses them.
// They must have internal linkage: an inline function with external linkage compiled in an
// AVX2 translation unit could be picked by the linker for scalar callers (SIGILL on old CPUs).
#if defined(__CUDACC__)
#define ZT_HD static __host__ __device__ __forceinline__
#else
#define ZT_HD static inline
#endif
// Namespace-scope constants of class type read by shared numerics: in the device pass of nvcc they
// are `__device__` (a plain constexpr struct is host-only there); the host pass sees plain constexpr.
#if defined(__CUDA_ARCH__)
#define ZT_HD_CONST static constexpr __device__
#else
#define ZT_HD_CONST static constexpr
#endif
