// AVX2 kernels of quant.h: the element numerics of quant_elem.h on 8 lanes, bit-identical to the
// reference in quant.cc. Rows are walked in blocks of 32 columns (32 divides every group size, so a
// block has one scale; 4-bit blocks are 16 whole bytes); a row's tail (< 32 columns) goes to the
// reference. Random words and directions of 32 consecutive elements come from small cursors that
// keep the two Philox blocks around them, so unaligned rows (odd cols) cost one Philox per block.
#include "cpu_features.h"
#include "direction_avx2.h"
#include "perturb.h"
#include "philox_avx2.h"
#include "quant.h"

namespace zt {
namespace avx2 {
namespace {

// --- random words and directions of 32 consecutive elements ------------------------------------

static inline void loadu(const char* p, __m256i* v) { *v = _mm256_loadu_si256((const __m256i*)p); }
static inline void loadu(const char* p, __m256* v) { *v = _mm256_loadu_ps((const float*)p); }

// A fill produces the 32 values of block b (elements 32b .. 32b + 31) in 4 registers. get(i0)
// returns the 32 values of elements i0 .. i0 + 31: straight from the fill when i0 starts a block
// (rows whose start is 32-aligned), else through a buffer of blocks b and b + 1 that rolls
// forward, so walking an unaligned row still costs one fill per 32 elements.
template <class Fill>
struct Cursor {
  using V = typename Fill::V;  // __m256i or __m256
  Fill fill;
  uint64_t b0 = ~(uint64_t)0;
  bool has1 = false;
  alignas(32) V buf[8];

  explicit Cursor(Fill f) : fill(f) {}
  __attribute__((always_inline)) void get(uint64_t i0, V out[4]) {
    uint64_t b = i0 >> 5;
    unsigned off = (unsigned)(i0 & 31);
    if (off == 0) {
      fill(b, out);
      return;
    }
    if (b != b0) {
      if (has1 && b == b0 + 1) {
        for (int k = 0; k < 4; ++k) buf[k] = buf[4 + k];
      } else {
        fill(b, buf);
      }
      b0 = b;
      has1 = false;
    }
    if (!has1) {
      fill(b + 1, buf + 4);
      has1 = true;
    }
    const char* p = (const char*)buf + 4 * off;
    for (int k = 0; k < 4; ++k) loadu(p + 32 * k, &out[k]);
  }
};

// Philox words of 32-element block b (element 32b + 8k + l: word k of counter 8b + l). On the
// avx512 path 16 blocks come from one buffer fill (avx512::word_pairs, same words).
struct WordFill {
  using V = __m256i;
  RngKey key;
  uint64_t wide_end = 0;              // blocks the segment can ask for: below this; 0 = not wide
  uint64_t wide_b0 = ~(uint64_t)0;    // first block in wb
  alignas(32) uint32_t wb[512];
  WordFill(RngKey k, uint64_t end_block) : key(k), wide_end(use_avx512() ? end_block : 0) {}
  __attribute__((always_inline)) void operator()(uint64_t b, __m256i out[4]) {
    if (wide_end) {
      if (wide_b0 == ~(uint64_t)0 || b < wide_b0 || b - wide_b0 >= 16) {
        wide_b0 = b & ~(uint64_t)1;  // even: the start of a 16-counter pair
        const uint64_t pairs = wide_end > wide_b0 ? (wide_end - wide_b0 + 1) / 2 : 1;
        avx512::word_pairs(key, wide_b0 >> 1, pairs < 8 ? pairs : 8, wb);
      }
      const uint32_t* w = wb + 32 * (b - wide_b0);
      for (int k = 0; k < 4; ++k) out[k] = _mm256_load_si256((const __m256i*)(w + 8 * k));
      return;
    }
    Words8 w = philox8(key, b << 3);
    for (int k = 0; k < 4; ++k) out[k] = w.w[k];
  }
};
using WordCursor = Cursor<WordFill>;

static inline __m256 sr_round8(__m256 v, __m256i w) {
  __m256 fl = _mm256_floor_ps(v);
  __m256 up = _mm256_cmp_ps(uniform_sr8(w), _mm256_sub_ps(v, fl), _CMP_LT_OQ);
  return _mm256_blendv_ps(fl, _mm256_add_ps(fl, _mm256_set1_ps(1.0f)), up);
}

static inline __m256 rtne8(__m256 v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }

// z(i) of a 32-element block: direction_at on 8 lanes. Rademacher z (a few bit operations, inlined)
// and Gaussian z (Box-Muller, out of line) are separate fills so each loop carries only its own.
struct RademacherFill {
  using V = __m256;
  RngKey key;
  uint64_t block = ~(uint64_t)0;  // the 1024-element Philox block held in `w`
  Words8 w{};
  explicit RademacherFill(RngKey k) : key(k) {}
  void operator()(uint64_t b, __m256 out[4]) {
    // elements 32b + 8k + l: counter lane l of block b >> 5, word (b >> 3) & 3, bit (4b + k) & 31
    if (block != b >> 5) {
      block = b >> 5;
      w = philox8(key, block << 3);
    }
    __m256i word = w.w[(b >> 3) & 3];
    const __m256 one = _mm256_set1_ps(1.0f);
    for (int k = 0; k < 4; ++k) {
      __m256i s = _mm256_slli_epi32(_mm256_srl_epi32(word, _mm_cvtsi32_si128((int)((4 * b + k) & 31))), 31);
      out[k] = _mm256_xor_ps(one, _mm256_castsi256_ps(s));
    }
  }
};

// Gaussian z of 32-element block b from the 64-element normal-stream block b >> 1 (normal64: one
// Philox, four overlapped Box-Muller evaluations; QuZO: one Philox of the SR stream rounds all 64,
// direction.h); for even b the other half (block b + 1) is held for the next call, which cursors
// always make for b + 1.
// On the avx512 path the fill generates 16 of its blocks at once (avx512::gauss_pairs, 512 elements,
// same bits) and serves them from a buffer.
struct GaussFill {
  using V = __m256;
  RngKey key, srkey;
  int bits;
  uint64_t held_block = ~(uint64_t)0;
  __m256 held[4];
  const Direction* wide = nullptr;   // set on the avx512 path
  uint64_t wide_end = 0;             // blocks the segment can ask for: below this
  uint64_t wide_b0 = ~(uint64_t)0;   // first 32-element block in zb
  alignas(32) float zb[512];
  GaussFill(RngKey k, RngKey sk, int b, const Direction* d, uint64_t end_block)
      : key(k), srkey(sk), bits(b), wide(use_avx512() ? d : nullptr), wide_end(end_block) {}
  // The avx512 path's buffer hit inline (a call per 32 elements cost 4-7 % of an update); the
  // generation itself out of line, like the AVX2 path's.
  __attribute__((always_inline)) void operator()(uint64_t b, __m256 out[4]) {
    if (!wide) return narrow(b, out);
    if (wide_b0 == ~(uint64_t)0 || b < wide_b0 || b - wide_b0 >= 16) refill(b);
    const float* z = zb + 32 * (b - wide_b0);
    for (int k = 0; k < 4; ++k) out[k] = _mm256_load_ps(z + 8 * k);
  }
  __attribute__((noinline)) void refill(uint64_t b) {
    wide_b0 = b & ~(uint64_t)3;  // a multiple of 4: the start of a 128-element pair
    const uint64_t pairs = (wide_end > wide_b0 ? (wide_end - wide_b0 + 3) / 4 : 1);
    avx512::gauss_pairs(*wide, wide_b0 >> 2, pairs < 4 ? pairs : 4, zb);
  }
  __attribute__((noinline)) void narrow(uint64_t b, __m256 out[4]) {
    if (b == held_block) {
      for (int k = 0; k < 4; ++k) out[k] = held[k];
      return;
    }
    __m256 z[8];
    gauss_direction64(key, srkey, bits, _mm256_set1_ps(bits ? dir_grid_inv_step(bits) : 0.0f), _mm256_set1_ps(bits ? dir_grid_step(bits) : 0.0f),
                      b >> 1, z);
    const int h = (int)(b & 1);
    for (int k = 0; k < 4; ++k) out[k] = z[4 * h + k];
    if (h == 0) {
      for (int k = 0; k < 4; ++k) held[k] = z[4 + k];
      held_block = b + 1;
    }
  }
};

// --- codes: 32 at a time, as int32 lanes ---------------------------------------------------------

static inline __m128i load_lo64(const uint8_t* p) { return _mm_loadl_epi64((const __m128i*)p); }

template <int F>
static inline void load32(const uint8_t* row, uint64_t c, __m256i q[4]) {
  constexpr QFormat f = (QFormat)F;
  if (f == QFormat::Int8) {
    for (int k = 0; k < 4; ++k) q[k] = _mm256_cvtepi8_epi32(load_lo64(row + c + 8 * k));
  } else if (f == QFormat::Int4 || f == QFormat::Nf4) {
    __m128i b = _mm_loadu_si128((const __m128i*)(row + c / 2));
    const __m128i m = _mm_set1_epi8(15);
    __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
    __m128i e0 = _mm_unpacklo_epi8(lo, hi), e1 = _mm_unpackhi_epi8(lo, hi);  // elements 0..15, 16..31
    q[0] = _mm256_cvtepu8_epi32(e0);
    q[1] = _mm256_cvtepu8_epi32(_mm_srli_si128(e0, 8));
    q[2] = _mm256_cvtepu8_epi32(e1);
    q[3] = _mm256_cvtepu8_epi32(_mm_srli_si128(e1, 8));
  } else if (f == QFormat::Bf16 || f == QFormat::Fp16) {
    for (int k = 0; k < 4; ++k) q[k] = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(row + 2 * (c + 8 * k))));
  } else {
    for (int k = 0; k < 4; ++k) q[k] = _mm256_cvtepu8_epi32(load_lo64(row + c + 8 * k));
  }
}

// 32 int32 lanes -> 32 bytes in element order (int8: signed saturation, else unsigned).
template <bool Signed>
static inline __m256i pack_bytes(const __m256i q[4]) {
  __m256i a = _mm256_packs_epi32(q[0], q[1]), b = _mm256_packs_epi32(q[2], q[3]);
  __m256i p = Signed ? _mm256_packs_epi16(a, b) : _mm256_packus_epi16(a, b);
  return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Integer grids store unclamped codes: the packs saturate monotonically into the byte range, so one
// byte-wide clamp per 32 codes gives clamp(code, qmin, qmax) exactly.
template <int F>
static inline void store32(uint8_t* row, uint64_t c, const __m256i q[4], __m256i qmin8) {
  constexpr QFormat f = (QFormat)F;
  if (f == QFormat::Int8) {
    _mm256_storeu_si256((__m256i*)(row + c), _mm256_max_epi8(pack_bytes<true>(q), qmin8));
  } else if (f == QFormat::Int4 || f == QFormat::Nf4) {
    __m256i b = pack_bytes<false>(q);
    if (f == QFormat::Int4) b = _mm256_min_epu8(_mm256_max_epu8(b, qmin8), _mm256_set1_epi8(15));
    __m256i pairs = _mm256_maddubs_epi16(b, _mm256_set1_epi16(0x1001));  // e[2j] + 16 e[2j+1]
    __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi16(pairs, pairs), 0x08);
    _mm_storeu_si128((__m128i*)(row + c / 2), _mm256_castsi256_si128(p));
  } else if (f == QFormat::Bf16 || f == QFormat::Fp16) {
    for (int k = 0; k < 4; k += 2) {
      __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(q[k], q[k + 1]), 0xD8);
      _mm256_storeu_si256((__m256i*)(row + 2 * (c + 8 * k)), p);
    }
  } else {
    _mm256_storeu_si256((__m256i*)(row + c), pack_bytes<false>(q));
  }
}

// --- element numerics on 8 lanes (quant_elem.h / formats.h) ------------------------------------

static inline __m256 f32_and(__m256 x, uint32_t m) { return _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32((int)m))); }

// formats.h int_quantize / the integer update: round(v) (RTNE or SR) as int32, before the clamp
// (store32 applies it). v is capped at 2^30 so the conversion cannot overflow (such values clamp to
// the top code anyway); -huge converts to INT_MIN, which saturates to the bottom code.
static inline __m256i int_round8(__m256 v, bool sr, __m256i w) {
  v = _mm256_min_ps(v, _mm256_set1_ps(0x1p30f));
  if (!sr) return _mm256_cvtps_epi32(v);  // current rounding mode: nearest-even, as rintf
  __m256 fl = _mm256_floor_ps(v);
  __m256 up = _mm256_cmp_ps(uniform_sr8(w), _mm256_sub_ps(v, fl), _CMP_LT_OQ);
  return _mm256_sub_epi32(_mm256_cvttps_epi32(fl), _mm256_castps_si256(up));  // up = -1
}

static inline __m256 pow2_8(__m256i e) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(127)), 23)); }

// formats.h minifloat_encode(minifloat_round(x)) in one step: with E = max(exponent, emin) and
// r = round(|x| * 2^(mbits - E)) in [0, 2^(mbits + 1)], the code is r + ((E - emin) << mbits)
// (a carry into the next binade and the subnormal/normal boundary fall out of the addition).
static inline __m256i minifloat_encode8(__m256 x, MiniFloat mf, bool sr, __m256i w) {
  const int emin = minifloat_emin(mf), sbit = mf.mbits + mf.ebits;
  __m256 ax = _mm256_min_ps(f32_and(x, 0x7fffffffu), _mm256_set1_ps(mf.maxval));  // saturate
  __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(_mm256_castps_si256(ax), 23), _mm256_set1_epi32(127));
  __m256i E = _mm256_max_epi32(e, _mm256_set1_epi32(emin));
  __m256 v = _mm256_mul_ps(ax, pow2_8(_mm256_sub_epi32(_mm256_set1_epi32(mf.mbits), E)));
  __m256 r = sr ? sr_round8(v, w) : rtne8(v);
  __m256i code = _mm256_add_epi32(_mm256_cvttps_epi32(r), _mm256_slli_epi32(_mm256_sub_epi32(E, _mm256_set1_epi32(emin)), mf.mbits));
  code = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(code), _mm256_castsi256_ps(_mm256_set1_epi32((int)mf.nan_code)),
                                               _mm256_cmp_ps(x, x, _CMP_UNORD_Q)));
  return _mm256_or_si256(code, _mm256_slli_epi32(_mm256_srli_epi32(_mm256_castps_si256(x), 31), sbit));
}

// fp8 from 8 code bytes with F16C: e5m2 is the top byte of an fp16; e4m3 as the fp16 pattern
// sign << 15 | (code & 0x7f) << 7 is its value times 2^-8 (exponent field 4 bits wide, bias 15 for
// 7; e4m3 subnormals land on fp16 subnormals, converted exactly), so one exact scaling by 2^8
// finishes it. NaN codes become formats.h's canonical NaN with the code's sign.
template <bool E4M3>
static inline __m256 fp8_decode_bytes8(const uint8_t* p) {
  __m128i b = _mm_cvtepu8_epi16(load_lo64(p));
  __m256 v;
  if (E4M3) {
    __m128i h = _mm_or_si128(_mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x80)), 8), _mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x7f)), 7));
    v = _mm256_mul_ps(_mm256_cvtph_ps(h), _mm256_set1_ps(256.0f));
    __m256 nan = _mm256_castsi256_ps(_mm256_cvtepi16_epi32(_mm_cmpeq_epi16(_mm_and_si128(b, _mm_set1_epi16(0x7f)), _mm_set1_epi16(0x7f))));
    return _mm256_blendv_ps(v, _mm256_or_ps(f32_and(v, 0x80000000u), _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc00000))), nan);
  }
  v = _mm256_cvtph_ps(_mm_slli_epi16(b, 8));
  return _mm256_blendv_ps(v, _mm256_or_ps(f32_and(v, 0x80000000u), _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc00000))), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

// fp16 with F16C: the hardware conversions are exact (decode) and RTNE (encode) once saturation and
// canonical NaNs are applied around them.
static inline __m256 fp16_decode8(__m256i code) {
  __m128i h = _mm_packus_epi32(_mm256_castsi256_si128(code), _mm256_extracti128_si256(code, 1));
  __m256 v = _mm256_cvtph_ps(h);
  __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
  __m256 canon = _mm256_or_ps(f32_and(v, 0x80000000u), _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc00000)));
  return _mm256_blendv_ps(v, canon, nan);
}

static inline __m256i fp16_rtne8(__m256 x) {
  __m256 sign = f32_and(x, 0x80000000u);
  __m256 ax = _mm256_min_ps(f32_and(x, 0x7fffffffu), _mm256_set1_ps(kFp16.maxval));
  __m128i h = _mm256_cvtps_ph(_mm256_or_ps(ax, sign), _MM_FROUND_TO_NEAREST_INT);
  __m256i code = _mm256_cvtepu16_epi32(h);
  __m256i nan_code = _mm256_or_si256(_mm256_set1_epi32((int)kFp16.nan_code), _mm256_srli_epi32(_mm256_castps_si256(sign), 16));
  return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(code), _mm256_castsi256_ps(nan_code), _mm256_cmp_ps(x, x, _CMP_UNORD_Q)));
}

// formats.h bf16_rtne / bf16_sr.
static inline __m256i bf16_encode8(__m256 x, bool sr, __m256i w) {
  __m256i b = _mm256_castps_si256(x);
  __m256i sign = _mm256_and_si256(b, _mm256_set1_epi32((int)0x80000000u));
  __m256i mag = _mm256_min_epu32(_mm256_and_si256(b, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f7f0000));
  __m256i s = _mm256_or_si256(sign, mag);
  __m256i r;
  if (sr) {
    r = _mm256_srli_epi32(_mm256_add_epi32(s, _mm256_srli_epi32(w, 16)), 16);  // mag <= 0x7f7f0000: never carries past max
  } else {
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(s, 16), _mm256_set1_epi32(1));
    r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(s, _mm256_set1_epi32(0x7fff)), lsb), 16);
  }
  __m256i nan_code = _mm256_or_si256(_mm256_set1_epi32(kBf16NaN), _mm256_srli_epi32(sign, 16));
  return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(nan_code), _mm256_cmp_ps(x, x, _CMP_UNORD_Q)));
}

static inline __m256 bf16_decode8(__m256i code) { return _mm256_castsi256_ps(_mm256_slli_epi32(code, 16)); }

// NF4 table lookup of 4-bit indices (two 8-entry permutes, picked by bit 3).
struct Nf4Lut {
  __m256 lo, hi;
};
static inline Nf4Lut nf4_lut() {
  return {_mm256_setr_ps(nf4_value(0), nf4_value(1), nf4_value(2), nf4_value(3), nf4_value(4), nf4_value(5), nf4_value(6), nf4_value(7)),
          _mm256_setr_ps(nf4_value(8), nf4_value(9), nf4_value(10), nf4_value(11), nf4_value(12), nf4_value(13), nf4_value(14), nf4_value(15))};
}
static inline __m256 nf4_lookup8(const Nf4Lut& t, __m256i u) {
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(t.lo, u), _mm256_permutevar8x32_ps(t.hi, u), _mm256_castsi256_ps(_mm256_slli_epi32(u, 28)));
}

// formats.h nf4_quantize: lo = the largest k <= 14 with nf4[k] <= t, then nearest (ties low) or SR
// between a = nf4[lo] and c = nf4[lo + 1]. Branch-free binary search: each lane picks its half
// (nf4[8] <= t), then steps 4 / 2 / 1 inside it, carrying the bracketing values a and c along.
// t = 1 ends on code 15 = a (the reference's lo = 14 then rounds up to 15 as well).
static inline __m256i nf4_quantize8(const Nf4Lut& t8, __m256 t, bool sr, __m256i w) {
  t = _mm256_min_ps(_mm256_max_ps(t, _mm256_set1_ps(-1.0f)), _mm256_set1_ps(1.0f));
  const __m256 upper = _mm256_cmp_ps(_mm256_set1_ps(nf4_value(8)), t, _CMP_LE_OQ);  // each lane's half
  __m256 a = _mm256_blendv_ps(_mm256_set1_ps(nf4_value(0)), _mm256_set1_ps(nf4_value(8)), upper);
  __m256 c = _mm256_blendv_ps(_mm256_set1_ps(nf4_value(8)), _mm256_set1_ps(2.0f), upper);  // 2: above the top
  __m256i j = _mm256_setzero_si256();
  for (int step = 4; step >= 1; step /= 2) {
    __m256i cand = _mm256_add_epi32(j, _mm256_set1_epi32(step));
    __m256 v = step == 4 ? _mm256_blendv_ps(_mm256_set1_ps(nf4_value(4)), _mm256_set1_ps(nf4_value(12)), upper)
                         : _mm256_blendv_ps(_mm256_permutevar8x32_ps(t8.lo, cand), _mm256_permutevar8x32_ps(t8.hi, cand), upper);
    __m256 le = _mm256_cmp_ps(v, t, _CMP_LE_OQ);
    j = _mm256_blendv_epi8(j, cand, _mm256_castps_si256(le));
    a = _mm256_blendv_ps(a, v, le);
    c = _mm256_blendv_ps(v, c, le);
  }
  __m256i lo = _mm256_or_si256(j, _mm256_and_si256(_mm256_castps_si256(upper), _mm256_set1_epi32(8)));
  __m256 ta = _mm256_sub_ps(t, a);
  __m256 up;
  if (sr) up = _mm256_cmp_ps(uniform_sr8(w), _mm256_div_ps(ta, _mm256_sub_ps(c, a)), _CMP_LT_OQ);
  else up = _mm256_cmp_ps(ta, _mm256_sub_ps(c, t), _CMP_GT_OQ);  // !((t - a) <= (c - t))
  up = _mm256_andnot_ps(_mm256_cmp_ps(t, a, _CMP_EQ_OQ), up);
  return _mm256_sub_epi32(lo, _mm256_castps_si256(up));  // up = -1
}

// One scale group's constants on 8 lanes.
struct Group8 {
  __m256 scale, inv, zp, factor;
  __m256i zpi, qmin8;  // int4 zero-point (int32 lanes); smallest code (bytes)
};

template <int F>
static inline Group8 group8(const QGroup& g, float alpha) {
  constexpr QFormat f = (QFormat)F;
  Group8 v;
  v.scale = _mm256_set1_ps(g.scale);
  v.inv = _mm256_set1_ps(g.inv);
  v.zp = _mm256_set1_ps(f == QFormat::Int4 ? (float)g.zp : 0.0f);
  v.zpi = _mm256_set1_epi32(f == QFormat::Int4 ? g.zp : 0);
  v.qmin8 = _mm256_set1_epi8((char)g.qmin);
  v.factor = _mm256_set1_ps(q_update_factor(f, alpha, g));
  return v;
}

template <int F>
static inline Group8 group8(const QTensorView& q, uint64_t gi, float alpha) {
  return group8<F>(qt_group(q, gi), alpha);
}

// quant_elem.h q_encode
template <int F>
static inline __m256i encode8(__m256 x, const Group8& g, const Nf4Lut& t, bool sr, __m256i w) {
  constexpr QFormat f = (QFormat)F;
  if (f == QFormat::Int8) return int_round8(_mm256_mul_ps(x, g.inv), sr, w);
  if (f == QFormat::Int4) return _mm256_add_epi32(int_round8(_mm256_mul_ps(x, g.inv), sr, w), g.zpi);
  if (f == QFormat::Nf4) return nf4_quantize8(t, _mm256_mul_ps(x, g.inv), sr, w);
  if (f == QFormat::Bf16) return bf16_encode8(x, sr, w);
  if (f == QFormat::Fp16) return sr ? minifloat_encode8(x, kFp16, true, w) : fp16_rtne8(x);
  constexpr MiniFloat mf = f == QFormat::Fp8E4M3 ? kE4M3 : kE5M2;
  return minifloat_encode8(_mm256_mul_ps(x, g.inv), mf, sr, w);
}

// quant_elem.h q_decode (grid value before the scale, and with it)
template <int F>
static inline __m256 grid_value8(__m256i code, const Group8& g, const Nf4Lut& t) {
  constexpr QFormat f = (QFormat)F;
  if (f == QFormat::Int8) return _mm256_cvtepi32_ps(code);
  if (f == QFormat::Int4) return _mm256_sub_ps(_mm256_cvtepi32_ps(code), g.zp);  // exact: small integers
  if (f == QFormat::Nf4) return nf4_lookup8(t, code);
  if (f == QFormat::Bf16) return bf16_decode8(code);
  return fp16_decode8(code);  // fp8 decodes from its bytes (values32, update_rows_t)
}

template <int F>
static inline __m256 decode8(__m256i code, const Group8& g, const Nf4Lut& t) {
  constexpr QFormat f = (QFormat)F;
  if (f == QFormat::Bf16 || f == QFormat::Fp16) return grid_value8<F>(code, g, t);
  return _mm256_mul_ps(g.scale, grid_value8<F>(code, g, t));
}

// Dequantized values of 32 codes (fp8 straight from the bytes).
template <int F>
static inline void values32(const uint8_t* row, uint64_t c, const Group8& g, const Nf4Lut& t, __m256 out[4]) {
  constexpr QFormat f = (QFormat)F;
  if constexpr (f == QFormat::Fp8E4M3 || f == QFormat::Fp8E5M2) {
    for (int v = 0; v < 4; ++v) out[v] = _mm256_mul_ps(g.scale, fp8_decode_bytes8<f == QFormat::Fp8E4M3>(row + c + 8 * v));
  } else {
    __m256i codes[4];
    load32<F>(row, c, codes);
    for (int v = 0; v < 4; ++v) out[v] = decode8<F>(codes[v], g, t);
  }
}

// quant_elem.h q_update with d = z * factor (fp8: in update_rows_t, from the code bytes)
template <int F>
static inline __m256i update8(__m256i code, __m256 d, const Group8& g, const Nf4Lut& t, __m256i w) {
  constexpr QFormat f = (QFormat)F;
  if (f == QFormat::Int8 || f == QFormat::Int4) return int_round8(_mm256_add_ps(_mm256_cvtepi32_ps(code), d), true, w);
  if (f == QFormat::Nf4) return nf4_quantize8(t, _mm256_add_ps(nf4_lookup8(t, code), d), true, w);
  if (f == QFormat::Bf16) return bf16_encode8(_mm256_add_ps(bf16_decode8(code), d), true, w);
  return minifloat_encode8(_mm256_add_ps(fp16_decode8(code), d), kFp16, true, w);
}

// --- row kernels -------------------------------------------------------------------------------


// f(group index, ca, cb) for the runs of columns [c0, c1) of row r that share one scale (no
// division per block: group boundaries are multiples of 32, so 32-column blocks never straddle).
template <class Fn>
static inline void for_groups(const QTensorView& q, uint64_t r, uint64_t c0, uint64_t c1, Fn&& f) {
  if (q.group == 0 || q.group >= q.cols) {
    if (c0 < c1) f(qt_scale_index(q, r, c0), c0, c1);
    return;
  }
  uint64_t gi = qt_scale_index(q, r, c0), ca = c0;
  while (ca < c1) {
    uint64_t cb = (ca / q.group + 1) * q.group;
    cb = cb < c1 ? cb : c1;
    f(gi++, ca, cb);
    ca = cb;
  }
}

// Horizontal reductions of 8 lanes.
static inline uint32_t hmax_epu32(__m256i v) {
  __m128i m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0x4E));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0xB1));
  return (uint32_t)_mm_cvtsi128_si32(m);
}
static inline float hmin_ps(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_shuffle_ps(m, m, 0x4E));
  m = _mm_min_ps(m, _mm_shuffle_ps(m, m, 0xB1));
  return _mm_cvtss_f32(m);
}
static inline float hmax_ps(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_shuffle_ps(m, m, 0x4E));
  m = _mm_max_ps(m, _mm_shuffle_ps(m, m, 0xB1));
  return _mm_cvtss_f32(m);
}

// qstats of x[0, n) in registers (finite values give the reference's result; NaN/Inf are flagged).
static inline QStats stats8(const float* x, size_t n) {
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  __m256i amax = _mm256_setzero_si256();
  __m256 mn = _mm256_setzero_ps(), mx = mn;
  size_t k = 0;
  for (; k + 8 <= n; k += 8) {
    __m256 a = _mm256_loadu_ps(x + k);
    amax = _mm256_max_epu32(amax, _mm256_and_si256(_mm256_castps_si256(a), absmask));
    mn = _mm256_min_ps(a, mn);
    mx = _mm256_max_ps(a, mx);
  }
  QStats s{hmax_epu32(amax), hmin_ps(mn), hmax_ps(mx)};
  for (; k < n; ++k) qstats_add(&s, x[k]);
  return s;
}

// Reduces 8 vectors with op to one whose lane k is the reduction of a[k]'s lanes (transposing
// tree: 7 ops and 14 shuffles for 8 groups, instead of 3 ops and 5 shuffles per group).
template <class Op>
static inline __m256i reduce8x8(const __m256i a[8], Op op) {
  __m256i s[4];
  for (int k = 0; k < 4; ++k)  // s[k]: 4 partials of a[k] (low half), of a[k + 4] (high half)
    s[k] = op(_mm256_permute2x128_si256(a[k], a[k + 4], 0x20), _mm256_permute2x128_si256(a[k], a[k + 4], 0x31));
  __m256i u0 = op(_mm256_unpacklo_epi32(s[0], s[1]), _mm256_unpackhi_epi32(s[0], s[1]));  // a0 a1 a0 a1
  __m256i u1 = op(_mm256_unpacklo_epi32(s[2], s[3]), _mm256_unpackhi_epi32(s[2], s[3]));  // a2 a3 a2 a3
  return op(_mm256_unpacklo_epi64(u0, u1), _mm256_unpackhi_epi64(u0, u1));
}

static inline __m256 scale_for8(__m256 amax, float qmax) {  // formats.h scale_for
  __m256 s = _mm256_div_ps(amax, _mm256_set1_ps(qmax));
  __m256 tiny = _mm256_and_ps(_mm256_cmp_ps(s, _mm256_setzero_ps(), _CMP_GT_OQ), _mm256_cmp_ps(s, _mm256_set1_ps(kMinScale), _CMP_LT_OQ));
  return _mm256_blendv_ps(s, _mm256_set1_ps(kMinScale), tiny);
}

// Scales (and zero-points) of 8 whole groups of g columns starting at x: quant_elem.h
// q_group_from_stats on 8 lanes. Writes them to scales / zeros and returns each group's
// parameters; false if a group holds NaN/Inf.
template <int F>
static inline bool group_scales8(const float* x, uint64_t g, bool asym, float* scales, uint8_t* zeros, QGroup out[8]) {
  constexpr QFormat f = (QFormat)F;
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  __m256i amax[8], mn[8], mx[8];
  for (int k = 0; k < 8; ++k) {
    const float* p = x + k * g;
    __m256i a = _mm256_setzero_si256();
    __m256 lo = _mm256_setzero_ps(), hi = lo;
    for (uint64_t c = 0; c < g; c += 8) {
      __m256 v = _mm256_loadu_ps(p + c);
      a = _mm256_max_epu32(a, _mm256_and_si256(_mm256_castps_si256(v), absmask));
      lo = _mm256_min_ps(v, lo);
      hi = _mm256_max_ps(v, hi);
    }
    amax[k] = a;
    mn[k] = _mm256_castps_si256(lo);
    mx[k] = _mm256_castps_si256(hi);
  }
  __m256i ab = reduce8x8(amax, [](__m256i a, __m256i b) { return _mm256_max_epu32(a, b); });
  __m256 lo = _mm256_castsi256_ps(reduce8x8(mn, [](__m256i a, __m256i b) {
    return _mm256_castps_si256(_mm256_min_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b)));
  }));
  __m256 hi = _mm256_castsi256_ps(reduce8x8(mx, [](__m256i a, __m256i b) {
    return _mm256_castps_si256(_mm256_max_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b)));
  }));
  const bool finite = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(ab, _mm256_set1_epi32(0x7f7fffff)))) == 0;
  const __m256 zero = _mm256_setzero_ps(), a = _mm256_castsi256_ps(ab);
  lo = _mm256_and_ps(_mm256_cmp_ps(lo, zero, _CMP_LT_OQ), lo);  // zero always inside the range
  hi = _mm256_and_ps(_mm256_cmp_ps(hi, zero, _CMP_GT_OQ), hi);
  __m256 sc;
  __m256i zp = _mm256_set1_epi32(kInt4SymZero);
  if (f == QFormat::Int8) {
    sc = scale_for8(a, (float)kInt8Max);
  } else if (f == QFormat::Int4 && asym) {
    const __m256 fifteen = _mm256_set1_ps(15.0f);
    __m256 range = _mm256_sub_ps(hi, lo);
    __m256 split = _mm256_sub_ps(_mm256_div_ps(hi, fifteen), _mm256_div_ps(lo, fifteen));
    sc = _mm256_blendv_ps(split, scale_for8(range, 15.0f), _mm256_cmp_ps(range, _mm256_set1_ps(3.4028234663852886e38f), _CMP_LE_OQ));
    __m256 pos = _mm256_cmp_ps(sc, zero, _CMP_GT_OQ);
    __m256 zr = _mm256_and_ps(pos, rtne8(_mm256_div_ps(_mm256_xor_ps(lo, _mm256_set1_ps(-0.0f)), sc)));
    zp = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(zr, zero), fifteen));
  } else if (f == QFormat::Int4) {
    sc = scale_for8(a, 7.0f);
  } else if (f == QFormat::Nf4) {
    sc = scale_for8(a, 1.0f);
  } else {
    sc = scale_for8(a, (f == QFormat::Fp8E4M3 ? kE4M3 : kE5M2).maxval);
  }
  __m256 inv = _mm256_and_ps(_mm256_cmp_ps(sc, zero, _CMP_GT_OQ), _mm256_div_ps(_mm256_set1_ps(1.0f), sc));
  alignas(32) float sv[8], iv[8];
  alignas(32) int32_t zv[8];
  _mm256_store_ps(sv, sc);
  _mm256_store_ps(iv, inv);
  _mm256_store_si256((__m256i*)zv, zp);
  _mm256_storeu_ps(scales, sc);
  const int qmin = f == QFormat::Int8 ? -kInt8Max : (asym ? 0 : 1);
  for (int k = 0; k < 8; ++k) {
    if (asym) zeros[k] = (uint8_t)zv[k];
    out[k] = QGroup{sv[k], iv[k], zv[k], qmin};
  }
  return finite;
}

// Codes of columns [ca, cb) of row r, one scale group. Full 32-column blocks here; a remainder
// (only at the end of a row) goes to the reference.
// With `ahead`, the same columns of the next row are prefetched meanwhile (per-row scales: the
// statistics pass of the next row then finds it in cache instead of waiting on DRAM).
template <int F>
static inline void quantize_run(const QuantJob& j, uint64_t r, const Group8& g, uint64_t ca, uint64_t cb, const Nf4Lut& t, WordCursor& wc,
                                bool ahead = false) {
  const QTensorView& q = j.q;
  const uint64_t base = r * q.cols;
  const float* x = j.x + base;
  uint8_t* row = qt_row(q, r);
  uint64_t c = ca;
  for (; c + 32 <= cb; c += 32) {
    if (ahead) {
      _mm_prefetch((const char*)(x + q.cols + c), _MM_HINT_T0);
      _mm_prefetch((const char*)(x + q.cols + c + 16), _MM_HINT_T0);
    }
    __m256i w[4];
    if (j.stochastic) wc.get(base + c, w);
    else w[0] = w[1] = w[2] = w[3] = _mm256_setzero_si256();
    __m256i codes[4];
    for (int v = 0; v < 4; ++v) codes[v] = encode8<F>(_mm256_loadu_ps(x + c + 8 * v), g, t, j.stochastic, w[v]);
    store32<F>(row, c, codes, g.qmin8);
  }
  if (c < cb) {
    QuantJob tail = j;
    tail.group_scales = false;
    quantize_seg_ref(tail, r, c, cb);
  }
}

template <int F>
bool quantize_seg_t(const QuantJob& j, uint64_t r, uint64_t c0, uint64_t c1) {
  const QTensorView& q = j.q;
  const float* x = j.x + r * q.cols;
  const Nf4Lut t = nf4_lut();
  WordCursor wc(WordFill(j.sr_key, j.stochastic ? ((r * q.cols + c1 + 31) >> 5) + 1 : 0));
  bool finite = true;
  if (j.group_scales && q.group < q.cols) {  // groups of 32/64/128: scales of 8 groups at once
    uint64_t gi = qt_scale_index(q, r, c0);
    for (; c0 + 8 * q.group <= c1; c0 += 8 * q.group, gi += 8) {
      QGroup gs[8];
      finite = group_scales8<F>(x + c0, q.group, j.asym, q.scales + gi, j.asym ? q.zeros + gi : nullptr, gs) && finite;
      for (int k = 0; k < 8; ++k) quantize_run<F>(j, r, group8<F>(gs[k], 0.0f), c0 + k * q.group, c0 + (k + 1) * q.group, t, wc);
    }
  }
  for_groups(q, r, c0, c1, [&](uint64_t gi, uint64_t ca, uint64_t cb) {
    if (j.group_scales) {  // segments hold whole groups
      QStats st = stats8(x + ca, cb - ca);
      finite = finite && qstats_finite(st);
      q_group_from_stats(q.format, st, j.asym, false, &q.scales[gi], j.asym ? &q.zeros[gi] : nullptr);
    }
    quantize_run<F>(j, r, group8<F>(q, gi, 0.0f), ca, cb, t, wc, j.group_scales && q.group >= q.cols);
  });
  return finite;
}

template <int F>
void dequantize_seg_t(const QuantJob& j, uint64_t r, uint64_t c0, uint64_t c1) {
  const QTensorView& q = j.q;
  const uint8_t* row = qt_row(q, r);
  float* y = j.y + r * q.cols;
  const Nf4Lut t = nf4_lut();
  // Outputs larger than the caches: non-temporal stores skip the read-for-ownership of each line
  // (32-column blocks are 128 bytes, so an aligned row start keeps every block aligned).
  const bool stream = j.stream_out && ((uintptr_t)y & 31) == 0;
  for_groups(q, r, c0, c1, [&](uint64_t gi, uint64_t ca, uint64_t cb) {
    const Group8 g = group8<F>(q, gi, 0.0f);
    uint64_t c = ca;
    for (; c + 32 <= cb; c += 32) {
      __m256 out[4];
      values32<F>(row, c, g, t, out);
      for (int v = 0; v < 4; ++v) {
        if (stream) _mm256_stream_ps(y + c + 8 * v, out[v]);
        else _mm256_storeu_ps(y + c + 8 * v, out[v]);
      }
    }
    if (c < cb) dequantize_seg_ref(j, r, c, cb);
  });
  if (stream) _mm_sfence();
}

// Columns [c0, c1) of rows [r0, r1): one pair of cursors runs through all of them, so z and the
// SR words are generated once for the whole element range (a cursor per row regenerated the block
// after each row's end, a third more Philox work on 256-wide rows).
template <int F, class Fill>
void update_rows_t(const QuantJob& j, uint64_t r0, uint64_t r1, uint64_t c0, uint64_t c1, Fill fill) {
  const QTensorView& q = j.q;
  const Nf4Lut t = nf4_lut();
  WordCursor wc(WordFill(j.sr_key, (((r1 - 1) * q.cols + c1 + 31) >> 5) + 1));
  Cursor<Fill> dc(fill);
  for (uint64_t r = r0; r < r1; ++r) {
    const uint64_t base = r * q.cols;
    uint8_t* row = qt_row(q, r);
    for_groups(q, r, c0, c1, [&](uint64_t gi, uint64_t ca, uint64_t cb) {
      const Group8 g = group8<F>(q, gi, j.alpha);
      uint64_t c = ca;
      constexpr bool fp8 = F == (int)QFormat::Fp8E4M3 || F == (int)QFormat::Fp8E5M2;
      for (; c + 32 <= cb; c += 32) {
        __m256i w[4], codes[4];
        __m256 z[4];
        wc.get(base + c, w);
        dc.get(base + c, z);
        if constexpr (fp8) {  // decode(c) + d straight from the bytes, re-encoded with SR
          constexpr MiniFloat mf = F == (int)QFormat::Fp8E4M3 ? kE4M3 : kE5M2;
          for (int v = 0; v < 4; ++v) {
            __m256 val = fp8_decode_bytes8<F == (int)QFormat::Fp8E4M3>(row + c + 8 * v);
            codes[v] = minifloat_encode8(_mm256_add_ps(val, _mm256_mul_ps(z[v], g.factor)), mf, true, w[v]);
          }
        } else {
          load32<F>(row, c, codes);
          for (int v = 0; v < 4; ++v) codes[v] = update8<F>(codes[v], _mm256_mul_ps(z[v], g.factor), g, t, w[v]);
        }
        store32<F>(row, c, codes, g.qmin8);
      }
      if (c < cb) {  // ragged end (< 32 elements): z and words from the same fills, scalar update
        __m256i w[4];
        __m256 z[4];
        wc.get(base + c, w);
        dc.get(base + c, z);
        alignas(32) float zs[32];
        alignas(32) uint32_t ws[32];
        for (int v = 0; v < 4; ++v) {
          _mm256_store_ps(zs + 8 * v, z[v]);
          _mm256_store_si256((__m256i*)(ws + 8 * v), w[v]);
        }
        update_elems_ref(j, r, c, cb, zs, ws);
      }
    });
  }
}

template <int F>
void update_rows_t(const QuantJob& j, uint64_t r0, uint64_t r1, uint64_t c0, uint64_t c1) {
  const Direction& d = j.dir;
  if (r0 >= r1 || c0 >= c1) return;
  if (d.dist == kDirRademacher) update_rows_t<F>(j, r0, r1, c0, c1, RademacherFill(dir_key(d)));
  else  // the cursor reads blocks up to the one after the range's last element
    update_rows_t<F>(j, r0, r1, c0, c1, GaussFill(dir_key(d), RngKey{d.seed, d.stream, d.sr_purpose}, d.bits, &d, (((r1 - 1) * j.q.cols + c1 + 31) >> 5) + 1));
}

// Dispatch on the format once per segment.
#define ZT_QUANT_DISPATCH(fn, ...)                                                   \
  switch (j.q.format) {                                                              \
    case QFormat::Int8: return fn<(int)QFormat::Int8>(__VA_ARGS__);                  \
    case QFormat::Int4: return fn<(int)QFormat::Int4>(__VA_ARGS__);                  \
    case QFormat::Nf4: return fn<(int)QFormat::Nf4>(__VA_ARGS__);                    \
    case QFormat::Fp8E4M3: return fn<(int)QFormat::Fp8E4M3>(__VA_ARGS__);            \
    case QFormat::Fp8E5M2: return fn<(int)QFormat::Fp8E5M2>(__VA_ARGS__);            \
    case QFormat::Bf16: return fn<(int)QFormat::Bf16>(__VA_ARGS__);                  \
    default: return fn<(int)QFormat::Fp16>(__VA_ARGS__);                             \
  }

}  // namespace

QStats qstats_range(const float* x, size_t n) {
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  __m256i amax0 = _mm256_setzero_si256(), amax1 = amax0;
  __m256 mn0 = _mm256_setzero_ps(), mn1 = mn0, mx0 = mn0, mx1 = mn0;
  size_t k = 0;
  for (; k + 16 <= n; k += 16) {
    __m256 a = _mm256_loadu_ps(x + k), b = _mm256_loadu_ps(x + k + 8);
    amax0 = _mm256_max_epu32(amax0, _mm256_and_si256(_mm256_castps_si256(a), absmask));
    amax1 = _mm256_max_epu32(amax1, _mm256_and_si256(_mm256_castps_si256(b), absmask));
    mn0 = _mm256_min_ps(a, mn0);
    mn1 = _mm256_min_ps(b, mn1);
    mx0 = _mm256_max_ps(a, mx0);
    mx1 = _mm256_max_ps(b, mx1);
  }
  alignas(32) uint32_t am[16];
  alignas(32) float lo[16], hi[16];
  _mm256_store_si256((__m256i*)am, amax0);
  _mm256_store_si256((__m256i*)(am + 8), amax1);
  _mm256_store_ps(lo, mn0);
  _mm256_store_ps(lo + 8, mn1);
  _mm256_store_ps(hi, mx0);
  _mm256_store_ps(hi + 8, mx1);
  QStats s = qstats_empty();
  for (int l = 0; l < 16; ++l) s = qstats_merge(s, QStats{am[l], lo[l], hi[l]});
  for (; k < n; ++k) qstats_add(&s, x[k]);
  return s;
}

bool quantize_seg(const QuantJob& j, uint64_t r, uint64_t c0, uint64_t c1) { ZT_QUANT_DISPATCH(quantize_seg_t, j, r, c0, c1) }
void dequantize_seg(const QuantJob& j, uint64_t r, uint64_t c0, uint64_t c1) { ZT_QUANT_DISPATCH(dequantize_seg_t, j, r, c0, c1) }
void update_rows(const QuantJob& j, uint64_t r0, uint64_t r1, uint64_t c0, uint64_t c1) { ZT_QUANT_DISPATCH(update_rows_t, j, r0, r1, c0, c1) }

}  // namespace avx2
}  // namespace zt
