// 8-lane AVX2 forms of the ZO direction (native/common/direction.h), bit-identical to the scalar
// ones; shared by every AVX2 kernel that regenerates z (perturbation, perturb-on-load GEMM).
// Include only from *_avx2.cc translation units.
#pragma once
#include "../common/direction.h"
#include "perturb.h"
#include "philox_avx2.h"

namespace zt {
namespace avx2 {

// QuZO: z onto the b-bit grid by stochastic rounding (direction.h dir_sr_round), 8 lanes; word: the
// SR stream's word of these lanes, h: which half (direction.h dir_sr_half). The threshold
// (half + 1/2) 2^-16 is built as float(2 half + 1) 2^-17, exact either way.
// quzo_code8: the grid code q (direction.h dir_grid_code) as an exact float; quzo8: q * step.
static inline __m256 quzo_code8(__m256 z, __m256i word, int h, __m256 inv_step) {
  __m256i odd = h ? _mm256_srli_epi32(word, 15) : _mm256_and_si256(_mm256_slli_epi32(word, 1), _mm256_set1_epi32(0x1ffff));
  __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_or_si256(odd, _mm256_set1_epi32(1))), _mm256_set1_ps(0x1p-17f));
  __m256 v = _mm256_mul_ps(z, inv_step);
  __m256 fl = _mm256_floor_ps(v);
  __m256 up = _mm256_cmp_ps(t, _mm256_sub_ps(v, fl), _CMP_LT_OQ);
  return _mm256_blendv_ps(fl, _mm256_add_ps(fl, _mm256_set1_ps(1.0f)), up);
}
static inline __m256 quzo8(__m256 z, __m256i word, int h, __m256 inv_step, __m256 step) {
  return _mm256_mul_ps(quzo_code8(z, word, h, inv_step), step);
}

// The 64 Gaussian directions of normal-stream block b (elements 64b + 8q + l in z[q], direction.h
// direction_at): normal64, and with QuZO bits the SR stream's words of the same 8 counters rounding
// them (low halves z[0..3], high halves z[4..7]). inv / step: dir_grid_inv_step / dir_grid_step.
static inline void gauss_direction64(RngKey key, RngKey sr_key, int bits, __m256 inv, __m256 step, uint64_t b, __m256 z[8]) {
  normal64(key, b, z);
  if (!bits) return;
  const Words8 u = philox8(sr_key, b << 3);
  for (int q = 0; q < 8; ++q) z[q] = quzo8(z[q], u.w[q & 3], q >> 2, inv, step);
}

// A Rademacher sign table (avx2::rademacher_signs, perturb.h) holds the signs of direction elements
// [i0, i1) 8 per byte: byte g - (i0 >> 3) has bit l set where z(8g + l) = -1 (philox.h
// rademacher_at: lane l of block counter 8(g >> 7) + l, word (g >> 5) & 3, bit g & 31). The
// perturb-on-load GEMMs draw a task's rows once into one and read it for every K slice: a 256-wide
// slice alone would run a whole 1024-element Philox block (4 words per lane) to use one word of it.
// rademacher_apply: o[j] = perturbed(src[j], alpha, z(i0 + j)) for elements [i0, i1) of a table
// drawn from element t0 on (src may be o); fma(alpha, +-1, w) is the sum w +- alpha, rounded once.
static inline void rademacher_apply(const uint8_t* signs, uint64_t t0, uint64_t i0, uint64_t i1, float alpha, const float* src, float* o) {
  const uint8_t* s = signs - (t0 >> 3);  // s[g]: the byte of group g
  auto z_at = [&](uint64_t e) { return (s[e >> 3] >> (e & 7)) & 1 ? -1.0f : 1.0f; };
  uint64_t e = i0;
  for (; e < i1 && (e & 7); ++e) o[e - i0] = perturbed(src[e - i0], alpha, z_at(e));
  const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256 pos = _mm256_set1_ps(alpha), neg = _mm256_set1_ps(-alpha);
  for (; e + 8 <= i1; e += 8) {
    const __m256i bit = _mm256_and_si256(_mm256_set1_epi32(s[e >> 3]), lane);
    const __m256 a = _mm256_blendv_ps(pos, neg, _mm256_castsi256_ps(_mm256_cmpeq_epi32(bit, lane)));
    _mm256_storeu_ps(o + (e - i0), _mm256_add_ps(_mm256_loadu_ps(src + (e - i0)), a));
  }
  for (; e < i1; ++e) o[e - i0] = perturbed(src[e - i0], alpha, z_at(e));
}

// The avx512 path's direction for a range: z of elements [i0, i1) 512 at a time from
// avx512::gauss_pairs (same bits as gauss_direction64), each chunk's weights (`prefetch` holds
// element i0; null: none) prefetched while its z is generated, then apply(lo, hi, e0, zb) with
// zb[j] = z(e0 + j) for the elements [lo, hi) of the chunk inside the range. zb has 8 floats of
// slack, so an 8-lane load at the last unaligned element stays inside it.
template <class Apply>
inline void gauss_chunks(const Direction& d, uint64_t i0, uint64_t i1, const float* prefetch, Apply&& apply) {
  alignas(32) float zb[512 + 8];
  const uint64_t last = (i1 - 1) >> 7;
  for (uint64_t c = i0 >> 7; c <= last; c += 4) {
    const uint64_t n = last + 1 - c < 4 ? last + 1 - c : 4, e0 = c << 7;
    const uint64_t lo = e0 > i0 ? e0 : i0, hi = e0 + 128 * n < i1 ? e0 + 128 * n : i1;
    if (prefetch)
      for (uint64_t f = lo; f < hi; f += 16) _mm_prefetch(reinterpret_cast<const char*>(prefetch + (f - i0)), _MM_HINT_T0);
    avx512::gauss_pairs(d, c, n, zb);
    apply(lo, hi, e0, static_cast<const float*>(zb));
  }
}

// dst[j] = perturbed_decayed(src[j], keep, alpha, z(i0 + j)) for direction elements [i0, i1) on the
// avx512 path (src may be dst): whole 128-element chunks with z in registers (avx512::gauss_perturb),
// the partial chunks at the ends through gauss_chunks' buffer.
inline void gauss_fma_wide(const Direction& d, uint64_t i0, uint64_t i1, const float* src, float* dst, float alpha, float keep) {
  const __m256 vk = _mm256_set1_ps(keep), va = _mm256_set1_ps(alpha);
  auto via_buffer = [&](uint64_t a, uint64_t b) {
    if (a >= b) return;
    gauss_chunks(d, a, b, src + (a - i0), [&](uint64_t e, uint64_t e1, uint64_t e0, const float* z) {
      for (; e + 8 <= e1; e += 8)
        _mm256_storeu_ps(dst + (e - i0), _mm256_fmadd_ps(va, _mm256_loadu_ps(z + (e - e0)), _mm256_mul_ps(_mm256_loadu_ps(src + (e - i0)), vk)));
      for (; e < e1; ++e) dst[e - i0] = perturbed_decayed(src[e - i0], keep, alpha, z[e - e0]);
    });
  };
  const uint64_t c0 = (i0 + 127) >> 7, c1 = i1 >> 7;
  if (c1 <= c0) return via_buffer(i0, i1);
  via_buffer(i0, c0 << 7);
  avx512::gauss_perturb(d, c0, c1 - c0, src + ((c0 << 7) - i0), dst + ((c0 << 7) - i0), alpha, keep);
  via_buffer(c1 << 7, i1);
}

}  // namespace avx2
}  // namespace zt
