// AVX-512 forms of the fp32 GEMM's full micro-tile, skinny tile and GEMV (gemm.h).
//
// Micro-tile: 6 rows of A (read in place) x two 16-column packed W panels,
// one zmm per panel and row. Each output is the same single fma chain in k order (from C or zero,
// bias added after the last), so the bits equal the AVX2 6x16 kernel's and the scalar reference's.
// GCC 12 warns inside its own headers (the undefined pass-through operands of the unmasked forms).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>

#include "gemm.h"

namespace zt {
namespace avx512 {

void gemm_kernel_6x32(uint64_t kc, const float* a, uint64_t lda, const float* bp0, const float* bp1, float* c, uint64_t ldc,
                      bool zero, const float* bias) {
  const __mmask16 keep = zero ? 0 : 0xffff;
  const float *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda, *a4 = a + 4 * lda, *a5 = a + 5 * lda;
#define ZT_LD(i, j) _mm512_maskz_loadu_ps(keep, c + (i) * ldc + 16 * (j))
  __m512 c00 = ZT_LD(0, 0), c01 = ZT_LD(0, 1), c10 = ZT_LD(1, 0), c11 = ZT_LD(1, 1), c20 = ZT_LD(2, 0), c21 = ZT_LD(2, 1);
  __m512 c30 = ZT_LD(3, 0), c31 = ZT_LD(3, 1), c40 = ZT_LD(4, 0), c41 = ZT_LD(4, 1), c50 = ZT_LD(5, 0), c51 = ZT_LD(5, 1);
#undef ZT_LD
  for (uint64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_load_ps(bp0 + k * kNR), b1 = _mm512_load_ps(bp1 + k * kNR);
    __m512 x;
    x = _mm512_set1_ps(a0[k]); c00 = _mm512_fmadd_ps(x, b0, c00); c01 = _mm512_fmadd_ps(x, b1, c01);
    x = _mm512_set1_ps(a1[k]); c10 = _mm512_fmadd_ps(x, b0, c10); c11 = _mm512_fmadd_ps(x, b1, c11);
    x = _mm512_set1_ps(a2[k]); c20 = _mm512_fmadd_ps(x, b0, c20); c21 = _mm512_fmadd_ps(x, b1, c21);
    x = _mm512_set1_ps(a3[k]); c30 = _mm512_fmadd_ps(x, b0, c30); c31 = _mm512_fmadd_ps(x, b1, c31);
    x = _mm512_set1_ps(a4[k]); c40 = _mm512_fmadd_ps(x, b0, c40); c41 = _mm512_fmadd_ps(x, b1, c41);
    x = _mm512_set1_ps(a5[k]); c50 = _mm512_fmadd_ps(x, b0, c50); c51 = _mm512_fmadd_ps(x, b1, c51);
  }
  if (bias) {
    const __m512 b0 = _mm512_loadu_ps(bias), b1 = _mm512_loadu_ps(bias + 16);
    c00 = _mm512_add_ps(c00, b0); c01 = _mm512_add_ps(c01, b1); c10 = _mm512_add_ps(c10, b0); c11 = _mm512_add_ps(c11, b1);
    c20 = _mm512_add_ps(c20, b0); c21 = _mm512_add_ps(c21, b1); c30 = _mm512_add_ps(c30, b0); c31 = _mm512_add_ps(c31, b1);
    c40 = _mm512_add_ps(c40, b0); c41 = _mm512_add_ps(c41, b1); c50 = _mm512_add_ps(c50, b0); c51 = _mm512_add_ps(c51, b1);
  }
#define ZT_ST(i, j, v) _mm512_storeu_ps(c + (i) * ldc + 16 * (j), v)
  ZT_ST(0, 0, c00); ZT_ST(0, 1, c01); ZT_ST(1, 0, c10); ZT_ST(1, 1, c11); ZT_ST(2, 0, c20); ZT_ST(2, 1, c21);
  ZT_ST(3, 0, c30); ZT_ST(3, 1, c31); ZT_ST(4, 0, c40); ZT_ST(4, 1, c41); ZT_ST(5, 0, c50); ZT_ST(5, 1, c51);
#undef ZT_ST
}

// Skinny M (gemm.h): the tile [12 n][16 m] of gemm_block_skinny on zmm, 12 W rows broadcast against
// one 16-lane Aᵀ row per k; t (row stride 16) holds the running chains, each the same fma chain in
// k order as the AVX2 [6 n][16 m] tile.
void gemm_kernel_rows12(uint64_t kc, const float* const* rows, const float* at, float* t) {
#define ZT_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define ZT_INIT(i) const float* r##i = rows[i]; __m512 c##i = _mm512_load_ps(t + 16 * i);
  ZT_ROWS(ZT_INIT)
  for (uint64_t k = 0; k < kc; ++k) {
    const __m512 b = _mm512_loadu_ps(at + 16 * k);
#define ZT_FMA(i) c##i = _mm512_fmadd_ps(_mm512_set1_ps(r##i[k]), b, c##i);
    ZT_ROWS(ZT_FMA)
  }
#define ZT_STORE(i) _mm512_store_ps(t + 16 * i, c##i);
  ZT_ROWS(ZT_STORE)
#undef ZT_STORE
#undef ZT_FMA
#undef ZT_INIT
#undef ZT_ROWS
}

// --- GEMV (M <= kGemvMaxRows) -------------------------------------------------------------------
// The gemm.h GEMV order on zmm: one register holds vectors j and j + 1 of a chunk, so the partial
// sums t[j & 3] pair up as (t0 | t1) and (t2 | t3) and every lane sees the same fma sequence as
// the AVX2 kernel. A flush forms (t0 + t1) + (t2 + t3) with the halves swapped into place (the
// upper half computes the same sums), so the bits equal the scalar reference's. Rows are taken
// R at a time: the sums of one row are a dependency chain, independent rows keep the FMA pipes fed.

namespace {

static inline __m512 swap_halves(__m512 v) { return _mm512_shuffle_f32x4(v, v, 0x4E); }
static inline __m512 pair_sum(__m512 a01, __m512 a23) {  // (a0 + a1) + (a2 + a3) in both halves
  return _mm512_add_ps(_mm512_add_ps(a01, swap_halves(a01)), _mm512_add_ps(a23, swap_halves(a23)));
}
static inline float hsum8(__m256 v) {  // ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// Chunk decoders: load(c) once per 64-element chunk, pair(q) the unscaled values of vectors 2q and
// 2q + 1 (lower and upper half) in the lane order of gemm.h.
// Rows of codes, kBytes per element: load(c) points at the chunk starting at element c.
template <int kBytes>
struct CodeRows {
  const uint8_t *base, *p;
  void start(const GemmWeights& w, uint64_t n) { base = gemm_row(w.q, n); }
  void load(uint64_t c) { p = base + kBytes * c; }
};
struct ZF32 {
  static constexpr GemvKind kind = kGemvUnscaled;
  static constexpr uint64_t kChunkBytes = 256;
  static constexpr bool kInt4 = false, kE4M3 = false;
  const float *base, *p;
  void start(const GemmWeights& w, uint64_t n) { base = w.w32 + n * w.k; }
  void load(uint64_t c) { p = base + c; }
  __m512 pair(int q) const { return _mm512_loadu_ps(p + 16 * q); }
};
struct ZFp16 : CodeRows<2> {
  static constexpr GemvKind kind = kGemvUnscaled;
  static constexpr uint64_t kChunkBytes = 128;
  static constexpr bool kInt4 = false, kE4M3 = false;
  __m512 pair(int q) const { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 * q))); }
};
struct ZBf16 : CodeRows<2> {  // vectors 2q, 2q + 1: even (low halves) and odd (high halves) elements of block q
  static constexpr GemvKind kind = kGemvUnscaled;
  static constexpr uint64_t kChunkBytes = 128;
  static constexpr bool kInt4 = false, kE4M3 = false;
  __m512 pair(int q) const {
    const __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 * q)));
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_mask_slli_epi32(v, 0x00ff, v, 16), _mm512_set1_epi32((int)0xffff0000u)));
  }
};
struct ZInt8 : CodeRows<1> {
  static constexpr GemvKind kind = kGemvNatural;
  static constexpr uint64_t kChunkBytes = 64;
  static constexpr bool kInt4 = false, kE4M3 = false;
  __m512 pair(int q) const {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * q))));
  }
};
template <bool E4M3>
struct ZFp8 : CodeRows<1> {  // fp16 bits as in gemm_avx2.cc: e5m2 is the top byte, e4m3 rebiased (value / 256)
  static constexpr GemvKind kind = kGemvNatural;
  static constexpr uint64_t kChunkBytes = 64;
  static constexpr bool kInt4 = false, kE4M3 = E4M3;
  __m512 pair(int q) const {
    __m256i h = _mm256_slli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * q))), 8);
    if (E4M3) h = _mm256_and_si256(_mm256_srai_epi16(h, 1), _mm256_set1_epi16((short)0xBFFF));
    return _mm512_cvtph_ps(h);
  }
};
// lane l = bytes 4l..4l+3 in both halves; vector j = nibble j read in place as float bits (gemm.h),
// nibbles 6 and 7 from the lanes shifted right by 8.
template <bool kSubnormal>
struct ZInt4 {
  static constexpr GemvKind kind = kGemvNibble;
  static constexpr uint64_t kChunkBytes = 32;
  static constexpr bool kInt4 = true, kE4M3 = false;
  const uint8_t* base;
  __m512i raw, raw8;
  void start(const GemmWeights& w, uint64_t n) { base = gemm_row(w.q, n); }
  void load(uint64_t c) {
    raw = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + c / 2)));
    raw8 = _mm512_srli_epi32(raw, 8);
  }
  static __m512i mask(int q) {
    return _mm512_mask_blend_epi32(0xff00, _mm512_set1_epi32(15 << gemv_int4_shift(2 * q)),
                                   _mm512_set1_epi32(15 << gemv_int4_shift(2 * q + 1)));
  }
  static __m512 value(__m512i bits) { return kSubnormal ? _mm512_castsi512_ps(bits) : _mm512_cvtepi32_ps(bits); }
  __m512 pair(int q) const { return value(_mm512_and_si512(q < 3 ? raw : raw8, mask(q))); }
};
struct ZNf4 {
  static constexpr GemvKind kind = kGemvNibble;
  static constexpr uint64_t kChunkBytes = 32;
  static constexpr bool kInt4 = false, kE4M3 = false;
  const uint8_t* base;
  __m512i raw;
  void start(const GemmWeights& w, uint64_t n) { base = gemm_row(w.q, n); }
  void load(uint64_t c) { raw = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + c / 2))); }
  __m512 pair(int q) const {  // vpermps on 16 entries reads the low 4 bits of each index
    const __m512 table = _mm512_setr_ps(nf4_value(0), nf4_value(1), nf4_value(2), nf4_value(3), nf4_value(4), nf4_value(5),
                                        nf4_value(6), nf4_value(7), nf4_value(8), nf4_value(9), nf4_value(10),
                                        nf4_value(11), nf4_value(12), nf4_value(13), nf4_value(14), nf4_value(15));
    const __m512i shift = _mm512_mask_blend_epi32(0xff00, _mm512_set1_epi32(8 * q), _mm512_set1_epi32(8 * q + 4));
    return _mm512_permutexvar_ps(_mm512_srlv_epi32(raw, shift), table);
  }
};

// Rows [n, n + R), all M activation rows; the rows R further on (up to `last`) are prefetched.
// The loop runs per scale group (a row's scale changes only there): groups of 32 are one chunk
// with a scale per half (natural lanes: flushed after vectors 0-3 and 4-7) or per lane half (nibble
// lanes), larger groups span chunks, row and tensor scales the whole main part.
#include "gemv_tails.inc"  // in this ISA's namespace

// tails: the rows' gemv_tail per activation row, t[m * kGemvTailRows + r] (gemv_tail_rows).
template <class D, int M, int R, bool G32>
static void gemv_block(const GemvCtx& g, uint64_t n, uint64_t last, const float* tails) {
  const GemmWeights& w = *g.w;
  constexpr bool kScaled = D::kind != kGemvUnscaled;
  const float* xs[M];
  const float* xsum[M];
  for (int m = 0; m < M; ++m) {
    xs[m] = g.xs + m * g.k64;
    xsum[m] = g.xs + g.m * g.k64 + m * (g.k64 / 8);
  }
  // kScaled: t[..][0] = (t0 | t1), t[..][1] = (t2 | t3) of the current scale group, acc[..][0] the
  // running sum (both halves alike); unscaled formats accumulate into acc[..][0 / 1] the same way.
  __m512 t[R][M][2], acc[R][M][2];
  D d[R];
  GemmRowScales rs[R];
  __mmask64 nan[R];
  for (int r = 0; r < R; ++r) {
    for (int m = 0; m < M; ++m) t[r][m][0] = t[r][m][1] = acc[r][m][0] = acc[r][m][1] = _mm512_setzero_ps();
    d[r].start(w, n + r);
    rs[r] = w.f32 ? GemmRowScales{nullptr, nullptr, 63} : gemm_row_scales(w.q, n + r);
    nan[r] = 0;
  }
  const uint64_t span = gemv_sum_span(w, g.k64);
  // acc += s·((t0 + t1) + (t2 + t3) [− zp·X, int4: X of the group that chunk c ends]), t = 0
  auto flush = [&](int r, __m512 sc, const __m512* zp, uint64_t c) {
    for (int m = 0; m < M; ++m) {
      __m512 sum = pair_sum(t[r][m][0], t[r][m][1]);
      if (D::kInt4) {
        const __m512 x = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd(reinterpret_cast<const double*>(xsum[m] + c / span * 8))));
        sum = _mm512_fnmadd_ps(*zp, x, sum);
      }
      acc[r][m][0] = _mm512_fmadd_ps(sc, sum, acc[r][m][0]);
      t[r][m][0] = t[r][m][1] = _mm512_setzero_ps();
    }
  };
  // The next block (rows n + R .. n + 2R − 1, contiguous) streams in while this one is computed,
  // prefetched front to back as one sequential stream: R · kChunkBytes bytes per chunk.
  auto row_at = [&](uint64_t i) {
    return w.f32 ? reinterpret_cast<const char*>(w.w32 + i * w.k) : reinterpret_cast<const char*>(gemm_row(w.q, i));
  };
  const char* ahead = row_at(n + R <= last ? n + R : last);
  const char* ahead_end = row_at(last) + (w.f32 ? w.k * sizeof(float) : qformat_row_bytes(w.q.format, w.q.cols));
  const uint64_t group = !kScaled || rs[0].shift == 63 ? g.k64 : (G32 ? 64 : uint64_t(1) << rs[0].shift);
  // the group's scale (and zero-point) index advances by one per group (two per chunk with G32)
  const float* sp[R];
  const uint8_t* zq[R];
  for (int r = 0; r < R; ++r) sp[r] = rs[r].s, zq[r] = rs[r].z;
  const bool asym = D::kInt4 && rs[0].z;
  for (uint64_t g0 = 0; g0 < g.k64; g0 += group) {
    __m512 s0[R], s1[R], zp[R];  // the group's scales (G32 natural: per half) and int4 zero-points
    for (int r = 0; r < R; ++r) {
      if (!kScaled) break;
      if (G32 && D::kind == kGemvNibble) {  // lanes 0-3 and 4-7 of each half: groups 2i and 2i + 1
        const __m512i halves = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
        s0[r] = s1[r] = _mm512_permutexvar_ps(halves, _mm512_castpd_ps(_mm512_castpd128_pd512(_mm_load_sd(reinterpret_cast<const double*>(sp[r])))));
      } else {
        s0[r] = _mm512_set1_ps(sp[r][0]);
        s1[r] = G32 ? _mm512_set1_ps(sp[r][1]) : s0[r];
      }
      if (D::kE4M3) s1[r] = _mm512_mul_ps(s1[r], _mm512_set1_ps(256.0f)), s0[r] = _mm512_mul_ps(s0[r], _mm512_set1_ps(256.0f));
      if (D::kInt4) {
        if (!asym) zp[r] = _mm512_set1_ps((float)kInt4SymZero);
        else if (G32) zp[r] = _mm512_mask_blend_ps(0xf0f0, _mm512_set1_ps((float)zq[r][0]), _mm512_set1_ps((float)zq[r][1]));
        else zp[r] = _mm512_set1_ps((float)zq[r][0]);
        zq[r] += asym ? (G32 ? 2 : 1) : 0;
      }
      sp[r] += G32 ? 2 : 1;
    }
    const uint64_t g1 = g0 + group < g.k64 ? g0 + group : g.k64;  // the main part may end mid-group
    for (uint64_t c = g0; c < g1; c += 64) {
      for (uint64_t b = 0; b < R * D::kChunkBytes; b += 64) {
        const char* a = ahead + c / 64 * R * D::kChunkBytes + b;
        if (a < ahead_end) _mm_prefetch(a, _MM_HINT_T0);
      }
      for (int r = 0; r < R; ++r) {
        d[r].load(c);
        if constexpr (D::kE4M3) {
          const __m512i m7 = _mm512_set1_epi8(0x7f);
          nan[r] |= _mm512_cmpeq_epi8_mask(_mm512_and_si512(_mm512_loadu_si512(d[r].p), m7), m7);
        }
      }
      for (int q = 0; q < 4; ++q) {
        __m512 x[M];
        for (int m = 0; m < M; ++m) x[m] = _mm512_loadu_ps(xs[m] + c + 16 * q);
        for (int r = 0; r < R; ++r) {
          const __m512 v = d[r].pair(q);
          for (int m = 0; m < M; ++m) {
            __m512& s = kScaled ? t[r][m][q & 1] : acc[r][m][q & 1];
            s = _mm512_fmadd_ps(x[m], v, s);
          }
          if (G32 && D::kind == kGemvNatural && q == 1) flush(r, s0[r], nullptr, c);
        }
      }
    }
    if (kScaled)
      for (int r = 0; r < R; ++r) flush(r, s1[r], &zp[r], g1 - 64);
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m) {
      const __m512 lanes = kScaled ? acc[r][m][0] : pair_sum(acc[r][m][0], acc[r][m][1]);
      const float h = hsum8(_mm512_castps512_ps256(lanes));
      const float main = D::kInt4 ? zt_mul(h, gemv_rescale(g)[m]) : h;
      float out = zt_add(main, tails[m * kGemvTailRows + r]);
      if (D::kE4M3 && nan[r]) out = bits_to_f32(0x7fc00000u);
      gemv_store(g, m, n + r, out);
    }
}

// gemv_block of int4 at M = 1, R = 4 or 8 rows, written out for the decode step: the generic block spent
// about 60 % of its time outside its chunk loop (masks rebuilt and sums moved between registers per
// scale group, which is only two chunks at the default group of 128), and its flush swapped halves
// once per row and sum where one swap serves two rows; the default group's two chunks are written
// out. Same sums per lane, so the same bits.
template <class D, bool G32, bool kAsym, int R>
static void gemv_int4_rows(const GemvCtx& g, uint64_t n, uint64_t last, const float* tails) {
  const GemmWeights& w = *g.w;
  const float* xs = g.xs;
  const float* xsum = g.xs + g.k64;  // the group's lane sums: 8 floats per group
  const __m512i mask0 = D::mask(0), mask1 = D::mask(1), mask2 = D::mask(2);  // mask(3) == mask(2)
  // Rows lie rb bytes apart and their scales ss apart: one pointer each keeps the loop in registers.
  const uint64_t rb = qformat_row_bytes(w.q.format, w.q.cols);
  const uint8_t* row0 = gemm_row(w.q, n);
  const GemmRowScales rs = gemm_row_scales(w.q, n);
  const uint64_t ss = gemm_row_scales(w.q, n + 1).s - rs.s;
  const float* sp = rs.s;
  const uint8_t* zq = rs.z;
  // acc[p]: the running sums of rows 2p (lower half) and 2p + 1 (upper half)
  __m512 acc[R / 2];
  for (int p = 0; p < R / 2; ++p) acc[p] = _mm512_setzero_ps();
  const uint64_t group = G32 ? 64 : (rs.shift == 63 ? g.k64 : uint64_t(1) << rs.shift);
  const char* ahead = reinterpret_cast<const char*>(n + R <= last ? row0 + R * rb : gemm_row(w.q, last));
  const char* ahead_end = reinterpret_cast<const char*>(gemm_row(w.q, last)) + rb;
  const __m512 sym_zero = _mm512_set1_ps((float)kInt4SymZero);
  for (uint64_t g0 = 0; g0 < g.k64; g0 += group, xsum += 8) {
    __m512 t01[R], t23[R];  // (t0 | t1) and (t2 | t3) of each row
    for (int r = 0; r < R; ++r) t01[r] = t23[r] = _mm512_setzero_ps();
    const uint64_t g1 = g0 + group < g.k64 ? g0 + group : g.k64;
    auto chunk = [&](uint64_t c) __attribute__((always_inline)) {
      const char* a = ahead + c / 64 * R * D::kChunkBytes;  // R · 32 bytes: R / 2 lines
      for (int l = 0; l < R / 2; ++l)
        if (a + 64 * l < ahead_end) _mm_prefetch(a + 64 * l, _MM_HINT_T0);
      const __m512 x0 = _mm512_loadu_ps(xs + c), x1 = _mm512_loadu_ps(xs + c + 16);
      const __m512 x2 = _mm512_loadu_ps(xs + c + 32), x3 = _mm512_loadu_ps(xs + c + 48);
      const uint8_t* p = row0 + c / 2;
      for (int r = 0; r < R; ++r) {
        const __m512i raw = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + r * rb)));
        t01[r] = _mm512_fmadd_ps(x0, D::value(_mm512_and_si512(raw, mask0)), t01[r]);
        t23[r] = _mm512_fmadd_ps(x1, D::value(_mm512_and_si512(raw, mask1)), t23[r]);
        t01[r] = _mm512_fmadd_ps(x2, D::value(_mm512_and_si512(raw, mask2)), t01[r]);
        t23[r] = _mm512_fmadd_ps(x3, D::value(_mm512_and_si512(_mm512_srli_epi32(raw, 8), mask2)), t23[r]);
      }
    };
    if (g1 - g0 == 128) {  // the default group: both chunks written out
      chunk(g0);
      chunk(g0 + 64);
    } else {
      for (uint64_t c = g0; c < g1; c += 64) chunk(c);
    }
    // the group's lane sums X in both halves (zp·X is subtracted from each row's S)
    const __m512 lane_sums = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd(reinterpret_cast<const double*>(xsum))));
    // Two rows per register from here: with a = (a_lo | a_hi) of row 2p and b of row 2p + 1,
    // blend(a, b) + (a_hi | b_lo) = (a_lo + a_hi | b_lo + b_hi), one lane swap for two rows
    // (addition commutes, so each lane's sum is the reference's).
    for (int p = 0; p < R / 2; ++p) {
      const int r = 2 * p;
      auto fold = [](__m512 a, __m512 b) {
        return _mm512_add_ps(_mm512_mask_blend_ps(0xff00, a, b), _mm512_shuffle_f32x4(a, b, 0x4e));
      };
      __m512 sum = _mm512_add_ps(fold(t01[r], t01[r + 1]), fold(t23[r], t23[r + 1]));
      __m512 s, zp = sym_zero;
      const float* s0 = sp + r * ss;
      if (G32) {  // lanes 0-3 / 4-7 of each half: groups 2i / 2i + 1 of its row
        const __m512i halves = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
        const __m128d pair = _mm_loadh_pd(_mm_load_sd(reinterpret_cast<const double*>(s0)), reinterpret_cast<const double*>(s0 + ss));
        s = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(_mm_castpd_ps(pair)));
        if (kAsym) {
          const uint8_t* z0 = zq + r * ss;
          zp = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(_mm_setr_ps(z0[0], z0[1], z0[ss], z0[ss + 1])));
        }
      } else {
        s = _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(s0[0]), _mm512_set1_ps(s0[ss]));
        if (kAsym) zp = _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(zq[r * ss]), _mm512_set1_ps(zq[(r + 1) * ss]));
      }
      sum = _mm512_fnmadd_ps(zp, lane_sums, sum);
      acc[p] = _mm512_fmadd_ps(s, sum, acc[p]);
    }
    sp += G32 ? 2 : 1;
    if (kAsym) zq += G32 ? 2 : 1;
  }
  for (int r = 0; r < R; ++r) {
    const __m512 a = acc[r / 2];
    const float h = hsum8(r % 2 ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)) : _mm512_castps512_ps256(a));
    gemv_store(g, 0, n + r, zt_add(zt_mul(h, gemv_rescale(g)[0]), tails[r]));  // activation row 0
  }
}

// R rows per block while the accumulators fit in the 32 zmm registers.
struct Gemv {
  using F32 = ZF32;
  using Int8 = ZInt8;
  template <bool kSubnormal>
  using Int4 = ZInt4<kSubnormal>;
  using Nf4 = ZNf4;
  template <bool E4M3>
  using Fp8 = ZFp8<E4M3>;
  using Bf16 = ZBf16;
  using Fp16 = ZFp16;
  template <class D, int M, bool G32>
  static void rows(const GemvCtx& g, uint64_t n0, uint64_t n1) {
    gemv_tail_slices<M>(g, n0, n1, [&](uint64_t a, uint64_t b, const float* tails) { rows_part<D, M, G32>(g, a, b, n1 - 1, tails); });
  }
  // Rows [n0, n1) of a task ending at row last (the prefetch stops there); tails of row n at
  // tails[n - n0] (activation row 0).
  template <class D, int M, bool G32>
  static void rows_part(const GemvCtx& g, uint64_t n0, uint64_t n1, uint64_t last, const float* tails) {
    constexpr int R = M == 1 ? 4 : (M == 2 ? 2 : 1);  // M = 1: 8 partial and 4 running sums
    uint64_t n = n0;
    if constexpr (M == 1 && D::kInt4) {
      const bool asym = gemm_row_scales(g.w->q, n0).z != nullptr;
      // 8 rows share each activation load where rows are short; on long rows (K = 11008: 8 x 5.5 KB
      // blocks) 8 row streams per thread plus the next block's measured ~10 % slower from DRAM.
      constexpr int R8 = 8;
      const bool short_rows = qformat_row_bytes(g.w->q.format, g.w->q.cols) <= 4096;
      for (; short_rows && n + R8 <= n1; n += R8)
        asym ? gemv_int4_rows<D, G32, true, R8>(g, n, last, tails + (n - n0)) : gemv_int4_rows<D, G32, false, R8>(g, n, last, tails + (n - n0));
      for (; n + R <= n1; n += R)
        asym ? gemv_int4_rows<D, G32, true, R>(g, n, last, tails + (n - n0)) : gemv_int4_rows<D, G32, false, R>(g, n, last, tails + (n - n0));
    }
    for (; n + R <= n1; n += R) gemv_block<D, M, R, G32>(g, n, last, tails + (n - n0));
    for (; n < n1; ++n) gemv_block<D, M, 1, G32>(g, n, last, tails + (n - n0));
  }
};

}  // namespace

void gemv_rows(const GemvCtx& g, uint64_t n0, uint64_t n1) { gemv_dispatch<Gemv>(g, n0, n1); }

}  // namespace avx512
}  // namespace zt
