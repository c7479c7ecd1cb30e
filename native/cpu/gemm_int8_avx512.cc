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
// GCC 12 warns inside its own headers (the undefined pass-through operands of the unmasked forms).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#include <string.h>

#include <type_traits>

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
  if (panels[0].dir) {
    // step 2' on every panel at once (MR x NP chains): codes u_z = q_z + 8,
    // S = sum u_z * q_x - 8 * sum(q_x over the chunk)
    const uint8_t* uz[NP];
    for (int i = 0; i < NP; ++i) uz[i] = (const uint8_t*)panels[i].dir->codes;
    const uint64_t gz4 = kAccChunk / 4, chunks = dir_chunks(p.K);
    for (uint64_t j = 0; j < chunks; ++j) {
      const uint64_t s0 = j * gz4, s1 = p.K4 < s0 + gz4 ? p.K4 : s0 + gz4;
      __m512i s[MR][NP];
      dot_steps<MR, NP>(q, uz, s0, s1, s);
      for (int i = 0; i < NP; ++i) {
        const __m512 sc = _mm512_load_ps(panels[i].dir->scales + j * 16);
        for (int r = 0; r < MR; ++r) {
          const __m512i t = _mm512_sub_epi32(s[r][i], _mm512_set1_epi32(kInt4SymZero * a.csum[(m0 + r) * chunks + j]));
          accf[r][i] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(t), accf[r][i]);
        }
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


// ---- streaming GEMV (M <= gemv_max_m: 12) -----------------------------------------------------------
// Each 64-element chunk of a weight row is one vpdpbusd per activation row: int8 as w + 128 against
// the row's q, int4 as its 32 bytes unpacked to [low nibbles | high nibbles] against ActQ::qeo (the
// same even / odd order). R = 16 / M weight rows per block give R * M <= 16 int32 accumulators (one per
// weight row and activation row), reduced together at the end of each accumulation group by one
// transpose-add tree (groups of 32: two per chunk, split by the tree's third level); then
// S = sum − zp · gsum and acc = fma(s, float(S), acc) on 16 lanes at once.
// The integer sums are exact, so the bits equal the scalar and AVX2 GEMVs'.

// b[k] for k < 4: in each 128-bit block, that block's sums of v[4k .. 4k + 3] (the first two levels
// of the transpose-add tree).
inline void block_sums16(const __m512i* v, __m512i* b) {
  __m512i a[8];
  for (int k = 0; k < 8; ++k)
    a[k] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * k], v[2 * k + 1]), _mm512_unpackhi_epi32(v[2 * k], v[2 * k + 1]));
  for (int k = 0; k < 4; ++k)
    b[k] = _mm512_add_epi32(_mm512_unpacklo_epi64(a[2 * k], a[2 * k + 1]), _mm512_unpackhi_epi64(a[2 * k], a[2 * k + 1]));
}
// The last level: lane i of the result = v[i]'s sum over the blocks gathered in c[0], c[1].
inline __m512i fold_blocks16(const __m512i* c) {
  return _mm512_add_epi32(_mm512_shuffle_i32x4(c[0], c[1], 0x88), _mm512_shuffle_i32x4(c[0], c[1], 0xDD));
}

// v[i] -> lane i of the result: the sum of v[i]'s 16 lanes.
inline __m512i reduce16(const __m512i* v) {
  __m512i b[4], c[2];
  block_sums16(v, b);
  for (int k = 0; k < 2; ++k)  // 128-bit lanes: [b0 L0+L1 | b0 L2+L3 | b1 L0+L1 | b1 L2+L3]
    c[k] = _mm512_add_epi32(_mm512_shuffle_i32x4(b[2 * k], b[2 * k + 1], 0x88), _mm512_shuffle_i32x4(b[2 * k], b[2 * k + 1], 0xDD));
  return fold_blocks16(c);
}

// reduce16 for chunks that hold two accumulation groups of 32 (the first group's lanes: int8 the
// lower 256 bits, int4 the 128-bit blocks 0 and 2, its low and high nibbles of bytes 0-15): *g0 and
// *g1 get, in lane i, the sum of v[i]'s lanes of each group. The tree of reduce16 with its third
// level split by block instead of adding.
template <bool kInt4>
inline void reduce16_halves(const __m512i* v, __m512i* g0, __m512i* g1) {
  __m512i b[4], c0[2], c1[2];
  block_sums16(v, b);
  constexpr int kFirst = kInt4 ? 0x88 : 0x44, kSecond = kInt4 ? 0xDD : 0xEE;  // blocks (0, 2) / (1, 3), or (0, 1) / (2, 3)
  for (int k = 0; k < 2; ++k) {
    c0[k] = _mm512_shuffle_i32x4(b[2 * k], b[2 * k + 1], kFirst);
    c1[k] = _mm512_shuffle_i32x4(b[2 * k], b[2 * k + 1], kSecond);
  }
  *g0 = fold_blocks16(c0);
  *g1 = fold_blocks16(c1);
}

// tile[g] lane i = scales[sidx[i] + j0 + g] for g < ng (ng <= 16): each lane's run of group scales
// loaded and transposed. A 16-lane gather per group cost ~10 % of the M = 1 GEMV in cache at
// groups of 128, and more from DRAM (4096², 2 threads: 33 GB/s with it, 38-43 without).
inline void scale_tile(const float* scales, const int32_t* sidx, uint64_t j0, uint64_t ng, __m512* tile) {
  const __mmask16 mask = (__mmask16)((1u << ng) - 1);
  __m512 r[16], a[16], b[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_maskz_loadu_ps(mask, scales + sidx[i] + j0);
  for (int i = 0; i < 16; i += 2) {  // 2x2 blocks of single floats
    a[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    a[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4)
    for (int k = 0; k < 2; ++k) {  // 4x4 blocks
      b[i + k] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a[i + k]), _mm512_castps_pd(a[i + 2 + k])));
      b[i + 2 + k] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a[i + k]), _mm512_castps_pd(a[i + 2 + k])));
    }
  for (int i = 0; i < 16; i += 8)
    for (int k = 0; k < 4; ++k) {  // 128-bit blocks of 8 rows
      a[i + k] = _mm512_shuffle_f32x4(b[i + k], b[i + 4 + k], 0x88);
      a[i + 4 + k] = _mm512_shuffle_f32x4(b[i + k], b[i + 4 + k], 0xDD);
    }
  for (int k = 0; k < 8; ++k) {
    r[k] = _mm512_shuffle_f32x4(a[k], a[8 + k], 0x88);
    r[8 + k] = _mm512_shuffle_f32x4(a[k], a[8 + k], 0xDD);
  }
  // r[x] holds, in lane i, the scale of group j0 + g(x) for row i; g(x) from the network above
  static const int kGroupOf[16] = {0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15};
  for (int x = 0; x < 16; ++x) tile[kGroupOf[x]] = r[x];
}

// Weight rows [n, n + nr) (nr <= R; missing rows repeat the last one, their results are dropped),
// all M activation rows; lane i of the 16 is weight row i / M, activation row i % M.
template <bool kInt4, int M>
void gemv_block(const IntPlan& p, uint64_t n, uint64_t nr, uint64_t last) {
  constexpr int R = 16 / M;  // M <= 12
  const ActQ& a = *p.a;
  const QTensorView& w = p.w;
  const uint64_t row_bytes = kInt4 ? (p.K + 1) / 2 : p.K, chunk_bytes = kInt4 ? 32 : 64;
  const uint64_t chunks = a.Kp / 64, full = row_bytes / chunk_bytes;  // chunks [full, chunks) are partial
  const uint64_t per_group = p.G == 1 ? chunks : p.ga / 64;
  const uint8_t* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = w.data + (n + (r < (int)nr ? r : nr - 1)) * row_bytes;
  const int8_t* x[M];
  for (int m = 0; m < M; ++m) x[m] = (kInt4 ? a.qeo : a.q) + m * a.Kp;
  // the next block streams in while this one is computed, as one sequential stream
  const uint8_t* ahead = w.data + (n + R <= last ? n + R : last) * row_bytes;
  const uint8_t* ahead_end = w.data + (last + 1) * row_bytes;
  // lane i: its weight row's scale index for group 0 (+ j per group when grouped), zero-point term
  const bool grouped = w.group != 0 && w.group != w.cols;
  alignas(64) int32_t sidx[16];
  for (int i = 0; i < 16; ++i) sidx[i] = (int32_t)w_scale_index(w, n + (i / M < (int)nr ? i / M : nr - 1), 0);
  const __m512i sidx0 = _mm512_load_si512(sidx);
  __m512 acc = _mm512_setzero_ps();
  const __m512i low4 = _mm512_set1_epi8(0x0f), bias128 = _mm512_set1_epi8((char)0x80);
  __m512 tile[16];
  __m512i s[16];
  // grouped scales: the next block's stream in beside its codes, a share per group
  const uint64_t next_n = n + R <= last ? n + R : last + 1, next_rows = n + 2 * R <= last + 1 ? R : last + 1 - next_n;
  const char* sahead = grouped && next_n <= last ? reinterpret_cast<const char*>(w.scales + next_n * qt_groups_per_row(w)) : nullptr;
  const uint64_t sbytes = sahead ? next_rows * qt_groups_per_row(w) * sizeof(float) : 0;
  const uint64_t sstep = (sbytes / p.G + 64) & ~(uint64_t)63;
  // One chunk; the row's last, partial chunk (masked loads) in a loop of its own, so that the main
  // loop has no branch and keeps every accumulator in a register.
  auto chunk = [&](uint64_t c, auto tail_tag) __attribute__((always_inline)) {
    constexpr bool tail = decltype(tail_tag)::value;
    for (uint64_t b = 0; b < R * chunk_bytes; b += 64) {
      const uint8_t* pf = ahead + c * R * chunk_bytes + b;
      if (pf < ahead_end) _mm_prefetch(reinterpret_cast<const char*>(pf), _MM_HINT_T0);
    }
    // R > 1: each activation chunk feeds R weight rows, loaded once; R = 1: read in the vpdpbusd
    // (16 accumulators + 16 preloaded chunks would not fit the 32 registers)
    __m512i xv[R > 1 ? M : 1];
    if (R > 1)
      for (int m = 0; m < M; ++m) xv[m] = _mm512_load_si512(x[m] + c * 64);
    for (int r = 0; r < R; ++r) {
      const uint8_t* src = rows[r] + c * chunk_bytes;
      __m512i z;
      if (kInt4) {
        const __m256i b = !tail ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src))
                                : _mm256_maskz_loadu_epi8((__mmask32)((1ull << (row_bytes - c * 32)) - 1), src);
        const __m512i bb = _mm512_broadcast_i64x4(b);  // low nibbles in the lower half, high in the upper
        z = _mm512_and_si512(_mm512_mask_srli_epi16(bb, 0xFFFF0000u, bb, 4), low4);
      } else {
        const __m512i b = !tail ? _mm512_loadu_si512(src)
                                : _mm512_maskz_loadu_epi8((__mmask64)((1ull << (row_bytes - c * 64)) - 1), src);
        z = _mm512_xor_si512(b, bias128);  // q + 128, unsigned
      }
      for (int m = 0; m < M; ++m) dpbusd(s[r * M + m], z, R > 1 ? xv[m] : _mm512_load_si512(x[m] + c * 64));
    }
  };
  // Group j's exact sums S (lane i: weight row i / M, activation row i % M) into acc.
  auto flush = [&](uint64_t j, __m512i S) __attribute__((always_inline)) {
    // the offset: zp * gsum with zp = 128 (int8), 8 (symmetric int4) or the group's zero-point
    static_assert(kInt4SymZero == 8, "the shift below");
    __m512i gs;
    if (M == 1) {
      gs = _mm512_set1_epi32(a.gsum[j]);
    } else {
      alignas(64) int32_t g[16];
      for (int i = 0; i < 16; ++i) g[i] = a.gsum[(i % M) * p.G + j];
      gs = _mm512_load_si512(g);
    }
    if (kInt4 && w.zeros) {
      alignas(64) int32_t zp[16];
      for (int i = 0; i < 16; ++i) zp[i] = w.zeros[sidx[i] + (grouped ? j : 0)];
      S = _mm512_sub_epi32(S, _mm512_mullo_epi32(_mm512_load_si512(zp), gs));
    } else {
      S = _mm512_sub_epi32(S, _mm512_slli_epi32(gs, kInt4 ? 3 : 7));  // zp = 8 or 128
    }
    if (p.raw32) {  // one group: the exact sums
      alignas(64) int32_t v[16];
      _mm512_store_si512(v, S);
      for (uint64_t r = 0; r < nr; ++r)
        for (int m = 0; m < M; ++m) p.raw32[m * p.N + n + r] = v[r * M + m];
      return;
    }
    __m512 scale;
    if (grouped) {  // lane i: its weight row's scales, 16 groups at a time, transposed once
      for (uint64_t b = j * sstep; b < (j + 1) * sstep && b < sbytes; b += 64) _mm_prefetch(sahead + b, _MM_HINT_T0);
      if (j % 16 == 0) scale_tile(w.scales, sidx, j, p.G - j < 16 ? p.G - j : 16, tile);
      scale = tile[j % 16];
    } else {
      scale = _mm512_i32gather_ps(sidx0, w.scales, 4);
    }
    acc = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(S), acc);
  };
  if (p.ga == 32) {  // groups of 32: every chunk holds groups 2c and 2c + 1 (the last maybe only 2c)
    for (uint64_t c = 0; c < chunks; ++c) {
      for (int i = 0; i < 16; ++i) s[i] = _mm512_setzero_si512();
      if (c < full) chunk(c, std::false_type{});
      else chunk(c, std::true_type{});
      __m512i s0, s1;
      reduce16_halves<kInt4>(s, &s0, &s1);
      flush(2 * c, s0);
      if (2 * c + 1 < p.G) flush(2 * c + 1, s1);
    }
  } else {
    for (uint64_t j = 0; j < p.G; ++j) {
      for (int i = 0; i < 16; ++i) s[i] = _mm512_setzero_si512();
      const uint64_t c1 = (j + 1) * per_group < chunks ? (j + 1) * per_group : chunks;
      const uint64_t cf = full < c1 ? full : c1;
      uint64_t c = j * per_group;
      for (; c < cf; ++c) chunk(c, std::false_type{});
      for (; c < c1; ++c) chunk(c, std::true_type{});
      flush(j, reduce16(s));
    }
  }
  if (p.raw32) return;  // one group: its sums are stored
  alignas(64) float v[16];
  _mm512_store_ps(v, acc);
  for (uint64_t r = 0; r < nr; ++r)
    for (int m = 0; m < M; ++m) p.out[m * p.ldo + n + r] = epilogue(p.ep, v[r * M + m], m, n + r);
}

template <bool kInt4, int M>
void gemv_m(const IntPlan& p, uint64_t n0, uint64_t n1) {
  constexpr uint64_t R = 16 / M;
  for (uint64_t n = n0; n < n1; n += R) gemv_block<kInt4, M>(p, n, n1 - n < R ? n1 - n : R, n1 - 1);
}

template <bool kInt4>
void gemv_i(const IntPlan& p, uint64_t n0, uint64_t n1) {
  switch (p.a->M) {
    case 1: return gemv_m<kInt4, 1>(p, n0, n1);
    case 2: return gemv_m<kInt4, 2>(p, n0, n1);
    case 3: return gemv_m<kInt4, 3>(p, n0, n1);
    case 4: return gemv_m<kInt4, 4>(p, n0, n1);
    case 5: return gemv_m<kInt4, 5>(p, n0, n1);
    case 6: return gemv_m<kInt4, 6>(p, n0, n1);
    case 7: return gemv_m<kInt4, 7>(p, n0, n1);
    case 8: return gemv_m<kInt4, 8>(p, n0, n1);
    case 9: return gemv_m<kInt4, 9>(p, n0, n1);
    case 10: return gemv_m<kInt4, 10>(p, n0, n1);
    case 11: return gemv_m<kInt4, 11>(p, n0, n1);
    default: return gemv_m<kInt4, 12>(p, n0, n1);  // gemv_max_m
  }
}
}  // namespace

// act_quant.h's row quantization on 16 lanes: the same absmax (magnitude bits, NaN and Inf refused)
// and the same float steps per element (x * inv, round to nearest even, clamp, exact conversion).
bool act_quantize_row(const float* x, uint64_t K, uint64_t Kp, int8_t* q, float* scale) {
  const __m512i absmask = _mm512_set1_epi32(0x7fffffff);
  __m512i mx = _mm512_setzero_si512();
  uint64_t k = 0;
  for (; k + 16 <= K; k += 16) mx = _mm512_max_epu32(mx, _mm512_and_si512(_mm512_loadu_si512((const void*)(x + k)), absmask));
  const __mmask16 tail = (__mmask16)((1u << (K - k)) - 1);
  mx = _mm512_max_epu32(mx, _mm512_and_si512(_mm512_maskz_loadu_epi32(tail, x + k), absmask));
  const uint32_t mb = _mm512_reduce_max_epu32(mx);
  if (mb >= 0x7f800000u) return false;  // Inf or NaN (magnitude bits at or above Inf's)
  float inv, s = act_int8_scale(bits_to_f32(mb), &inv);
  const __m512 vinv = _mm512_set1_ps(inv), hi = _mm512_set1_ps((float)kInt8Max), lo = _mm512_set1_ps((float)-kInt8Max);
  auto codes = [&](__m512 v) {
    const __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(v, vinv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(r, lo), hi));
  };
  for (k = 0; k + 16 <= K; k += 16) _mm_storeu_si128((__m128i*)(q + k), _mm512_cvtepi32_epi8(codes(_mm512_loadu_ps(x + k))));
  _mm512_mask_cvtepi32_storeu_epi8(q + k, tail, codes(_mm512_maskz_loadu_ps(tail, x + k)));
  memset(q + K, 0, Kp - K);
  *scale = s;
  return true;
}

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

// Chunks of 64 hold whole accumulation groups or exactly two (groups of 32), and the scale
// indices are int32.
static bool gemv_vnni(const QTensorView& w, uint64_t G, uint64_t ga) {
  const uint64_t nscales = w.group == 0 ? 1 : (w.group == w.cols ? w.rows : w.rows * qt_groups_per_row(w));
  return (G == 1 || ga % 64 == 0 || ga == 32) && nscales <= INT32_MAX;
}

// Measured against the packed GEMM on 4096 x 4096 (2-core Zen 5): the GEMV wins up to M = 12 (int8;
// 1.4-2x at M = 8..12) and 8 (int4, and int8 with groups of 32, whose flushes come twice per chunk);
// beyond, its activation chunks (M x 64 bytes per weight chunk) stream from L2.
uint64_t gemv_max_m(const QTensorView& w, uint64_t G, uint64_t ga) {
  return !gemv_vnni(w, G, ga) ? kGemvMaxM : (w.format == QFormat::Int4 || (G > 1 && ga == 32)) ? 8 : 12;
}

// int4 with groups of 32 at M = 1 stays on the AVX2 GEMV: 8 rows per pass and two flushes per
// chunk for 16 rows cost the VNNI block more than its dot products save (4096² from DRAM, 2 threads:
// 68-74 % vs 61-64 % of the read ceiling; the VNNI block wins from M = 2: 44 -> 54 %, M = 4 25 -> 39 %).
void gemv_rows(const IntPlan& p, uint64_t n0, uint64_t n1) {
  const bool int4_g32_m1 = p.w.format == QFormat::Int4 && p.G > 1 && p.ga == 32 && p.a->M == 1;
  if (!gemv_vnni(p.w, p.G, p.ga) || int4_g32_m1) return avx2::gemv_rows(p, n0, n1);
  if (p.w.format == QFormat::Int4) return gemv_i<true>(p, n0, n1);
  return gemv_i<false>(p, n0, n1);
}

// One fma chain over k per output, as in the scalar and AVX2 tiles; named accumulators (GCC keeps
// an array of vectors in memory).
template <bool kPair>
static void tile_f32_step(const float* a, const float* p0, uint64_t kc, bool zero, float* c) {
  const float* p1 = p0 + kKcF32 * kPanelCols;
  float* c1 = c + kTileRowsF32 * kPanelCols;
#define ZT_ROW(r)                                                                  \
  __m512 c##r##0 = zero ? _mm512_setzero_ps() : _mm512_loadu_ps(c + r * 16), c##r##1; \
  if (kPair) c##r##1 = zero ? _mm512_setzero_ps() : _mm512_loadu_ps(c1 + r * 16);
  ZT_ROW(0) ZT_ROW(1) ZT_ROW(2) ZT_ROW(3) ZT_ROW(4) ZT_ROW(5)
#undef ZT_ROW
  for (uint64_t k = 0; k < kc; ++k) {
    const __m512 w0 = _mm512_loadu_ps(p0 + k * 16);
    const __m512 w1 = kPair ? _mm512_loadu_ps(p1 + k * 16) : w0;
    const float* ak = a + k * kTileRowsF32;
#define ZT_ROW(r)                                          \
  {                                                        \
    const __m512 av = _mm512_set1_ps(ak[r]);               \
    c##r##0 = _mm512_fmadd_ps(av, w0, c##r##0);            \
    if (kPair) c##r##1 = _mm512_fmadd_ps(av, w1, c##r##1); \
  }
    ZT_ROW(0) ZT_ROW(1) ZT_ROW(2) ZT_ROW(3) ZT_ROW(4) ZT_ROW(5)
#undef ZT_ROW
  }
#define ZT_ROW(r)                       \
  _mm512_storeu_ps(c + r * 16, c##r##0); \
  if (kPair) _mm512_storeu_ps(c1 + r * 16, c##r##1);
  ZT_ROW(0) ZT_ROW(1) ZT_ROW(2) ZT_ROW(3) ZT_ROW(4) ZT_ROW(5)
#undef ZT_ROW
}

void tile_f32(const float* a, const float* panels, int np, uint64_t kc, bool zero, float* c) {
  int i = 0;
  for (; i + 2 <= np; i += 2)
    tile_f32_step<true>(a, panels + i * kKcF32 * kPanelCols, kc, zero, c + i * kTileRowsF32 * kPanelCols);
  if (i < np) tile_f32_step<false>(a, panels + i * kKcF32 * kPanelCols, kc, zero, c + i * kTileRowsF32 * kPanelCols);
}

}  // namespace avx512
}  // namespace zt
