// Tiles of the direction streams and the vector IO of their runs, shared by the perturbation,
// quantized-update and perturbed-weight (W') kernels. Plain ZT_HD code: the same per-thread bodies
// run on the GPU and, one loop iteration per thread, on the host (the ...Emulated ops).
//
// Stream layouts (philox.h): normal stream, counter 8B + l (l < 8) word k gives elements
// 64B + 8k + l (Box-Muller output 0) and 64B + 32 + 8k + l (output 1); bit stream, counter 8B + l
// word k bit b gives element 1024B + 256k + 8b + l.
#pragma once
#include "../../native/common/direction.h"
#include "../../native/common/formats.h"  // QFormat: the code widths of runs

#include <type_traits>

#if !defined(__CUDA_ARCH__)
#include <string.h>
#endif

namespace zt {
namespace cuda {

// A tile is the 8192 stream elements [E0, E0 + 8192) (E0 a multiple of 8192) of one CUDA block of
// kTileThreads: its threads first compute the tile's Philox blocks into shared memory (tile_stage),
// then, after a barrier, each takes pairs of runs of 4 elements. Pair p is the runs at tile offsets
// o = pair_offset(p) and o + 32: under the normal stream the two Box-Muller outputs of the same four
// words (no normal computed twice), and 32 consecutive pairs are four whole 128-byte lines of fp32.
// On the host (the ...Emulated ops) the same code runs one thread at a time: all stages, then all pairs.
static constexpr int kTileThreads = 256, kTilePairs = 1024, kPairsPerThread = kTilePairs / kTileThreads;
static constexpr int kTileShift = 13;
static constexpr uint64_t kTileElems = (uint64_t)1 << kTileShift;

// Tiles covering elements [first, first + n) (n > 0).
struct Tiles {
  uint64_t e0, count;
};
static inline Tiles tiles_for(uint64_t first, uint64_t n) {
  const uint64_t t0 = first >> kTileShift;
  return {t0 << kTileShift, ((first + n - 1) >> kTileShift) - t0 + 1};
}

// The direction words of a tile: normal stream, 1024 counters x 4 words (bit stream: the first 64
// counters). The +1 column makes a warp's reads of word k from 32 pairs conflict-free.
struct TileWords {
  uint32_t z[4][1025];
  uint32_t s[4][1025];  // the Gaussian direction's rounding words (QuZO grids, d.bits)
};
// The weight rounding words of a tile (quantized updates): 2048 counters of the word stream
// (random_word's layout: element o -> counter (o >> 5) * 8 + o % 8, word (o >> 3) % 4).
struct TileSr {
  uint32_t w[4][2049];
};

ZT_HD unsigned pair_offset(unsigned p) { return 64 * (p >> 3) + 4 * (p & 7); }

// Thread t's share of the tile's direction words.
ZT_HD void tile_stage(const Direction& d, uint64_t E0, unsigned t, TileWords& sm) {
  uint32_t w[4];
  if (d.dist == kDirRademacher) {
    if (t < 64) {
      philox_block(dir_key(d), (E0 >> 7) + t, w);  // bit stream: 8 counters per 1024 elements
      for (int k = 0; k < 4; ++k) sm.z[k][t] = w[k];
    }
    return;
  }
  for (unsigned c = t; c < 1024; c += kTileThreads) {  // normal stream: 8 counters per 64 elements
    philox_block(dir_key(d), (E0 >> 3) + c, w);
    for (int k = 0; k < 4; ++k) sm.z[k][c] = w[k];
    if (d.bits) {
      philox_block(dir_sr_key(d), (E0 >> 3) + c, w);
      for (int k = 0; k < 4; ++k) sm.s[k][c] = w[k];
    }
  }
}
ZT_HD void tile_stage_sr(RngKey key, uint64_t E0, unsigned t, TileSr& sm) {
  uint32_t w[4];
  for (unsigned c = t; c < 2048; c += kTileThreads) {
    philox_block(key, (E0 >> 2) + c, w);
    for (int k = 0; k < 4; ++k) sm.w[k][c] = w[k];
  }
}

// The directions of pair p: z[h][l] is element E0 + pair_offset(p) + 32 h + l.
ZT_HD void tile_pair_dirs(const Direction& d, uint64_t E0, unsigned p, const TileWords& sm, float z[2][4]) {
  const unsigned o = pair_offset(p);
  if (d.dist == kDirRademacher) {
    for (int h = 0; h < 2; ++h) {
      const unsigned oh = o + 32 * h, k = (oh >> 8) & 3, b = (oh >> 3) & 31, c = 8 * (oh >> 10) + (oh & 7);
      for (int l = 0; l < 4; ++l) z[h][l] = rademacher_bit(sm.z[k][c + l], b);
    }
    return;
  }
  const unsigned k = (o >> 3) & 3, c = 8 * (o >> 6) + (o & 7);
  for (int l = 0; l < 4; ++l) {
    float n0, n1;
    box_muller(sm.z[k][c + l], &n0, &n1);
    const uint32_t s = d.bits ? sm.s[k][c + l] : 0u;
    z[0][l] = gauss_direction_word(d, E0 + o + l, n0, s);
    z[1][l] = gauss_direction_word(d, E0 + o + 32 + l, n1, s);
  }
}
// The rounding words of the run at tile offset o.
ZT_HD void tile_run_sr(unsigned o, const TileSr& sm, uint32_t w[4]) {
  const unsigned k = (o >> 3) & 3, c = 8 * (o >> 5) + (o & 7);
  for (int l = 0; l < 4; ++l) w[l] = sm.w[k][c + l];
}

// floor(n / d) as a multiply-high by ceil(2^32 / d), exact while n * d <= 2^32 (n = q d + r:
// n ceil(2^32 / d) / 2^32 < q + (d - 1) / d + n / 2^32 < q + 1). A 32-bit division is ~20
// instructions on a GPU, a 64-bit one ~70.
struct FastDiv {
  uint32_t d, m;
};
ZT_HD FastDiv fast_div(uint32_t d) { return {d, d > 1 ? (uint32_t)((((uint64_t)1 << 32) + d - 1) / d) : 0u}; }
ZT_HD uint32_t div_of(FastDiv f, uint32_t n) {
#if defined(__CUDA_ARCH__)
  return f.d == 1 ? n : __umulhi(n, f.m);
#else
  return f.d == 1 ? n : (uint32_t)(((uint64_t)n * f.m) >> 32);
#endif
}

// Row and column of the elements of a tile of a [rows, K] matrix: one division per tile, then
// fast divisions of c0 + o < K + 8192 by K (exact when K (K + 8192) <= 2^32; else `fast` is false
// and each run divides).
struct TileRows {
  uint64_t row0, c0;
  FastDiv k;
  bool fast;
};
ZT_HD bool tile_rows_fast(uint64_t K) { return K > 0 && K * (K + kTileElems) <= ((uint64_t)1 << 32); }
ZT_HD TileRows tile_rows(uint64_t E0, uint64_t K, bool fast) {
  TileRows t;
  t.fast = fast;
  t.row0 = E0 / K, t.c0 = E0 - t.row0 * K;
  t.k = fast ? fast_div((uint32_t)K) : FastDiv{1, 0};
  return t;
}
ZT_HD void tile_row_col(const TileRows& t, uint64_t K, unsigned o, uint64_t* row, uint64_t* col) {
  if (t.fast) {
    const uint32_t n = (uint32_t)(t.c0 + o), q = div_of(t.k, n);
    *row = t.row0 + q, *col = n - q * (uint32_t)K;
  } else {
    const uint64_t n = t.c0 + o, q = n / K;
    *row = t.row0 + q, *col = n - q * K;
  }
}

// The 4 codes of a run as one access (2 bytes of nibbles, 4 of bytes, 8 of 16-bit codes), in
// q_load_code's little-endian layout; p must be aligned to its size on the GPU.
ZT_HD unsigned code_bits(QFormat f) { return qformat_is_4bit(f) ? 4 : (f == QFormat::Bf16 || f == QFormat::Fp16) ? 16 : 8; }
ZT_HD uint64_t load_run(const uint8_t* p, unsigned bytes) {
#if defined(__CUDA_ARCH__)
  return bytes == 2 ? *(const uint16_t*)p : bytes == 4 ? *(const uint32_t*)p : *(const uint64_t*)p;
#else
  uint64_t v = 0;
  memcpy(&v, p, bytes);  // little-endian hosts only, like the GPU
  return v;
#endif
}
ZT_HD void store_run(uint8_t* p, unsigned bytes, uint64_t v) {
#if defined(__CUDA_ARCH__)
  if (bytes == 2) *(uint16_t*)p = (uint16_t)v;
  else if (bytes == 4) *(uint32_t*)p = (uint32_t)v;
  else *(uint64_t*)p = v;
#else
  memcpy(p, &v, bytes);
#endif
}

// Weight formats fixed at compile time for the run kernels (their per-element switch on a runtime
// format costs more than the element's arithmetic): kF32Weights, a QFormat's value, or kAnyFormat
// (read from the tensor at run time).
constexpr int kF32Weights = -1, kAnyFormat = -2;
template <int F>
ZT_HD bool is_f32_weights(bool runtime) { return F == kF32Weights || (F == kAnyFormat && runtime); }
template <int F>
ZT_HD QFormat format_of(const QTensorView& q) { return F >= 0 ? (QFormat)F : q.format; }
// fn(std::integral_constant<int, F>) for the formats of 7B-scale training (fp32, int8, int4, bf16);
// kAnyFormat for the others.
template <class Fn>
void with_weight_format(bool f32, QFormat f, Fn&& fn) {
  if (f32) fn(std::integral_constant<int, kF32Weights>());
  else if (f == QFormat::Int8) fn(std::integral_constant<int, (int)QFormat::Int8>());
  else if (f == QFormat::Int4) fn(std::integral_constant<int, (int)QFormat::Int4>());
  else if (f == QFormat::Bf16) fn(std::integral_constant<int, (int)QFormat::Bf16>());
  else fn(std::integral_constant<int, kAnyFormat>());
}

// 16-byte loads and stores of 4 floats (the device pointer must be 16-byte aligned).
struct F4 {
  float v[4];
};
ZT_HD F4 load4(const float* p) {
  F4 r;
#if defined(__CUDA_ARCH__)
  const float4 t = *reinterpret_cast<const float4*>(p);
  r.v[0] = t.x, r.v[1] = t.y, r.v[2] = t.z, r.v[3] = t.w;
#else
  memcpy(r.v, p, 16);
#endif
  return r;
}
ZT_HD void store4(float* p, const F4& r) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<float4*>(p) = make_float4(r.v[0], r.v[1], r.v[2], r.v[3]);
#else
  memcpy(p, r.v, 16);
#endif
}

}  // namespace cuda
}  // namespace zt
