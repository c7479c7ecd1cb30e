// 16-lane AVX-512 Philox4x32-10, Box-Muller and QuZO rounding: the operations of philox_avx2.h and
// direction_avx2.h on zmm, bit-identical to them and to native/common/philox.h / direction.h.
// Include only from *_avx512.cc translation units (AVX-512 F/BW/VL/VNNI).
//
// 16 counters are two 8-counter groups of the 8-lane code: lanes 0-7 hold counters base..base+7,
// lanes 8-15 base+8..base+15, so one call makes two consecutive 64-element normal-stream blocks.
#pragma once
// GCC 12 warns inside its own headers (the undefined pass-through operands of AVX-512 intrinsics).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "../common/direction.h"
#include "../common/philox.h"

namespace zt {
namespace avx512 {

struct Words16 {
  __m512i w[4];  // w[k] lane l = word k of counter (base + l)
};

// Even lanes from e, odd lanes from the low halves of o.
static inline __m512i join_lanes16(__m512i e, __m512i o) {
  return _mm512_mask_blend_epi32((__mmask16)0xAAAA, e, _mm512_shuffle_epi32(o, (_MM_PERM_ENUM)0xA0));
}

// Philox of G groups of 16 counters, group g = base[g] .. base[g] + 15 (each a multiple of 16):
// philox_avx2.h's philox8_at, even and odd lanes in the low halves of separate 64-bit lanes. The
// groups advance round by round together: one group's ten rounds are a latency chain (multiply,
// shuffle, xor) that out-of-order execution cannot hide behind the Box-Muller work that follows, so
// two groups (then one Box-Muller over both) generate normals ~25 % faster than one.
template <int G>
static inline void philox16x(RngKey key, const uint64_t* base, Words16* out) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const _MM_PERM_ENUM odd = (_MM_PERM_ENUM)0xF5;
  __m512i e0[G], o0[G], e1[G], o1[G], e2[G], o2[G], e3[G], o3[G];
  for (int g = 0; g < G; ++g) {
    const __m512i lo = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)base[g]), lane);
    const __m512i hi = _mm512_set1_epi32((int)(uint32_t)(base[g] >> 32));
    e0[g] = lo, o0[g] = _mm512_shuffle_epi32(lo, odd), e1[g] = hi, o1[g] = _mm512_shuffle_epi32(hi, odd);
    e2[g] = o2[g] = _mm512_set1_epi32((int)key.stream);
    e3[g] = o3[g] = _mm512_set1_epi32((int)key.purpose);
  }
  const __m512i m0 = _mm512_set1_epi32((int)kPhiloxM0), m1 = _mm512_set1_epi32((int)kPhiloxM1);
  uint32_t k0 = (uint32_t)key.seed, k1 = (uint32_t)(key.seed >> 32);
  for (int r = 0; r < 10; ++r) {
    const __m512i vk0 = _mm512_set1_epi32((int)k0), vk1 = _mm512_set1_epi32((int)k1);
    for (int g = 0; g < G; ++g) {
      __m512i pe0 = _mm512_mul_epu32(e0[g], m0), po0 = _mm512_mul_epu32(o0[g], m0);
      __m512i pe1 = _mm512_mul_epu32(e2[g], m1), po1 = _mm512_mul_epu32(o2[g], m1);
      // c0 = hi1 ^ c1 ^ k0, c2 = hi0 ^ c3 ^ k1, c1 = lo1, c3 = lo0 (three-way xors: vpternlogd 0x96)
      e0[g] = _mm512_ternarylogic_epi32(_mm512_shuffle_epi32(pe1, odd), e1[g], vk0, 0x96);
      o0[g] = _mm512_ternarylogic_epi32(_mm512_shuffle_epi32(po1, odd), o1[g], vk0, 0x96);
      e2[g] = _mm512_ternarylogic_epi32(_mm512_shuffle_epi32(pe0, odd), e3[g], vk1, 0x96);
      o2[g] = _mm512_ternarylogic_epi32(_mm512_shuffle_epi32(po0, odd), o3[g], vk1, 0x96);
      e1[g] = pe1, o1[g] = po1;
      e3[g] = pe0, o3[g] = po0;
    }
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  for (int g = 0; g < G; ++g)
    out[g] = Words16{{join_lanes16(e0[g], o0[g]), join_lanes16(e1[g], o1[g]), join_lanes16(e2[g], o2[g]), join_lanes16(e3[g], o3[g])}};
}

static inline Words16 philox16(RngKey key, uint64_t base) {
  Words16 w;
  philox16x<1>(key, &base, &w);
  return w;
}

// philox_avx2.h's box_muller_n on 16 lanes, N evaluations interleaved statement by statement.
template <int N>
static inline void box_muller16(const __m512i* wd, __m512* n0, __m512* n1) {
  const __m512i sign = _mm512_set1_epi32((int)0x80000000u), zero = _mm512_setzero_si512();
  __m512 e[N], m[N], z[N], p[N], r[N], a[N], a2[N], s[N], c[N];
#pragma GCC unroll 8
  for (int v = 0; v < N; ++v) {
    __m512i k = _mm512_or_si512(_mm512_slli_epi32(_mm512_and_si512(wd[v], _mm512_set1_epi32(0xffff)), 1), _mm512_set1_epi32(1));
    __m512i bk = _mm512_castps_si512(_mm512_cvtepi32_ps(k));
    __m512i mant = _mm512_or_si512(_mm512_and_si512(bk, _mm512_set1_epi32(0x007fffff)), _mm512_set1_epi32(0x3f000000));
    __mmask16 small = _mm512_cmpgt_epi32_mask(_mm512_set1_epi32(0x3f3504f3), mant);  // m < 0.70710678f
    __m512i ex = _mm512_sub_epi32(_mm512_srli_epi32(bk, 23), _mm512_set1_epi32(143));
    e[v] = _mm512_cvtepi32_ps(_mm512_mask_sub_epi32(ex, small, ex, _mm512_set1_epi32(1)));
    m[v] = _mm512_sub_ps(_mm512_castsi512_ps(_mm512_mask_add_epi32(mant, small, mant, _mm512_set1_epi32(0x00800000))),
                         _mm512_set1_ps(1.0f));
    z[v] = _mm512_mul_ps(m[v], m[v]);
  }
  const float kLog[9] = {kLogC0, kLogC1, kLogC2, kLogC3, kLogC4, kLogC5, kLogC6, kLogC7, kLogC8};
#pragma GCC unroll 8
  for (int v = 0; v < N; ++v) p[v] = _mm512_set1_ps(kLog[0]);
#pragma GCC unroll 8
  for (int i = 1; i < 9; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < N; ++v) p[v] = _mm512_fmadd_ps(p[v], m[v], _mm512_set1_ps(kLog[i]));
#pragma GCC unroll 8
  for (int v = 0; v < N; ++v) {
    __m512 y = _mm512_mul_ps(_mm512_mul_ps(p[v], m[v]), z[v]);
    y = _mm512_fmadd_ps(e[v], _mm512_set1_ps(kLn2Lo), y);
    y = _mm512_fmadd_ps(_mm512_set1_ps(-0.5f), z[v], y);
    __m512 lg = _mm512_fmadd_ps(e[v], _mm512_set1_ps(kLn2Hi), _mm512_add_ps(m[v], y));
    r[v] = _mm512_sqrt_ps(_mm512_mul_ps(_mm512_set1_ps(-2.0f), lg));
  }
#pragma GCC unroll 8
  for (int v = 0; v < N; ++v) {
    __m512i t = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(wd[v], 15), _mm512_set1_epi32(0x7ffe)),
                                 _mm512_set1_epi32(1 - (1 << 14)));
    a[v] = _mm512_mul_ps(_mm512_cvtepi32_ps(t), _mm512_set1_ps(1.57079632679489662f * 0x1p-15f));
    a2[v] = _mm512_mul_ps(a[v], a[v]);
  }
#pragma GCC unroll 8
  for (int v = 0; v < N; ++v) {
    __m512 ps = _mm512_fmadd_ps(_mm512_set1_ps(kSinC0), a2[v], _mm512_set1_ps(kSinC1));
    __m512 pc = _mm512_fmadd_ps(_mm512_set1_ps(kCosC0), a2[v], _mm512_set1_ps(kCosC1));
    ps = _mm512_fmadd_ps(ps, a2[v], _mm512_set1_ps(kSinC2));
    pc = _mm512_fmadd_ps(pc, a2[v], _mm512_set1_ps(kCosC2));
    s[v] = _mm512_fmadd_ps(_mm512_mul_ps(ps, a2[v]), a[v], a[v]);
    c[v] = _mm512_fmadd_ps(_mm512_mul_ps(pc, a2[v]), a2[v], _mm512_fmadd_ps(_mm512_set1_ps(-0.5f), a2[v], _mm512_set1_ps(1.0f)));
  }
#pragma GCC unroll 8
  for (int v = 0; v < N; ++v) {
    // quadrant q = w >> 30: swap sin/cos when bit 30 is set, negate x when bit 31 ^ bit 30, y when bit 31
    const __m512i w30 = _mm512_slli_epi32(wd[v], 1);
    const __mmask16 swap = _mm512_cmplt_epi32_mask(w30, zero);
    __m512 x = _mm512_mask_blend_ps(swap, c[v], s[v]), y = _mm512_mask_blend_ps(swap, s[v], c[v]);
    x = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), _mm512_and_si512(_mm512_xor_si512(wd[v], w30), sign)));
    y = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(y), _mm512_and_si512(wd[v], sign)));
    n0[v] = _mm512_mul_ps(r[v], x);
    n1[v] = _mm512_mul_ps(r[v], y);
  }
}

// direction_avx2.h's quzo_code8 * step on 16 lanes: z onto the b-bit grid by stochastic rounding.
static inline __m512 quzo16(__m512 z, __m512i word, int h, __m512 inv_step, __m512 step) {
  __m512i odd = h ? _mm512_srli_epi32(word, 15) : _mm512_and_si512(_mm512_slli_epi32(word, 1), _mm512_set1_epi32(0x1ffff));
  __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_or_si512(odd, _mm512_set1_epi32(1))), _mm512_set1_ps(0x1p-17f));
  __m512 v = _mm512_mul_ps(z, inv_step);
  __m512 fl = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __mmask16 up = _mm512_cmp_ps_mask(t, _mm512_sub_ps(v, fl), _CMP_LT_OQ);
  return _mm512_mul_ps(_mm512_mask_add_ps(fl, up, fl, _mm512_set1_ps(1.0f)), step);
}

// The Gaussian directions of normal-stream blocks 2c .. 2c + 2G - 1 (counters 16c .. 16(c + G) - 1):
// z[8g + q] lanes 0-7 are elements 128(c + g) + 8q + l (block 2(c + g)), lanes 8-15 elements
// 128(c + g) + 64 + 8q + l; QuZO bits round them with the SR stream's words of the same counters
// (direction_avx2.h). G = 2 is the fast form (philox16x).
template <int G>
static inline void gauss_directions(RngKey key, RngKey sr_key, int bits, __m512 inv, __m512 step, uint64_t c, __m512* z) {
  uint64_t base[G];
  for (int g = 0; g < G; ++g) base[g] = (c + g) << 4;
  Words16 x[G];
  philox16x<G>(key, base, x);
  __m512i wd[4 * G];
  __m512 n0[4 * G], n1[4 * G];
  for (int g = 0; g < G; ++g)
    for (int k = 0; k < 4; ++k) wd[4 * g + k] = x[g].w[k];
  box_muller16<4 * G>(wd, n0, n1);
  for (int g = 0; g < G; ++g)
    for (int k = 0; k < 4; ++k) z[8 * g + k] = n0[4 * g + k], z[8 * g + 4 + k] = n1[4 * g + k];
  if (!bits) return;
  philox16x<G>(sr_key, base, x);
  for (int g = 0; g < G; ++g)
    for (int q = 0; q < 8; ++q) z[8 * g + q] = quzo16(z[8 * g + q], x[g].w[q & 3], q >> 2, inv, step);
}

}  // namespace avx512
}  // namespace zt
