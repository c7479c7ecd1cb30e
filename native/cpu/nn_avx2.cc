// AVX2 kernels of the transformer ops: the same operations in the same order as the scalar
// references in nn.cc (see native/common/mathfn.h), 8 lanes at a time, so the bits match.
#include <immintrin.h>

#include "../common/mathfn.h"
#include "nn.h"

namespace zt {
namespace avx2 {
namespace {

constexpr size_t kMaxHeadDim = 512;
constexpr size_t kKeyBlock = 32;

inline __m256 exp8(__m256 x) {
  __m256 fx = _mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_add_ps(x, _mm256_mul_ps(fx, _mm256_set1_ps(-0.693359375f)));
  r = _mm256_add_ps(r, _mm256_mul_ps(fx, _mm256_set1_ps(2.12194440e-4f)));
  __m256 z = _mm256_mul_ps(r, r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(y, z), r), _mm256_set1_ps(1.0f));
  const __m256i bias = _mm256_set1_epi32(127);
  __m256i n = _mm256_cvttps_epi32(fx), n1 = _mm256_srai_epi32(n, 1);
  __m256 res = _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23)));
  res = _mm256_mul_ps(res, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(n, n1), bias), 23)));
  // the scalar early exits: below kExpLo -> 0, NaN -> NaN, above kExpHi -> +inf
  res = _mm256_and_ps(res, _mm256_cmp_ps(x, _mm256_set1_ps(kExpLo), _CMP_GE_OQ));
  res = _mm256_blendv_ps(res, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  return _mm256_blendv_ps(res, _mm256_castsi256_ps(_mm256_set1_epi32(0x7f800000)),
                          _mm256_cmp_ps(x, _mm256_set1_ps(kExpHi), _CMP_GT_OQ));
}

// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), as reduce8().
inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

// Lanes 0-3 in lo, 4-7 in hi, as reduce8d().
inline double hsum8d(__m256d lo, __m256d hi) {
  __m256d s = _mm256_add_pd(lo, hi);
  __m128d t = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
  return _mm_cvtsd_f64(_mm_add_sd(t, _mm_unpackhi_pd(t, t)));
}

inline float dot(const float* a, const float* b, size_t n) {
  const size_t n8 = n & ~(size_t)7;
  __m256 acc = _mm256_setzero_ps();
  for (size_t i = 0; i < n8; i += 8) acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  float s = hsum8(acc);
  for (size_t i = n8; i < n; ++i) s = zt_add(s, zt_mul(a[i], b[i]));
  return s;
}

// y[d] = y[d] * c for d < n
inline void scale_vec(float* y, float c, size_t n) {
  const size_t n8 = n & ~(size_t)7;
  const __m256 cv = _mm256_set1_ps(c);
  for (size_t d = 0; d < n8; d += 8) _mm256_storeu_ps(y + d, _mm256_mul_ps(_mm256_loadu_ps(y + d), cv));
  for (size_t d = n8; d < n; ++d) y[d] = zt_mul(y[d], c);
}

}  // namespace

void rmsnorm_rows(float* out, const float* x, const float* w, size_t rows, size_t dim, double eps) {
  const size_t n8 = dim & ~(size_t)7;
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* o = out + r * dim;
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    for (size_t i = 0; i < n8; i += 8) {
      __m256 v = _mm256_loadu_ps(xr + i);
      __m256d d0 = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), d1 = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
      a0 = _mm256_add_pd(a0, _mm256_mul_pd(d0, d0));
      a1 = _mm256_add_pd(a1, _mm256_mul_pd(d1, d1));
    }
    double ss = hsum8d(a0, a1);
    for (size_t i = n8; i < dim; ++i) ss += (double)xr[i] * (double)xr[i];
    const float s = rms_inv(ss, dim, eps);
    const __m256 sv = _mm256_set1_ps(s);
    for (size_t i = 0; i < n8; i += 8)
      _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(xr + i), sv), _mm256_loadu_ps(w + i)));
    for (size_t i = n8; i < dim; ++i) o[i] = zt_mul(zt_mul(xr[i], s), w[i]);
  }
}

void rope_rows(float* x, size_t rows, size_t ld, size_t heads, size_t hd, const int32_t* pos, const float* cos_t,
               const float* sin_t) {
  const size_t half = hd / 2, h8 = half & ~(size_t)7;
  for (size_t r = 0; r < rows; ++r) {
    const float* c = cos_t + (size_t)pos[r] * half;
    const float* s = sin_t + (size_t)pos[r] * half;
    for (size_t h = 0; h < heads; ++h) {
      float* x1 = x + r * ld + h * hd;
      float* x2 = x1 + half;
      for (size_t i = 0; i < h8; i += 8) {
        __m256 a = _mm256_loadu_ps(x1 + i), b = _mm256_loadu_ps(x2 + i);
        __m256 cv = _mm256_loadu_ps(c + i), sv = _mm256_loadu_ps(s + i);
        _mm256_storeu_ps(x1 + i, _mm256_sub_ps(_mm256_mul_ps(a, cv), _mm256_mul_ps(b, sv)));
        _mm256_storeu_ps(x2 + i, _mm256_add_ps(_mm256_mul_ps(b, cv), _mm256_mul_ps(a, sv)));
      }
      for (size_t i = h8; i < half; ++i) {
        float a = x1[i], b = x2[i];
        x1[i] = zt_add(zt_mul(a, c[i]), -zt_mul(b, s[i]));
        x2[i] = zt_add(zt_mul(b, c[i]), zt_mul(a, s[i]));
      }
    }
  }
}

void swiglu(float* out, const float* gate, const float* up, size_t n) {
  const size_t n8 = n & ~(size_t)7;
  const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
  for (size_t i = 0; i < n8; i += 8) {
    __m256 g = _mm256_loadu_ps(gate + i);
    __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, exp8(_mm256_xor_ps(g, sign))));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
  }
  for (size_t i = n8; i < n; ++i) out[i] = zt_mul(silu_f32(gate[i]), up[i]);
}

void softmax_stats(const float* x, size_t rows, size_t n, size_t ld, float* row_max, double* row_sum) {
  const size_t n8 = n & ~(size_t)7;
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ld;
    __m256 mv = _mm256_set1_ps(-__builtin_inff());
    for (size_t i = 0; i < n8; i += 8) mv = _mm256_max_ps(_mm256_loadu_ps(xr + i), mv);  // NaN in x keeps mv
    __m128 a = _mm_max_ps(_mm256_extractf128_ps(mv, 1), _mm256_castps256_ps128(mv));
    __m128 b = _mm_max_ps(_mm_movehl_ps(a, a), a);
    float m = _mm_cvtss_f32(_mm_max_ss(_mm_shuffle_ps(b, b, 1), b));
    for (size_t i = n8; i < n; ++i) m = xr[i] > m ? xr[i] : m;
    const __m256 m8 = _mm256_set1_ps(m);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    for (size_t i = 0; i < n8; i += 8) {
      __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(xr + i), m8));
      s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
      s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double s = hsum8d(s0, s1);
    for (size_t i = n8; i < n; ++i) s += (double)exp_f32(zt_add(xr[i], -m));
    row_max[r] = m;
    row_sum[r] = s;
  }
}

int64_t argmax(const float* x, size_t n) {
  const size_t n8 = n & ~(size_t)7;
  __m256 mv = _mm256_set1_ps(-__builtin_inff());
  for (size_t i = 0; i < n8; i += 8) mv = _mm256_max_ps(_mm256_loadu_ps(x + i), mv);
  float l[8];
  _mm256_storeu_ps(l, mv);
  float m = -__builtin_inff();
  for (int j = 0; j < 8; ++j) m = l[j] > m ? l[j] : m;
  for (size_t i = n8; i < n; ++i) m = x[i] > m ? x[i] : m;
  const __m256 m8 = _mm256_set1_ps(m);
  for (size_t i = 0; i < n8; i += 8) {
    int bits = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), m8, _CMP_EQ_OQ));
    if (bits) return (int64_t)(i + (size_t)__builtin_ctz((unsigned)bits));
  }
  for (size_t i = n8; i < n; ++i)
    if (x[i] == m) return (int64_t)i;
  return -1;
}

void attention_block(const AttnArgs& a, size_t b, size_t kvh, size_t r0, size_t r1) {
  const size_t hd = a.hd, hd8 = hd & ~(size_t)7, group = a.Hq / a.Hkv;
  const float* kb = a.k + (b * a.Hkv + kvh) * a.cap * hd;
  const float* vb = a.v + (b * a.Hkv + kvh) * a.cap * hd;
  const uint8_t* mb = a.kmask ? a.kmask + b * a.cap : nullptr;
  const float neg_inf = -__builtin_inff();
  alignas(32) float o[kMaxHeadDim], ob[kMaxHeadDim];
  float s[kKeyBlock];
  for (size_t i = r0; i < r1; ++i) {
    const size_t row = (size_t)a.q_off[b] + i, last = (size_t)a.q_start[b] + i;
    for (size_t g = 0; g < group; ++g) {
      const size_t h = kvh * group + g;
      const float* qh = a.q + row * a.ld_q + h * hd;
      float* oh = a.out + row * a.ld_out + h * hd;
      float m = neg_inf;
      double l = 0;
      for (size_t d = 0; d < hd; ++d) o[d] = 0;
      for (size_t j0 = 0; j0 <= last; j0 += kKeyBlock) {
        const size_t j1 = last + 1 < j0 + kKeyBlock ? last + 1 : j0 + kKeyBlock;
        float bm = neg_inf;
        for (size_t j = j0; j < j1; ++j) {
          float sj = (mb && !mb[j]) ? neg_inf : zt_mul(dot(qh, kb + j * hd, hd), a.scale);
          s[j - j0] = sj;
          bm = sj > bm ? sj : bm;
        }
        if (bm == neg_inf) continue;
        if (bm > m) {
          float corr = exp_f32(zt_add(m, -bm));
          l *= (double)corr;
          scale_vec(o, corr, hd);
          m = bm;
        }
        for (size_t d = 0; d < hd; ++d) ob[d] = 0;
        for (size_t j = j0; j < j1; ++j) {
          if (s[j - j0] == neg_inf) continue;
          float p = exp_f32(zt_add(s[j - j0], -m));
          l += (double)p;
          const float* vj = vb + j * hd;
          const __m256 pv = _mm256_set1_ps(p);
          for (size_t d = 0; d < hd8; d += 8)
            _mm256_store_ps(ob + d, _mm256_add_ps(_mm256_load_ps(ob + d), _mm256_mul_ps(pv, _mm256_loadu_ps(vj + d))));
          for (size_t d = hd8; d < hd; ++d) ob[d] = zt_add(ob[d], zt_mul(p, vj[d]));
        }
        for (size_t d = 0; d < hd8; d += 8) _mm256_store_ps(o + d, _mm256_add_ps(_mm256_load_ps(o + d), _mm256_load_ps(ob + d)));
        for (size_t d = hd8; d < hd; ++d) o[d] = zt_add(o[d], ob[d]);
      }
      if (l > 0) {
        const __m256d lv = _mm256_set1_pd(l);
        for (size_t d = 0; d < hd8; d += 8) {
          __m256 v = _mm256_load_ps(o + d);
          __m128 lo = _mm256_cvtpd_ps(_mm256_div_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), lv));
          __m128 hi = _mm256_cvtpd_ps(_mm256_div_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), lv));
          _mm256_storeu_ps(oh + d, _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1));
        }
        for (size_t d = hd8; d < hd; ++d) oh[d] = (float)((double)o[d] / l);
      } else {
        for (size_t d = 0; d < hd; ++d) oh[d] = 0;
      }
    }
  }
}

}  // namespace avx2
}  // namespace zt
