// AVX2 optimiser kernels: the element operations of optim.h 8 lanes at a time (mul, add, sqrt,
// div are correctly rounded in both, no FMA), the tail through the scalar reference.
#include <immintrin.h>

#include "optim.h"

namespace zt {
namespace avx2 {

void adamw_range(float* w, const float* g, float* m, float* v, size_t n, const AdamWStep& s) {
  const __m256 gs = _mm256_set1_ps(s.gs), b1 = _mm256_set1_ps(s.b1), omb1 = _mm256_set1_ps(s.omb1), b2 = _mm256_set1_ps(s.b2),
               omb2 = _mm256_set1_ps(s.omb2), decay = _mm256_set1_ps(s.decay), step = _mm256_set1_ps(s.step),
               ibc2 = _mm256_set1_ps(s.ibc2), eps = _mm256_set1_ps(s.eps);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gi = _mm256_mul_ps(_mm256_loadu_ps(g + i), gs);
    const __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(omb1, gi));
    const __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(omb2, _mm256_mul_ps(gi, gi)));
    const __m256 den = _mm256_add_ps(_mm256_sqrt_ps(_mm256_mul_ps(vi, ibc2)), eps);
    const __m256 upd = _mm256_div_ps(_mm256_mul_ps(step, mi), den);
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    _mm256_storeu_ps(w + i, _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(w + i), decay), upd));
  }
  adamw_range_ref(w + i, g + i, m + i, v + i, n - i, s);
}

void sgd_range(float* w, const float* g, float* buf, size_t n, const SgdStep& s) {
  const __m256 gs = _mm256_set1_ps(s.gs), wd = _mm256_set1_ps(s.wd), mu = _mm256_set1_ps(s.momentum), lr = _mm256_set1_ps(s.lr);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 wi = _mm256_loadu_ps(w + i);
    __m256 gi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(g + i), gs), _mm256_mul_ps(wd, wi));
    if (buf) {
      const __m256 b = s.first ? gi : _mm256_add_ps(_mm256_mul_ps(mu, _mm256_loadu_ps(buf + i)), gi);
      _mm256_storeu_ps(buf + i, b);
      gi = s.nesterov ? _mm256_add_ps(gi, _mm256_mul_ps(mu, b)) : b;
    }
    _mm256_storeu_ps(w + i, _mm256_sub_ps(wi, _mm256_mul_ps(lr, gi)));
  }
  sgd_range_ref(w + i, g + i, buf ? buf + i : nullptr, n - i, s);
}

double sum_squares_range(const float* g, size_t n) {
  // lanes 0-3 and 4-7 of the 8-lane order in two double vectors (float products are exact in double)
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  const size_t n8 = n & ~(size_t)7;
  for (size_t i = 0; i < n8; i += 8) {
    const __m256 x = _mm256_loadu_ps(g + i);
    const __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(x)), b = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
    lo = _mm256_add_pd(lo, _mm256_mul_pd(a, a));
    hi = _mm256_add_pd(hi, _mm256_mul_pd(b, b));
  }
  double l[8];
  _mm256_storeu_pd(l, lo);
  _mm256_storeu_pd(l + 4, hi);
  double s = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
  for (size_t i = n8; i < n; ++i) s += (double)g[i] * (double)g[i];
  return s;
}

void accumulate_squares_range(float* acc, const float* g, size_t n, float s) {
  const __m256 sv = _mm256_set1_ps(s);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(g + i);
    _mm256_storeu_ps(acc + i, _mm256_add_ps(_mm256_loadu_ps(acc + i), _mm256_mul_ps(sv, _mm256_mul_ps(x, x))));
  }
  accumulate_squares_range_ref(acc + i, g + i, n - i, s);
}

}  // namespace avx2
}  // namespace zt
