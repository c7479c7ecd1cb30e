// AVX2 perturbation kernels, bit-identical to perturb_range_ref / perturb_gather_ref: the same
// Philox words, the same Box-Muller and rounding steps, and one fma per element.
#include "cpu_features.h"
#include "direction_avx2.h"
#include "perturb.h"

#include <string.h>

namespace zt {
namespace avx2 {
namespace {

// keep multiplies first (weight decay; 1 is exact), as perturbed_decayed does.
static inline void fma_store(float* o, __m256 alpha, __m256 z, __m256 keep) {
  _mm256_storeu_ps(o, _mm256_fmadd_ps(alpha, z, _mm256_mul_ps(_mm256_loadu_ps(o), keep)));
}

// Gaussian (optionally QuZO-rounded), a 64-element normal-stream block at a time (normal64: one
// Philox, four overlapped Box-Muller evaluations; QuZO adds one Philox of the SR stream). Partial blocks at the ends are generated whole and applied lane by
// lane: a scalar direction_at per element costs a Philox block and a Box-Muller pair each, which is
// what rows starting off a block boundary (K = 688, 256-wide slices) used to pay.
// The avx512 path: gauss_fma_wide (direction_avx2.h), the same fma per element.
void gauss_range(float* w, uint64_t begin, uint64_t end, const Direction& d, float alpha, float keep) {
  if (begin >= end) return;
  if (use_avx512() && end - begin >= 128) return gauss_fma_wide(d, begin, end, w, w, alpha, keep);
  const __m256 vk = _mm256_set1_ps(keep), va = _mm256_set1_ps(alpha);
  const RngKey key = dir_key(d), sr_key{d.seed, d.stream, d.sr_purpose};
  const __m256 inv = _mm256_set1_ps(d.bits ? dir_grid_inv_step(d.bits) : 0.0f), step = _mm256_set1_ps(d.bits ? dir_grid_step(d.bits) : 0.0f);
  for (uint64_t b = begin >> 6; b <= (end - 1) >> 6; ++b) {
    __m256 n[8];
    gauss_direction64(key, sr_key, d.bits, inv, step, b, n);
    const uint64_t e0 = b << 6;
    for (int q = 0; q < 8; ++q) {  // elements e0 + 8q + l
      const uint64_t e = e0 + 8 * q;
      if (e + 8 <= begin || e >= end) continue;
      float* o = w + (int64_t)(e - begin);
      if (e >= begin && e + 8 <= end) {
        fma_store(o, va, n[q], vk);
        continue;
      }
      alignas(32) float zz[8];
      _mm256_store_ps(zz, n[q]);
      for (int l = 0; l < 8; ++l)
        if (e + l >= begin && e + l < end) o[l] = perturbed_decayed(o[l], keep, alpha, zz[l]);
    }
  }
}

// Elements [lo, hi) of one bit-stream block (the partial blocks at a call's ends): the block's
// words from one vector Philox instead of a scalar Philox per element.
void rademacher_partial(float* o, uint64_t lo, uint64_t hi, RngKey key, float alpha, float keep) {
  if (lo >= hi) return;
  alignas(32) uint32_t words[4][8];
  Words8 r = philox8(key, bit_counter(lo) & ~(uint64_t)7);
  for (int k = 0; k < 4; ++k) _mm256_store_si256((__m256i*)words[k], r.w[k]);
  for (uint64_t e = lo; e < hi; ++e) {
    uint32_t bit = (words[bit_slot_word(e)][e & 7] >> bit_slot_bit(e)) & 1u;
    o[e - lo] = perturbed_decayed(o[e - lo], keep, alpha, bit ? -1.0f : 1.0f);
  }
}

// One whole 1024-element bit-stream block: bit j of lane l of word k is element 256k + 8j + l, so
// each 8-element update takes one shift of the word.
static inline void rademacher_block(float* o, const Words8& r, __m256 pos, __m256 neg, __m256 keep) {
  for (int k = 0; k < 4; ++k) {
    const __m256i bits = r.w[k];
    float* p = o + 256 * k;
#pragma GCC unroll 32
    for (int j = 0; j < 32; ++j) {  // blendv reads only the sign bit: bit j shifted to the top
      __m256 s = _mm256_blendv_ps(pos, neg, _mm256_castsi256_ps(_mm256_slli_epi32(bits, 31 - j)));
      _mm256_storeu_ps(p + 8 * j, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(p + 8 * j), keep), s));
    }
  }
}

// Rademacher: memory-bound. The Philox words of 4 blocks are made first, so the 16 KiB of loads
// and stores that follow stream without waiting on Philox latency (93-95 % of the in-place
// bandwidth on Zen 1 instead of 88 % with one block at a time).
void rademacher_range(float* w, uint64_t begin, uint64_t end, const Direction& d, float alpha, float keep) {
  const RngKey key = dir_key(d);
  const uint64_t a = (begin + 1023) / 1024 * 1024, z = end / 1024 * 1024;
  if (a >= z) {  // within one block, or across one block boundary
    uint64_t mid = a < end ? a : end;
    rademacher_partial(w, begin, mid, key, alpha, keep);
    return rademacher_partial(w + (mid - begin), mid, end, key, alpha, keep);
  }
  rademacher_partial(w, begin, a, key, alpha, keep);
  const __m256 vk = _mm256_set1_ps(keep);
  float* o = w + (a - begin);
  // fma(alpha, +-1, w * keep) == w * keep + (+-alpha): one rounding after the product either way.
  const __m256 pos = _mm256_set1_ps(alpha), neg = _mm256_set1_ps(-alpha);
  uint64_t b = a / 1024;
  const uint64_t bz = z / 1024;
  for (; b + 4 <= bz; b += 4, o += 4096) {
    Words8 r[4];
    for (int q = 0; q < 4; ++q) r[q] = philox8(key, (b + q) << 3);
    for (int q = 0; q < 4; ++q) rademacher_block(o + 1024 * q, r[q], pos, neg, vk);
  }
  for (; b < bz; ++b, o += 1024) rademacher_block(o, philox8(key, b << 3), pos, neg, vk);
  rademacher_partial(o, z, end, key, alpha, keep);
}

// Lane-wise choice of word sel (0..3) of w.
static inline __m256i select_word(const Words8& w, __m256i sel) {
  const __m256i one = _mm256_set1_epi32(1), two = _mm256_set1_epi32(2);
  __m256i b0 = _mm256_cmpeq_epi32(_mm256_and_si256(sel, one), one);
  __m256i b1 = _mm256_cmpeq_epi32(_mm256_and_si256(sel, two), two);
  return _mm256_blendv_epi8(_mm256_blendv_epi8(w.w[0], w.w[1], b0), _mm256_blendv_epi8(w.w[2], w.w[3], b0), b1);
}

}  // namespace

// Rademacher codes: the sign table (rademacher_signs) a window at a time, each bit to +1 / -1.
static void rademacher_codes(int8_t* out, uint64_t begin, uint64_t end, const Direction& d) {
  constexpr uint64_t kWindow = 4096;
  uint8_t signs[kWindow / 8 + 2];
  const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128), one = _mm256_set1_epi32(1);
  for (uint64_t w0 = begin; w0 < end; w0 += kWindow) {
    const uint64_t w1 = end - w0 < kWindow ? end : w0 + kWindow;
    rademacher_signs(dir_key(d), w0, w1, signs);
    const uint8_t* s = signs - (w0 >> 3);  // s[g]: the byte of group g
    uint64_t e = w0;
    for (; e < w1 && (e & 7); ++e) out[e - begin] = (s[e >> 3] >> (e & 7)) & 1 ? -1 : 1;
    for (; e + 8 <= w1; e += 8) {  // 1 - 2 bit, packed to bytes
      const __m256i bit = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(s[e >> 3]), lane), lane);
      const __m256i c = _mm256_or_si256(bit, one);  // -1 (all ones) or +1
      const __m128i h = _mm_packs_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
      _mm_storel_epi64((__m128i*)(out + (e - begin)), _mm_packs_epi16(h, h));
    }
    for (; e < w1; ++e) out[e - begin] = (s[e >> 3] >> (e & 7)) & 1 ? -1 : 1;
  }
}

// Codes of whole 64-element normal-stream blocks (normal64 and one SR Philox, as gauss_range),
// converted (exact small integers) and packed to bytes in element order; the partial blocks at
// the ends are generated whole and copied in part.
void direction_codes(int8_t* out, uint64_t begin, uint64_t end, const Direction& d) {
  if (begin >= end) return;
  if (d.dist == kDirRademacher) return rademacher_codes(out, begin, end, d);
  const RngKey key = dir_key(d), sr_key{d.seed, d.stream, d.sr_purpose};
  const __m256 inv = _mm256_set1_ps(dir_grid_inv_step(d.bits));
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (uint64_t b = begin >> 6; b <= (end - 1) >> 6; ++b) {
    __m256 n[8];
    normal64(key, b, n);
    const Words8 u = philox8(sr_key, b << 3);
    __m256i c[8];
    for (int q = 0; q < 8; ++q) c[q] = _mm256_cvttps_epi32(quzo_code8(n[q], u.w[q & 3], q >> 2, inv));
    alignas(32) int8_t bytes[64];
    for (int h = 0; h < 2; ++h) {  // elements 32h .. 32h + 31 from c[4h .. 4h + 3]
      __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(c[4 * h], c[4 * h + 1]), _mm256_packs_epi32(c[4 * h + 2], c[4 * h + 3]));
      _mm256_store_si256((__m256i*)(bytes + 32 * h), _mm256_permutevar8x32_epi32(p, order));
    }
    const uint64_t e0 = b << 6, lo = e0 > begin ? e0 : begin, hi = e0 + 64 < end ? e0 + 64 : end;
    if (lo == e0 && hi == e0 + 64) {
      _mm256_storeu_si256((__m256i*)(out + (e0 - begin)), _mm256_load_si256((const __m256i*)bytes));
      _mm256_storeu_si256((__m256i*)(out + (e0 - begin) + 32), _mm256_load_si256((const __m256i*)(bytes + 32)));
    } else {
      memcpy(out + (lo - begin), bytes + (lo - e0), hi - lo);
    }
  }
}

void perturb_range(float* w, uint64_t begin, uint64_t end, const Direction& d, float alpha, float keep) {
  if (d.dist == kDirRademacher) rademacher_range(w, begin, end, d, alpha, keep);
  else gauss_range(w, begin, end, d, alpha, keep);
}

namespace {

// Sparse: elements rarely share a Philox block, so each lane runs its own counter. The directions
// of idx[j .. j + 8) for every whole group of 8 (f(j, zv)); returns where the whole groups end.
template <class F>
size_t gather_each(const uint32_t* idx, size_t m, const Direction& d, uint64_t first, F&& f) {
  const RngKey key = dir_key(d), sr_key{d.seed, d.stream, d.sr_purpose};
  const bool rad = d.dist == kDirRademacher, quzo = d.bits && !rad;
  const __m256 inv = _mm256_set1_ps(quzo ? dir_grid_inv_step(d.bits) : 0.0f), step = _mm256_set1_ps(quzo ? dir_grid_step(d.bits) : 0.0f);
  const __m256i first_lo = _mm256_set1_epi32((int)(uint32_t)first), first_hi = _mm256_set1_epi32((int)(uint32_t)(first >> 32));
  const __m256i flip = _mm256_set1_epi32((int)0x80000000u), seven = _mm256_set1_epi32(7), three = _mm256_set1_epi32(3);
  size_t j = 0;
  for (; j + 8 <= m; j += 8) {
    // element e = first + idx as 64-bit (lo, hi): carry where the 32-bit sum wrapped (unsigned lo < idx)
    const __m256i i = _mm256_loadu_si256((const __m256i*)(idx + j));
    const __m256i lo = _mm256_add_epi32(first_lo, i);
    const __m256i hi = _mm256_sub_epi32(first_hi, _mm256_cmpgt_epi32(_mm256_xor_si256(i, flip), _mm256_xor_si256(lo, flip)));
    // counters (e the element): normal (and QuZO SR) stream ((e >> 6) << 3) | (e & 7) =
    // ((e >> 3) & ~7) | (e & 7); bit stream with e >> 10 (>> 7)
    const int sh = rad ? 7 : 3;
    const __m256i shifted = _mm256_or_si256(_mm256_srl_epi32(lo, _mm_cvtsi32_si128(sh)), _mm256_sll_epi32(hi, _mm_cvtsi32_si128(32 - sh)));
    const __m256i c_lo = _mm256_or_si256(_mm256_andnot_si256(seven, shifted), _mm256_and_si256(lo, seven));
    const __m256i c_hi = _mm256_srl_epi32(hi, _mm_cvtsi32_si128(sh));
    Words8 r = philox8_at(key, c_lo, c_hi);
    const __m256i slot = _mm256_and_si256(_mm256_srli_epi32(lo, 3), three);  // word (e >> 3) & 3 of the word / normal streams
    __m256 zv;
    if (rad) {  // word (e >> 8) & 3, bit (e >> 3) & 31
      __m256i wd = select_word(r, _mm256_and_si256(_mm256_srli_epi32(lo, 8), three));
      __m256i sign = _mm256_slli_epi32(_mm256_srlv_epi32(wd, _mm256_and_si256(_mm256_srli_epi32(lo, 3), _mm256_set1_epi32(31))), 31);
      zv = _mm256_xor_ps(_mm256_set1_ps(1.0f), _mm256_castsi256_ps(sign));
    } else {
      // word (e >> 3) & 3 is the Box-Muller pair, output (e >> 5) & 1
      __m256 n0, n1;
      box_muller8(select_word(r, slot), &n0, &n1);
      const __m256i one = _mm256_set1_epi32(1);
      zv = _mm256_blendv_ps(n0, n1, _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(_mm256_srli_epi32(lo, 5), one), one)));
      if (quzo) {  // SR half (e >> 5) & 1 of the same counter's word in the SR stream
        const __m256i sr = select_word(philox8_at(sr_key, c_lo, c_hi), slot);
        const __m256 z0 = quzo8(zv, sr, 0, inv, step), z1 = quzo8(zv, sr, 1, inv, step);
        zv = _mm256_blendv_ps(z0, z1, _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(_mm256_srli_epi32(lo, 5), one), one)));
      }
    }
    f(j, zv);
  }
  return j;
}

}  // namespace

// 8 indices per step, then one fma per listed element.
void perturb_gather(float* w, const uint32_t* idx, size_t m, const Direction& d, uint64_t first, float alpha) {
  alignas(32) float z[8];
  const size_t j = gather_each(idx, m, d, first, [&](size_t j, __m256 zv) {
    // Scattered indices touch a new cache line each: fetch the weights of 4 batches ahead.
    if (j + 40 <= m)
      for (int l = 0; l < 8; ++l) _mm_prefetch((const char*)(w + idx[j + 32 + l]), _MM_HINT_T0);
    _mm256_store_ps(z, zv);
    for (int l = 0; l < 8; ++l) {
      float* p = w + idx[j + l];
      *p = perturbed(*p, alpha, z[l]);
    }
  });
  perturb_gather_ref(w, idx + j, m - j, d, first, alpha);
}

void gather_directions(const uint32_t* idx, size_t m, const Direction& d, uint64_t first, float* z) {
  const size_t j = gather_each(idx, m, d, first, [&](size_t j, __m256 zv) { _mm256_storeu_ps(z + j, zv); });
  for (size_t i = j; i < m; ++i) z[i] = direction_at(d, first + idx[i]);
}

void rademacher_signs(RngKey key, uint64_t i0, uint64_t i1, uint8_t* signs) {
  if (i1 <= i0) return;
  const uint64_t g0 = i0 >> 3, g1 = (i1 + 7) >> 3;  // groups of 8 elements: one byte each
  for (uint64_t g = g0; g < g1;) {
    const uint64_t b = g >> 7, end = (b + 1) << 7 < g1 ? (b + 1) << 7 : g1;  // 128 groups per Philox block
    const Words8 r = philox8(key, b << 3);
    for (; g < end; ++g) {
      const __m256i top = _mm256_sll_epi32(r.w[(g >> 5) & 3], _mm_cvtsi32_si128((int)(31 - (g & 31))));
      signs[g - g0] = (uint8_t)_mm256_movemask_ps(_mm256_castsi256_ps(top));
    }
  }
}

}  // namespace avx2
}  // namespace zt
