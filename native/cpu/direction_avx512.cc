// AVX-512 generation of the ZO direction (native/common/direction.h) and of raw Philox words for
// the AVX2 kernels that consume them: 16 Philox counters per call, bit-identical to
// direction_avx2.h's gauss_direction64 and philox_avx2.h's philox8.
#include "perturb.h"
#include "philox_avx512.h"

#include <string.h>

namespace zt {
namespace avx512 {

void gauss_pairs(const Direction& d, uint64_t c0, uint64_t n, float* out) {
  const RngKey key = dir_key(d), sr_key{d.seed, d.stream, d.sr_purpose};
  const __m512 inv = _mm512_set1_ps(d.bits ? dir_grid_inv_step(d.bits) : 0.0f), step = _mm512_set1_ps(d.bits ? dir_grid_step(d.bits) : 0.0f);
  for (uint64_t c = c0; c < c0 + n; ++c, out += 128) {
    __m512 z[8];
    gauss_direction128(key, sr_key, d.bits, inv, step, c, z);
    for (int q = 0; q < 8; ++q) {  // lanes 0-7: element 8q + l, lanes 8-15: 64 + 8q + l
      _mm256_storeu_ps(out + 8 * q, _mm512_castps512_ps256(z[q]));
      _mm256_storeu_ps(out + 64 + 8 * q, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(z[q]), 1)));
    }
  }
}

void normal_pairs(RngKey key, uint64_t c0, uint64_t n, float* out) {
  for (uint64_t c = c0; c < c0 + n; ++c, out += 128) {
    const Words16 x = philox16(key, c << 4);
    __m512 z[8];
    box_muller16<4>(x.w, z, z + 4);
    for (int q = 0; q < 8; ++q) {
      _mm256_storeu_ps(out + 8 * q, _mm512_castps512_ps256(z[q]));
      _mm256_storeu_ps(out + 64 + 8 * q, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(z[q]), 1)));
    }
  }
}

void word_pairs(RngKey key, uint64_t c0, uint64_t n, uint32_t* out) {
  for (uint64_t c = c0; c < c0 + n; ++c, out += 64) {
    const Words16 w = philox16(key, c << 4);
    for (int k = 0; k < 4; ++k) {  // lanes 0-7: block 2c, lanes 8-15: block 2c + 1
      _mm256_storeu_si256((__m256i*)(out + 8 * k), _mm512_castsi512_si256(w.w[k]));
      _mm256_storeu_si256((__m256i*)(out + 32 + 8 * k), _mm512_extracti64x4_epi64(w.w[k], 1));
    }
  }
}

void direction_codes(int8_t* out, uint64_t begin, uint64_t end, const Direction& d) {
  if (begin >= end) return;
  const RngKey key = dir_key(d), sr_key{d.seed, d.stream, d.sr_purpose};
  const __m512 inv = _mm512_set1_ps(dir_grid_inv_step(d.bits)), one = _mm512_set1_ps(1.0f);
  alignas(64) int8_t bytes[128];
  for (uint64_t c = begin >> 7; c <= (end - 1) >> 7; ++c) {
    __m512 z[8];
    gauss_direction128(key, sr_key, d.bits, inv, one, c, z);  // step 1: the codes themselves, exact
    for (int q = 0; q < 8; ++q) {  // lanes 0-7: element 8q + l, lanes 8-15: 64 + 8q + l
      const __m128i b = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(z[q]));
      _mm_storel_epi64((__m128i*)(bytes + 8 * q), b);
      _mm_storel_epi64((__m128i*)(bytes + 64 + 8 * q), _mm_unpackhi_epi64(b, b));
    }
    const uint64_t e0 = c << 7, lo = e0 > begin ? e0 : begin, hi = e0 + 128 < end ? e0 + 128 : end;
    memcpy(out + (lo - begin), bytes + (lo - e0), hi - lo);
  }
}

}  // namespace avx512
}  // namespace zt
