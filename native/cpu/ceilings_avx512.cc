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

// One iteration of 12 independent chains x_i = op(x_i, a, b) in inline asm (named accumulators:
// arrays would live in memory between iterations).
#define ZT_OP12(op)                                                                                         \
  op " %[b], %[a], %[x0]\n\t" op " %[b], %[a], %[x1]\n\t" op " %[b], %[a], %[x2]\n\t" op " %[b], %[a], %[x3]\n\t" \
  op " %[b], %[a], %[x4]\n\t" op " %[b], %[a], %[x5]\n\t" op " %[b], %[a], %[x6]\n\t" op " %[b], %[a], %[x7]\n\t" \
  op " %[b], %[a], %[x8]\n\t" op " %[b], %[a], %[x9]\n\t" op " %[b], %[a], %[x10]\n\t" op " %[b], %[a], %[x11]\n\t"
#define ZT_ACC12                                                                                               \
  [x0] "+v"(x0), [x1] "+v"(x1), [x2] "+v"(x2), [x3] "+v"(x3), [x4] "+v"(x4), [x5] "+v"(x5), [x6] "+v"(x6), [x7] "+v"(x7), \
      [x8] "+v"(x8), [x9] "+v"(x9), [x10] "+v"(x10), [x11] "+v"(x11)

// 12 independent vfmadd231ps zmm chains x = fma(1, 1, x).
double ceiling_fma512_task(uint64_t iters) {
  __m512 x0 = _mm512_setzero_ps(), x1 = x0, x2 = x0, x3 = x0, x4 = x0, x5 = x0, x6 = x0, x7 = x0, x8 = x0, x9 = x0, x10 = x0,
         x11 = x0;
  const __m512 one = _mm512_set1_ps(1.0f);
  for (uint64_t i = 0; i < iters; ++i) __asm__ volatile(ZT_OP12("vfmadd231ps") : ZT_ACC12 : [a] "v"(one), [b] "v"(one));
  const __m512 s = _mm512_add_ps(
      _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(x0, x1), _mm512_add_ps(x2, x3)), _mm512_add_ps(_mm512_add_ps(x4, x5), _mm512_add_ps(x6, x7))),
      _mm512_add_ps(_mm512_add_ps(x8, x9), _mm512_add_ps(x10, x11)));
  return (double)_mm512_reduce_add_ps(s);
}

// 12 independent vpdpbusd chains (64 u8 x s8 MACs each) on all-ones data: enough in flight for
// two issues per cycle at a 5-cycle latency.
double ceiling_vnni_task(uint64_t iters) {
  __m512i x0 = _mm512_setzero_si512(), x1 = x0, x2 = x0, x3 = x0, x4 = x0, x5 = x0, x6 = x0, x7 = x0, x8 = x0, x9 = x0,
          x10 = x0, x11 = x0;
  const __m512i ones = _mm512_set1_epi8(1);
  for (uint64_t i = 0; i < iters; ++i) __asm__ volatile(ZT_OP12("vpdpbusd") : ZT_ACC12 : [a] "v"(ones), [b] "v"(ones));
  const __m512i sum = _mm512_add_epi32(
      _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(x0, x1), _mm512_add_epi32(x2, x3)),
                       _mm512_add_epi32(_mm512_add_epi32(x4, x5), _mm512_add_epi32(x6, x7))),
      _mm512_add_epi32(_mm512_add_epi32(x8, x9), _mm512_add_epi32(x10, x11)));
  return (double)_mm512_reduce_add_epi32(sum);
}

#undef ZT_OP12
#undef ZT_ACC12

}  // namespace avx512
}  // namespace zt
