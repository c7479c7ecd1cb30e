// 8-lane AVX2 Philox4x32-10 and Box-Muller, bit-identical to native/common/philox.h.
// Include only from *_avx2.cc translation units (compiled with -mavx2 -mfma -mf16c).
//
// Tuned on a 2-core Zen 1 (256-bit ops split into 128-bit halves, one vector multiplier):
// - Philox keeps even and odd lanes in separate registers (the low half of each 64-bit lane), so
//   a round needs no blends: 4 vpmuludq, 4 vpshufd, 8 vpxor per 8 counters (+6 % over blending).
//   Two interleaved 8-lane sets (16 lanes) spill registers and run 30 % slower there.
// - Box-Muller is bound by its serial latency (9-step Horner log, sqrt), so normal64 interleaves 4
//   independent Box-Muller evaluations statement by statement (+40 %).
// - The uniforms and the angle are built with exact integer steps instead of float scalings that
//   round nowhere (see box_muller_n): fewer operations, the same bits.
#pragma once
#include <immintrin.h>

#include "../common/philox.h"

namespace zt {
namespace avx2 {

struct Words8 {
  __m256i w[4];  // w[k] lane l = word k of counter (base + l)
};

// Even lanes from e, odd lanes from the low halves of o.
static inline __m256i join_lanes(__m256i e, __m256i o) { return _mm256_blend_epi32(e, _mm256_shuffle_epi32(o, 0xA0), 0xAA); }

// Philox of 8 arbitrary counters: lane l has counter (hi[l] << 32) | lo[l].
static inline Words8 philox8_at(RngKey key, __m256i lo, __m256i hi) {
  // e*/o*: even/odd lanes in the low 32 bits of each 64-bit lane (high bits are don't-care:
  // vpmuludq reads only the low halves, and xor keeps halves apart).
  __m256i e0 = lo, o0 = _mm256_shuffle_epi32(lo, 0xF5), e1 = hi, o1 = _mm256_shuffle_epi32(hi, 0xF5);
  __m256i e2 = _mm256_set1_epi32((int)key.stream), o2 = e2;
  __m256i e3 = _mm256_set1_epi32((int)key.purpose), o3 = e3;
  const __m256i m0 = _mm256_set1_epi32((int)kPhiloxM0), m1 = _mm256_set1_epi32((int)kPhiloxM1);
  uint32_t k0 = (uint32_t)key.seed, k1 = (uint32_t)(key.seed >> 32);
  for (int r = 0; r < 10; ++r) {
    const __m256i vk0 = _mm256_set1_epi32((int)k0), vk1 = _mm256_set1_epi32((int)k1);
    __m256i pe0 = _mm256_mul_epu32(e0, m0), po0 = _mm256_mul_epu32(o0, m0);  // hi:lo of M0 * c0
    __m256i pe1 = _mm256_mul_epu32(e2, m1), po1 = _mm256_mul_epu32(o2, m1);  // hi:lo of M1 * c2
    // c0 = hi1 ^ c1 ^ k0, c2 = hi0 ^ c3 ^ k1 (vpshufd 0xF5 brings each high half down), c1 = lo1, c3 = lo0
    e0 = _mm256_xor_si256(_mm256_xor_si256(_mm256_shuffle_epi32(pe1, 0xF5), e1), vk0);
    o0 = _mm256_xor_si256(_mm256_xor_si256(_mm256_shuffle_epi32(po1, 0xF5), o1), vk0);
    e2 = _mm256_xor_si256(_mm256_xor_si256(_mm256_shuffle_epi32(pe0, 0xF5), e3), vk1);
    o2 = _mm256_xor_si256(_mm256_xor_si256(_mm256_shuffle_epi32(po0, 0xF5), o3), vk1);
    e1 = pe1; o1 = po1;
    e3 = pe0; o3 = po0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return Words8{{join_lanes(e0, o0), join_lanes(e1, o1), join_lanes(e2, o2), join_lanes(e3, o3)}};
}

// Philox of the 8 counters base..base+7 (base a multiple of 8).
static inline Words8 philox8(RngKey key, uint64_t base) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return philox8_at(key, _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)base), lane),
                    _mm256_set1_epi32((int)(uint32_t)(base >> 32)));
}

static inline __m256 uniform_open8(__m256i w) {
  __m256 f = _mm256_cvtepi32_ps(_mm256_srli_epi32(w, 9));
  return _mm256_mul_ps(_mm256_add_ps(f, _mm256_set1_ps(0.5f)), _mm256_set1_ps(0x1p-23f));
}

static inline __m256 uniform_sr8(__m256i w) {
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(w, 8)), _mm256_set1_ps(0x1p-24f));
}

// N independent 8-lane Box-Muller evaluations (one word each, philox.h's box_muller), statement by
// statement (the loops unroll), so the long dependency chains of one overlap the others'. Exact
// rewrites of the scalar steps:
// - u1 = (lo + 1/2) 2^-16 = k 2^-17 with k = 2 lo + 1 odd: float(k) is exact and has u1's
//   mantissa, its exponent 17 higher, so log_unit's exponent e and mantissa m come from float(k)'s
//   bits. log_unit's branch m < sqrt(1/2) -> (e - 1, 2m - 1) is an integer compare on the bits, an
//   integer add of the mask to e, and 2m built by raising m's exponent.
// - a = (f - 1/2) pi/2 with f = (j + 1/2) 2^-14: f - 1/2 = t 2^-15, t = 2j + 1 - 2^14 exact, so
//   a = float(t) * (pi/2 2^-15), a single rounding as before (scaling by 2^-15 is exact).
// - quadrant q = w >> 30: swap sin/cos when q is odd (bit 30), negate x when q is 1 or 2
//   (bit 31 ^ bit 30), y when q >= 2 (bit 31).
template <int N>
static inline void box_muller_n(const __m256i* wd, __m256* n0, __m256* n1) {
  const __m256i sign = _mm256_set1_epi32((int)0x80000000u);
  __m256 e[N], m[N], z[N], p[N], r[N], a[N], a2[N], s[N], c[N];
#pragma GCC unroll 8
  for (int v = 0; v < N; ++v) {
    __m256i k = _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(wd[v], _mm256_set1_epi32(0xffff)), 1), _mm256_set1_epi32(1));
    __m256i bk = _mm256_castps_si256(_mm256_cvtepi32_ps(k));
    __m256i mant = _mm256_or_si256(_mm256_and_si256(bk, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f000000));
    __m256i small = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x3f3504f3), mant);  // m < 0.70710678f
    e[v] = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_sub_epi32(_mm256_srli_epi32(bk, 23), _mm256_set1_epi32(143)), small));
    m[v] = _mm256_sub_ps(_mm256_castsi256_ps(_mm256_add_epi32(mant, _mm256_and_si256(small, _mm256_set1_epi32(0x00800000)))),
                         _mm256_set1_ps(1.0f));
    z[v] = _mm256_mul_ps(m[v], m[v]);
  }
  const float kLog[9] = {kLogC0, kLogC1, kLogC2, kLogC3, kLogC4, kLogC5, kLogC6, kLogC7, kLogC8};
#pragma GCC unroll 8
  for (int v = 0; v < N; ++v) p[v] = _mm256_set1_ps(kLog[0]);
#pragma GCC unroll 8
  for (int i = 1; i < 9; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < N; ++v) p[v] = _mm256_fmadd_ps(p[v], m[v], _mm256_set1_ps(kLog[i]));
#pragma GCC unroll 8
  for (int v = 0; v < N; ++v) {
    __m256 y = _mm256_mul_ps(_mm256_mul_ps(p[v], m[v]), z[v]);
    y = _mm256_fmadd_ps(e[v], _mm256_set1_ps(kLn2Lo), y);
    y = _mm256_fmadd_ps(_mm256_set1_ps(-0.5f), z[v], y);
    __m256 lg = _mm256_fmadd_ps(e[v], _mm256_set1_ps(kLn2Hi), _mm256_add_ps(m[v], y));
    r[v] = _mm256_sqrt_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), lg));
  }
#pragma GCC unroll 8
  for (int v = 0; v < N; ++v) {
    __m256i t = _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(wd[v], 15), _mm256_set1_epi32(0x7ffe)),
                                 _mm256_set1_epi32(1 - (1 << 14)));
    a[v] = _mm256_mul_ps(_mm256_cvtepi32_ps(t), _mm256_set1_ps(1.57079632679489662f * 0x1p-15f));
    a2[v] = _mm256_mul_ps(a[v], a[v]);
  }
#pragma GCC unroll 8
  for (int v = 0; v < N; ++v) {
    __m256 ps = _mm256_fmadd_ps(_mm256_set1_ps(kSinC0), a2[v], _mm256_set1_ps(kSinC1));
    __m256 pc = _mm256_fmadd_ps(_mm256_set1_ps(kCosC0), a2[v], _mm256_set1_ps(kCosC1));
    ps = _mm256_fmadd_ps(ps, a2[v], _mm256_set1_ps(kSinC2));
    pc = _mm256_fmadd_ps(pc, a2[v], _mm256_set1_ps(kCosC2));
    s[v] = _mm256_fmadd_ps(_mm256_mul_ps(ps, a2[v]), a[v], a[v]);
    c[v] = _mm256_fmadd_ps(_mm256_mul_ps(pc, a2[v]), a2[v], _mm256_fmadd_ps(_mm256_set1_ps(-0.5f), a2[v], _mm256_set1_ps(1.0f)));
  }
#pragma GCC unroll 8
  for (int v = 0; v < N; ++v) {
    __m256 swap = _mm256_castsi256_ps(_mm256_slli_epi32(wd[v], 1));  // blendv reads the sign bit: bit 30
    __m256 x = _mm256_blendv_ps(c[v], s[v], swap), y = _mm256_blendv_ps(s[v], c[v], swap);
    x = _mm256_xor_ps(x, _mm256_castsi256_ps(_mm256_and_si256(_mm256_xor_si256(wd[v], _mm256_castps_si256(swap)), sign)));
    y = _mm256_xor_ps(y, _mm256_castsi256_ps(_mm256_and_si256(wd[v], sign)));
    n0[v] = _mm256_mul_ps(r[v], x);
    n1[v] = _mm256_mul_ps(r[v], y);
  }
}

// Lanes of a word register as the 8 Box-Muller pairs of those words (perturb_gather's per-lane
// counters).
static inline void box_muller8(__m256i w, __m256* n0, __m256* n1) { box_muller_n<1>(&w, n0, n1); }

// The 64 standard normals of normal-stream block b (elements 64b .. 64b+63, philox.h normal_at),
// in element order: out[q] holds elements 64b + 8q .. 64b + 8q + 7. One Philox of 8 counters and
// four overlapped Box-Muller evaluations.
static inline void normal64(RngKey key, uint64_t b, __m256 out[8]) {
  Words8 x = philox8(key, b << 3);
  box_muller_n<4>(x.w, out, out + 4);
}

}  // namespace avx2
}  // namespace zt
