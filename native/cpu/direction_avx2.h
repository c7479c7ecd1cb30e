// 8-lane AVX2 forms of the ZO direction (native/common/direction.h), bit-identical to the scalar
// ones; shared by every AVX2 kernel that regenerates z (perturbation, perturb-on-load GEMM).
// Include only from *_avx2.cc translation units.
#pragma once
#include "../common/direction.h"
#include "philox_avx2.h"

namespace zt {
namespace avx2 {

// QuZO: z onto the b-bit grid by stochastic rounding (sr_round of direction.h), 8 lanes.
static inline __m256 quzo8(__m256 z, __m256i word, __m256 inv_step, __m256 step) {
  __m256 v = _mm256_mul_ps(z, inv_step);
  __m256 fl = _mm256_floor_ps(v);
  __m256 up = _mm256_cmp_ps(uniform_sr8(word), _mm256_sub_ps(v, fl), _CMP_LT_OQ);
  return _mm256_mul_ps(_mm256_blendv_ps(fl, _mm256_add_ps(fl, _mm256_set1_ps(1.0f)), up), step);
}

}  // namespace avx2
}  // namespace zt
