// AVX2 element kernels of the ZO optimisers, bit-identical to zo_optim_block_ref: the same
// operations in the same order, each rounded once (mul, fma, sqrt and div are correctly rounded).
#include <immintrin.h>
#include <math.h>

#include "zo_optim.h"

namespace zt {
namespace avx2 {

void zo_optim_block(float* w, float* m, float* v, const float* g, size_t len, const ZoOptimStep& s) {
  const float keep = 1.0f - s.decay;
  const __m256 vkeep = _mm256_set1_ps(keep), vb1 = _mm256_set1_ps(s.beta1), vnlr = _mm256_set1_ps(-s.lr);
  size_t i = 0;
  if (s.kind == kZoMomentum) {
    for (; i + 8 <= len; i += 8) {
      __m256 mm = _mm256_fmadd_ps(vb1, _mm256_loadu_ps(m + i), _mm256_loadu_ps(g + i));
      _mm256_storeu_ps(m + i, mm);
      _mm256_storeu_ps(w + i, _mm256_fmadd_ps(vnlr, mm, _mm256_mul_ps(_mm256_loadu_ps(w + i), vkeep)));
    }
  } else {
    const float c1 = 1.0f - s.beta1, c2 = 1.0f - s.beta2, inv_b1 = 1.0f / s.bias1, inv_b2 = 1.0f / s.bias2;
    const __m256 vc1 = _mm256_set1_ps(c1), vc2 = _mm256_set1_ps(c2), vb2 = _mm256_set1_ps(s.beta2);
    const __m256 vib1 = _mm256_set1_ps(inv_b1), vib2 = _mm256_set1_ps(inv_b2), veps = _mm256_set1_ps(s.adam_eps);
    for (; i + 8 <= len; i += 8) {
      const __m256 gg = _mm256_loadu_ps(g + i);
      __m256 mm = _mm256_fmadd_ps(vb1, _mm256_loadu_ps(m + i), _mm256_mul_ps(vc1, gg));
      __m256 vv = _mm256_fmadd_ps(vb2, _mm256_loadu_ps(v + i), _mm256_mul_ps(vc2, _mm256_mul_ps(gg, gg)));
      _mm256_storeu_ps(m + i, mm);
      _mm256_storeu_ps(v + i, vv);
      __m256 denom = _mm256_add_ps(_mm256_sqrt_ps(_mm256_mul_ps(vv, vib2)), veps);
      __m256 step = _mm256_div_ps(_mm256_mul_ps(mm, vib1), denom);
      _mm256_storeu_ps(w + i, _mm256_fmadd_ps(vnlr, step, _mm256_mul_ps(_mm256_loadu_ps(w + i), vkeep)));
    }
  }
  if (i < len) zo_optim_block_ref(w + i, m + i, v ? v + i : nullptr, g + i, len - i, s);
}

}  // namespace avx2
}  // namespace zt
