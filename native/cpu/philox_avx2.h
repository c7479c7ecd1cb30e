// 8-lane AVX2 Philox4x32-10 and Box-Muller, bit-identical to native/common/philox.h.
// Include only from *_avx2.cc translation units (compiled with -mavx2 -mfma -mf16c).
#pragma once
#include <immintrin.h>

#include "../common/philox.h"

namespace zt {
namespace avx2 {

struct Words8 {
  __m256i w[4];  // w[k] lane l = word k of counter (base + l)
};

static inline void mulhilo8(__m256i a, __m256i m, __m256i* hi, __m256i* lo) {
  __m256i pe = _mm256_mul_epu32(a, m);
  __m256i po = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  *lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
}

// Philox of the 8 counters base..base+7 (base a multiple of 8).
static inline Words8 philox8(RngKey key, uint64_t base) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)base), lane);
  __m256i c1 = _mm256_set1_epi32((int)(uint32_t)(base >> 32));
  __m256i c2 = _mm256_set1_epi32((int)key.stream);
  __m256i c3 = _mm256_set1_epi32((int)key.purpose);
  const __m256i m0 = _mm256_set1_epi32((int)kPhiloxM0), m1 = _mm256_set1_epi32((int)kPhiloxM1);
  uint32_t k0 = (uint32_t)key.seed, k1 = (uint32_t)(key.seed >> 32);
  for (int r = 0; r < 10; ++r) {
    __m256i hi0, lo0, hi1, lo1;
    mulhilo8(c0, m0, &hi0, &lo0);
    mulhilo8(c2, m1, &hi1, &lo1);
    __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32((int)k0));
    __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32((int)k1));
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return Words8{{c0, c1, c2, c3}};
}

static inline __m256 uniform_open8(__m256i w) {
  __m256 f = _mm256_cvtepi32_ps(_mm256_srli_epi32(w, 9));
  return _mm256_mul_ps(_mm256_add_ps(f, _mm256_set1_ps(0.5f)), _mm256_set1_ps(0x1p-23f));
}

static inline __m256 uniform_sr8(__m256i w) {
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(w, 8)), _mm256_set1_ps(0x1p-24f));
}

static inline __m256 log_unit8(__m256 x) {
  __m256i b = _mm256_castps_si256(x);
  __m256 e = _mm256_cvtepi32_ps(
      _mm256_sub_epi32(_mm256_and_si256(_mm256_srli_epi32(b, 23), _mm256_set1_epi32(0xff)), _mm256_set1_epi32(126)));
  __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(b, _mm256_set1_epi32(0x007fffff)),
                                                 _mm256_set1_epi32(0x3f000000)));
  const __m256 minus1 = _mm256_set1_ps(-1.0f);
  __m256 small = _mm256_cmp_ps(m, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
  e = _mm256_blendv_ps(e, _mm256_add_ps(e, minus1), small);
  m = _mm256_blendv_ps(_mm256_add_ps(m, minus1), _mm256_add_ps(_mm256_add_ps(m, m), minus1), small);
  __m256 z = _mm256_mul_ps(m, m);
  __m256 p = _mm256_set1_ps(7.0376836292e-2f);
  p = _mm256_fmadd_ps(p, m, _mm256_set1_ps(-1.1514610310e-1f));
  p = _mm256_fmadd_ps(p, m, _mm256_set1_ps(1.1676998740e-1f));
  p = _mm256_fmadd_ps(p, m, _mm256_set1_ps(-1.2420140846e-1f));
  p = _mm256_fmadd_ps(p, m, _mm256_set1_ps(1.4249322787e-1f));
  p = _mm256_fmadd_ps(p, m, _mm256_set1_ps(-1.6668057665e-1f));
  p = _mm256_fmadd_ps(p, m, _mm256_set1_ps(2.0000714765e-1f));
  p = _mm256_fmadd_ps(p, m, _mm256_set1_ps(-2.4999993993e-1f));
  p = _mm256_fmadd_ps(p, m, _mm256_set1_ps(3.3333331174e-1f));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, m), z);
  y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), y);
  y = _mm256_fmadd_ps(_mm256_set1_ps(-0.5f), z, y);
  __m256 r = _mm256_add_ps(m, y);
  return _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), r);
}

static inline void box_muller8(__m256i wr, __m256i wa, __m256* n0, __m256* n1) {
  __m256 r = _mm256_sqrt_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), log_unit8(uniform_open8(wr))));
  __m256 f = _mm256_mul_ps(
      _mm256_add_ps(_mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(wa, 7), _mm256_set1_epi32(0x7fffff))),
                    _mm256_set1_ps(0.5f)),
      _mm256_set1_ps(0x1p-23f));
  __m256 a = _mm256_mul_ps(_mm256_add_ps(f, _mm256_set1_ps(-0.5f)), _mm256_set1_ps(1.57079632679489662f));
  __m256 a2 = _mm256_mul_ps(a, a);
  __m256 ps = _mm256_set1_ps(-1.9515295891e-4f);
  ps = _mm256_fmadd_ps(ps, a2, _mm256_set1_ps(8.3321608736e-3f));
  ps = _mm256_fmadd_ps(ps, a2, _mm256_set1_ps(-1.6666654611e-1f));
  __m256 s = _mm256_fmadd_ps(_mm256_mul_ps(ps, a2), a, a);
  __m256 pc = _mm256_set1_ps(2.443315711809948e-5f);
  pc = _mm256_fmadd_ps(pc, a2, _mm256_set1_ps(-1.388731625493765e-3f));
  pc = _mm256_fmadd_ps(pc, a2, _mm256_set1_ps(4.166664568298827e-2f));
  __m256 c = _mm256_fmadd_ps(_mm256_mul_ps(pc, a2), a2, _mm256_fmadd_ps(_mm256_set1_ps(-0.5f), a2, _mm256_set1_ps(1.0f)));
  __m256i q = _mm256_srli_epi32(wa, 30);
  __m256 odd = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(q, _mm256_set1_epi32(1)), _mm256_set1_epi32(1)));
  __m256 x = _mm256_blendv_ps(c, s, odd);
  __m256 y = _mm256_blendv_ps(s, c, odd);
  // negate x in quadrants 1, 2; y in quadrants 2, 3
  __m256i qm1 = _mm256_sub_epi32(q, _mm256_set1_epi32(1));
  __m256i negx = _mm256_cmpgt_epi32(_mm256_set1_epi32(2), qm1);  // q-1 in {0,1} (q=0 gives -1 -> also < 2)
  negx = _mm256_andnot_si256(_mm256_cmpeq_epi32(q, _mm256_setzero_si256()), negx);
  __m256i negy = _mm256_cmpgt_epi32(q, _mm256_set1_epi32(1));
  const __m256i sign = _mm256_set1_epi32((int)0x80000000u);
  x = _mm256_xor_ps(x, _mm256_castsi256_ps(_mm256_and_si256(negx, sign)));
  y = _mm256_xor_ps(y, _mm256_castsi256_ps(_mm256_and_si256(negy, sign)));
  *n0 = _mm256_mul_ps(r, x);
  *n1 = _mm256_mul_ps(r, y);
}

// The 32 standard normals of word-stream block b (elements 32b .. 32b+31), in element order:
// out[0..3] each hold 8 consecutive elements.
static inline void normal32(RngKey key, uint64_t b, __m256 out[4]) {
  Words8 w = philox8(key, b << 3);
  box_muller8(w.w[0], w.w[1], &out[0], &out[1]);
  box_muller8(w.w[2], w.w[3], &out[2], &out[3]);
}

}  // namespace avx2
}  // namespace zt
