// One element of every quantized format: how a code is made from an f32 (quantize), turned back
// into an f32 (dequantize) and moved along a ZO direction on its own grid (the QuZO update), and
// how a scale group's parameters come from its statistics. Composed only from formats.h (grids,
// rounding, policies) and direction.h (z); the CPU reference, the AVX2 kernels and CUDA all use
// these, so every backend produces the same bits.
//
// Codes are passed as uint32: int8 as its two's-complement byte, 4-bit formats as the nibble,
// fp8 as the byte, bf16/fp16 as the 16-bit pattern.
//
// Exact expressions (each operation rounded once in f32, in this order):
//   quantize     int8/int4  q = clamp(round(x * inv) + zp)           (formats.h int_quantize)
//                nf4        u = nf4_quantize(x * inv)
//                fp8        c = minifloat_encode(x * inv)            (inv = 1 for scale-free fp8)
//                bf16/fp16  the plain encoders
//   dequantize   s * q, s * (u - zp), s * nf4[u], s * decode(c); bf16/fp16 exact decode.
//   ZO update    per scale group a = alpha * inv (alpha for bf16/fp16), then per element
//                d = z(i) * a and, on the format's own grid with unchanged scales/zero-points:
//                int8/int4  q' = clamp(SR(q + d))            q in code units (int4: the nibble u)
//                nf4        u' = nf4_quantize(nf4[u] + d, SR)  (SR between neighbouring codes)
//                fp8/fp16   c' = minifloat_encode(decode(c) + d, SR)
//                bf16       h' = bf16_sr(bf16(h) + d)
//                SR words: random_word({seed, stream, kPurposeSrWeight}, i) with the direction's
//                seed and stream, i = r * cols + c the logical element index. E[value'] equals
//                value + alpha * z up to the f32 rounding of a and d and saturation at the clamp.
#pragma once
#include "direction.h"

namespace zt {

// --- code storage (formats.h layouts) --------------------------------------------------------------

ZT_HD uint8_t* qt_row(const QTensorView& q, uint64_t r) { return q.data + r * qformat_row_bytes(q.format, q.cols); }

ZT_HD uint32_t q_load_code(QFormat f, const uint8_t* row, uint64_t c) {
  if (qformat_is_4bit(f)) return (row[c >> 1] >> ((c & 1) * 4)) & 15u;
  if (f == QFormat::Bf16 || f == QFormat::Fp16) return (uint32_t)row[2 * c] | ((uint32_t)row[2 * c + 1] << 8);
  return row[c];
}

// 4-bit formats read-modify-write the byte shared with column c ^ 1: callers give each byte one writer.
ZT_HD void q_store_code(QFormat f, uint8_t* row, uint64_t c, uint32_t code) {
  if (qformat_is_4bit(f)) {
    unsigned sh = (unsigned)(c & 1) * 4;
    row[c >> 1] = (uint8_t)((row[c >> 1] & ~(15u << sh)) | ((code & 15u) << sh));
  } else if (f == QFormat::Bf16 || f == QFormat::Fp16) {
    row[2 * c] = (uint8_t)code;
    row[2 * c + 1] = (uint8_t)(code >> 8);
  } else {
    row[c] = (uint8_t)code;
  }
}

// Parameters of one scale group.
struct QGroup {
  float scale;  // x = scale * grid value (1 for bf16/fp16)
  float inv;    // 1 / scale, 0 for a zero scale
  int zp;       // int4 zero-point (8 when symmetric)
  int qmin;     // smallest code: int8 -127; int4 1 (symmetric) or 0 (asymmetric)
};

// Returns copies, never a reference to a constant (a conditional of lvalues would odr-use the
// host-side constants, which CUDA device code cannot).
ZT_HD MiniFloat qformat_minifloat(QFormat f) {
  if (f == QFormat::Fp8E4M3) return kE4M3;
  if (f == QFormat::Fp8E5M2) return kE5M2;
  return kFp16;
}
ZT_HD bool qformat_is_minifloat(QFormat f) {
  return f == QFormat::Fp8E4M3 || f == QFormat::Fp8E5M2 || f == QFormat::Fp16;
}
// Integer grids and nf4 cannot hold NaN/Inf: their quantizers reject non-finite input.
ZT_HD bool qformat_needs_finite(QFormat f) { return f == QFormat::Int8 || f == QFormat::Int4 || f == QFormat::Nf4; }

ZT_HD QGroup qt_group(const QTensorView& q, uint64_t gi) {
  QGroup g;
  g.scale = q.scales ? q.scales[gi] : 1.0f;
  g.inv = inv_scale_for(g.scale);
  g.zp = q.zeros ? (int)q.zeros[gi] : kInt4SymZero;
  g.qmin = q.format == QFormat::Int8 ? -kInt8Max : (q.zeros ? 0 : 1);
  return g;
}

// The code of the value zero (padding nibble of odd 4-bit rows).
ZT_HD uint32_t q_zero_code(QFormat f, QGroup g) {
  return f == QFormat::Nf4 ? (uint32_t)kNf4Zero : (f == QFormat::Int4 ? (uint32_t)g.zp : 0u);
}

ZT_HD uint32_t q_encode(QFormat f, float x, QGroup g, bool sr, uint32_t word) {
  switch (f) {
    case QFormat::Int8: return (uint32_t)(uint8_t)(int8_t)int_quantize(x, g.inv, 0, -kInt8Max, kInt8Max, sr, word);
    case QFormat::Int4: return (uint32_t)int_quantize(x, g.inv, g.zp, g.qmin, 15, sr, word);
    case QFormat::Nf4: return (uint32_t)nf4_quantize(zt_mul(x, g.inv), sr, word);
    case QFormat::Bf16: return sr ? bf16_sr(x, word) : bf16_rtne(x);
    case QFormat::Fp16: return minifloat_encode(x, kFp16, sr, word);
    default: return minifloat_encode(zt_mul(x, g.inv), qformat_minifloat(f), sr, word);
  }
}

// The code's value in grid units, before the scale: q, u - zp, nf4[u], decode(c); bf16/fp16 exact.
ZT_HD float q_value(QFormat f, uint32_t code, int zp) {
  switch (f) {
    case QFormat::Int8: return small_int_f32((int)(int8_t)(uint8_t)code);
    case QFormat::Int4: return small_int_f32((int)code - zp);
    case QFormat::Nf4: return nf4_value((int)code);
    case QFormat::Bf16: return bf16_to_f32((uint16_t)code);
    case QFormat::Fp16: return minifloat_decode(code, kFp16);
    default: return minifloat_decode(code, qformat_minifloat(f));
  }
}

ZT_HD float q_decode(QFormat f, uint32_t code, QGroup g) {
  const float v = q_value(f, code, g.zp);
  return qformat_has_scales(f) ? zt_mul(g.scale, v) : v;
}

// Per-group step factor of the update: alpha in the grid's units.
ZT_HD float q_update_factor(QFormat f, float alpha, QGroup g) {
  return qformat_has_scales(f) ? zt_mul(alpha, g.inv) : alpha;
}

// The code after moving by d (= z(i) * factor) in grid units, stochastically rounded with `word`.
ZT_HD uint32_t q_update(QFormat f, uint32_t code, QGroup g, float d, uint32_t word) {
  switch (f) {
    case QFormat::Int8:
    case QFormat::Int4: {
      bool i8 = f == QFormat::Int8;
      float q = i8 ? (float)(int8_t)(uint8_t)code : (float)code;
      float r = sr_round(zt_add(q, d), word);
      float lo = (float)g.qmin, hi = i8 ? (float)kInt8Max : 15.0f;
      r = r < lo ? lo : (r > hi ? hi : r);
      return i8 ? (uint32_t)(uint8_t)(int8_t)r : (uint32_t)r;
    }
    case QFormat::Nf4: return (uint32_t)nf4_quantize(zt_add(nf4_value((int)code), d), true, word);
    case QFormat::Bf16: return bf16_sr(zt_add(bf16_to_f32((uint16_t)code), d), word);
    default: {
      MiniFloat mf = qformat_minifloat(f);
      return minifloat_encode(zt_add(minifloat_decode(code, mf), d), mf, true, word);
    }
  }
}

// --- scale groups from data ----------------------------------------------------------------------

// Statistics of a group: largest |x| (as its bit pattern: integer max is exact and flags NaN/Inf,
// whose patterns are >= 0x7f800000) and min/max with zero included (min <= 0 <= max).
struct QStats {
  uint32_t amax_bits;
  float min, max;
};

ZT_HD QStats qstats_empty() { return QStats{0u, 0.0f, 0.0f}; }
ZT_HD bool qstats_finite(QStats s) { return s.amax_bits < 0x7f800000u; }
ZT_HD void qstats_add(QStats* s, float x) {
  uint32_t b = f32_to_bits(x) & 0x7fffffffu;
  s->amax_bits = b > s->amax_bits ? b : s->amax_bits;
  s->min = x < s->min ? x : s->min;
  s->max = x > s->max ? x : s->max;
}
ZT_HD QStats qstats_merge(QStats a, QStats b) {
  QStats s;
  s.amax_bits = a.amax_bits > b.amax_bits ? a.amax_bits : b.amax_bits;
  s.min = b.min < a.min ? b.min : a.min;
  s.max = b.max > a.max ? b.max : a.max;
  return s;
}

// Scale and zero-point of a group (finite stats):
//   int8 absmax / 127; int4 symmetric absmax / 7 (zp 8); int4 asymmetric (max - min) / 15 with the
//   range widened to include 0 and zp = clamp(rtne(-min / scale), 0, 15); nf4 absmax; fp8
//   absmax / format max, or 1 when scale-free. The zero-point is 0 for a zero scale.
ZT_HD void q_group_from_stats(QFormat f, QStats s, bool asym, bool scale_free, float* scale, uint8_t* zp) {
  float amax = bits_to_f32(s.amax_bits);
  float lo = s.min < 0.0f ? s.min : 0.0f, hi = s.max > 0.0f ? s.max : 0.0f;
  uint8_t z = (uint8_t)kInt4SymZero;
  float sc;
  switch (f) {
    case QFormat::Int8: sc = scale_for(amax, (float)kInt8Max); break;
    case QFormat::Int4:
      if (asym) {
        float range = zt_add(hi, -lo);  // overflows only for |values| near FLT_MAX: split the division
        sc = range <= 3.4028234663852886e38f ? scale_for(range, 15.0f) : zt_add(hi / 15.0f, -lo / 15.0f);
        float zr = sc > 0.0f ? rtne(-lo / sc) : 0.0f;
        z = (uint8_t)(zr < 0.0f ? 0.0f : (zr > 15.0f ? 15.0f : zr));
      } else {
        sc = scale_for(amax, 7.0f);
      }
      break;
    case QFormat::Nf4: sc = scale_for(amax, 1.0f); break;
    default: sc = scale_free ? 1.0f : scale_for(amax, qformat_minifloat(f).maxval); break;
  }
  *scale = sc;
  if (zp) *zp = z;
}

}  // namespace zt
