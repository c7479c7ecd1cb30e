// AVX2/FMA GEMM kernels, bit-identical to the scalar references in gemm.cc (orders in gemm.h):
// weight decoders, the perturbation of decoded blocks (z regenerated in registers), W and Aᵀ
// packing, the 6×16 micro-kernel, the blocked GEMM task and the streaming GEMV per weight format.
#include <algorithm>

#include "cpu_features.h"
#include "direction_avx2.h"
#include "gemm.h"
#include "perturb.h"

namespace zt {
namespace avx2 {
namespace {

// --- small helpers -----------------------------------------------------------------------------

static inline uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

// 8×8 transpose: o[j] lane i = rows[i][off + j]. Zen 1 splits 256-bit ops and vperm2f128 is slow,
// so the registers are assembled from 128-bit halves (rows i and i + 4) before in-lane shuffles.
static inline void transpose8(const float* const* rows, uint64_t off, __m256 o[8]) {
  __m256 a[4], b[4];
  for (int i = 0; i < 4; ++i) {
    a[i] = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(rows[i] + off)), _mm_loadu_ps(rows[i + 4] + off), 1);
    b[i] = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(rows[i] + off + 4)), _mm_loadu_ps(rows[i + 4] + off + 4), 1);
  }
  for (int h = 0; h < 2; ++h) {
    const __m256* s = h ? b : a;
    __m256 t0 = _mm256_unpacklo_ps(s[0], s[1]), t1 = _mm256_unpackhi_ps(s[0], s[1]);
    __m256 t2 = _mm256_unpacklo_ps(s[2], s[3]), t3 = _mm256_unpackhi_ps(s[2], s[3]);
    o[4 * h + 0] = _mm256_shuffle_ps(t0, t2, 0x44);
    o[4 * h + 1] = _mm256_shuffle_ps(t0, t2, 0xEE);
    o[4 * h + 2] = _mm256_shuffle_ps(t1, t3, 0x44);
    o[4 * h + 3] = _mm256_shuffle_ps(t1, t3, 0xEE);
  }
}

// Columns [k0, k1) of 8 rows, transposed: out[k·stride + i] = rows[i][k] (rows equal to `zero`,
// an aligned block of 8 zeros, stand for missing rows and give 0). out + k0·stride is 32-byte aligned.
static void transpose_rows8(const float* const rows[8], const float* zero, uint64_t k0, uint64_t k1, float* out, uint64_t stride) {
  uint64_t k = k0;
  for (; k + 8 <= k1; k += 8) {
    const float* cur[8];
    for (int i = 0; i < 8; ++i) cur[i] = rows[i] == zero ? zero : rows[i] + k;
    __m256 o[8];
    transpose8(cur, 0, o);
    for (int j = 0; j < 8; ++j) _mm256_store_ps(out + (k + j) * stride, o[j]);
  }
  for (; k < k1; ++k)
    for (uint64_t i = 0; i < 8; ++i) out[k * stride + i] = rows[i] == zero ? 0.0f : rows[i][k];
}

// 8 nibbles (4 bytes at p) in element order, as dwords.
static inline __m256i nibbles8(const uint8_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(v), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
                          _mm256_set1_epi32(15));
}

static inline __m256 nf4_lookup(__m256i u) {  // vpermps uses the low 3 bits; bit 3 picks the half
  const __m256 lo = _mm256_setr_ps(nf4_value(0), nf4_value(1), nf4_value(2), nf4_value(3), nf4_value(4), nf4_value(5),
                                   nf4_value(6), nf4_value(7));
  const __m256 hi = _mm256_setr_ps(nf4_value(8), nf4_value(9), nf4_value(10), nf4_value(11), nf4_value(12),
                                   nf4_value(13), nf4_value(14), nf4_value(15));
  __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(u, 28));
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, u), _mm256_permutevar8x32_ps(hi, u), sel);
}

// 8 fp8 codes (low bytes of bytes8) -> fp16 bit patterns: e5m2 is the top byte of an fp16; e4m3
// rebiased by putting its 7 magnitude bits at fp16 bits 13..7 (value / 256, subnormals included).
static inline __m128i fp8_to_half_bits(__m128i bytes8, bool e4m3) {
  __m128i h = _mm_unpacklo_epi8(_mm_setzero_si128(), bytes8);  // code << 8
  if (!e4m3) return h;
  return _mm_and_si128(_mm_srai_epi16(h, 1), _mm_set1_epi16((short)0xBFFF));
}

// Exact decode of 8 fp8 codes (NaN codes of e4m3 give NaN).
static inline __m256 fp8_decode8(const uint8_t* p, bool e4m3) {
  __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  __m256 v = _mm256_cvtph_ps(fp8_to_half_bits(b, e4m3));
  if (!e4m3) return v;
  v = _mm256_mul_ps(v, _mm256_set1_ps(256.0f));
  __m256i c = _mm256_cvtepu8_epi32(b);
  __m256i isnan = _mm256_cmpeq_epi32(_mm256_and_si256(c, _mm256_set1_epi32(0x7f)), _mm256_set1_epi32(0x7f));
  __m256 nan = _mm256_castsi256_ps(_mm256_or_si256(_mm256_set1_epi32(0x7fc00000), _mm256_slli_epi32(_mm256_srli_epi32(c, 7), 31)));
  return _mm256_blendv_ps(v, nan, _mm256_castsi256_ps(isnan));
}

// --- decode: 8 consecutive elements [k, k + 8) of a row (k a multiple of 8, one scale group) ----

static inline __m256 decode8(const GemmWeights& w, const uint8_t* row, const GemmRowScales& rs, uint64_t k) {
  const QTensorView& q = w.q;
  switch (q.format) {
    case QFormat::Int8: {
      __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + k));
      return _mm256_mul_ps(_mm256_set1_ps(gemm_rs_scale(rs, k)), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)));
    }
    case QFormat::Int4: {
      __m256i u = _mm256_sub_epi32(nibbles8(row + k / 2), _mm256_set1_epi32(gemm_rs_zero(rs, k)));
      return _mm256_mul_ps(_mm256_set1_ps(gemm_rs_scale(rs, k)), _mm256_cvtepi32_ps(u));
    }
    case QFormat::Nf4: return _mm256_mul_ps(_mm256_set1_ps(gemm_rs_scale(rs, k)), nf4_lookup(nibbles8(row + k / 2)));
    case QFormat::Fp8E4M3:
    case QFormat::Fp8E5M2:
      return _mm256_mul_ps(_mm256_set1_ps(gemm_rs_scale(rs, k)), fp8_decode8(row + k, q.format == QFormat::Fp8E4M3));
    case QFormat::Bf16:
      return _mm256_castsi256_ps(
          _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k))), 16));
    case QFormat::Fp16: return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k)));
  }
  return _mm256_setzero_ps();
}

// --- perturbation of a decoded row segment ------------------------------------------------------

// A perturbation in registers: the direction's Philox keys, alpha and the QuZO grid.
struct Dir8 {
  const Direction* d;
  RngKey key, sr_key;
  __m256 alpha, inv, step;
};

static inline Dir8 dir8(const GemmPerturb& p) {
  const Direction& d = p.dir;
  return Dir8{&d, dir_key(d), RngKey{d.seed, d.stream, d.sr_purpose}, _mm256_set1_ps(p.alpha),
              _mm256_set1_ps(d.bits ? dir_grid_inv_step(d.bits) : 0.0f), _mm256_set1_ps(d.bits ? dir_grid_step(d.bits) : 0.0f)};
}

// Lanes [lo, hi) of 8 stream elements: o = fma(alpha, z, src), or o = z when storing z itself.
template <bool kStoreZ>
static inline void apply8(float* o, const float* src, __m256 z, __m256 alpha, int lo, int hi) {
  if (lo == 0 && hi == 8) {
    _mm256_storeu_ps(o, kStoreZ ? z : _mm256_fmadd_ps(alpha, z, _mm256_loadu_ps(src)));
    return;
  }
  alignas(32) float zz[8];
  _mm256_store_ps(zz, z);
  float a = _mm256_cvtss_f32(alpha);
  for (int l = lo; l < hi; ++l) o[l] = kStoreZ ? zz[l] : perturbed(src[l], a, zz[l]);
}

// Dense: stream elements [i0, i1) onto o[0 .. i1 - i0), perturbing src (o itself, or the fp32
// weights, which saves a copy).
template <bool kStoreZ>
static void perturb_dense(const Dir8& p, uint64_t i0, uint64_t i1, float* o, const float* src) {
  if (p.d->dist == kDirRademacher) {
    const __m256 one = _mm256_set1_ps(1.0f);
    for (uint64_t b = i0 >> 10; b <= (i1 - 1) >> 10; ++b) {
      Words8 r = philox8(p.key, b << 3);
      uint64_t g0 = (b << 10) > i0 ? (b << 7) : (i0 >> 3), g1 = min_u64((b + 1) << 7, (i1 + 7) >> 3);
      for (uint64_t g = g0; g < g1; ++g) {  // lane l of word (g >> 5) & 3, bit g & 31 -> element 8g + l
        __m256i bits = r.w[(g >> 5) & 3];
        __m256i sign = _mm256_slli_epi32(_mm256_srl_epi32(bits, _mm_cvtsi32_si128((int)(g & 31))), 31);
        __m256 z = _mm256_xor_ps(one, _mm256_castsi256_ps(sign));
        int64_t at = (int64_t)(8 * g) - (int64_t)i0;
        int lo = at < 0 ? (int)-at : 0, hi = 8 * g + 8 > i1 ? (int)(i1 - 8 * g) : 8;
        apply8<kStoreZ>(o + at, src + at, z, p.alpha, lo, hi);
      }
    }
    return;
  }
  if (use_avx512() && i1 - i0 >= 128 && !kStoreZ)  // z 32 counters at a time, applied from registers
    return gauss_fma_wide(*p.d, i0, i1, src, o, _mm256_cvtss_f32(p.alpha), 1.0f);
  if (use_avx512() && i1 - i0 >= 128) {  // z itself: 32 counters at a time through gauss_chunks' buffer
    gauss_chunks(*p.d, i0, i1, nullptr, [&](uint64_t e, uint64_t hi, uint64_t e0, const float* zb) {
      for (; e + 8 <= hi; e += 8) apply8<kStoreZ>(o + (e - i0), src + (e - i0), _mm256_loadu_ps(zb + (e - e0)), p.alpha, 0, 8);
      if (e < hi) apply8<kStoreZ>(o + (e - i0), src + (e - i0), _mm256_loadu_ps(zb + (e - e0)), p.alpha, 0, (int)(hi - e));
    });
    return;
  }
  for (uint64_t b = i0 >> 6; b <= (i1 - 1) >> 6; ++b) {  // 64-element normal-stream blocks
    __m256 z[8];
    gauss_direction64(p.key, p.sr_key, p.d->bits, p.inv, p.step, b, z);
    for (int q = 0; q < 8; ++q) {  // elements 64b + 8q + l
      uint64_t e = 64 * b + 8 * q;
      if (e + 8 <= i0 || e >= i1) continue;
      int64_t at = (int64_t)e - (int64_t)i0;
      int lo = at < 0 ? (int)-at : 0, hi = e + 8 > i1 ? (int)(i1 - e) : 8;
      apply8<kStoreZ>(o + at, src + at, z[q], p.alpha, lo, hi);
    }
  }
}

static const uint32_t* lower_bound_u32(const uint32_t* a, uint64_t n, uint64_t v) {
  while (n) {
    uint64_t h = n / 2;
    if ((uint64_t)a[h] < v) {
      a += h + 1;
      n -= h + 1;
    } else {
      n = h;
    }
  }
  return a;
}

}  // namespace

void gemm_perturb(const GemmPerturb& p, uint64_t K, uint64_t n0, uint64_t n1, uint64_t k0, uint64_t k1, float* out,
                  uint64_t ld) {
  if (k1 <= k0) return;
  const Direction& d = p.dir;
  const Dir8 dp = dir8(p);
  for (uint64_t n = n0; n < n1; ++n) {
    float* o = out + (n - n0) * ld;
    if (!p.sparse) {
      perturb_dense<false>(dp, p.first + n * K + k0, p.first + n * K + k1, o, o);
      continue;
    }
    // Sparse: few listed elements go one by one; dense runs regenerate z in 256-element pieces.
    const uint32_t* it = lower_bound_u32(p.idx, p.nidx, n * K + k0);
    const uint32_t* end = lower_bound_u32(it, p.nidx - (uint64_t)(it - p.idx), n * K + k1);
    if ((uint64_t)(end - it) * 16 < k1 - k0) {
      alignas(32) float z[64];
      while (it < end) {
        const uint64_t c = min_u64(64, (uint64_t)(end - it));
        gather_directions(it, c, d, p.first, z);
        for (uint64_t j = 0; j < c; ++j, ++it) o[*it - n * K - k0] = perturbed(o[*it - n * K - k0], p.alpha, z[j]);
      }
      continue;
    }
    alignas(32) float z[256];
    for (uint64_t s = k0; s < k1 && it < end; s += 256) {
      uint64_t e = min_u64(s + 256, k1);
      if ((uint64_t)*it >= n * K + e) continue;
      perturb_dense<true>(dp, p.first + n * K + s, p.first + n * K + e, z, z);
      for (; it < end && (uint64_t)*it < n * K + e; ++it) {
        uint64_t k = *it - n * K;
        o[k - k0] = perturbed(o[k - k0], p.alpha, z[k - s]);
      }
    }
  }
}

void gemm_decode(const GemmWeights& w, uint64_t n0, uint64_t n1, uint64_t k0, uint64_t k1, float* out, uint64_t ld) {
  for (uint64_t n = n0; n < n1; ++n) {
    float* o = out + (n - n0) * ld - k0;
    uint64_t k = k0;
    for (; k < k1 && (k & 7); ++k) o[k] = gemm_weight_at(w, n, k);
    if (w.f32) {
      for (; k + 8 <= k1; k += 8) _mm256_storeu_ps(o + k, _mm256_loadu_ps(w.w32 + n * w.k + k));
    } else {
      const uint8_t* row = gemm_row(w.q, n);
      const GemmRowScales rs = gemm_row_scales(w.q, n);
      for (; k + 8 <= k1; k += 8) _mm256_storeu_ps(o + k, decode8(w, row, rs, k));
    }
    for (; k < k1; ++k) o[k] = gemm_weight_at(w, n, k);
  }
}

namespace {

// gemm_perturb of a decoded block, from the task's Rademacher sign table when it has one.
static void perturb_block(const GemmPerturb& p, uint64_t K, uint64_t n0, uint64_t n1, uint64_t k0, uint64_t k1, float* out,
                          uint64_t ld, const uint8_t* signs, uint64_t t0) {
  if (!p.on) return;
  if (!signs) return gemm_perturb(p, K, n0, n1, k0, k1, out, ld);
  for (uint64_t n = n0; n < n1; ++n) {
    const uint64_t e0 = p.first + n * K + k0;
    rademacher_apply(signs, t0, e0, e0 + (k1 - k0), p.alpha, out + (n - n0) * ld, out + (n - n0) * ld);
  }
}

// The sign table of rows [n0, n1) when g's perturbation is dense Rademacher (else null); t0 its
// first element.
static const uint8_t* task_signs(const GemmArgs& g, uint64_t n0, uint64_t n1, uint8_t* buf, uint64_t* t0) {
  if (!g.p.on || g.p.sparse || g.p.dir.dist != kDirRademacher) return nullptr;
  *t0 = g.p.first + n0 * g.w.k;
  rademacher_signs(dir_key(g.p.dir), *t0, g.p.first + n1 * g.w.k, buf);
  return buf;
}

// A task's sparse perturbation: the directions of the listed elements of its rows drawn once, 8 at a
// time (perturb.h gather_directions), then applied as its K slices are packed; each row's elements
// are walked by a cursor (a task packs its slices in increasing K). Used where fewer than one
// element in 16 is listed (else gemm_perturb draws dense runs per slice).
struct SparseTask {
  const GemmPerturb* p = nullptr;
  uint64_t K = 0, n0 = 0, lo = 0, hi = 0;  // the task's listed elements: idx[lo, hi), directions z[j - lo]
  const float* z = nullptr;
  uint64_t* cur = nullptr;  // per task row: the next of its listed elements (index into idx)
  // Rows [r0, r1), columns [k0, k1) of a block whose element (r, k) is out[(r - r0)·rs + (k - k0)·cs].
  void apply(uint64_t r0, uint64_t r1, uint64_t k0, uint64_t k1, float* out, uint64_t rs, uint64_t cs) const {
    for (uint64_t r = r0; r < r1; ++r) {
      uint64_t& c = cur[r - n0];
      for (const uint64_t end = r * K + k1; c < hi && p->idx[c] < end; ++c) {
        float* o = out + (r - r0) * rs + (p->idx[c] - r * K - k0) * cs;
        *o = perturbed(*o, p->alpha, z[c - lo]);
      }
    }
  }
};

// The sparse table of rows [n0, n1) into z (>= (n1 - n0)·K / 16 floats) and cur (n1 - n0), or null
// when g's perturbation is not sparse or its list is too dense there.
static const SparseTask* sparse_task(const GemmArgs& g, uint64_t n0, uint64_t n1, float* z, uint64_t* cur, SparseTask* t) {
  const GemmPerturb& p = g.p;
  if (!p.on || !p.sparse) return nullptr;
  const uint64_t K = g.w.k;
  const uint64_t lo = (uint64_t)(lower_bound_u32(p.idx, p.nidx, n0 * K) - p.idx);
  const uint64_t hi = (uint64_t)(lower_bound_u32(p.idx + lo, p.nidx - lo, n1 * K) - p.idx);
  if ((hi - lo) * 16 >= (n1 - n0) * K) return nullptr;
  gather_directions(p.idx + lo, hi - lo, p.dir, p.first, z);
  uint64_t j = lo;
  for (uint64_t r = n0; r < n1; ++r) {
    while (j < hi && p.idx[j] < r * K) ++j;
    cur[r - n0] = j;
  }
  *t = SparseTask{&p, K, n0, lo, hi, z, cur};
  return t;
}

// --- packing ------------------------------------------------------------------------------------

// W rows [jr, jr + nr) (nr <= 16), columns [pc, pc + kc), decoded and perturbed, into one
// micro-panel bp[k·16 + j]. fp32 without perturbation reads W in place; other formats decode
// 8 rows at a time into tmp (8·kc floats) first. Rows past nr are zero. signs: the task's
// Rademacher sign table (from element `first` of its first row, t0), or null.
static void pack_w(const GemmArgs& g, uint64_t jr, uint64_t nr, uint64_t pc, uint64_t kc, float* bp, float* tmp,
                   const uint8_t* signs, uint64_t t0, const SparseTask* sparse) {
  alignas(32) const float kZero[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const uint64_t K = g.w.k;
  const bool direct = g.w.f32 && (!g.p.on || sparse);  // a sparse table patches the packed panel
  for (uint64_t h = 0; h < 2; ++h) {
    const uint64_t r0 = jr + 8 * h, rn = nr > 8 * h ? min_u64(8, nr - 8 * h) : 0;
    const float* rows[8];
    if (direct) {
      for (uint64_t i = 0; i < 8; ++i) rows[i] = i < rn ? g.w.w32 + (r0 + i) * K + pc : kZero;
    } else if (g.w.f32 && !g.p.sparse) {  // fp32, dense perturbation: W + alpha·z straight into tmp
      const Dir8 dp = dir8(g.p);
      for (uint64_t i = 0; i < rn; ++i) {
        const uint64_t e0 = g.p.first + (r0 + i) * K + pc;
        const float* src = g.w.w32 + (r0 + i) * K + pc;
        if (signs) rademacher_apply(signs, t0, e0, e0 + kc, g.p.alpha, src, tmp + i * kc);
        else perturb_dense<false>(dp, e0, e0 + kc, tmp + i * kc, src);
      }
      for (uint64_t i = 0; i < 8; ++i) rows[i] = i < rn ? tmp + i * kc : kZero;
    } else {
      if (rn) {
        gemm_decode(g.w, r0, r0 + rn, pc, pc + kc, tmp, kc);
        if (!sparse) perturb_block(g.p, K, r0, r0 + rn, pc, pc + kc, tmp, kc, signs, t0);
      }
      for (uint64_t i = 0; i < 8; ++i) rows[i] = i < rn ? tmp + i * kc : kZero;
    }
    transpose_rows8(rows, kZero, 0, kc, bp + 8 * h, kNR);
  }
  if (sparse) sparse->apply(jr, jr + nr, pc, pc + kc, bp, 1, kNR);
}

// --- 6×16 micro-kernel: C[6][16] (+)= Ap[kc][6] · Bp[kc][16], fma chains in k order ------------

// init: C loaded (zero = false) or zero; bias (16 floats) added after the last fma when non-null.
static inline void kernel_6x16(uint64_t kc, const float* __restrict a, uint64_t lda, const float* __restrict bp, float* c,
                               uint64_t ldc, bool zero, const float* bias) {
  const float *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda, *a4 = a + 4 * lda, *a5 = a + 5 * lda;
  const __m256 keep = _mm256_castsi256_ps(_mm256_set1_epi32(zero ? 0 : -1));
#define ZT_LD(i, j) _mm256_and_ps(keep, _mm256_loadu_ps(c + (i) * ldc + 8 * (j)))
  __m256 c00 = ZT_LD(0, 0), c01 = ZT_LD(0, 1), c10 = ZT_LD(1, 0), c11 = ZT_LD(1, 1), c20 = ZT_LD(2, 0), c21 = ZT_LD(2, 1);
  __m256 c30 = ZT_LD(3, 0), c31 = ZT_LD(3, 1), c40 = ZT_LD(4, 0), c41 = ZT_LD(4, 1), c50 = ZT_LD(5, 0), c51 = ZT_LD(5, 1);
#undef ZT_LD
  for (uint64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
    __m256 a;
    a = _mm256_broadcast_ss(a0 + k); c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(a1 + k); c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(a2 + k); c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(a3 + k); c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(a4 + k); c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(a5 + k); c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
    bp += kNR;
  }
  if (bias) {
    const __m256 b0 = _mm256_loadu_ps(bias), b1 = _mm256_loadu_ps(bias + 8);
    c00 = _mm256_add_ps(c00, b0); c01 = _mm256_add_ps(c01, b1); c10 = _mm256_add_ps(c10, b0); c11 = _mm256_add_ps(c11, b1);
    c20 = _mm256_add_ps(c20, b0); c21 = _mm256_add_ps(c21, b1); c30 = _mm256_add_ps(c30, b0); c31 = _mm256_add_ps(c31, b1);
    c40 = _mm256_add_ps(c40, b0); c41 = _mm256_add_ps(c41, b1); c50 = _mm256_add_ps(c50, b0); c51 = _mm256_add_ps(c51, b1);
  }
#define ZT_ST(i, j, v) _mm256_storeu_ps(c + (i) * ldc + 8 * (j), v)
  ZT_ST(0, 0, c00); ZT_ST(0, 1, c01); ZT_ST(1, 0, c10); ZT_ST(1, 1, c11); ZT_ST(2, 0, c20); ZT_ST(2, 1, c21);
  ZT_ST(3, 0, c30); ZT_ST(3, 1, c31); ZT_ST(4, 0, c40); ZT_ST(4, 1, c41); ZT_ST(5, 0, c50); ZT_ST(5, 1, c51);
#undef ZT_ST
}

// A partial tile (mr < 6 or nr < 16) runs the full kernel on a copy of its C block. `a` has 6
// readable rows: for mr < 6 the caller passes A's last rows zero-padded (rows past M are not memory
// of A), copied once per K slice for all panels.
static void kernel_edge(uint64_t kc, const float* a, uint64_t lda, const float* bp, float* c, uint64_t ldc, uint64_t mr,
                        uint64_t nr, bool zero, const float* bias) {
  alignas(32) float t[kMR * kNR];
  alignas(32) float b[kNR];
  for (uint64_t i = 0; i < kMR; ++i)
    for (uint64_t j = 0; j < kNR; ++j) t[i * kNR + j] = (!zero && i < mr && j < nr) ? c[i * ldc + j] : 0.0f;
  if (bias)
    for (uint64_t j = 0; j < kNR; ++j) b[j] = j < nr ? bias[j] : 0.0f;
  kernel_6x16(kc, a, lda, bp, t, kNR, false, bias ? b : nullptr);
  for (uint64_t i = 0; i < mr; ++i)
    for (uint64_t j = 0; j < nr; ++j) c[i * ldc + j] = t[i * kNR + j];
}

// mr < 6 rows over two full panels: the pair kernel on a copy of the mr x 32 C block (a as above).
static void pair_edge(GemmPairKernel pair, uint64_t kc, const float* a, uint64_t lda, const float* bp, float* c, uint64_t ldc,
                      uint64_t mr, bool zero, const float* bias) {
  alignas(64) float t[kMR * 2 * kNR];
  for (uint64_t i = 0; i < kMR; ++i)
    for (uint64_t j = 0; j < 2 * kNR; ++j) t[i * 2 * kNR + j] = (!zero && i < mr) ? c[i * ldc + j] : 0.0f;
  pair(kc, a, lda, bp, bp + kNR * kc, t, 2 * kNR, false, bias);
  for (uint64_t i = 0; i < mr; ++i)
    for (uint64_t j = 0; j < 2 * kNR; ++j) c[i * ldc + j] = t[i * 2 * kNR + j];
}

}  // namespace

void gemm_block(const GemmArgs& g, uint64_t n0, uint64_t n1, float* bp, float* tmp, GemmPairKernel pair, float* table_ws) {
  const uint64_t M = g.m, N = g.w.n, K = g.w.k;
  uint64_t t0 = 0;
  const uint8_t* table = task_signs(g, n0, n1, reinterpret_cast<uint8_t*>(table_ws), &t0);
  SparseTask st;
  const SparseTask* sparse = sparse_task(g, n0, n1, table_ws + 2 * (n1 - n0), reinterpret_cast<uint64_t*>(table_ws), &st);
  const uint64_t m_full = M / kMR * kMR;  // rows from m_full on form the one partial tile
  for (uint64_t pc = 0; pc < K; pc += kKC) {
    const uint64_t kc = min_u64(kKC, K - pc);
    const bool zero = pc == 0 && !g.accumulate, last = pc + kc == K;
    for (uint64_t jr = n0; jr < n1; jr += kNR) pack_w(g, jr, min_u64(kNR, n1 - jr), pc, kc, bp + (jr - n0) * kc, tmp, table, t0, sparse);
    // The partial tile's A rows, zero-padded to 6, once for every panel (tmp is free after packing).
    for (uint64_t i = 0; m_full < M && i < kMR; ++i)
      for (uint64_t k = 0; k < kc; ++k) tmp[i * kc + k] = m_full + i < M ? g.a[(m_full + i) * K + pc + k] : 0.0f;
    for (uint64_t ic = 0; ic < M; ic += kMC) {
      const uint64_t mc = min_u64(kMC, M - ic);
      for (uint64_t jr = n0; jr < n1;) {
        const uint64_t nr = min_u64(kNR, n1 - jr);
        const float* bias = last && g.bias ? g.bias + jr : nullptr;
        const float* b = bp + (jr - n0) * kc;
        const bool two = pair && jr + 2 * kNR <= n1;  // two full panels
        for (uint64_t ir = ic; ir < ic + mc; ir += kMR) {
          const uint64_t mr = min_u64(kMR, M - ir);
          const float* a = mr == kMR ? g.a + ir * K + pc : tmp;
          const uint64_t lda = mr == kMR ? K : kc;
          float* c = g.c + ir * N + jr;
          if (two && mr == kMR) {
            pair(kc, a, K, b, b + kNR * kc, c, N, zero, bias);
          } else if (two) {
            pair_edge(pair, kc, a, lda, b, c, N, mr, zero, bias);
          } else if (mr == kMR && nr == kNR) {
            kernel_6x16(kc, a, K, b, c, N, zero, bias);
          } else {
            kernel_edge(kc, a, lda, b, c, N, mr, nr, zero, bias);
          }
        }
        jr += two ? 2 * kNR : kNR;
      }
    }
  }
}

// --- skinny M (kGemvMaxRows < M <= 16): roles swapped --------------------------------------------
// The output tile is Cᵀ [6 n][8 or 16 m]: W elements are broadcast straight from 6 row-major rows
// (W itself, or the decoded/perturbed block: no transpose) against Aᵀ packed once as [k][8 or 16].
// The tile lives in a small buffer across all of K, so each output is the same single fma chain.

namespace {

// Tile [6 n][8·NV m]: t (row stride 16) holds the running chains; W rows broadcast, Aᵀ rows loaded.
template <int NV>
static inline void kernel_rows(uint64_t kc, const float* const* rows, const float* __restrict at, float* t) {
  const float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3], *r4 = rows[4], *r5 = rows[5];
  constexpr int W = 8 * NV;
  __m256 c00 = _mm256_load_ps(t), c10 = _mm256_load_ps(t + 16), c20 = _mm256_load_ps(t + 32);
  __m256 c30 = _mm256_load_ps(t + 48), c40 = _mm256_load_ps(t + 64), c50 = _mm256_load_ps(t + 80);
  __m256 c01 = c00, c11 = c00, c21 = c00, c31 = c00, c41 = c00, c51 = c00;
  if (NV == 2) {
    c01 = _mm256_load_ps(t + 8), c11 = _mm256_load_ps(t + 24), c21 = _mm256_load_ps(t + 40);
    c31 = _mm256_load_ps(t + 56), c41 = _mm256_load_ps(t + 72), c51 = _mm256_load_ps(t + 88);
  }
  for (uint64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(at), b1 = NV == 2 ? _mm256_load_ps(at + 8) : b0;
    __m256 a;
#define ZT_ROW(i, r)                                      \
    a = _mm256_broadcast_ss(r + k);                      \
    c##i##0 = _mm256_fmadd_ps(a, b0, c##i##0);            \
    if (NV == 2) c##i##1 = _mm256_fmadd_ps(a, b1, c##i##1);
    ZT_ROW(0, r0) ZT_ROW(1, r1) ZT_ROW(2, r2) ZT_ROW(3, r3) ZT_ROW(4, r4) ZT_ROW(5, r5)
#undef ZT_ROW
    at += W;
  }
  _mm256_store_ps(t, c00); _mm256_store_ps(t + 16, c10); _mm256_store_ps(t + 32, c20);
  _mm256_store_ps(t + 48, c30); _mm256_store_ps(t + 64, c40); _mm256_store_ps(t + 80, c50);
  if (NV == 2) {
    _mm256_store_ps(t + 8, c01); _mm256_store_ps(t + 24, c11); _mm256_store_ps(t + 40, c21);
    _mm256_store_ps(t + 56, c31); _mm256_store_ps(t + 72, c41); _mm256_store_ps(t + 88, c51);
  }
}

}  // namespace

// Aᵀ: at[k·W + m] = A[m][k] for m < M, 0 for M <= m < W (W = gemm_skinny_width(M)); k in [k0, k1).
void gemm_pack_at(const GemmArgs& g, uint64_t k0, uint64_t k1, float* at) {
  const uint64_t K = g.w.k, W = gemm_skinny_width(g.m);
  alignas(32) const float kZero[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (uint64_t h = 0; h < W / 8; ++h) {
    const float* rows[8];
    for (uint64_t i = 0; i < 8; ++i) rows[i] = 8 * h + i < g.m ? g.a + (8 * h + i) * K : kZero;
    transpose_rows8(rows, kZero, k0, k1, at + 8 * h, W);
  }
}

void gemm_block_skinny(const GemmArgs& g, uint64_t n0, uint64_t n1, const float* at, float* tmp, GemmRowsKernel wide,
                       float* table_ws) {
  const uint64_t M = g.m, N = g.w.n, K = g.w.k, W = gemm_skinny_width(M);
  const bool direct = g.w.f32 && !g.p.on;
  alignas(64) float t[12 * 16];
  for (uint64_t n = n0; n < n1;) {
    const bool twelve = wide && W == 16 && n + 12 <= n1;  // a full [12 n][16 m] zmm tile
    const uint64_t step = twelve ? 12 : 6, nr = min_u64(step, n1 - n);
    uint64_t t0 = 0;
    const uint8_t* table = task_signs(g, n, n + nr, reinterpret_cast<uint8_t*>(table_ws), &t0);
    SparseTask st;
    const SparseTask* sparse = sparse_task(g, n, n + nr, table_ws + 2 * nr, reinterpret_cast<uint64_t*>(table_ws), &st);
    for (uint64_t i = 0; i < step; ++i)
      for (uint64_t m = 0; m < 16; ++m) t[i * 16 + m] = (g.accumulate && i < nr && m < M) ? g.c[m * N + n + i] : 0.0f;
    const uint64_t kcs = direct ? K : kKC;
    for (uint64_t pc = 0; pc < K; pc += kcs) {
      const uint64_t kc = min_u64(kcs, K - pc);
      const float* rows[12];
      if (direct) {
        for (uint64_t i = 0; i < step; ++i) rows[i] = g.w.w32 + (n + (i < nr ? i : 0)) * K + pc;
      } else {
        gemm_decode(g.w, n, n + nr, pc, pc + kc, tmp, kc);
        if (sparse) sparse->apply(n, n + nr, pc, pc + kc, tmp, kc, 1);
        else perturb_block(g.p, K, n, n + nr, pc, pc + kc, tmp, kc, table, t0);
        for (uint64_t i = 0; i < step; ++i) rows[i] = tmp + (i < nr ? i : 0) * kc;  // extra rows: ignored
      }
      if (twelve)
        wide(kc, rows, at + pc * W, t);
      else if (W == 16)
        kernel_rows<2>(kc, rows, at + pc * W, t);
      else
        kernel_rows<1>(kc, rows, at + pc * W, t);
    }
    for (uint64_t i = 0; i < nr; ++i)
      for (uint64_t m = 0; m < M; ++m) {
        const float v = t[i * 16 + m];
        g.c[m * N + n + i] = g.bias ? zt_add(v, g.bias[n + i]) : v;
      }
    n += step;
  }
}

// --- GEMV -----------------------------------------------------------------------------------------

namespace {

static inline float hsum8(__m256 v) {  // ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}


// One format's chunk decoder: load(row, c) once per 64-element chunk, val(j) the unscaled values of
// vector j in the lane order of gemm.h.
struct DecF32 {
  static constexpr GemvKind kind = kGemvUnscaled;
  static constexpr uint64_t kChunkBytes = 256;
  static constexpr bool kInt4 = false, kE4M3 = false;
  const float *base, *p;
  void start(const GemmWeights& w, uint64_t n) { base = w.w32 + n * w.k; }
  void load(uint64_t c) { p = base + c; }
  __m256 val(int j) const { return _mm256_loadu_ps(p + 8 * j); }
};
struct DecFp16 {
  static constexpr GemvKind kind = kGemvUnscaled;
  static constexpr uint64_t kChunkBytes = 128;
  static constexpr bool kInt4 = false, kE4M3 = false;
  const uint8_t *base, *p;
  void start(const GemmWeights& w, uint64_t n) { base = gemm_row(w.q, n); }
  void load(uint64_t c) { p = base + 2 * c; }
  __m256 val(int j) const { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * j))); }
};
struct DecBf16 {  // vector 2b: even elements of block b (low halves), 2b + 1: odd (high halves)
  static constexpr GemvKind kind = kGemvUnscaled;
  static constexpr uint64_t kChunkBytes = 128;
  static constexpr bool kInt4 = false, kE4M3 = false;
  const uint8_t *base, *p;
  void start(const GemmWeights& w, uint64_t n) { base = gemm_row(w.q, n); }
  void load(uint64_t c) { p = base + 2 * c; }
  __m256 val(int j) const {
    __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 * (j >> 1)));
    return _mm256_castsi256_ps((j & 1) ? _mm256_and_si256(v, _mm256_set1_epi32((int)0xffff0000u)) : _mm256_slli_epi32(v, 16));
  }
};
struct DecInt8 {
  static constexpr GemvKind kind = kGemvNatural;
  static constexpr uint64_t kChunkBytes = 64;
  static constexpr bool kInt4 = false, kE4M3 = false;
  const uint8_t *base, *p;
  void start(const GemmWeights& w, uint64_t n) { base = gemm_row(w.q, n); }
  void load(uint64_t c) { p = base + c; }
  __m256 val(int j) const {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * j))));
  }
};
template <bool E4M3>
struct DecFp8 {  // e4m3 values are decode / 256 (NaN codes flagged per chunk by the kernel)
  static constexpr GemvKind kind = kGemvNatural;
  static constexpr uint64_t kChunkBytes = 64;
  static constexpr bool kInt4 = false, kE4M3 = E4M3;
  const uint8_t *base, *p;
  void start(const GemmWeights& w, uint64_t n) { base = gemm_row(w.q, n); }
  void load(uint64_t c) { p = base + c; }
  __m256 val(int j) const {
    return _mm256_cvtph_ps(fp8_to_half_bits(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * j)), E4M3));
  }
};
// lane l = bytes 4l..4l+3; vector j = nibble j read in place as float bits (a subnormal u·2^(4j'−149),
// gemm.h): one vpand per 8 weights, no conversion (kSubnormal; else converted); x is prescaled to match.
template <bool kSubnormal>
struct DecInt4 {
  static constexpr GemvKind kind = kGemvNibble;
  static constexpr uint64_t kChunkBytes = 32;
  static constexpr bool kInt4 = true, kE4M3 = false;
  const uint8_t* base;
  __m256i raw, raw8;  // the lanes, and shifted right by 8 (nibbles 6 and 7 below bit 24)
  void start(const GemmWeights& w, uint64_t n) { base = gemm_row(w.q, n); }
  void load(uint64_t c) {
    raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + c / 2));
    raw8 = _mm256_srli_epi32(raw, 8);
  }
  __m256 val(int j) const {
    const __m256i bits = _mm256_and_si256(j <= 5 ? raw : raw8, _mm256_set1_epi32(15 << gemv_int4_shift(j)));
    return kSubnormal ? _mm256_castsi256_ps(bits) : _mm256_cvtepi32_ps(bits);
  }
};
struct DecNf4 {
  static constexpr GemvKind kind = kGemvNibble;
  static constexpr uint64_t kChunkBytes = 32;
  static constexpr bool kInt4 = false, kE4M3 = false;
  const uint8_t* base;
  __m256i raw;
  void start(const GemmWeights& w, uint64_t n) { base = gemm_row(w.q, n); }
  void load(uint64_t c) { raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + c / 2)); }
  __m256 val(int j) const { return nf4_lookup(_mm256_srli_epi32(raw, 4 * j)); }
};

#include "gemv_tails.inc"  // in this ISA's namespace

// One GEMV row block: the lane/group order of gemm.h with four partial sums t[j & 3] per chunk
// (short dependency chains), format and group mode fixed at compile time. Rows [n0, n1) of a task
// ending at row `end` (the next row is prefetched up to there); tails[m * kGemvTailRows + n - n0]:
// the rows' gemv_tail (gemv_tail_rows).
template <class D, int M, bool G32>
static void gemv_kernel(const GemvCtx& g, uint64_t n0, uint64_t n1, uint64_t end, const float* tails) {
  const GemmWeights& w = *g.w;
  constexpr bool kScaled = D::kind != kGemvUnscaled;
  const float* xs[M];
  const float* xsum[M];
  for (int m = 0; m < M; ++m) {
    xs[m] = g.xs + m * g.k64;
    xsum[m] = g.xs + g.m * g.k64 + m * (g.k64 / 8);
  }
  const __m256 sym_zp = _mm256_set1_ps((float)kInt4SymZero);
  const uint64_t span = gemv_sum_span(w, g.k64);
  for (uint64_t n = n0; n < n1; ++n) {
    __m256 acc[M][4];
    for (int m = 0; m < M; ++m) acc[m][0] = acc[m][1] = acc[m][2] = acc[m][3] = _mm256_setzero_ps();
    __m256i nanmask = _mm256_setzero_si256();
    const GemmRowScales rs = w.f32 ? GemmRowScales{nullptr, nullptr, 63} : gemm_row_scales(w.q, n);
    const uint8_t* row = w.f32 ? nullptr : gemm_row(w.q, n);
    D d;
    d.start(w, n);
    __m256 t[M][4];  // partial sums of the current scale group
    for (int m = 0; m < M; ++m) t[m][0] = t[m][1] = t[m][2] = t[m][3] = _mm256_setzero_ps();
    // the next row streams in while this one is computed: two DRAM streams per thread
    const char* next = n + 1 < end ? (w.f32 ? reinterpret_cast<const char*>(w.w32 + (n + 1) * w.k)
                                           : reinterpret_cast<const char*>(gemm_row(w.q, n + 1)))
                                  : nullptr;
    for (uint64_t c = 0; c < g.k64; c += 64) {
      if (next)
        for (uint64_t b = 0; b < D::kChunkBytes; b += 64) _mm_prefetch(next + c / 64 * D::kChunkBytes + b, _MM_HINT_T0);
      d.load(c);
      if (!kScaled) {
        for (int j = 0; j < 8; ++j) {
          const __m256 v = d.val(j);
          for (int m = 0; m < M; ++m) acc[m][j & 3] = _mm256_fmadd_ps(_mm256_loadu_ps(xs[m] + c + 8 * j), v, acc[m][j & 3]);
        }
        continue;
      }
      if (D::kE4M3) {
        const __m256i m7 = _mm256_set1_epi8(0x7f);
        const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c));
        const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c + 32));
        nanmask = _mm256_or_si256(nanmask, _mm256_cmpeq_epi8(_mm256_and_si256(b0, m7), m7));
        nanmask = _mm256_or_si256(nanmask, _mm256_cmpeq_epi8(_mm256_and_si256(b1, m7), m7));
      }
      // scales of this chunk: per half (natural lanes) or per lane half (nibble lanes) with groups
      // of 32, else one
      __m256 s0, s1;
      if (G32) {
        const float* sp = rs.s + (c >> 5);
        if (D::kind == kGemvNibble) {
          s0 = s1 = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_set1_ps(sp[0])), _mm_set1_ps(sp[1]), 1);
        } else {
          s0 = _mm256_set1_ps(sp[0]);
          s1 = _mm256_set1_ps(sp[1]);
        }
      } else {
        s0 = s1 = _mm256_set1_ps(rs.s[c >> rs.shift]);
      }
      if (D::kE4M3) {
        s0 = _mm256_mul_ps(s0, _mm256_set1_ps(256.0f));
        s1 = _mm256_mul_ps(s1, _mm256_set1_ps(256.0f));
      }
      // acc += s·((t0 + t1) + (t2 + t3) [− zp·X, int4 at the group's end]), t = 0
      auto flush = [&](__m256 sc, __m256 zp) {
        for (int m = 0; m < M; ++m) {
          __m256 sum = _mm256_add_ps(_mm256_add_ps(t[m][0], t[m][1]), _mm256_add_ps(t[m][2], t[m][3]));
          if (D::kInt4) sum = _mm256_fnmadd_ps(zp, _mm256_loadu_ps(xsum[m] + c / span * 8), sum);
          acc[m][0] = _mm256_fmadd_ps(sc, sum, acc[m][0]);
          t[m][0] = t[m][1] = t[m][2] = t[m][3] = _mm256_setzero_ps();
        }
      };
      for (int j = 0; j < 8; ++j) {
        const __m256 v = d.val(j);
        for (int m = 0; m < M; ++m) t[m][j & 3] = _mm256_fmadd_ps(_mm256_loadu_ps(xs[m] + c + 8 * j), v, t[m][j & 3]);
        if (G32 && D::kind == kGemvNatural && j == 3) flush(s0, sym_zp);
      }
      // groups of 32 end with every chunk; larger groups (64, 128, a row) when the next chunk starts a
      // new one or the main part ends
      if (G32 || c + 64 == g.k64 || ((c + 64) >> rs.shift) != (c >> rs.shift)) {
        __m256 zp = sym_zp;
        if (D::kInt4 && rs.z) {
          if (G32) {
            const uint8_t* zz = rs.z + (c >> 5);
            zp = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_set1_ps((float)zz[0])), _mm_set1_ps((float)zz[1]), 1);
          } else {
            zp = _mm256_set1_ps((float)rs.z[c >> rs.shift]);
          }
        }
        flush(s1, zp);
      }
    }
    const bool nan = D::kE4M3 && !_mm256_testz_si256(nanmask, nanmask);
    for (int m = 0; m < M; ++m) {
      __m256 lanes = kScaled ? acc[m][0]
                             : _mm256_add_ps(_mm256_add_ps(acc[m][0], acc[m][1]), _mm256_add_ps(acc[m][2], acc[m][3]));
      const float main = D::kInt4 ? zt_mul(hsum8(lanes), gemv_rescale(g)[m]) : hsum8(lanes);
      float r = zt_add(main, tails[m * kGemvTailRows + (n - n0)]);
      if (nan) r = bits_to_f32(0x7fc00000u);
      gemv_store(g, m, n, r);
    }
  }
}

struct Gemv {
  using F32 = DecF32;
  using Int8 = DecInt8;
  template <bool kSubnormal>
  using Int4 = DecInt4<kSubnormal>;
  using Nf4 = DecNf4;
  template <bool E4M3>
  using Fp8 = DecFp8<E4M3>;
  using Bf16 = DecBf16;
  using Fp16 = DecFp16;
  template <class D, int M, bool G32>
  static void rows(const GemvCtx& g, uint64_t n0, uint64_t n1) {
    gemv_tail_slices<M>(g, n0, n1, [&](uint64_t a, uint64_t b, const float* tails) { gemv_kernel<D, M, G32>(g, a, b, n1, tails); });
  }
};

}  // namespace

void gemv_rows(const GemvCtx& g, uint64_t n0, uint64_t n1) { gemv_dispatch<Gemv>(g, n0, n1); }

void gemv_f32_row(const float* wrow, const GemvCtx& g, uint64_t n) {
  const uint64_t K = g.w->k;
  for (uint64_t m = 0; m < g.m; ++m) {
    const float* x = g.x + m * K;
    __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (uint64_t c = 0; c < g.k64; c += 64)
      for (int j = 0; j < 8; ++j)
        a[j & 3] = _mm256_fmadd_ps(_mm256_loadu_ps(x + c + 8 * j), _mm256_loadu_ps(wrow + c + 8 * j), a[j & 3]);
    float t = 0.0f;
    for (uint64_t k = g.k64; k < K; ++k) t = zt_fma(x[k], wrow[k], t);
    gemv_store(g, m, n, zt_add(hsum8(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]))), t));
  }
}

}  // namespace avx2
}  // namespace zt
