// Quantize / dequantize / stochastic rounding and the quantized ZO update over QTensors.
// Element numerics live once in native/common/quant_elem.h. Bulk kernels work on row segments
// (row r, columns [c0, c1)) with c0 a multiple of 256: scale groups (32/64/128) and the bytes of
// 4-bit rows never straddle two segments, so segments run in parallel without sharing a byte, and
// the split never depends on the thread count.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../common/quant_elem.h"

namespace zt {

// Where quantize gets its scales: kept from the QTensor (fixed grid), computed from the data, or
// all 1 (scale-free fp8; elementwise bf16/fp16/fp8 conversions).
enum class ScaleMode : int { Keep = 0, FromData = 1, One = 2 };

// Everything a segment kernel reads (plain data: the AVX2 units take it too).
struct QuantJob {
  QTensorView q;
  const float* x;     // quantize: input [rows, cols]
  float* y;           // dequantize: output [rows, cols]
  bool stream_out;    // dequantize: y is far larger than the caches (non-temporal stores allowed)
  bool stochastic;    // quantize: SR instead of RTNE
  bool group_scales;  // quantize: compute each group's scale (and zero-point) inside the segment
  bool asym;          // with group_scales: int4 asymmetric
  RngKey sr_key;      // SR words, element i = r * cols + c: kPurposeSrQuantize or kPurposeSrWeight
  Direction dir;      // update: z(i)
  float alpha;        // update: step along z
};

// --- bulk operations: threaded, scalar or AVX2; validate first and throw zt::Error -------------

// Quantizes x [rows, cols] into q. FromData writes q's scales (and zero-points when q.zeros is
// set); One writes scales of 1 (q.group must be 0). With fake_out, then writes dequantize(q) there
// (fake quantization; fake_out is untouched when quantizing fails). Integer/nf4 formats, and every FromData call, reject non-finite x with
// ZOTUNE_NONFINITE: Keep/One check before writing; FromData discovers it while writing q, which
// must therefore be a fresh tensor (lib/quant.ts allocates it).
void quantize(const QTensorView& q, const float* x, ScaleMode mode, bool stochastic, uint64_t seed, uint32_t stream,
              float* fake_out);
void dequantize(const QTensorView& q, float* y);
// Every code moves to SR_grid(value + alpha * z(i)); see quant_elem.h for the exact expression.
void quant_update(const QTensorView& q, float alpha, const Direction& d);
// Several tensors in one parallel job (a model's trainable set: one fork and join, not one per
// tensor); all are checked before any is written. The tensors must not share codes.
struct QuantUpdateSpan {
  QTensorView q;
  Direction d;
};
void quant_update_many(const QuantUpdateSpan* spans, size_t count, float alpha);
// The same for the listed logical indices only (any order, no repeats; all checked first).
void quant_update_indices(const QTensorView& q, const uint32_t* idx, size_t n, float alpha, const Direction& d);

// Throws unless every scale is finite, >= 0 and either 0 or at least 2^-126, and every zero-point
// is <= 15.
void check_scales(const QTensorView& q);

// --- segment kernels -----------------------------------------------------------------------------

QStats qstats_range_ref(const float* x, size_t n);
// Returns false when group_scales found a non-finite group (its codes are then unspecified).
bool quantize_seg_ref(const QuantJob& j, uint64_t r, uint64_t c0, uint64_t c1);
void dequantize_seg_ref(const QuantJob& j, uint64_t r, uint64_t c0, uint64_t c1);
void update_seg_ref(const QuantJob& j, uint64_t r, uint64_t c0, uint64_t c1);
// update_seg_ref with z(base + c) and the SR words given (z[c - c0], words[c - c0]): the AVX2
// kernel's ragged ends, whose z it already has from its vector fills.
void update_elems_ref(const QuantJob& j, uint64_t r, uint64_t c0, uint64_t c1, const float* z, const uint32_t* words);

namespace avx2 {
QStats qstats_range(const float* x, size_t n);
bool quantize_seg(const QuantJob& j, uint64_t r, uint64_t c0, uint64_t c1);
void dequantize_seg(const QuantJob& j, uint64_t r, uint64_t c0, uint64_t c1);
// Columns [c0, c1) of each row in [r0, r1) (z and SR words generated once for the whole range).
void update_rows(const QuantJob& j, uint64_t r0, uint64_t r1, uint64_t c0, uint64_t c1);
}  // namespace avx2

}  // namespace zt
