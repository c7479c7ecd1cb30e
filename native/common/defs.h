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
