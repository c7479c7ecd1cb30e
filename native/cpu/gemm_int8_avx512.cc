// AVX-512 VNNI forms of the packed integer GEMM's panel packing and micro-tile (gemm_int8.h),
// bit-identical to the scalar and AVX2 ones: the integer sums are exact whatever the order, and the
// float steps (scale fma per group, epilogue) are the same lane operations on 16 lanes.
//
// vpdpbusd multiplies unsigned by signed bytes. The panel's 16 columns x 4 k of one step are one
// zmm, so the weights are the unsigned operand: int4 nibbles u as they are, int8 codes offset to
// w + 128 (stored in Panel::abs, which the AVX2 kernels use for |w|); the activation bytes are the
// signed one. The offsets come back out per group in integers: S = sum u * x - zp * sum x, with
// zp = 128 for int8 and the group's zero-point for int4 (ActQ::gsum holds sum x per group).
// Include only in the avx512 group (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni).
// GCC 12 warns inside its own headers (_mm512_cvtepi32_ps's undefined pass-through operand).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include <string.h>

#include "gemm_int8.h"

namespace zt {
namespace avx512 {
namespace {

constexpr int32_t kInt8Offset = 128;  // int8 codes as unsigned bytes: w + 128

// acc += u8(w) . s8(x) per 4-byte group, in place. Inline asm: GCC 12 wraps the intrinsic in a pair
// of zmm moves per call in this loop (the accumulator copied out and back), a third of the steps.
__attribute__((always_inline)) inline void dpbusd(__m512i& acc, __m512i w, __m512i x) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(w), "v"(x));
}

inline __m512i bcast4(const int8_t* p) {
  int32_t v;
  memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// Per-row offset terms of one group: int8 subtracts 128 * sum(x) in every column (one broadcast);
// int4 subtracts zp(column) * sum(x), |sum(x)| <= 128 * 127 fitting int16 for groups up to 128
// (vpmaddwd of (zp, 0) lane pairs, as the AVX2 kernel does), vpmulld beyond.
inline __m512i offset_term(bool int8, __m512i zp, int32_t gsum, bool small_group) {
  if (int8) return _mm512_set1_epi32(kInt8Offset * gsum);
  const __m512i g = _mm512_set1_epi32(gsum);
  return small_group ? _mm512_madd_epi16(zp, g) : _mm512_mullo_epi32(zp, g);
}

// sum over steps [s0, s1) of u[i][k4] (16 columns x 4 bytes) times the 4 activation bytes of each
// of MR rows: exact int32 per column. Named accumulators (an array here makes GCC shuffle zmm
// registers every step) and unused rows / panels compiled out.
template <int MR, int NP>
__attribute__((always_inline)) inline void dot_steps(const int8_t* const* q, const uint8_t* const* u, uint64_t s0, uint64_t s1,
                                                     __m512i (&out)[MR][NP]) {
  __m512i c00 = _mm512_setzero_si512(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
  __m512i c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
  const uint8_t *u0 = u[0], *u1 = u[NP > 1 ? 1 : 0], *u2 = u[NP > 2 ? 2 : 0], *u3 = u[NP > 3 ? 3 : 0];
  const int8_t *q0 = q[0], *q1 = q[MR > 1 ? 1 : 0], *q2 = q[MR > 2 ? 2 : 0], *q3 = q[MR > 3 ? 3 : 0];
  for (uint64_t k4 = s0; k4 < s1; ++k4) {
    const uint64_t o = k4 * 64;
    const __m512i w0 = _mm512_load_si512((const void*)(u0 + o));
    const __m512i w1 = NP > 1 ? _mm512_load_si512((const void*)(u1 + o)) : w0;
    const __m512i w2 = NP > 2 ? _mm512_load_si512((const void*)(u2 + o)) : w0;
    const __m512i w3 = NP > 3 ? _mm512_load_si512((const void*)(u3 + o)) : w0;
#define ZT_ROW(r)                                                 \
  if (MR > r) {                                                   \
    const __m512i x = bcast4(q##r + 4 * k4);                      \
    dpbusd(c##r##0, w0, x);                                       \
    if (NP > 1) dpbusd(c##r##1, w1, x);                           \
    if (NP > 2) dpbusd(c##r##2, w2, x);                           \
    if (NP > 3) dpbusd(c##r##3, w3, x);                           \
  }
    ZT_ROW(0) ZT_ROW(1) ZT_ROW(2) ZT_ROW(3)
#undef ZT_ROW
  }
  const __m512i all[4][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23}, {c30, c31, c32, c33}};
  for (int r = 0; r < MR; ++r)
    for (int i = 0; i < NP; ++i) out[r][i] = all[r][i];
}

// MR activation rows x NP panels (16 NP output columns from n0): per step, NP weight vectors and MR
// activation broadcasts feed MR * NP independent vpdpbusd chains.
template <int MR, int NP>
void tile_t(const IntPlan& p, uint64_t m0, const Panel* panels, uint64_t n0) {
  const ActQ& a = *p.a;
  const bool int8 = p.w.format == QFormat::Int8, small_group = p.ga <= 128;
  const int8_t* q[MR];
  for (int r = 0; r < MR; ++r) q[r] = a.q + (m0 + r) * a.Kp;
  const uint8_t* u[NP];
  for (int i = 0; i < NP; ++i) u[i] = int8 ? panels[i].abs : (const uint8_t*)panels[i].codes;
  __m512 accf[MR][NP];
  for (int r = 0; r < MR; ++r)
    for (int i = 0; i < NP; ++i) accf[r][i] = _mm512_setzero_ps();
  const uint64_t ga4 = p.ga / 4;
  for (uint64_t j = 0; j < p.G; ++j) {
    const uint64_t s0 = j * ga4, s1 = p.K4 < s0 + ga4 ? p.K4 : s0 + ga4;
    __m512i s[MR][NP];
    dot_steps<MR, NP>(q, u, s0, s1, s);
    for (int i = 0; i < NP; ++i) {
      const __m512i zp = int8 ? _mm512_setzero_si512() : _mm512_load_si512((const void*)(panels[i].zeros + j * 16));
      for (int r = 0; r < MR; ++r) s[r][i] = _mm512_sub_epi32(s[r][i], offset_term(int8, zp, a.gsum[(m0 + r) * p.G + j], small_group));
    }
    if (p.raw32) {  // one group: the exact sums are the result
      for (int i = 0; i < NP; ++i) {
        const uint64_t n = n0 + 16 * i, nc = p.N - n < 16 ? p.N - n : 16;
        for (int r = 0; r < MR; ++r) {
          alignas(64) int32_t v[16];
          _mm512_store_si512((void*)v, s[r][i]);
          for (uint64_t c = 0; c < nc; ++c) p.raw32[(m0 + r) * p.N + n + c] = v[c];
        }
      }
      return;
    }
    for (int i = 0; i < NP; ++i) {
      const __m512 sc = _mm512_load_ps(panels[i].scales + j * 16);
      for (int r = 0; r < MR; ++r) accf[r][i] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(s[r][i]), accf[r][i]);
    }
  }
  if (p.raw32) return;  // K == 0
  for (int i = 0; i < NP; ++i) {
    if (!panels[i].dir) continue;
    // step 2': codes u_z = q_z + 8, S = sum u_z * q_x - 8 * sum(q_x over the chunk)
    const Panel& dz = *panels[i].dir;
    const uint64_t gz4 = kAccChunk / 4, chunks = dir_chunks(p.K);
    for (uint64_t j = 0; j < chunks; ++j) {
      const uint64_t s0 = j * gz4, s1 = p.K4 < s0 + gz4 ? p.K4 : s0 + gz4;
      __m512i s[MR];
      for (int r = 0; r < MR; ++r) s[r] = _mm512_setzero_si512();
      for (uint64_t k4 = s0; k4 < s1; ++k4) {
        const __m512i w = _mm512_load_si512((const void*)(dz.codes + k4 * 64));
        for (int r = 0; r < MR; ++r) dpbusd(s[r], w, bcast4(q[r] + 4 * k4));
      }
      const __m512 sc = _mm512_load_ps(dz.scales + j * 16);
      for (int r = 0; r < MR; ++r) {
        s[r] = _mm512_sub_epi32(s[r], _mm512_set1_epi32(kInt4SymZero * a.csum[(m0 + r) * chunks + j]));
        accf[r][i] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(s[r]), accf[r][i]);
      }
    }
  }
  for (int i = 0; i < NP; ++i) {
    const uint64_t n = n0 + 16 * i, nc = p.N - n < 16 ? p.N - n : 16;
    for (int r = 0; r < MR; ++r) {
      const uint64_t m = m0 + r;
      if (nc == 16 && !p.ep.raw) {
        __m512 y = _mm512_mul_ps(accf[r][i], _mm512_set1_ps(p.ep.sx[m]));
        if (p.ep.bias) y = _mm512_add_ps(y, _mm512_loadu_ps(p.ep.bias + n));
        if (p.ep.residual) y = _mm512_add_ps(y, _mm512_loadu_ps(p.ep.residual + m * p.ep.ldr + n));
        _mm512_storeu_ps(p.out + m * p.ldo + n, y);
      } else {
        alignas(64) float v[16];
        _mm512_store_ps(v, accf[r][i]);
        for (uint64_t c = 0; c < nc; ++c) p.out[m * p.ldo + n + c] = epilogue(p.ep, v[c], m, n + c);
      }
    }
  }
}

template <int NP>
void tile_rows(const IntPlan& p, uint64_t m0, int mr, const Panel* panels, uint64_t n0) {
  switch (mr) {
    case 4: tile_t<4, NP>(p, m0, panels, n0); break;
    case 3: tile_t<3, NP>(p, m0, panels, n0); break;
    case 2: tile_t<2, NP>(p, m0, panels, n0); break;
    default: tile_t<1, NP>(p, m0, panels, n0); break;
  }
}

}  // namespace

void pack_panel(const IntPlan& p, uint64_t n0, Panel panel) {
  uint8_t* u = panel.abs;
  panel.abs = nullptr;
  avx2::pack_panel(p, n0, panel);
  if (!u) return;
  const __m512i offset = _mm512_set1_epi8((char)0x80);  // w + 128 as an unsigned byte
  for (uint64_t i = 0; i < p.K4 * kPanelCols * 4; i += 64)
    _mm512_store_si512((void*)(u + i), _mm512_xor_si512(_mm512_load_si512((const void*)(panel.codes + i)), offset));
}

void tile_panels(const IntPlan& p, uint64_t m0, int mr, const Panel* panels, int np, uint64_t n0) {
  // int8: 4 panels (16 chains, the group sums stay in registers); int4's short groups also hold
  // their float sums, so 2 panels at a time.
  const int wide = p.w.format == QFormat::Int8 ? 4 : 2;
  for (int i = 0; i < np;) {
    const int n = np - i >= wide ? wide : np - i >= 2 ? 2 : 1;
    if (n == 4) tile_rows<4>(p, m0, mr, panels + i, n0 + 16 * i);
    else if (n == 2) tile_rows<2>(p, m0, mr, panels + i, n0 + 16 * i);
    else tile_rows<1>(p, m0, mr, panels + i, n0 + 16 * i);
    i += n;
  }
}

}  // namespace avx512
}  // namespace zt
