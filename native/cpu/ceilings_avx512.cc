// The AVX-512 compute peaks (ceilings.h): fp32 FMA on zmm and the VNNI int8 dot, what the avx512
// path's GEMM tiles are measured against.
// Inline asm, like the AVX2 ceilings, so the compiler cannot hoist the loop-invariant products.
// GCC 12 warns inside its own headers (the undefined pass-through operands of _mm512_reduce_add_epi32).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "ceilings.h"

namespace zt {
namespace avx512 {

// 12 independent vfmadd231ps zmm chains x = fma(1, 1, x).
double ceiling_fma512_task(uint64_t iters) {
  __m512 x0 = _mm512_setzero_ps(), x1 = x0, x2 = x0, x3 = x0, x4 = x0, x5 = x0, x6 = x0, x7 = x0, x8 = x0, x9 = x0, x10 = x0,
         x11 = x0;
  const __m512 one = _mm512_set1_ps(1.0f);
  for (uint64_t i = 0; i < iters; ++i) {
    __asm__ volatile(
        "vfmadd231ps %[o], %[o], %[x0]\n\t"
        "vfmadd231ps %[o], %[o], %[x1]\n\t"
        "vfmadd231ps %[o], %[o], %[x2]\n\t"
        "vfmadd231ps %[o], %[o], %[x3]\n\t"
        "vfmadd231ps %[o], %[o], %[x4]\n\t"
        "vfmadd231ps %[o], %[o], %[x5]\n\t"
        "vfmadd231ps %[o], %[o], %[x6]\n\t"
        "vfmadd231ps %[o], %[o], %[x7]\n\t"
        "vfmadd231ps %[o], %[o], %[x8]\n\t"
        "vfmadd231ps %[o], %[o], %[x9]\n\t"
        "vfmadd231ps %[o], %[o], %[x10]\n\t"
        "vfmadd231ps %[o], %[o], %[x11]\n\t"
        : [x0] "+v"(x0), [x1] "+v"(x1), [x2] "+v"(x2), [x3] "+v"(x3), [x4] "+v"(x4), [x5] "+v"(x5), [x6] "+v"(x6),
          [x7] "+v"(x7), [x8] "+v"(x8), [x9] "+v"(x9), [x10] "+v"(x10), [x11] "+v"(x11)
        : [o] "v"(one));
  }
  const __m512 s = _mm512_add_ps(
      _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(x0, x1), _mm512_add_ps(x2, x3)), _mm512_add_ps(_mm512_add_ps(x4, x5), _mm512_add_ps(x6, x7))),
      _mm512_add_ps(_mm512_add_ps(x8, x9), _mm512_add_ps(x10, x11)));
  return (double)_mm512_reduce_add_ps(s);
}

// 12 independent vpdpbusd chains (64 u8 x s8 MACs each) on all-ones data: enough in flight for
// two issues per cycle at a 5-cycle latency.
double ceiling_vnni_task(uint64_t iters) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0,
          a10 = a0, a11 = a0;
  const __m512i u = _mm512_set1_epi8(1), s = _mm512_set1_epi8(1);
  for (uint64_t i = 0; i < iters; ++i) {
    __asm__ volatile(
        "vpdpbusd %[s], %[u], %[a0]\n\t"
        "vpdpbusd %[s], %[u], %[a1]\n\t"
        "vpdpbusd %[s], %[u], %[a2]\n\t"
        "vpdpbusd %[s], %[u], %[a3]\n\t"
        "vpdpbusd %[s], %[u], %[a4]\n\t"
        "vpdpbusd %[s], %[u], %[a5]\n\t"
        "vpdpbusd %[s], %[u], %[a6]\n\t"
        "vpdpbusd %[s], %[u], %[a7]\n\t"
        "vpdpbusd %[s], %[u], %[a8]\n\t"
        "vpdpbusd %[s], %[u], %[a9]\n\t"
        "vpdpbusd %[s], %[u], %[a10]\n\t"
        "vpdpbusd %[s], %[u], %[a11]\n\t"
        : [a0] "+v"(a0), [a1] "+v"(a1), [a2] "+v"(a2), [a3] "+v"(a3), [a4] "+v"(a4), [a5] "+v"(a5), [a6] "+v"(a6),
          [a7] "+v"(a7), [a8] "+v"(a8), [a9] "+v"(a9), [a10] "+v"(a10), [a11] "+v"(a11)
        : [u] "v"(u), [s] "v"(s));
  }
  const __m512i sum = _mm512_add_epi32(
      _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                       _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7))),
      _mm512_add_epi32(_mm512_add_epi32(a8, a9), _mm512_add_epi32(a10, a11)));
  return (double)_mm512_reduce_add_epi32(sum);
}

}  // namespace avx512
}  // namespace zt
