// Counter-based random numbers: Philox4x32-10 and the element -> random-word map shared by
// every backend (scalar C++, AVX2, CUDA). A random value is a pure function of
// (seed, stream, purpose, element index): no state, no dependence on threads, chunking or tiling.
//
// The map (fixed: checkpoints replay through it; the normal stream changed once, before the first
// release, from two words per pair to one: logs written before that replay to other weights):
//   key     = (lo32(seed), hi32(seed))
//   counter = (lo32(c), hi32(c), stream, purpose) with c a 64-bit counter index.
//   Word streams (one 32-bit word per element; uniform, stochastic rounding, Bernoulli):
//     element i -> c = (i >> 5) << 3 | (i & 7), word w = (i >> 3) & 3.
//     32 consecutive elements use 8 counters x 4 words, lane-major: an 8-lane SIMD Philox holds
//     elements [32b + 8w, 32b + 8w + 8) in output register w, no transpose needed.
//   Normal stream (one word per two standard normals): see normal_at below.
//   Bit stream (Rademacher, one bit per element):
//     element i -> c = (i >> 10) << 3 | (i & 7), word w = (i >> 8) & 3, bit k = (i >> 3) & 31.
//
// Floats are built only from exactly specified operations (integer ops, int->float conversion,
// IEEE +, *, fma, sqrt; compiled with -ffp-contract=off on the CPU and -fmad=false on CUDA), so
// the bits are identical on every backend. Gaussian: Box-Muller with our own log and sin/cos
// polynomials (cephes coefficients) instead of libm, whose results differ between glibc and CUDA.
#pragma once
#include "defs.h"

#if !defined(__CUDACC__)
#include <math.h>
#include <string.h>
#endif

namespace zt {

// Purposes: independent streams for the same (seed, stream). Never reuse one for two roles
// (the released QuZO code correlates its Gaussian and rounding streams this way).
enum Purpose : uint32_t {
  kPurposeGauss = 0,        // Gaussian directions z
  kPurposeRademacher = 1,   // Rademacher directions z
  kPurposeUniform = 2,      // user uniform draws
  kPurposeBernoulli = 3,    // masks
  kPurposeSrProbe = 4,      // QuZO Q1: rounding of the probe direction
  kPurposeSrUpdate = 5,     // QuZO Q2: rounding of the update direction
  kPurposeSrWeight = 6,     // rounding of updated weights onto their grid
  kPurposeSrQuantize = 7,   // stochastic-rounding quantization
};

struct RngKey {
  uint64_t seed;
  uint32_t stream;
  uint32_t purpose;
};

static constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
static constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;

ZT_HD void philox4x32_10(const uint32_t in[4], uint32_t k0, uint32_t k1, uint32_t out[4]) {
  uint32_t c0 = in[0], c1 = in[1], c2 = in[2], c3 = in[3];
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = (uint64_t)kPhiloxM0 * c0;
    uint64_t p1 = (uint64_t)kPhiloxM1 * c2;
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

// The four words of counter index c under key.
ZT_HD void philox_block(RngKey key, uint64_t c, uint32_t out[4]) {
  uint32_t ctr[4] = {(uint32_t)c, (uint32_t)(c >> 32), key.stream, key.purpose};
  philox4x32_10(ctr, (uint32_t)key.seed, (uint32_t)(key.seed >> 32), out);
}

ZT_HD uint64_t word_counter(uint64_t i) { return ((i >> 5) << 3) | (i & 7); }
ZT_HD unsigned word_slot(uint64_t i) { return (unsigned)((i >> 3) & 3); }
ZT_HD uint64_t bit_counter(uint64_t i) { return ((i >> 10) << 3) | (i & 7); }
ZT_HD unsigned bit_slot_word(uint64_t i) { return (unsigned)((i >> 8) & 3); }
ZT_HD unsigned bit_slot_bit(uint64_t i) { return (unsigned)((i >> 3) & 31); }

ZT_HD uint32_t random_word(RngKey key, uint64_t i) {
  uint32_t w[4];
  philox_block(key, word_counter(i), w);
  return w[word_slot(i)];
}

// --- exact float construction -------------------------------------------------------------

ZT_HD float bits_to_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f; memcpy(&f, &u, 4); return f;
#endif
}
ZT_HD uint32_t f32_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u; memcpy(&u, &f, 4); return u;
#endif
}

// IEEE operations with one rounding each, spelled out so no backend fuses or reorders them.
ZT_HD float zt_fma(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return fmaf(a, b, c);
#endif
}
ZT_HD float zt_mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
ZT_HD float zt_add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
ZT_HD float zt_sqrt(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return sqrtf(a);
#endif
}

// Uniform in the open interval (0, 1) with 23 random bits: ((w >> 9) + 0.5) * 2^-23, exact.
ZT_HD float uniform_open(uint32_t w) { return zt_mul((float)(w >> 9) + 0.5f, 0x1p-23f); }

// Uniform in [0, 1) with 24 random bits: (w >> 8) * 2^-24, exact. Used as the stochastic
// rounding threshold: round up iff threshold < fractional part.
ZT_HD float uniform_sr(uint32_t w) { return zt_mul((float)(w >> 8), 0x1p-24f); }

// The Box-Muller polynomials, shared by this scalar form and the AVX2 / AVX-512 ones
// (native/cpu/philox_avx*.h), so every path evaluates the same constants: log_unit's cephes logf
// coefficients (Horner, highest first) and ln 2 split in two; sincos_quarter's cephes sinf / cosf
// coefficients.
constexpr float kLogC0 = 7.0376836292e-2f, kLogC1 = -1.1514610310e-1f, kLogC2 = 1.1676998740e-1f,
                kLogC3 = -1.2420140846e-1f, kLogC4 = 1.4249322787e-1f, kLogC5 = -1.6668057665e-1f,
                kLogC6 = 2.0000714765e-1f, kLogC7 = -2.4999993993e-1f, kLogC8 = 3.3333331174e-1f;
constexpr float kLn2Lo = -2.12194440e-4f, kLn2Hi = 0.693359375f;
constexpr float kSinC0 = -1.9515295891e-4f, kSinC1 = 8.3321608736e-3f, kSinC2 = -1.6666654611e-1f;
constexpr float kCosC0 = 2.443315711809948e-5f, kCosC1 = -1.388731625493765e-3f, kCosC2 = 4.166664568298827e-2f;

// Natural log for x in (0, 1] (cephes logf polynomial, about 1 ulp). No special cases: the
// callers only pass uniform_open values.
ZT_HD float log_unit(float x) {
  uint32_t b = f32_to_bits(x);
  float e = (float)((int)((b >> 23) & 0xff) - 126);
  float m = bits_to_f32((b & 0x007fffffu) | 0x3f000000u);  // x = m * 2^e, m in [0.5, 1)
  if (m < 0.707106781186547524f) {
    e = zt_add(e, -1.0f);
    m = zt_add(zt_add(m, m), -1.0f);
  } else {
    m = zt_add(m, -1.0f);
  }
  float z = zt_mul(m, m);
  float p = kLogC0;
  p = zt_fma(p, m, kLogC1);
  p = zt_fma(p, m, kLogC2);
  p = zt_fma(p, m, kLogC3);
  p = zt_fma(p, m, kLogC4);
  p = zt_fma(p, m, kLogC5);
  p = zt_fma(p, m, kLogC6);
  p = zt_fma(p, m, kLogC7);
  p = zt_fma(p, m, kLogC8);
  float y = zt_mul(zt_mul(p, m), z);
  y = zt_fma(e, kLn2Lo, y);
  y = zt_fma(-0.5f, z, y);
  float r = zt_add(m, y);
  return zt_fma(e, kLn2Hi, r);
}

// sin and cos of a in [-pi/4, pi/4] (cephes sinf/cosf polynomials).
ZT_HD void sincos_quarter(float a, float* s, float* c) {
  float a2 = zt_mul(a, a);
  float ps = kSinC0;
  ps = zt_fma(ps, a2, kSinC1);
  ps = zt_fma(ps, a2, kSinC2);
  *s = zt_fma(zt_mul(ps, a2), a, a);
  float pc = kCosC0;
  pc = zt_fma(pc, a2, kCosC1);
  pc = zt_fma(pc, a2, kCosC2);
  float cc = zt_fma(zt_mul(pc, a2), a2, zt_fma(-0.5f, a2, 1.0f));
  *c = cc;
}

// Box-Muller on one word: its low 16 bits set the radius sqrt(-2 ln u1), u1 = (lo + 1/2) 2^-16;
// the angle is q*pi/2 + a, with the quadrant q the top 2 bits and a = (f - 1/2)*pi/2 from the
// 14 bits below them (f = (j + 1/2) 2^-14), uniform on a 2^16-point circle. One Philox word per
// pair (two normals) instead of two: Philox is two thirds of the cost of a normal on AVX2, so this
// halves it; the 2^32-point lattice is far finer than anything a ZO direction or a moment/KS test
// resolves. |n| <= sqrt(-2 ln 2^-17) = 4.8546 (u1 >= 2^-17).
ZT_HD void box_muller(uint32_t w, float* n0, float* n1) {
  float u1 = zt_mul((float)(w & 0xffffu) + 0.5f, 0x1p-16f);
  float r = zt_sqrt(zt_mul(-2.0f, log_unit(u1)));
  float f = zt_mul((float)((w >> 16) & 0x3fffu) + 0.5f, 0x1p-14f);
  float a = zt_mul(zt_add(f, -0.5f), 1.57079632679489662f);
  float s, c;
  sincos_quarter(a, &s, &c);
  unsigned q = w >> 30;
  float x = (q & 1) ? s : c;
  float y = (q & 1) ? c : s;
  // quadrant 0: (c, s); 1: (-s, c); 2: (-c, -s); 3: (s, -c)
  if (q == 1 || q == 2) x = -x;
  if (q >= 2) y = -y;
  *n0 = zt_mul(r, x);
  *n1 = zt_mul(r, y);
}

// Normal stream (one word per two elements): element i -> counter c = (i >> 6) << 3 | (i & 7),
// word w = (i >> 3) & 3, output h = (i >> 5) & 1 of that word's Box-Muller pair. 64 consecutive
// elements use 8 counters x 4 words x 2 outputs, lane-major: an 8-lane SIMD Philox of counters
// 8b..8b+7 gives elements [64b + 8w, +8) as output 0 of word register w and [64b + 32 + 8w, +8) as
// output 1.
ZT_HD uint64_t normal_counter(uint64_t i) { return ((i >> 6) << 3) | (i & 7); }

// Standard normal of element i.
ZT_HD float normal_at(RngKey key, uint64_t i) {
  uint32_t w[4];
  philox_block(key, normal_counter(i), w);
  float n0, n1;
  box_muller(w[(i >> 3) & 3], &n0, &n1);
  return ((i >> 5) & 1) ? n1 : n0;
}

// Rademacher +-1 of bit k of a bit-stream word: set -> -1.
ZT_HD float rademacher_bit(uint32_t word, unsigned k) { return ((word >> k) & 1u) ? -1.0f : 1.0f; }
ZT_HD float rademacher_at(RngKey key, uint64_t i) {
  uint32_t w[4];
  philox_block(key, bit_counter(i), w);
  return rademacher_bit(w[bit_slot_word(i)], bit_slot_bit(i));
}

// Bernoulli threshold: P(word < t) = t / 2^32; t = 2^32 means always.
ZT_HD uint64_t bernoulli_threshold(double p) {
  if (!(p > 0.0)) return 0;
  if (p >= 1.0) return (uint64_t)1 << 32;
  return (uint64_t)(p * 4294967296.0 + 0.5);
}

}  // namespace zt
