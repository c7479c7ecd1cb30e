// AVX2 kernels of the transformer ops: the same operations in the same order as the scalar
// references in nn.cc (see native/common/mathfn.h), 8 lanes at a time, so the bits match.
#include <immintrin.h>

#include "../common/mathfn.h"
#include "nn.h"

namespace zt {
namespace avx2 {
namespace {

inline __m256 exp8(__m256 x) {
  __m256 fx = _mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(kExpLog2e)), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_add_ps(x, _mm256_mul_ps(fx, _mm256_set1_ps(kExpLn2Hi)));
  r = _mm256_add_ps(r, _mm256_mul_ps(fx, _mm256_set1_ps(kExpLn2Lo)));
  __m256 z = _mm256_mul_ps(r, r);
  __m256 y = _mm256_set1_ps(kExpPoly[0]);
  for (int i = 1; i < 6; ++i) y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(kExpPoly[i]));
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

// Lanes 0-3 in lo, 4-7 in hi, as reduce8d().
inline double hsum8d(__m256d lo, __m256d hi) {
  __m256d s = _mm256_add_pd(lo, hi);
  __m128d t = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
  return _mm_cvtsd_f64(_mm_add_sd(t, _mm_unpackhi_pd(t, t)));
}

// y[d] = y[d] * c for d < n
inline void scale_vec(float* y, float c, size_t n) {
  const size_t n8 = n & ~(size_t)7;
  const __m256 cv = _mm256_set1_ps(c);
  for (size_t d = 0; d < n8; d += 8) _mm256_storeu_ps(y + d, _mm256_mul_ps(_mm256_loadu_ps(y + d), cv));
  for (size_t d = n8; d < n; ++d) y[d] = zt_mul(y[d], c);
}

#include "attention_tile.inc"  // in this ISA's namespace

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

float softmax_max(const float* x, size_t n) {
  const size_t n8 = n & ~(size_t)7;
  __m256 mv = _mm256_set1_ps(-__builtin_inff());
  for (size_t i = 0; i < n8; i += 8) mv = _mm256_max_ps(_mm256_loadu_ps(x + i), mv);  // NaN in x keeps mv
  __m128 a = _mm_max_ps(_mm256_extractf128_ps(mv, 1), _mm256_castps256_ps128(mv));
  __m128 b = _mm_max_ps(_mm_movehl_ps(a, a), a);
  float m = _mm_cvtss_f32(_mm_max_ss(_mm_shuffle_ps(b, b, 1), b));
  for (size_t i = n8; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

void softmax_stats(const float* x, size_t rows, size_t n, size_t ld, float* row_max, double* row_sum) {
  const size_t n8 = n & ~(size_t)7;
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ld;
    const float m = softmax_max(xr, n);
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

namespace {

// Scores of NV vectors of 8 consecutive key slots for S (row, head) slots: s[h][8v + l] = scale *
// sum_d q_h[d] k[d][slot] (d in order); unless Full, the last vector's lanes beyond `tail` are not
// loaded (0). At most 8 accumulators per pass over d (16 ymm registers).
template <int S, int NV, bool Full>
inline void block_scores(const float* const* qh, const float* kt, size_t cap, size_t hd, __m256i tail, float scale,
                         float (*s)[kKeyBlock]) {
  constexpr int C = S * NV <= 8 ? NV : (S >= 8 ? 1 : 8 / S);  // vectors per pass
  const __m256 sc = _mm256_set1_ps(scale);
  for (int v0 = 0; v0 < NV; v0 += C) {
    __m256 acc[S][C];
    for (int h = 0; h < S; ++h)
      for (int c = 0; c < C; ++c) acc[h][c] = _mm256_setzero_ps();
    for (size_t d = 0; d < hd; ++d) {
      const float* kr = kt + d * cap + 8 * v0;
      __m256 kv[C];
      for (int c = 0; c < C && v0 + c < NV; ++c)
        kv[c] = Full || v0 + c < NV - 1 ? _mm256_loadu_ps(kr + 8 * c) : _mm256_maskload_ps(kr + 8 * c, tail);
      for (int h = 0; h < S; ++h) {
        const __m256 qd = _mm256_set1_ps(qh[h][d]);
        for (int c = 0; c < C && v0 + c < NV; ++c) acc[h][c] = _mm256_add_ps(acc[h][c], _mm256_mul_ps(qd, kv[c]));
      }
    }
    for (int h = 0; h < S; ++h)
      for (int c = 0; c < C && v0 + c < NV; ++c) _mm256_store_ps(s[h] + 8 * (v0 + c), _mm256_mul_ps(acc[h][c], sc));
  }
}

// o_h[d0 .. d0 + 8 ND) += sum_j p[h][j] v_j (the block sum first, j in order) for live slots.
template <int S, int ND>
inline void block_values(const float (*p)[kKeyBlock], const float* vd, size_t hd, size_t n, const uint8_t* mb,
                         const bool* live, AttnHeadState* const* st, size_t d0) {
  __m256 bs[S][ND];
  for (int h = 0; h < S; ++h)
    for (int c = 0; c < ND; ++c) bs[h][c] = _mm256_setzero_ps();
  for (size_t j = 0; j < n; ++j) {
    if (mb && !mb[j]) continue;
    const float* vj = vd + j * hd;
    __m256 vv[ND];
    for (int c = 0; c < ND; ++c) vv[c] = _mm256_loadu_ps(vj + 8 * c);
    for (int h = 0; h < S; ++h) {
      const __m256 pj = _mm256_set1_ps(p[h][j]);
      for (int c = 0; c < ND; ++c) bs[h][c] = _mm256_add_ps(bs[h][c], _mm256_mul_ps(pj, vv[c]));
    }
  }
  for (int h = 0; h < S; ++h)
    if (live[h])
      for (int c = 0; c < ND; ++c) {
        float* o = st[h]->o + d0 + 8 * c;
        _mm256_store_ps(o, _mm256_add_ps(_mm256_load_ps(o), bs[h][c]));
      }
}

// One 32-slot key block for S (row, head) slots of the same KV group and block extent (every key
// and value vector loaded serves S slots, whose independent chains hide each other's latency). Per
// slot the operations are exactly those of attention_block_ref.
template <int S>
inline void attend_block(const AttnArgs& a, const float* const* qh, const float* kt, const float* vb, const uint8_t* mb,
                         size_t j0, size_t n, AttnHeadState* const* st) {
  const size_t hd = a.hd, hd8 = hd & ~(size_t)7, nv = (n + 7) / 8;
  alignas(32) float s[S][kKeyBlock], p[S][kKeyBlock];
  const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - 8 * (nv - 1))), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  if (n == kKeyBlock) {
    block_scores<S, 4, true>(qh, kt + j0, a.cap, hd, tail, a.scale, s);
  } else {
    switch (nv) {
      case 4: block_scores<S, 4, false>(qh, kt + j0, a.cap, hd, tail, a.scale, s); break;
      case 3: block_scores<S, 3, false>(qh, kt + j0, a.cap, hd, tail, a.scale, s); break;
      case 2: block_scores<S, 2, false>(qh, kt + j0, a.cap, hd, tail, a.scale, s); break;
      default: block_scores<S, 1, false>(qh, kt + j0, a.cap, hd, tail, a.scale, s); break;
    }
  }
  bool live[S];
  bool any = false;
  for (int h = 0; h < S; ++h) {
    AttnHeadState& t = *st[h];
    live[h] = block_max(mb, j0, n, 8 * nv, s[h], t, hd);
    if (!live[h]) continue;  // every slot of the block masked
    any = true;
    const __m256 mv = _mm256_set1_ps(t.m);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    for (size_t v = 0; v < nv; ++v) {
      __m256 pv = exp8(_mm256_sub_ps(_mm256_load_ps(s[h] + 8 * v), mv));  // exactly 0 where s = -inf
      _mm256_store_ps(p[h] + 8 * v, pv);
      s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(pv)));
      s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(pv, 1)));
    }
    t.l += hsum8d(s0, s1);
  }
  if (!any) return;
  // o += sum_j p_j v_j per slot: the block sum first, at most 8 accumulators at a time in registers
  constexpr size_t kCols = S >= 4 ? 16 : 32;
  for (size_t d0 = 0; d0 < hd8; d0 += kCols) {
    const float* vd = vb + j0 * hd + d0;
    const uint8_t* mj = mb ? mb + j0 : nullptr;
    const size_t nd = (hd8 - d0) / 8 < kCols / 8 ? (hd8 - d0) / 8 : kCols / 8;
    switch (nd) {
      case 1: block_values<S, 1>(p, vd, hd, n, mj, live, st, d0); break;
      case 2: block_values<S, 2>(p, vd, hd, n, mj, live, st, d0); break;
      case 3: block_values<S, 3>(p, vd, hd, n, mj, live, st, d0); break;
      default: block_values<S, (S >= 4 ? 2 : 4)>(p, vd, hd, n, mj, live, st, d0); break;
    }
  }
  for (int h = 0; h < S; ++h)
    if (live[h]) values_tail(p[h], vb, mb, j0, n, hd, hd8, st[h]->o);
}

}  // namespace

void attention_block(const AttnArgs& a, size_t b, size_t kvh, size_t r0, size_t r1) { attention_rows(a, b, kvh, r0, r1); }

}  // namespace avx2
}  // namespace zt
