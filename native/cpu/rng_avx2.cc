#include "cpu_features.h"
#include "perturb.h"
#include "philox_avx2.h"
#include "rng.h"

namespace zt {
namespace avx2 {

void rng_fill_range(float* out, uint64_t begin, uint64_t end, RngKey key, Dist dist, uint64_t threshold) {
  // Bit streams use 1024-element blocks, the normal stream 64, word streams 32; unaligned edges go
  // scalar.
  const uint64_t block = dist == Dist::Rademacher ? 1024 : dist == Dist::Normal ? 64 : 32;
  uint64_t a = (begin + block - 1) / block * block, z = end / block * block;
  if (a >= z) {
    rng_fill_range_ref(out, begin, end, key, dist, threshold);
    return;
  }
  rng_fill_range_ref(out, begin, a, key, dist, threshold);
  float* o = out + (a - begin);
  if (dist == Dist::Rademacher) {
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256i sign = _mm256_set1_epi32((int)0x80000000u);
    for (uint64_t b = a / 1024; b < z / 1024; ++b) {
      Words8 w = philox8(key, b << 3);
      for (int k = 0; k < 4; ++k) {
        __m256i bits = w.w[k];
        for (int j = 0; j < 32; ++j) {  // bit j of every lane -> 8 consecutive elements
          __m256i s = _mm256_and_si256(_mm256_slli_epi32(_mm256_srli_epi32(bits, j), 31), sign);
          _mm256_storeu_ps(o + k * 256 + j * 8, _mm256_xor_ps(one, _mm256_castsi256_ps(s)));
        }
      }
      o += 1024;
    }
  } else if (dist == Dist::Normal) {
    uint64_t b = a / 64;
    if (use_avx512()) {  // two blocks per 16 Philox counters (avx512::normal_pairs), same values
      if (b & 1) {
        __m256 n[8];
        normal64(key, b++, n);
        for (int k = 0; k < 8; ++k) _mm256_storeu_ps(o + 8 * k, n[k]);
        o += 64;
      }
      const uint64_t pairs = b < z / 64 ? (z / 64 - b) / 2 : 0;
      avx512::normal_pairs(key, b / 2, pairs, o);
      b += 2 * pairs, o += 128 * pairs;
    }
    for (; b < z / 64; ++b, o += 64) {
      __m256 n[8];
      normal64(key, b, n);
      for (int k = 0; k < 8; ++k) _mm256_storeu_ps(o + 8 * k, n[k]);
    }
  } else {
    const __m256i flip = _mm256_set1_epi32((int)0x80000000u);
    const bool always = threshold >= ((uint64_t)1 << 32);
    const __m256i thr = _mm256_set1_epi32((int)((uint32_t)threshold ^ 0x80000000u));
    for (uint64_t b = a / 32; b < z / 32; ++b, o += 32) {
      Words8 w = philox8(key, b << 3);
      for (int k = 0; k < 4; ++k) {
        __m256 v;
        if (dist == Dist::Uniform) {
          v = uniform_open8(w.w[k]);
        } else {  // unsigned word < threshold, via the sign-flip trick
          __m256i lt = _mm256_cmpgt_epi32(thr, _mm256_xor_si256(w.w[k], flip));
          v = always ? _mm256_set1_ps(1.0f) : _mm256_and_ps(_mm256_castsi256_ps(lt), _mm256_set1_ps(1.0f));
        }
        _mm256_storeu_ps(o + 8 * k, v);
      }
    }
  }
  rng_fill_range_ref(o, z, end, key, dist, threshold);
}

}  // namespace avx2
}  // namespace zt
