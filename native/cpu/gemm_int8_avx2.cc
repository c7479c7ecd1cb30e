// AVX2 kernels of the integer GEMM; each reproduces its *_ref twin in gemm_int8.cc bit for bit.
//
// int8 x int8 products use the sign trick: vpmaddubsw multiplies unsigned by signed bytes, so the
// weight goes in as |w| (vpabsb; -128 becomes 128, still correct as unsigned) and its sign moves
// onto the activation (vpsignb; activations are in [-127, 127], so negating never overflows).
// A pair sum is at most 2 * 128 * 127 = 32512 < 32767: vpmaddubsw never saturates. vpmaddwd with
// ones widens pairs to int32. Small codes (int4: |q - zp| <= 15) keep up to 8 steps in int16
// (8 * 2 * 15 * 127 = 30480) before widening, halving the vpmaddwd work.
#include <float.h>
#include <immintrin.h>
#include <string.h>

#include "direction_avx2.h"
#include "gemm_int8.h"
#include "philox_avx2.h"

namespace zt {
namespace avx2 {
namespace {

// Lanes 0-3: sums of the low 128-bit halves of a, b, c, d; lanes 4-7: of the high halves.
// Unpacks and adds rather than vphaddd, which is microcoded (4 uops per 128 bits) on Zen.
inline __m256i hadd4(__m256i a, __m256i b, __m256i c, __m256i d) {
  __m256i ab = _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
  __m256i cd = _mm256_add_epi32(_mm256_unpacklo_epi32(c, d), _mm256_unpackhi_epi32(c, d));
  return _mm256_add_epi32(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd));
}
// [sum(a), sum(b), sum(c), sum(d)].
inline __m128i hsum4(__m256i a, __m256i b, __m256i c, __m256i d) {
  __m256i t = hadd4(a, b, c, d);
  return _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
}

inline void transpose8(__m256 r[8]) {
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xee);
  __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xee);
  __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xee);
  __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xee);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

inline __m256i bcast4(const int8_t* p) {
  int32_t v;
  memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// Signed product of |w| (unsigned) and the sign-moved activation, pairs summed to int16.
inline __m256i dot_pairs(__m256i aw, __m256i w, __m256i a) { return _mm256_maddubs_epi16(aw, _mm256_sign_epi8(a, w)); }

// ---- GEMV: W streamed once, 4 weight rows per pass share every activation load --------------
//
// A pass streams 4 weight rows over a block of up to kFlushBlock accumulation groups, reducing
// each group's lane sums to [S(row 0..3)] and storing them; the block's groups are then scaled
// and added in order (the canonical fma chain) with the scales of the 4 rows loaded and
// transposed 4 groups at a time. The stream loop has no scalar work and no dependency chain.

constexpr int kFlushBlock = 64;

template <int R>
struct RowSet {
  const uint8_t* p[R];  // row starts (missing rows repeat row 0 and are not stored)
  const float* s[R];    // scales of group 0 of each row
  const uint8_t* z[R];  // int4 zero-points of group 0, or null
  bool grouped;         // one scale per accumulation group (else one per row or tensor)
  int nr;
  // The next pass's rows (contiguous after these, within the task) are prefetched as one linear
  // stream while this pass reads its R interleaved ones: R streams alone leave DRAM idle gaps.
  // Grouped scales too (the next R rows' scales are contiguous): they are read only by the flushes,
  // in bursts of up to 64 groups x R rows (4 KB per int4 pass at group 32) that would otherwise
  // miss to DRAM.
  const uint8_t* next;  // null at the task's last pass
  uint64_t next_bytes;
  const uint8_t* next_s;    // the next pass's grouped scales, or null
  uint64_t next_s_bytes, per_s;  // per_s: bytes per step of this pass (rounded up)
  alignas(32) uint8_t tail[R][32];  // the last partial 32-byte step of each row, zero padded
};

// Prefetches the slice of the next pass's rows that matches step `st` of `steps` of this pass (int8;
// a form with the per-step bytes precomputed measured slower from DRAM).
template <int R>
inline void prefetch_next(const RowSet<R>& r, uint64_t st, uint64_t steps) {
  if (!r.next) return;
  const uint64_t per = (r.next_bytes + steps - 1) / steps;  // bytes per step, rounded up
  for (uint64_t b = st * per / 64 * 64; b < (st + 1) * per && b < r.next_bytes; b += 64)
    _mm_prefetch((const char*)(r.next + b), _MM_HINT_T0);
}
using Rows4 = RowSet<4>;
using Rows8 = RowSet<8>;

// Rows [n, n + R) of a task ending at n1, streamed in `steps` steps per pass.
template <int R>
void rows_init(const IntPlan& p, uint64_t n, uint64_t n1, uint64_t row_bytes, uint64_t steps, RowSet<R>& r) {
  r.nr = (int)(p.N - n < (uint64_t)R ? p.N - n : R);
  const uint64_t next_rows = n + R < n1 ? (n1 - n - R < (uint64_t)R ? n1 - n - R : R) : 0;
  r.next = next_rows ? p.w.data + (n + R) * row_bytes : nullptr;
  r.next_bytes = next_rows * row_bytes;
  r.grouped = p.w.group != 0 && p.w.group != p.w.cols;
  const bool pf_scales = next_rows && r.grouped && !p.raw32;
  r.next_s = pf_scales ? (const uint8_t*)(p.w.scales + w_scale_index(p.w, n + R, 0)) : nullptr;
  r.next_s_bytes = pf_scales ? next_rows * qt_groups_per_row(p.w) * 4 : 0;
  r.per_s = steps ? (r.next_s_bytes + steps - 1) / steps : 0;
  const uint64_t full = row_bytes / 32 * 32;
  for (int i = 0; i < R; ++i) {
    uint64_t row = n + (i < r.nr ? i : 0);
    r.p[i] = p.w.data + row * row_bytes;
    r.s[i] = p.raw32 ? nullptr : p.w.scales + w_scale_index(p.w, row, 0);
    r.z[i] = p.w.zeros ? p.w.zeros + w_scale_index(p.w, row, 0) : nullptr;
    memset(r.tail[i], 0, 32);
    memcpy(r.tail[i], r.p[i] + full, row_bytes - full);
  }
}

// Groups [j0, j0 + n) of one activation row: acc = fma(s_j, float(S_j - zp_j * gsum_j), acc) in order.
// gsum: the row's group sums (int4) or null (int8).
inline __m128 flush_block(const Rows4& rw, uint64_t j0, int n, const __m128i* S, const int32_t* gsum, __m128 acc) {
  int t = 0;
  if (rw.grouped)
    for (; t + 4 <= n; t += 4) {  // 4 groups x 4 rows, transposed to 4 vectors of the 4 rows
      __m128 s0 = _mm_loadu_ps(rw.s[0] + j0 + t), s1 = _mm_loadu_ps(rw.s[1] + j0 + t);
      __m128 s2 = _mm_loadu_ps(rw.s[2] + j0 + t), s3 = _mm_loadu_ps(rw.s[3] + j0 + t);
      _MM_TRANSPOSE4_PS(s0, s1, s2, s3);
      __m128i z[4] = {_mm_set1_epi32(kInt4SymZero), _mm_set1_epi32(kInt4SymZero), _mm_set1_epi32(kInt4SymZero), _mm_set1_epi32(kInt4SymZero)};
      if (rw.z[0]) {
        int32_t b[4];
        for (int i = 0; i < 4; ++i) memcpy(&b[i], rw.z[i] + j0 + t, 4);
        __m128i zb = _mm_shuffle_epi8(_mm_setr_epi32(b[0], b[1], b[2], b[3]), _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
        z[0] = _mm_cvtepu8_epi32(zb);
        z[1] = _mm_cvtepu8_epi32(_mm_srli_si128(zb, 4));
        z[2] = _mm_cvtepu8_epi32(_mm_srli_si128(zb, 8));
        z[3] = _mm_cvtepu8_epi32(_mm_srli_si128(zb, 12));
      }
      const __m128 sc[4] = {s0, s1, s2, s3};
      for (int i = 0; i < 4; ++i) {
        __m128i v = S[t + i];
        if (gsum) v = _mm_sub_epi32(v, _mm_mullo_epi32(z[i], _mm_set1_epi32(gsum[j0 + t + i])));
        acc = _mm_fmadd_ps(sc[i], _mm_cvtepi32_ps(v), acc);
      }
    }
  for (; t < n; ++t) {
    const uint64_t j = j0 + t, js = rw.grouped ? j : 0;
    __m128i v = S[t];
    if (gsum) {
      __m128i zp = rw.z[0] ? _mm_setr_epi32(rw.z[0][js], rw.z[1][js], rw.z[2][js], rw.z[3][js]) : _mm_set1_epi32(kInt4SymZero);
      v = _mm_sub_epi32(v, _mm_mullo_epi32(zp, _mm_set1_epi32(gsum[j])));
    }
    acc = _mm_fmadd_ps(_mm_setr_ps(rw.s[0][js], rw.s[1][js], rw.s[2][js], rw.s[3][js]), _mm_cvtepi32_ps(v), acc);
  }
  return acc;
}

inline void gemv_store(const IntPlan& p, const Rows4& rw, uint64_t n, uint64_t m, __m128 acc) {
  alignas(16) float v[4];
  _mm_store_ps(v, acc);
  for (int i = 0; i < rw.nr; ++i) p.out[m * p.ldo + n + i] = epilogue(p.ep, v[i], m, n + i);
}

// int8: sign trick, MT activation rows per pass (the 4 weight vectors are loaded once for all).
template <int MT>
void gemv8_pass(const IntPlan& p, const Rows4& rw, uint64_t n, uint64_t m0) {
  const ActQ& a = *p.a;
  const __m256i ones = _mm256_set1_epi16(1);
  const int8_t* q[MT];
  for (int m = 0; m < MT; ++m) q[m] = a.q + (m0 + m) * a.Kp;
  const uint64_t full = p.K / 32 * 32;
  __m128 accf[MT];
  for (int m = 0; m < MT; ++m) accf[m] = _mm_setzero_ps();
  alignas(16) __m128i S[MT][kFlushBlock];
  for (uint64_t j0 = 0; j0 < p.G; j0 += kFlushBlock) {
    const int nb = (int)(p.G - j0 < (uint64_t)kFlushBlock ? p.G - j0 : kFlushBlock);
    for (int t = 0; t < nb; ++t) {
      const uint64_t kb = (j0 + t) * p.ga, ke = p.K < kb + p.ga ? p.K : kb + p.ga;
      __m256i acc[4][MT];
      for (int i = 0; i < 4; ++i)
        for (int m = 0; m < MT; ++m) acc[i][m] = _mm256_setzero_si256();
      for (uint64_t k = kb; k < ke; k += 32) {
        prefetch_next(rw, k / 32, (p.K + 31) / 32);
        __m256i av[MT];
        for (int m = 0; m < MT; ++m) av[m] = _mm256_load_si256((const __m256i*)(q[m] + k));
        for (int i = 0; i < 4; ++i) {
          const uint8_t* src = k < full ? rw.p[i] + k : rw.tail[i];
          __m256i w = _mm256_loadu_si256((const __m256i*)src), aw = _mm256_abs_epi8(w);
          for (int m = 0; m < MT; ++m) acc[i][m] = _mm256_add_epi32(acc[i][m], _mm256_madd_epi16(dot_pairs(aw, w, av[m]), ones));
        }
      }
      for (int m = 0; m < MT; ++m) S[m][t] = hsum4(acc[0][m], acc[1][m], acc[2][m], acc[3][m]);
    }
    if (p.raw32) {  // one group, exact sums
      for (int m = 0; m < MT; ++m) {
        alignas(16) int32_t v[4];
        _mm_store_si128((__m128i*)v, S[m][0]);
        for (int i = 0; i < rw.nr; ++i) p.raw32[(m0 + m) * p.N + n + i] = v[i];
      }
      return;
    }
    for (int m = 0; m < MT; ++m) accf[m] = flush_block(rw, j0, nb, S[m], nullptr, accf[m]);
  }
  for (int m = 0; m < MT; ++m) gemv_store(p, rw, n, m0 + m, accf[m]);
}

void gemv8(const IntPlan& p, uint64_t n0, uint64_t n1) {
  Rows4 rw;
  for (uint64_t n = n0; n < n1; n += 4) {
    rows_init(p, n, n1, p.K, (p.K + 31) / 32, rw);
    uint64_t m = 0;
    for (; m + 2 <= p.a->M; m += 2) gemv8_pass<2>(p, rw, n, m);
    if (m < p.a->M) gemv8_pass<1>(p, rw, n, m);
  }
}

// Scales of groups j .. j + 3 of the 8 rows, one vector per group with lanes = rows: each row pair
// (i, i + 4) loaded into one vector's two 128-bit halves, then 4x4 transposes inside the halves
// (transpose8's vperm2f128 is microcoded on Zen 1).
inline void scales8x4(const Rows8& rw, uint64_t j, __m256* out) {
  __m256 r[4];
  for (int i = 0; i < 4; ++i)
    r[i] = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(rw.s[i] + j)), _mm_loadu_ps(rw.s[i + 4] + j), 1);
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpacklo_ps(r[2], r[3]);
  const __m256 t2 = _mm256_unpackhi_ps(r[0], r[1]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  out[0] = _mm256_shuffle_ps(t0, t1, 0x44);
  out[1] = _mm256_shuffle_ps(t0, t1, 0xee);
  out[2] = _mm256_shuffle_ps(t2, t3, 0x44);
  out[3] = _mm256_shuffle_ps(t2, t3, 0xee);
}

// Groups [j0, j0 + n) of one activation row, 8 weight rows (int4): as flush_block, 8 rows per
// vector; the 8 rows' scales (and zero-points) are transposed 8 groups at a time.
inline __m256 flush_block8(const Rows8& rw, uint64_t j0, int n, const __m256i* S, const int32_t* gsum, __m256 acc) {
  int t = 0;
  if (rw.grouped)  // grouped scales: groups of 32, 64 or 128 (the int16 zp * gsum below)
    for (; t + 8 <= n; t += 8) {
      __m256 sc[8];
      scales8x4(rw, j0 + t, sc);
      scales8x4(rw, j0 + t + 4, sc + 4);
      __m256i zp[8];
      if (rw.z[0]) {  // 8 rows x 8 zero-point bytes -> per group 8 rows (bytes transposed via floats' bits)
        __m256 zf[8];
        for (int i = 0; i < 8; ++i) zf[i] = _mm256_castsi256_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(rw.z[i] + j0 + t))));
        transpose8(zf);
        for (int i = 0; i < 8; ++i) zp[i] = _mm256_castps_si256(zf[i]);
      } else {
        for (int i = 0; i < 8; ++i) zp[i] = _mm256_set1_epi32(kInt4SymZero);
      }
      for (int i = 0; i < 8; ++i) {
        const __m256i gs = _mm256_set1_epi32(gsum[j0 + t + i]);
        // zp * gsum: a shift for symmetric int4 (zp = 8); vpmaddwd of (zp, 0) pairs otherwise
        // (|gsum| <= 128 * 127 fits int16 for groups of at most 128; vpmulld is 4 uops on Zen 1)
        const __m256i zs = rw.z[0] ? _mm256_madd_epi16(zp[i], gs) : _mm256_slli_epi32(gs, 3);
        acc = _mm256_fmadd_ps(sc[i], _mm256_cvtepi32_ps(_mm256_sub_epi32(S[t + i], zs)), acc);
      }
    }
  for (; t < n; ++t) {
    const uint64_t j = j0 + t, js = rw.grouped ? j : 0;
    alignas(32) float sc[8];
    alignas(32) int32_t zp[8];
    for (int i = 0; i < 8; ++i) {
      sc[i] = rw.s[i][js];
      zp[i] = rw.z[0] ? rw.z[i][js] : kInt4SymZero;
    }
    __m256i v = _mm256_sub_epi32(S[t], _mm256_mullo_epi32(_mm256_load_si256((const __m256i*)zp), _mm256_set1_epi32(gsum[j])));
    acc = _mm256_fmadd_ps(_mm256_load_ps(sc), _mm256_cvtepi32_ps(v), acc);
  }
  return acc;
}

// Compiler barrier between row pairs: without it GCC hoists all 8 rows' loads and unpacks to the
// top of the step and spills them to the stack (each 256-bit spill costs two cycles of Zen 1's
// single store port); with it the step stays in registers (+28 % in cache).
#define ZT_ORDER() __asm__ volatile("" ::: "memory")
// Products of one step for a row pair, first int16 reduction level folded in (fewer live vectors:
// GCC spills the 8 product vectors otherwise): 32-bit word j = (row a, row b) sums of lanes j, j + 4.
inline __m256i gemv4_pair(const uint8_t* sa, const uint8_t* sb, __m256i ae, __m256i ao) {
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m256i ba = _mm256_loadu_si256((const __m256i*)sa), bb = _mm256_loadu_si256((const __m256i*)sb);
  const __m256i da = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(ba, low4), ae),
                                      _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(ba, 4), low4), ao));
  const __m256i db = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(bb, low4), ae),
                                      _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(bb, 4), low4), ao));
  return _mm256_add_epi16(_mm256_unpacklo_epi16(da, db), _mm256_unpackhi_epi16(da, db));
}

// One step of 8 rows -> lo = [S(row 0..7) over the low 128-bit halves of the step], hi = [over the
// high halves], int32. The int16 products (lanes <= 4 * 15 * 127 = 7620) go through two int16 add
// levels (sums of 2, then 4 lanes: <= 30480, no overflow), then one widening vpmaddwd level: 2
// vpmaddwd per step instead of 8 (the vector multiplier, which also runs every vpmaddubsw, is the
// busiest port on Zen 1).
inline void gemv4_step_sums(const Rows8& rw, uint64_t st, uint64_t body_steps, const int8_t* q, __m256i* lo, __m256i* hi) {
  const __m256i ae = _mm256_load_si256((const __m256i*)(q + st * 64));
  const __m256i ao = _mm256_load_si256((const __m256i*)(q + st * 64 + 32));
  // the next pass: 8 rows x 32 bytes per step (a constant: a looped form measured slower), and its
  // scales (at most one line per step)
  if (rw.next && st * 256 < rw.next_bytes) {
    for (int l = 0; l < 4; ++l) _mm_prefetch((const char*)(rw.next + st * 256 + 64 * l), _MM_HINT_T0);
    if (rw.next_s && st * rw.per_s < rw.next_s_bytes) _mm_prefetch((const char*)(rw.next_s + st * rw.per_s), _MM_HINT_T0);
  }
  __m256i t0, t1, t2, t3;
  if (st < body_steps) {
    const uint64_t o = st * 32;
    t0 = gemv4_pair(rw.p[0] + o, rw.p[1] + o, ae, ao);
    ZT_ORDER();
    t1 = gemv4_pair(rw.p[2] + o, rw.p[3] + o, ae, ao);
    ZT_ORDER();
    t2 = gemv4_pair(rw.p[4] + o, rw.p[5] + o, ae, ao);
    ZT_ORDER();
    t3 = gemv4_pair(rw.p[6] + o, rw.p[7] + o, ae, ao);
  } else {
    t0 = gemv4_pair(rw.tail[0], rw.tail[1], ae, ao);
    t1 = gemv4_pair(rw.tail[2], rw.tail[3], ae, ao);
    t2 = gemv4_pair(rw.tail[4], rw.tail[5], ae, ao);
    t3 = gemv4_pair(rw.tail[6], rw.tail[7], ae, ao);
  }
  // u: int16 lanes [r0a r1a r2a r3a r0b r1b r2b r3b] per 128-bit half (a, b: two partial sums per row)
  const __m256i u0 = _mm256_add_epi16(_mm256_unpacklo_epi32(t0, t1), _mm256_unpackhi_epi32(t0, t1));
  const __m256i u1 = _mm256_add_epi16(_mm256_unpacklo_epi32(t2, t3), _mm256_unpackhi_epi32(t2, t3));
  const __m256i pair = _mm256_setr_epi8(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15,
                                        0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i v0 = _mm256_madd_epi16(_mm256_shuffle_epi8(u0, pair), ones);  // [r0..r3 | r0..r3]
  const __m256i v1 = _mm256_madd_epi16(_mm256_shuffle_epi8(u1, pair), ones);  // [r4..r7 | r4..r7]
  // vperm2i128 is microcoded on Zen 1 (8 uops): lane moves with vinserti128 / vextracti128
  *lo = _mm256_inserti128_si256(v0, _mm256_castsi256_si128(v1), 1);
  *hi = _mm256_inserti128_si256(v1, _mm256_extracti128_si256(v0, 1), 0);
}

// int4: nibbles u are the unsigned operand (no sign trick); the zero-point is folded in per group
// (S -= zp * gsum). A step holds 64 elements: groups of 32 are its two 128-bit halves, a group of
// 64 is one step (one int16 reduction each); larger groups add up to 4 steps in int16 first. 8
// weight rows per pass halve the per-row cost of activation loads, reductions and flushes.
void gemv4_pass(const IntPlan& p, const Rows8& rw, uint64_t n, uint64_t m) {
  const ActQ& a = *p.a;
  const int8_t* q = a.qeo + m * a.Kp;
  const int32_t* gsum = a.gsum + m * p.G;
  const uint64_t body_steps = (p.K + 1) / 2 / 32, steps = (p.K + 63) / 64;
  __m256 accf = _mm256_setzero_ps();
  alignas(32) __m256i S[kFlushBlock];
  for (uint64_t j0 = 0; j0 < p.G; j0 += kFlushBlock) {
    const int nb = (int)(p.G - j0 < (uint64_t)kFlushBlock ? p.G - j0 : kFlushBlock);
    if (p.ga == 32) {
      for (uint64_t st = j0 / 2; st < (j0 + nb + 1) / 2; ++st) {
        __m256i lo, hi;
        gemv4_step_sums(rw, st, body_steps, q, &lo, &hi);
        S[2 * st - j0] = lo;
        if (2 * st + 1 - j0 < (uint64_t)nb) S[2 * st + 1 - j0] = hi;
      }
    } else {
      const uint64_t per = p.ga / 64;  // steps per group
      for (int t = 0; t < nb; ++t) {
        const uint64_t st0 = (j0 + t) * per, st1 = steps < st0 + per ? steps : st0 + per;
        __m256i sum = _mm256_setzero_si256();
        for (uint64_t st = st0; st < st1; ++st) {
          __m256i lo, hi;
          gemv4_step_sums(rw, st, body_steps, q, &lo, &hi);
          sum = _mm256_add_epi32(sum, _mm256_add_epi32(lo, hi));
        }
        S[t] = sum;
      }
    }
    accf = flush_block8(rw, j0, nb, S, gsum, accf);
  }
  alignas(32) float v[8];
  _mm256_store_ps(v, accf);
  for (int i = 0; i < rw.nr; ++i) p.out[m * p.ldo + n + i] = epilogue(p.ep, v[i], m, n + i);
}

void gemv4(const IntPlan& p, uint64_t n0, uint64_t n1) {
  Rows8 rw;
  for (uint64_t n = n0; n < n1; n += 8) {
    rows_init(p, n, n1, (p.K + 1) / 2, (p.K + 63) / 64, rw);
    for (uint64_t m = 0; m < p.a->M; ++m) gemv4_pass(p, rw, n, m);
  }
}

// ---- packed GEMM ------------------------------------------------------------------------------

// 4x4 transpose of 32-bit words: row i of the result holds word i of r0..r3.
inline void transpose4(__m128i& r0, __m128i& r1, __m128i& r2, __m128i& r3) {
  __m128i t0 = _mm_unpacklo_epi32(r0, r1), t1 = _mm_unpacklo_epi32(r2, r3);
  __m128i t2 = _mm_unpackhi_epi32(r0, r1), t3 = _mm_unpackhi_epi32(r2, r3);
  r0 = _mm_unpacklo_epi64(t0, t1);
  r1 = _mm_unpackhi_epi64(t0, t1);
  r2 = _mm_unpacklo_epi64(t2, t3);
  r3 = _mm_unpackhi_epi64(t2, t3);
}

// Stored codes (int8 q or int4 nibbles u) of elements [k, k + 16) of row n.
inline __m128i codes16(const IntPlan& p, uint64_t n, uint64_t k) {
  if (p.w.format == QFormat::Int8) return _mm_loadu_si128((const __m128i*)(p.w.data + n * p.K + k));
  __m128i b = _mm_loadl_epi64((const __m128i*)(p.w.data + n * ((p.K + 1) / 2) + k / 2));
  const __m128i low4 = _mm_set1_epi8(0x0f);
  return _mm_unpacklo_epi8(_mm_and_si128(b, low4), _mm_and_si128(_mm_srli_epi16(b, 4), low4));
}

// Sums over steps [s0, s1) of the k4 loop for MR activation rows x 16 panel columns into out
// (int32, [MR][2] vectors). int8 (kNibbles false): sign trick, int32 sums. int4 (kNibbles): the
// nibble u in [0, 15] is the unsigned operand as it is (no sign trick); int16 sums over chunks of at
// most 8 steps (8 * 2 * 15 * 127 < 32767), widened per chunk. Named accumulators and one panel half
// at a time keep the loop in the 16 ymm registers (8 sums, w, |w| (packed), activation, temporary, ones).
template <int MR, bool kNibbles>
inline void int_steps(const int8_t* const* q, const int8_t* codes, const uint8_t* abs, uint64_t s0, uint64_t s1, __m256i* out) {
  const __m256i ones = _mm256_set1_epi16(1);
  for (uint64_t c0 = s0; c0 < s1 || c0 == s0; c0 += 8) {
    const uint64_t c1 = !kNibbles || s1 < c0 + 8 ? s1 : c0 + 8;
    __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
    for (uint64_t k4 = c0; k4 < c1; ++k4) {
      const int8_t* wp = codes + k4 * 64;
      const uint8_t* ap = kNibbles ? nullptr : abs + k4 * 64;
#define ZT_ROW(r, h)                                                                                       \
  if (MR > r) {                                                                                            \
    if (kNibbles) {                                                                                        \
      a##r##h = _mm256_add_epi16(a##r##h, _mm256_maddubs_epi16(w, bcast4(q[r] + 4 * k4)));                \
    } else {                                                                                               \
      __m256i prod = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(bcast4(q[r] + 4 * k4), w));                \
      a##r##h = _mm256_add_epi32(a##r##h, _mm256_madd_epi16(prod, ones));                                 \
    }                                                                                                      \
  }
#define ZT_HALF(h)                                                                                         \
  {                                                                                                        \
    const __m256i w = _mm256_load_si256((const __m256i*)(wp + 32 * h));                                   \
    const __m256i aw = kNibbles ? w : _mm256_load_si256((const __m256i*)(ap + 32 * h));                   \
    (void)aw;                                                                                              \
    ZT_ROW(0, h) ZT_ROW(1, h) ZT_ROW(2, h) ZT_ROW(3, h)                                                    \
  }
      ZT_HALF(0) ZT_HALF(1)
#undef ZT_HALF
#undef ZT_ROW
    }
    const __m256i all[8] = {a00, a01, a10, a11, a20, a21, a30, a31};
    for (int i = 0; i < 2 * MR; ++i) {
      __m256i v = kNibbles ? _mm256_madd_epi16(all[i], ones) : all[i];
      out[i] = c0 == s0 ? v : _mm256_add_epi32(out[i], v);
    }
    if (!kNibbles) break;
  }
}

template <int MR, bool kNibbles>
void tile_int_t(const IntPlan& p, uint64_t m0, const Panel& panel, uint64_t n0, uint64_t nc) {
  const ActQ& a = *p.a;
  const int8_t* q[4];
  for (int r = 0; r < 4; ++r) q[r] = a.q + (m0 + (r < MR ? r : 0)) * a.Kp;
  alignas(32) float accf[MR][16];
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < 16; ++c) accf[r][c] = 0.0f;
  const uint64_t ga4 = p.ga / 4;
  for (uint64_t j = 0; j < p.G; ++j) {
    const uint64_t s0 = j * ga4, s1 = p.K4 < s0 + ga4 ? p.K4 : s0 + ga4;
    __m256i acc[MR][2] = {};
    int_steps<MR, kNibbles>(q, panel.codes, panel.abs, s0, s1, &acc[0][0]);
    if (kNibbles) {  // zero-point term: S -= zp * sum(q_x over the group)
      const __m256i z0 = _mm256_load_si256((const __m256i*)(panel.zeros + j * 16));
      const __m256i z1 = _mm256_load_si256((const __m256i*)(panel.zeros + j * 16 + 8));
      for (int r = 0; r < MR; ++r) {
        const __m256i gs = _mm256_set1_epi32(a.gsum[(m0 + r) * p.G + j]);
        if (p.ga <= 128) {  // |sum| <= 128 * 127 fits int16: zp lanes (zp, 0) pairs, one vpmaddwd
          acc[r][0] = _mm256_sub_epi32(acc[r][0], _mm256_madd_epi16(z0, gs));
          acc[r][1] = _mm256_sub_epi32(acc[r][1], _mm256_madd_epi16(z1, gs));
        } else {
          acc[r][0] = _mm256_sub_epi32(acc[r][0], _mm256_mullo_epi32(z0, gs));
          acc[r][1] = _mm256_sub_epi32(acc[r][1], _mm256_mullo_epi32(z1, gs));
        }
      }
    }
    if (p.raw32) {  // one group: the exact sums are the result
      for (int r = 0; r < MR; ++r) {
        alignas(32) int32_t v[16];
        _mm256_store_si256((__m256i*)v, acc[r][0]);
        _mm256_store_si256((__m256i*)(v + 8), acc[r][1]);
        for (uint64_t c = 0; c < nc; ++c) p.raw32[(m0 + r) * p.N + n0 + c] = v[c];
      }
      return;
    }
    const __m256 sc0 = _mm256_load_ps(panel.scales + j * 16), sc1 = _mm256_load_ps(panel.scales + j * 16 + 8);
    for (int r = 0; r < MR; ++r) {
      _mm256_store_ps(accf[r], _mm256_fmadd_ps(sc0, _mm256_cvtepi32_ps(acc[r][0]), _mm256_load_ps(accf[r])));
      _mm256_store_ps(accf[r] + 8, _mm256_fmadd_ps(sc1, _mm256_cvtepi32_ps(acc[r][1]), _mm256_load_ps(accf[r] + 8)));
    }
  }
  if (p.raw32) return;  // K == 0
  if (panel.dir) {  // step 2': codes u_z = q_z + 8 through the nibble steps, S -= 8 * sum(q_x over the chunk)
    const Panel& dz = *panel.dir;
    const uint64_t gz4 = kAccChunk / 4;
    for (uint64_t j = 0; j < dir_chunks(p.K); ++j) {
      const uint64_t s0 = j * gz4, s1 = p.K4 < s0 + gz4 ? p.K4 : s0 + gz4;
      __m256i acc[MR][2] = {};
      int_steps<MR, true>(q, dz.codes, nullptr, s0, s1, &acc[0][0]);
      for (int r = 0; r < MR; ++r) {
        const __m256i zs = _mm256_set1_epi32(kInt4SymZero * a.csum[(m0 + r) * dir_chunks(p.K) + j]);
        acc[r][0] = _mm256_sub_epi32(acc[r][0], zs);
        acc[r][1] = _mm256_sub_epi32(acc[r][1], zs);
      }
      const __m256 sc0 = _mm256_load_ps(dz.scales + j * 16), sc1 = _mm256_load_ps(dz.scales + j * 16 + 8);
      for (int r = 0; r < MR; ++r) {
        _mm256_store_ps(accf[r], _mm256_fmadd_ps(sc0, _mm256_cvtepi32_ps(acc[r][0]), _mm256_load_ps(accf[r])));
        _mm256_store_ps(accf[r] + 8, _mm256_fmadd_ps(sc1, _mm256_cvtepi32_ps(acc[r][1]), _mm256_load_ps(accf[r] + 8)));
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    const uint64_t m = m0 + r;
    if (nc == 16 && !p.ep.raw) {
      const __m256 sx = _mm256_set1_ps(p.ep.sx[m]);
      for (int h = 0; h < 2; ++h) {
        __m256 y = _mm256_mul_ps(_mm256_load_ps(accf[r] + 8 * h), sx);
        if (p.ep.bias) y = _mm256_add_ps(y, _mm256_loadu_ps(p.ep.bias + n0 + 8 * h));
        if (p.ep.residual) y = _mm256_add_ps(y, _mm256_loadu_ps(p.ep.residual + m * p.ep.ldr + n0 + 8 * h));
        _mm256_storeu_ps(p.out + m * p.ldo + n0 + 8 * h, y);
      }
    } else {
      for (uint64_t c = 0; c < nc; ++c) p.out[m * p.ldo + n0 + c] = epilogue(p.ep, accf[r][c], m, n0 + c);
    }
  }
}

template <bool kNibbles>
void tile_int_mr(const IntPlan& p, uint64_t m0, int mr, const Panel& panel, uint64_t n0, uint64_t nc) {
  switch (mr) {
    case 4: tile_int_t<4, kNibbles>(p, m0, panel, n0, nc); break;
    case 3: tile_int_t<3, kNibbles>(p, m0, panel, n0, nc); break;
    case 2: tile_int_t<2, kNibbles>(p, m0, panel, n0, nc); break;
    default: tile_int_t<1, kNibbles>(p, m0, panel, n0, nc); break;
  }
}

// ---- f32 (perturbed) path ---------------------------------------------------------------------


// Codes of elements [k, k + 8) of row n as floats (k a multiple of 8).
inline __m256 codes8f(const QTensorView& w, uint64_t n, uint64_t k, uint64_t ga) {
  if (w.format == QFormat::Int8) {
    __m128i b = _mm_loadl_epi64((const __m128i*)(w.data + n * w.cols + k));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
  }
  int32_t v;
  memcpy(&v, w.data + n * ((w.cols + 1) / 2) + k / 2, 4);
  __m128i b = _mm_cvtsi32_si128(v);
  const __m128i low4 = _mm_set1_epi8(0x0f);
  __m128i u = _mm_unpacklo_epi8(_mm_and_si128(b, low4), _mm_and_si128(_mm_srli_epi16(b, 4), low4));
  __m256i c = _mm256_sub_epi32(_mm256_cvtepu8_epi32(u), _mm256_set1_epi32(w_zero(w, n, k / ga)));
  return _mm256_cvtepi32_ps(c);
}

}  // namespace

// ---- exported kernels -----------------------------------------------------------------------

bool act_quantize_row(const float* x, uint64_t K, uint64_t Kp, int8_t* q, float* scale) {
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  __m256i mx = _mm256_setzero_si256();
  uint64_t k = 0;
  for (; k + 8 <= K; k += 8) mx = _mm256_max_epi32(mx, _mm256_and_si256(_mm256_loadu_si256((const __m256i*)(x + k)), absmask));
  alignas(32) uint32_t lanes[8];
  _mm256_store_si256((__m256i*)lanes, mx);
  uint32_t mb = 0;
  for (int i = 0; i < 8; ++i) mb = lanes[i] > mb ? lanes[i] : mb;
  for (; k < K; ++k) {
    uint32_t b = f32_to_bits(x[k]) & 0x7fffffffu;
    mb = b > mb ? b : mb;
  }
  if (mb >= 0x7f800000u) return false;  // Inf or NaN (magnitude bits at or above Inf's)
  float inv, s = act_int8_scale(bits_to_f32(mb), &inv);
  const __m256 vinv = _mm256_set1_ps(inv), hi = _mm256_set1_ps((float)kInt8Max), lo = _mm256_set1_ps((float)-kInt8Max);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (k = 0; k + 32 <= K; k += 32) {
    __m256i v[4];
    for (int t = 0; t < 4; ++t) {
      __m256 f = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + k + 8 * t), vinv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v[t] = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(f, lo), hi));
    }
    __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
    _mm256_storeu_si256((__m256i*)(q + k), _mm256_permutevar8x32_epi32(b, order));
  }
  for (; k < K; ++k) q[k] = act_int8_code(x[k], inv);
  memset(q + K, 0, Kp - K);
  *scale = s;
  return true;
}

void act_int4_extras(const int8_t* q, uint64_t K, uint64_t Kp, uint64_t ga, uint64_t G, int32_t* gsum, int8_t* qeo) {
  // Group sums: 32 codes per step (vpmaddubsw with ones, then vpmaddwd), exact in int32.
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  for (uint64_t j = 0; j < G; ++j) {
    const uint64_t kb = j * ga, ke = K < kb + ga ? K : kb + ga;
    __m256i acc = _mm256_setzero_si256();
    uint64_t k = kb;  // kb is a multiple of 32 and q is zero beyond K up to Kp: whole steps stay exact
    for (; k < ke; k += 32)
      acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, _mm256_load_si256((const __m256i*)(q + k))), ones16));
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
    gsum[j] = _mm_cvtsi128_si32(_mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1)));
  }
  if (!qeo) return;
  // Even / odd split of each 64-block: bytes 2i -> i, 2i + 1 -> 32 + i.
  const __m256i split = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                         0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  for (uint64_t b = 0; b < Kp; b += 64) {
    // each 128-bit lane -> [8 evens | 8 odds]; then gather the evens of all four lanes, the odds
    __m256i x0 = _mm256_shuffle_epi8(_mm256_load_si256((const __m256i*)(q + b)), split);
    __m256i x1 = _mm256_shuffle_epi8(_mm256_load_si256((const __m256i*)(q + b + 32)), split);
    __m256i ev = _mm256_unpacklo_epi64(x0, x1), od = _mm256_unpackhi_epi64(x0, x1);  // [e0 e2 | e1 e3] per 8-byte unit
    _mm256_store_si256((__m256i*)(qeo + b), _mm256_permute4x64_epi64(ev, 0xd8));
    _mm256_store_si256((__m256i*)(qeo + b + 32), _mm256_permute4x64_epi64(od, 0xd8));
  }
}

void gemv_rows(const IntPlan& p, uint64_t n0, uint64_t n1) {
  if (p.w.format == QFormat::Int8)
    gemv8(p, n0, n1);
  else
    gemv4(p, n0, n1);
}

void pack_panel(const IntPlan& p, uint64_t n0, Panel panel) {
  if (n0 + kPanelCols > p.N) {  // edge panel: the reference handles the missing rows
    pack_panel_ref(p, n0, panel);
    return;
  }
  const uint64_t kvec = p.K / 16 * 16;
  for (uint64_t k = 0; k < kvec; k += 16)
    for (uint64_t c = 0; c < kPanelCols; c += 4) {
      __m128i r0 = codes16(p, n0 + c, k), r1 = codes16(p, n0 + c + 1, k);
      __m128i r2 = codes16(p, n0 + c + 2, k), r3 = codes16(p, n0 + c + 3, k);
      transpose4(r0, r1, r2, r3);
      const uint64_t off = ((k / 4) * kPanelCols + c) * 4;
      const __m128i rows[4] = {r0, r1, r2, r3};
      for (int t = 0; t < 4; ++t) {
        _mm_store_si128((__m128i*)(panel.codes + off + 64 * t), rows[t]);
        if (panel.abs) _mm_store_si128((__m128i*)(panel.abs + off + 64 * t), _mm_abs_epi8(rows[t]));
      }
    }
  for (uint64_t k4 = kvec / 4; k4 < p.K4; ++k4)
    for (uint64_t c = 0; c < kPanelCols; ++c)
      for (uint64_t t = 0; t < 4; ++t) {
        uint64_t k = k4 * 4 + t;
        int v = k < p.K ? w_raw(p.w, n0 + c, k) : 0;
        panel.codes[(k4 * kPanelCols + c) * 4 + t] = (int8_t)v;
        if (panel.abs) panel.abs[(k4 * kPanelCols + c) * 4 + t] = (uint8_t)(v < 0 ? -v : v);
      }
  if (p.raw32) return;
  for (uint64_t j = 0; j < p.G; ++j)
    for (uint64_t c = 0; c < kPanelCols; ++c) {
      panel.scales[j * kPanelCols + c] = w_scale(p.w, n0 + c, j);
      if (panel.zeros) panel.zeros[j * kPanelCols + c] = w_zero(p.w, n0 + c, j);
    }
}

void tile_int(const IntPlan& p, uint64_t m0, int mr, const Panel& panel, uint64_t n0, uint64_t nc) {
  if (p.w.format == QFormat::Int4)
    tile_int_mr<true>(p, m0, mr, panel, n0, nc);
  else
    tile_int_mr<false>(p, m0, mr, panel, n0, nc);
}

void pack_act_f32(const ActQ& a, uint64_t mp, float* dst) {
  const int8_t* rows[kTileRowsF32];
  for (int r = 0; r < kTileRowsF32; ++r) {
    uint64_t m = mp * kTileRowsF32 + r;
    rows[r] = m < a.M ? a.q + m * a.Kp : nullptr;
  }
  // 8 k per step (Kp is a multiple of 64): the 6 rows as floats, transposed with 2 zero rows, then
  // each k's 6 values stored as 4 + 2 floats.
  for (uint64_t k = 0; k < a.Kp; k += 8) {
    __m256 r[8];
    for (int i = 0; i < kTileRowsF32; ++i)
      r[i] = rows[i] ? _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(rows[i] + k)))) : _mm256_setzero_ps();
    r[6] = r[7] = _mm256_setzero_ps();
    transpose8(r);
    for (int i = 0; i < 8; ++i) {
      float* d = dst + (k + i) * kTileRowsF32;
      _mm_storeu_ps(d, _mm256_castps256_ps128(r[i]));
      _mm_storel_pi((__m64*)(d + 4), _mm256_extractf128_ps(r[i], 1));
    }
  }
}

void decode_panel_f32(const F32Plan& p, uint64_t n0, uint64_t k0, uint64_t k1, float* panel, float* zbuf, uint32_t* rel) {
  const uint64_t kc = k1 - k0, kvec = kc / 8 * 8, ga = acc_group(p.w);
  for (uint64_t c = 0; c < kPanelCols; ++c) {
    const uint64_t n = n0 + c;
    float* col = zbuf + c * kc;
    if (n >= p.N) {
      memset(col, 0, kc * sizeof(float));
      continue;
    }
    uint64_t k = 0;  // dequantize: 8 elements share a group (groups are multiples of 32, k0 of 256)
    for (; k < kvec; k += 8)
      _mm256_storeu_ps(col + k, _mm256_mul_ps(_mm256_set1_ps(w_scale(p.w, n, (k0 + k) / ga)), codes8f(p.w, n, k0 + k, ga)));
    for (; k < kc; ++k) col[k] = zt_mul(w_scale(p.w, n, (k0 + k) / ga), (float)w_code(p.w, n, k0 + k));
    const uint64_t base = n * p.K + k0, z0 = p.first + base;
    if (p.idx) {  // masked: the column's subset entries (binary search for the first)
      uint64_t lo = 0, hi = p.nidx, cnt = 0;
      while (lo < hi) {
        uint64_t mid = (lo + hi) / 2;
        if (p.idx[mid] < base) lo = mid + 1; else hi = mid;
      }
      for (; lo < p.nidx && p.idx[lo] < base + kc; ++lo) rel[cnt++] = (uint32_t)(p.idx[lo] - base);
      perturb_gather(col, rel, cnt, *p.dir, z0, p.alpha);
    } else if (p.signs) {
      rademacher_apply(p.signs, p.signs_t0, z0, z0 + kc, p.alpha, col, col);
    } else {
      perturb_range(col, z0, z0 + kc, *p.dir, p.alpha);
    }
  }
  uint64_t k = 0;
  for (; k < kvec; k += 8)
    for (uint64_t c = 0; c < kPanelCols; c += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(zbuf + (c + i) * kc + k);
      transpose8(r);
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(panel + (k + i) * kPanelCols + c, r[i]);
    }
  for (; k < kc; ++k)
    for (uint64_t c = 0; c < kPanelCols; ++c) panel[k * kPanelCols + c] = zbuf[c * kc + k];
}

static void tile_f32_panel(const float* a, const float* panel, uint64_t kc, bool zero, float* c) {
  // Named accumulators: GCC keeps an array of vectors in memory here, storing it every step.
#define ZT_ROW(r)                                                                \
  __m256 c##r##0 = zero ? _mm256_setzero_ps() : _mm256_loadu_ps(c + r * 16),     \
         c##r##1 = zero ? _mm256_setzero_ps() : _mm256_loadu_ps(c + r * 16 + 8);
  ZT_ROW(0) ZT_ROW(1) ZT_ROW(2) ZT_ROW(3) ZT_ROW(4) ZT_ROW(5)
#undef ZT_ROW
  for (uint64_t k = 0; k < kc; ++k) {
    const __m256 w0 = _mm256_loadu_ps(panel + k * 16), w1 = _mm256_loadu_ps(panel + k * 16 + 8);
    const float* ak = a + k * kTileRowsF32;
#define ZT_ROW(r)                                     \
  {                                                   \
    const __m256 av = _mm256_broadcast_ss(ak + r);    \
    c##r##0 = _mm256_fmadd_ps(av, w0, c##r##0);       \
    c##r##1 = _mm256_fmadd_ps(av, w1, c##r##1);       \
  }
    ZT_ROW(0) ZT_ROW(1) ZT_ROW(2) ZT_ROW(3) ZT_ROW(4) ZT_ROW(5)
#undef ZT_ROW
  }
#define ZT_ROW(r) _mm256_storeu_ps(c + r * 16, c##r##0); _mm256_storeu_ps(c + r * 16 + 8, c##r##1);
  ZT_ROW(0) ZT_ROW(1) ZT_ROW(2) ZT_ROW(3) ZT_ROW(4) ZT_ROW(5)
#undef ZT_ROW
}

void tile_f32(const float* a, const float* panels, int np, uint64_t kc, bool zero, float* c) {
  for (int i = 0; i < np; ++i)
    tile_f32_panel(a, panels + i * kKcF32 * kPanelCols, kc, zero, c + i * kTileRowsF32 * kPanelCols);
}

// The scalar loop compiled with FMA: random row access, nothing to vectorize.
void sparse_row(float* row, const int8_t* q, const float* t, const uint32_t* n_s, const uint32_t* k_s, uint64_t S) {
  for (uint64_t s = 0; s < S; ++s) row[n_s[s]] = zt_fma(t[s], (float)q[k_s[s]], row[n_s[s]]);
}

}  // namespace avx2
}  // namespace zt
