// Number formats and rounding: the one definition shared by CPU kernels (scalar and AVX2),
// GEMMs and CUDA. Element-level, header-only; bulk kernels live in native/cpu/quant*.cc.
//
// Formats and storage (weights are [rows = out, cols = in] like PyTorch nn.Linear):
//   bf16, fp16     uint16 bit patterns, no scale.
//   fp8 e4m3/e5m2  uint8 codes (OCP: E4M3 bias 7, max 448, no Inf, NaN = S.1111.111;
//                  E5M2 bias 15, max 57344, IEEE-like Inf/NaN), optional fp32 scale: x = s * decode(c).
//   int8           int8 q in [-127, 127] (symmetric), x = s * q.
//   int4           unsigned nibbles u in [0, 15], x = s * (u - zp). Symmetric: zp = 8, u in [1, 15]
//                  (q = u - 8 in [-7, 7]); asymmetric: zp per scale group in [0, 15].
//   nf4            nibbles indexing kNf4 (QLoRA NormalFloat), x = absmax * kNf4[u].
//   Packing of 4-bit formats: each row on its own ceil(cols / 2) bytes, element 2j in the low
//   nibble of byte j and element 2j + 1 in the high nibble; an odd row's last high nibble holds
//   the code of zero.
//   Scales are fp32, one per tensor, per row ("channel") or per group of g consecutive elements
//   of a row (g in {32, 64, 128}), row-major [rows, ceil(cols / g)].
//
// Policies:
//   Rounding: round-to-nearest-even (RTNE) or unbiased stochastic rounding (SR).
//   SR of v onto the integers is floor(v) + [u < v - floor(v)] with u = uniform_sr(word) in [0,1)
//   (24 bits): E[SR(v)] = v up to 2^-24 of a grid step. Float formats round |x| scaled to their
//   grid step (a power of two, so the scaling is exact); bf16 SR adds 16 random bits to the fp32
//   pattern and truncates (exact, including subnormals; kernels.md §4.1).
//   Saturation: every quantizer saturates: finite or infinite values beyond the format's range go
//   to +-max finite (int: the clamp range). NaN stays NaN in float formats (canonical code);
//   integer formats cannot hold NaN: quantizers reject non-finite input with ZOTUNE_NONFINITE.
#pragma once
#include "philox.h"

namespace zt {

// --- rounding ---------------------------------------------------------------------------------

ZT_HD float sr_round(float v, uint32_t word) {
  float fl = floorf(v);
  return uniform_sr(word) < zt_add(v, -fl) ? zt_add(fl, 1.0f) : fl;
}

ZT_HD float rtne(float v) { return rintf(v); }  // default FP environment: ties to even

ZT_HD float pow2f(int e) { return bits_to_f32((uint32_t)(127 + e) << 23); }  // e in [-126, 127]

// (float)v for |v| < 2^22, exactly, without an int->float conversion (a quarter-rate instruction
// on GPUs): 1.5·2^23 + v holds v in its mantissa with ulp 1, and subtracting 1.5·2^23 is exact.
ZT_HD float small_int_f32(int v) { return zt_add(bits_to_f32(0x4b400000u + (uint32_t)v), -12582912.0f); }

ZT_HD bool is_nan_f32(float x) { return (f32_to_bits(x) & 0x7fffffffu) > 0x7f800000u; }

// --- bf16 -------------------------------------------------------------------------------------

static constexpr uint16_t kBf16Max = 0x7f7f, kBf16NaN = 0x7fc0;

ZT_HD float bf16_to_f32(uint16_t h) { return bits_to_f32((uint32_t)h << 16); }

ZT_HD uint32_t bf16_saturated_bits(float x) {
  uint32_t b = f32_to_bits(x), sign = b & 0x80000000u, mag = b & 0x7fffffffu;
  if (mag > 0x7f7f0000u) mag = 0x7f7f0000u;  // beyond bf16 max (Inf included): saturate
  return sign | mag;
}

ZT_HD uint16_t bf16_rtne(float x) {
  if (is_nan_f32(x)) return (uint16_t)(kBf16NaN | ((f32_to_bits(x) >> 16) & 0x8000u));
  uint32_t b = bf16_saturated_bits(x);
  return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

ZT_HD uint16_t bf16_sr(float x, uint32_t word) {
  if (is_nan_f32(x)) return (uint16_t)(kBf16NaN | ((f32_to_bits(x) >> 16) & 0x8000u));
  uint32_t b = bf16_saturated_bits(x);
  uint32_t r = (b + (word >> 16)) >> 16;
  if ((r & 0x7fffu) > kBf16Max) r = (r & 0x8000u) | kBf16Max;  // carry out of max: saturate
  return (uint16_t)r;
}

// --- fp16, fp8 e4m3, fp8 e5m2: minifloats with mbits mantissa bits -----------------------------

struct MiniFloat {
  int mbits, ebits, bias;
  float maxval;
  bool ieee_special;  // exponent all-ones encodes Inf/NaN (fp16, e5m2); e4m3 uses it for numbers
  uint32_t nan_code;
};

ZT_HD_CONST MiniFloat kFp16 = {10, 5, 15, 65504.0f, true, 0x7e00u};
ZT_HD_CONST MiniFloat kE4M3 = {3, 4, 7, 448.0f, false, 0x7fu};
ZT_HD_CONST MiniFloat kE5M2 = {2, 5, 15, 57344.0f, true, 0x7eu};

ZT_HD int minifloat_emin(MiniFloat f) { return 1 - f.bias; }

// |x| rounded onto the format's grid (RTNE, or SR with `word`), saturated; sign restored.
// NaN passes through. The grid step in x's binade is 2^(E - mbits), E = max(exponent, emin).
ZT_HD float minifloat_round(float x, MiniFloat f, bool stochastic, uint32_t word) {
  if (is_nan_f32(x)) return x;
  uint32_t b = f32_to_bits(x);
  float ax = bits_to_f32(b & 0x7fffffffu);
  if (ax > f.maxval) ax = f.maxval;
  int e = (int)((f32_to_bits(ax) >> 23) & 0xff) - 127;
  int emin = minifloat_emin(f);
  int E = e > emin ? e : emin;
  float v = zt_mul(ax, pow2f(f.mbits - E));
  float r = stochastic ? sr_round(v, word) : rtne(v);
  float y = zt_mul(r, pow2f(E - f.mbits));
  return bits_to_f32(f32_to_bits(y) | (b & 0x80000000u));
}

// Code of a value already on the grid (output of minifloat_round).
ZT_HD uint32_t minifloat_encode_exact(float y, MiniFloat f) {
  uint32_t b = f32_to_bits(y), sign = (b >> 31) << (f.mbits + f.ebits);
  if (is_nan_f32(y)) return f.nan_code | sign;
  float ay = bits_to_f32(b & 0x7fffffffu);
  int emin = minifloat_emin(f);
  if (ay < pow2f(emin)) return sign | (uint32_t)zt_mul(ay, pow2f(f.mbits - emin));  // subnormal
  uint32_t ab = f32_to_bits(ay);
  uint32_t e = ((ab >> 23) & 0xff) - 127 + f.bias;
  uint32_t m = (ab >> (23 - f.mbits)) & ((1u << f.mbits) - 1);
  return sign | (e << f.mbits) | m;
}

ZT_HD uint32_t minifloat_encode(float x, MiniFloat f, bool stochastic, uint32_t word) {
  return minifloat_encode_exact(minifloat_round(x, f, stochastic, word), f);
}

ZT_HD float minifloat_decode(uint32_t code, MiniFloat f) {
  uint32_t sign = (code >> (f.mbits + f.ebits)) & 1u;
  uint32_t e = (code >> f.mbits) & ((1u << f.ebits) - 1);
  uint32_t m = code & ((1u << f.mbits) - 1);
  uint32_t emax = (1u << f.ebits) - 1;
  float v;
  if (f.ieee_special && e == emax) {
    v = m ? bits_to_f32(0x7fc00000u) : bits_to_f32(0x7f800000u);
  } else if (!f.ieee_special && e == emax && m == (1u << f.mbits) - 1) {
    v = bits_to_f32(0x7fc00000u);
  } else if (e == 0) {
    v = zt_mul((float)m, pow2f(minifloat_emin(f) - f.mbits));
  } else {
    v = zt_mul(zt_add(1.0f, zt_mul((float)m, pow2f(-f.mbits))), pow2f((int)e - f.bias));
  }
  return sign ? -v : v;
}

// --- integer grids ------------------------------------------------------------------------------

static constexpr int kInt8Max = 127;
static constexpr int kInt4SymZero = 8;

// Code for x on the grid s * (q - zp) given inv_scale = 1 / s: q = round(x * inv_scale) + zp,
// clamped to [qmin, qmax]. Callers reject non-finite x beforehand.
ZT_HD int int_quantize(float x, float inv_scale, int zp, int qmin, int qmax, bool stochastic, uint32_t word) {
  float v = zt_mul(x, inv_scale);
  float r = stochastic ? sr_round(v, word) : rtne(v);
  float q = zt_add(r, (float)zp);
  q = q < (float)qmin ? (float)qmin : q;
  q = q > (float)qmax ? (float)qmax : q;
  return (int)q;
}

// Scale for a group with absolute maximum `absmax` and largest code magnitude qmax; inverse is 0
// for an all-zero group so that every element quantizes to the zero code. A nonzero scale never
// drops below the smallest normal float 2^-126, so 1 / scale stays finite (a subnormal scale would
// make it +Inf and 0 * Inf = NaN); groups that small quantize to (nearly) zero codes anyway.
static constexpr float kMinScale = 0x1p-126f;
ZT_HD float scale_for(float absmax, float qmax) {
  float s = absmax / qmax;
  return (s > 0.0f && s < kMinScale) ? kMinScale : s;
}
ZT_HD float inv_scale_for(float scale) { return scale > 0.0f ? 1.0f / scale : 0.0f; }
// A stored scale every kernel accepts: 0, or finite and at least kMinScale (1 / scale finite).
ZT_HD bool scale_valid(float s) { return s == 0.0f || (s >= kMinScale && s <= 3.4028234663852886e38f); }

// --- NF4 (QLoRA NormalFloat, bitsandbytes dDequantizeNF4 table) -------------------------------

ZT_HD float nf4_value(int u) {
  // A switch instead of a table keeps the header free of globals (AVX2 units must have none).
  switch (u & 15) {
    case 0: return -1.0f;
    case 1: return -0.6961928009986877f;
    case 2: return -0.5250730514526367f;
    case 3: return -0.39491748809814453f;
    case 4: return -0.28444138169288635f;
    case 5: return -0.18477343022823334f;
    case 6: return -0.09105003625154495f;
    case 7: return 0.0f;
    case 8: return 0.07958029955625534f;
    case 9: return 0.16093020141124725f;
    case 10: return 0.24611230194568634f;
    case 11: return 0.33791524171829224f;
    case 12: return 0.44070982933044434f;
    case 13: return 0.5626170039176941f;
    case 14: return 0.7229568362236023f;
    default: return 1.0f;
  }
}
static constexpr int kNf4Zero = 7;

// Nearest code to t = x / absmax in [-1, 1] (ties to the lower code), or, stochastically, one of
// the two codes around t with probabilities making the expectation t (unbiased).
ZT_HD int nf4_quantize(float t, bool stochastic, uint32_t word) {
  t = t < -1.0f ? -1.0f : (t > 1.0f ? 1.0f : t);
  int lo = 0;
  while (lo < 14 && nf4_value(lo + 1) <= t) ++lo;  // nf4_value(lo) <= t < nf4_value(lo + 1)
  if (lo == 15 || t == nf4_value(lo)) return lo;
  float a = nf4_value(lo), c = nf4_value(lo + 1);
  if (!stochastic) return (t - a) <= (c - t) ? lo : lo + 1;
  return uniform_sr(word) < (t - a) / (c - a) ? lo + 1 : lo;
}

// --- a quantized 2-D tensor as kernels see it ---------------------------------------------------

enum class QFormat : int { Int8 = 0, Int4 = 1, Nf4 = 2, Fp8E4M3 = 3, Fp8E5M2 = 4, Bf16 = 5, Fp16 = 6 };

ZT_HD bool qformat_is_4bit(QFormat f) { return f == QFormat::Int4 || f == QFormat::Nf4; }
ZT_HD bool qformat_has_scales(QFormat f) { return f != QFormat::Bf16 && f != QFormat::Fp16; }
// Bytes of one stored row.
ZT_HD uint64_t qformat_row_bytes(QFormat f, uint64_t cols) {
  if (qformat_is_4bit(f)) return (cols + 1) / 2;
  if (f == QFormat::Bf16 || f == QFormat::Fp16) return cols * 2;
  return cols;
}

// group = 0: one scale for the tensor; group = cols: one per row; else one per `group` elements
// of a row. Validated by the addon (Args::qtensor) before any kernel sees it.
struct QTensorView {
  QFormat format;
  uint64_t rows, cols;
  uint8_t* data;       // rows * qformat_row_bytes(format, cols) bytes
  float* scales;       // scale_count() floats, or null for bf16/fp16
  uint8_t* zeros;      // int4 asymmetric: one zero-point per scale; null means symmetric (zp = 8)
  uint64_t group;
};

// Free functions, not members: member functions would have external linkage (see defs.h).
ZT_HD uint64_t qt_groups_per_row(const QTensorView& q) { return q.group == 0 ? 1 : (q.cols + q.group - 1) / q.group; }
ZT_HD uint64_t qt_scale_count(const QTensorView& q) { return q.group == 0 ? 1 : q.rows * qt_groups_per_row(q); }
// Bytes a kernel streams per row: the codes and the row's share of the scales.
ZT_HD uint64_t qt_row_stream_bytes(const QTensorView& q) {
  return qformat_row_bytes(q.format, q.cols) + (q.scales ? qt_scale_count(q) * sizeof(float) / (q.rows ? q.rows : 1) : 0);
}
ZT_HD uint64_t qt_scale_index(const QTensorView& q, uint64_t r, uint64_t c) {
  return q.group == 0 ? 0 : r * qt_groups_per_row(q) + c / q.group;
}
// The stored code of element (r, c) (see the code conventions of quant_elem.h).
ZT_HD uint32_t qt_code_at(const QTensorView& q, uint64_t r, uint64_t c) {
  const uint8_t* row = q.data + r * qformat_row_bytes(q.format, q.cols);
  if (qformat_is_4bit(q.format)) return (row[c >> 1] >> ((c & 1) * 4)) & 15u;
  if (q.format == QFormat::Bf16 || q.format == QFormat::Fp16) return reinterpret_cast<const uint16_t*>(row)[c];
  return row[c];
}

}  // namespace zt
