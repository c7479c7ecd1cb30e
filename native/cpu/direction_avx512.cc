// AVX-512 generation of the ZO direction (native/common/direction.h) and of raw Philox words for
// the AVX2 kernels that consume them: 32 Philox counters at a time (two 16-counter groups, see
// philox16x), bit-identical to direction_avx2.h's gauss_direction64 and philox_avx2.h's philox8.
#include "perturb.h"
#include "philox_avx512.h"

#include <string.h>

namespace zt {
namespace avx512 {

namespace {

// Store the z of gauss_directions' group g (elements 128(c + g) + j) in element order.
static inline void store128(const __m512* z, float* out) {
  for (int q = 0; q < 8; ++q) {  // lanes 0-7: element 8q + l, lanes 8-15: 64 + 8q + l
    _mm256_storeu_ps(out + 8 * q, _mm512_castps512_ps256(z[q]));
    _mm256_storeu_ps(out + 64 + 8 * q, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(z[q]), 1)));
  }
}

// gauss_directions of chunks [c0, c0 + n), two at a time: f(z, G, c) with z[8g + q] of chunk c + g.
template <class F>
inline void each_chunk_pair(RngKey key, RngKey sr_key, int bits, __m512 inv, __m512 step, uint64_t c0, uint64_t n, F&& f) {
  uint64_t c = c0;
  for (__m512 z[16]; c + 2 <= c0 + n; c += 2) {
    gauss_directions<2>(key, sr_key, bits, inv, step, c, z);
    f(z, 2, c);
  }
  if (c < c0 + n) {
    __m512 z[8];
    gauss_directions<1>(key, sr_key, bits, inv, step, c, z);
    f(z, 1, c);
  }
}

// Chunks [c0, c0 + n) of gauss_directions into out, in element order.
void stored_directions(RngKey key, RngKey sr_key, int bits, uint64_t c0, uint64_t n, float* out) {
  const __m512 inv = _mm512_set1_ps(bits ? dir_grid_inv_step(bits) : 0.0f), step = _mm512_set1_ps(bits ? dir_grid_step(bits) : 0.0f);
  each_chunk_pair(key, sr_key, bits, inv, step, c0, n, [&](const __m512* z, int G, uint64_t c) {
    for (int g = 0; g < G; ++g) store128(z + 8 * g, out + 128 * (c + g - c0));
  });
}

}  // namespace

void gauss_pairs(const Direction& d, uint64_t c0, uint64_t n, float* out) {
  stored_directions(dir_key(d), RngKey{d.seed, d.stream, d.sr_purpose}, d.bits, c0, n, out);
}

void gauss_perturb(const Direction& d, uint64_t c0, uint64_t n, const float* src, float* w, float alpha, float keep) {
  const __m512 inv = _mm512_set1_ps(d.bits ? dir_grid_inv_step(d.bits) : 0.0f), step = _mm512_set1_ps(d.bits ? dir_grid_step(d.bits) : 0.0f);
  const __m512 va = _mm512_set1_ps(alpha), vk = _mm512_set1_ps(keep);
  each_chunk_pair(dir_key(d), RngKey{d.seed, d.stream, d.sr_purpose}, d.bits, inv, step, c0, n, [&](const __m512* z, int G, uint64_t c) {
    float* o = w + 128 * (c - c0);
    const float* in = src + 128 * (c - c0);
    for (int f = 0; f < 256; f += 16) _mm_prefetch(reinterpret_cast<const char*>(in + 512 + f), _MM_HINT_T0);
    for (int q = 0; q < 8 * G; ++q) {  // z[8g + q]: elements 128g + 8q + l (lanes 0-7), 128g + 64 + 8q + l (8-15)
      float* lo = o + 128 * (q >> 3) + 8 * (q & 7);
      const float* li = in + 128 * (q >> 3) + 8 * (q & 7);
      const __m512 v = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(_mm256_loadu_ps(li))),
                                                             _mm256_castps_pd(_mm256_loadu_ps(li + 64)), 1));
      const __m512 r = _mm512_fmadd_ps(va, z[q], _mm512_mul_ps(v, vk));
      _mm256_storeu_ps(lo, _mm512_castps512_ps256(r));
      _mm256_storeu_ps(lo + 64, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(r), 1)));
    }
  });
}

void normal_pairs(RngKey key, uint64_t c0, uint64_t n, float* out) { stored_directions(key, key, 0, c0, n, out); }

void word_pairs(RngKey key, uint64_t c0, uint64_t n, uint32_t* out) {
  for (uint64_t c = c0; c < c0 + n; c += 2) {
    const int G = c + 2 <= c0 + n ? 2 : 1;
    const uint64_t base[2] = {c << 4, (c + 1) << 4};
    Words16 w[2];
    if (G == 2) philox16x<2>(key, base, w);
    else w[0] = philox16(key, base[0]);
    for (int g = 0; g < G; ++g, out += 64)
      for (int k = 0; k < 4; ++k) {  // lanes 0-7: block 2c, lanes 8-15: block 2c + 1
        _mm256_storeu_si256((__m256i*)(out + 8 * k), _mm512_castsi512_si256(w[g].w[k]));
        _mm256_storeu_si256((__m256i*)(out + 32 + 8 * k), _mm512_extracti64x4_epi64(w[g].w[k], 1));
      }
  }
}

void direction_codes(int8_t* out, uint64_t begin, uint64_t end, const Direction& d) {
  if (begin >= end) return;
  if (d.dist == kDirRademacher) return avx2::direction_codes(out, begin, end, d);  // sign bits: no Gaussian work
  const __m512 inv = _mm512_set1_ps(dir_grid_inv_step(d.bits)), one = _mm512_set1_ps(1.0f);
  alignas(64) int8_t bytes[256];
  const uint64_t c0 = begin >> 7, c1 = ((end - 1) >> 7) + 1;
  // step 1: the codes themselves, exact
  each_chunk_pair(dir_key(d), RngKey{d.seed, d.stream, d.sr_purpose}, d.bits, inv, one, c0, c1 - c0, [&](const __m512* z, int G, uint64_t c) {
    for (int q = 0; q < 8 * G; ++q) {  // lanes 0-7: element 8q + l, lanes 8-15: 64 + 8q + l of chunk c + (q >> 3)
      const __m128i b = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(z[q]));
      _mm_storel_epi64((__m128i*)(bytes + 128 * (q >> 3) + 8 * (q & 7)), b);
      _mm_storel_epi64((__m128i*)(bytes + 128 * (q >> 3) + 64 + 8 * (q & 7)), _mm_unpackhi_epi64(b, b));
    }
    const uint64_t e0 = c << 7, e1 = e0 + 128 * G, lo = e0 > begin ? e0 : begin, hi = e1 < end ? e1 : end;
    memcpy(out + (lo - begin), bytes + (lo - e0), hi - lo);
  });
}

}  // namespace avx512
}  // namespace zt
