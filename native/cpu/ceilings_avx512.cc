// The AVX-512 VNNI int8 dot peak (ceilings.h): what the VNNI integer GEMM is measured against.
// Inline asm, like the AVX2 ceilings, so the compiler cannot hoist the loop-invariant products.
// GCC 12 warns inside its own headers (the undefined pass-through operands of _mm512_reduce_add_epi32).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "ceilings.h"

namespace zt {
namespace avx512 {

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
