// AVX-512 forms of the heaviest transformer ops after the GEMMs: attention, SwiGLU and the softmax
// statistics of the log-probabilities. avx2's operations lane for lane on 16-lane vectors, so the
// bits are those of the scalar references in native/common/nn_rows.h (mul and add rounded
// separately, exp_f32's polynomial, double sums in the 8-lane order). Attention: 32 key slots and a
// head's 32 values in two zmm each; rows that see a whole key block go two at a time, so each
// block's keys and values serve 2 x group (row, head) slots.
// GCC 12 warns inside its own headers (the undefined pass-through operands of the unmasked forms).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "../common/mathfn.h"
#include "nn.h"

namespace zt {
namespace avx512 {
namespace {

// nn_avx2.cc exp8 on 16 lanes (the same operations; mask registers for its blends).
inline __m512 exp16(__m512 x) {
  __m512 fx = _mm512_roundscale_ps(_mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(kExpLog2e)), _mm512_set1_ps(0.5f)),
                                   _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_add_ps(x, _mm512_mul_ps(fx, _mm512_set1_ps(kExpLn2Hi)));
  r = _mm512_add_ps(r, _mm512_mul_ps(fx, _mm512_set1_ps(kExpLn2Lo)));
  __m512 z = _mm512_mul_ps(r, r);
  __m512 y = _mm512_set1_ps(kExpPoly[0]);
  for (int i = 1; i < 6; ++i) y = _mm512_add_ps(_mm512_mul_ps(y, r), _mm512_set1_ps(kExpPoly[i]));
  y = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(y, z), r), _mm512_set1_ps(1.0f));
  const __m512i bias = _mm512_set1_epi32(127);
  __m512i n = _mm512_cvttps_epi32(fx), n1 = _mm512_srai_epi32(n, 1);
  __m512 res = _mm512_mul_ps(y, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, bias), 23)));
  res = _mm512_mul_ps(res, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_sub_epi32(n, n1), bias), 23)));
  // the scalar early exits: below kExpLo -> 0, NaN -> NaN, above kExpHi -> +inf
  res = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(kExpLo), _CMP_GE_OQ), res);
  res = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), res, x);
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(kExpHi), _CMP_GT_OQ), res,
                              _mm512_castsi512_ps(_mm512_set1_epi32(0x7f800000)));
}

// reduce8d of the 8 double lanes (nn_avx2.cc hsum8d: lanes 0-3 + 4-7, then pairs).
inline double hsum8d(__m512d v) {
  __m256d s = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1));
  __m128d t = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
  return _mm_cvtsd_f64(_mm_add_sd(t, _mm_unpackhi_pd(t, t)));
}

// Lanes [0, n) of a 16-lane vector.
inline __mmask16 first_lanes(size_t n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1); }

// y[d] = y[d] * c for d < n
inline void scale_vec(float* y, float c, size_t n) {
  const __m512 cv = _mm512_set1_ps(c);
  for (size_t d = 0; d < n; d += 16) {
    const __mmask16 k = first_lanes(n - d);
    _mm512_mask_storeu_ps(y + d, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, y + d), cv));
  }
}

#include "attention_tile.inc"  // in this ISA's namespace

// s[h][16v + l] = scale * sum_d q_h[d] k[d][slot] (d in order) for the block's n slots (lanes past
// n: 0).
template <int S, int NV>
inline void block_scores(const float* const* qh, const float* kt, size_t cap, size_t hd, size_t n, float scale,
                         float (*s)[kKeyBlock]) {
  __m512 acc[S][NV];
  for (int h = 0; h < S; ++h)
    for (int v = 0; v < NV; ++v) acc[h][v] = _mm512_setzero_ps();
  __mmask16 km[NV];
  for (int v = 0; v < NV; ++v) km[v] = first_lanes(n - 16 * v);
  for (size_t d = 0; d < hd; ++d) {
    const float* kr = kt + d * cap;
    __m512 kv[NV];
    for (int v = 0; v < NV; ++v) kv[v] = _mm512_maskz_loadu_ps(km[v], kr + 16 * v);
    for (int h = 0; h < S; ++h) {
      const __m512 qd = _mm512_set1_ps(qh[h][d]);
      for (int v = 0; v < NV; ++v) acc[h][v] = _mm512_add_ps(acc[h][v], _mm512_mul_ps(qd, kv[v]));
    }
  }
  const __m512 sc = _mm512_set1_ps(scale);
  for (int h = 0; h < S; ++h)
    for (int v = 0; v < NV; ++v) _mm512_store_ps(s[h] + 16 * v, _mm512_mul_ps(acc[h][v], sc));
}

// o_h[d0 .. d0 + 16 ND) (+ lanes past hd8 masked) += sum_j p[h][j] v_j, the block sum first in j
// order, for live slots.
template <int S, int ND>
inline void block_values(const float (*p)[kKeyBlock], const float* vb, size_t hd, size_t cols, size_t n, const uint8_t* mb,
                         const bool* live, AttnHeadState* const* st, size_t d0) {
  __m512 bs[S][ND];
  __mmask16 km[ND];
  for (int c = 0; c < ND; ++c) km[c] = first_lanes(cols - 16 * c);
  for (int h = 0; h < S; ++h)
    for (int c = 0; c < ND; ++c) bs[h][c] = _mm512_setzero_ps();
  for (size_t j = 0; j < n; ++j) {
    if (mb && !mb[j]) continue;
    const float* vj = vb + j * hd + d0;
    __m512 vv[ND];
    for (int c = 0; c < ND; ++c) vv[c] = _mm512_maskz_loadu_ps(km[c], vj + 16 * c);
    for (int h = 0; h < S; ++h) {
      const __m512 pj = _mm512_set1_ps(p[h][j]);
      for (int c = 0; c < ND; ++c) bs[h][c] = _mm512_add_ps(bs[h][c], _mm512_mul_ps(pj, vv[c]));
    }
  }
  for (int h = 0; h < S; ++h)
    if (live[h])
      for (int c = 0; c < ND; ++c) {
        float* o = st[h]->o + d0 + 16 * c;
        _mm512_mask_storeu_ps(o, km[c], _mm512_add_ps(_mm512_maskz_loadu_ps(km[c], o), bs[h][c]));
      }
}

// One 32-slot key block for S (row, head) slots of the same KV group and block extent n.
template <int S>
inline void attend_block(const AttnArgs& a, const float* const* qh, const float* kt, const float* vb, const uint8_t* mb,
                         size_t j0, size_t n, AttnHeadState* const* st) {
  const size_t hd = a.hd, hd8 = hd & ~(size_t)7;
  alignas(64) float s[S][kKeyBlock], p[S][kKeyBlock];
  if (n > 16) block_scores<S, 2>(qh, kt + j0, a.cap, hd, n, a.scale, s);
  else block_scores<S, 1>(qh, kt + j0, a.cap, hd, n, a.scale, s);
  const size_t n8 = n < kKeyBlock ? (n + 7) & ~(size_t)7 : kKeyBlock;  // the 8-lane blocks the sums of p run over
  bool live[S];
  bool any = false;
  for (int h = 0; h < S; ++h) {
    AttnHeadState& t = *st[h];
    live[h] = block_max(mb, j0, n, n8, s[h], t, hd);
    if (!live[h]) continue;  // every slot of the block masked
    any = true;
    const __m512 mv = _mm512_set1_ps(t.m);
    __m512d l8 = _mm512_setzero_pd();  // lane l: p of slots l, l + 8, l + 16, l + 24 in order
    for (size_t v = 0; v < n8; v += 16) {
      const __mmask16 k = first_lanes(n8 - v);
      const __m512 pv = exp16(_mm512_sub_ps(_mm512_maskz_load_ps(k, s[h] + v), mv));
      _mm512_mask_store_ps(p[h] + v, k, pv);
      l8 = _mm512_add_pd(l8, _mm512_cvtps_pd(_mm512_castps512_ps256(pv)));
      if (k == 0xffff) l8 = _mm512_add_pd(l8, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(pv), 1))));
    }
    t.l += hsum8d(l8);
  }
  if (!any) return;
  // o += sum_j p_j v_j per slot: the block sum first, 32 columns at a time in registers (a last
  // pass of 8 or 24 columns masks the lanes past hd8)
  for (size_t d0 = 0; d0 < hd8; d0 += 32) {
    const size_t cols = hd8 - d0 < 32 ? hd8 - d0 : 32;
    const uint8_t* mj = mb ? mb + j0 : nullptr;
    if (cols > 16) block_values<S, 2>(p, vb + j0 * hd, hd, cols, n, mj, live, st, d0);
    else block_values<S, 1>(p, vb + j0 * hd, hd, cols, n, mj, live, st, d0);
  }
  for (int h = 0; h < S; ++h)
    if (live[h]) values_tail(p[h], vb, mb, j0, n, hd, hd8, st[h]->o);
}

}  // namespace

void attention_block(const AttnArgs& a, size_t b, size_t kvh, size_t r0, size_t r1) { attention_rows(a, b, kvh, r0, r1); }

void swiglu(float* out, const float* gate, const float* up, size_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 k = first_lanes(n - i);
    const __m512 g = _mm512_maskz_loadu_ps(k, gate + i);
    const __m512 neg = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(g), sign));  // -g (AVX-512F has no float xor)
    const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, exp16(neg)));
    _mm512_mask_storeu_ps(out + i, k, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(k, up + i)));
  }
}

void softmax_stats(const float* x, size_t rows, size_t n, size_t ld, float* row_max, double* row_sum) {
  const size_t n8 = n & ~(size_t)7;
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ld;
    const float m = avx2::softmax_max(xr, n);  // on 8 lanes: the 8-lane order fixes the sign of a zero max
    // sum of exp(x - m) in double, lane l taking elements l, l + 8, l + 16, ... in order: 16 floats
    // per exp, their two halves added one after the other
    const __m512 m16 = _mm512_set1_ps(m);
    __m512d l8 = _mm512_setzero_pd();
    size_t i = 0;
    for (; i + 16 <= n8; i += 16) {
      const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(xr + i), m16));
      l8 = _mm512_add_pd(l8, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
      l8 = _mm512_add_pd(l8, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    if (i < n8) {
      const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(0xff, xr + i), m16));
      l8 = _mm512_add_pd(l8, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
    }
    double sum = hsum8d(l8);
    for (size_t j = n8; j < n; ++j) sum += (double)exp_f32(zt_add(xr[j], -m));
    row_max[r] = m;
    row_sum[r] = sum;
  }
}

}  // namespace avx512
}  // namespace zt
