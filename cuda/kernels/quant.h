// Quantization, dequantization and the quantized ZO update on the GPU, bit-identical to the CPU's
// quantize / dequantize / quantUpdate / quantUpdateIndices (native/cpu/quant.h): every element goes
// through native/common/quant_elem.h, and scale statistics are reduced with max/min (exact, so any
// reduction order gives the CPU's scales). Plain C++ header: the N-API glue includes it.
//
// Views passed to the *_host and *_emulated functions hold host arrays (copied to the device and
// back); quant_update_launch takes one whose data/scales/zeros are device memory.
#pragma once
#include <stdint.h>

#include "../../native/cpu/quant.h"  // ScaleMode, QTensorView

namespace zt {
namespace cuda {

// Returns the kernel time in milliseconds (CUDA events around the kernels).
float quantize_host(const QTensorView& q, const float* x, ScaleMode mode, bool stochastic, uint64_t seed, uint32_t stream,
                    float* fake_out);
float dequantize_host(const QTensorView& q, float* y);
// reference: one thread per element instead of quads of whole Philox blocks.
float quant_update_host(const QTensorView& q, float alpha, const Direction& d, bool reference);
float quant_update_indices_host(const QTensorView& q, const uint32_t* idx, uint64_t m, float alpha, const Direction& d);

// The same with each kernel's per-thread code run on the host, one loop iteration per GPU thread.
void quantize_emulated(const QTensorView& q, const float* x, ScaleMode mode, bool stochastic, uint64_t seed, uint32_t stream,
                       float* fake_out);
void dequantize_emulated(const QTensorView& q, float* y);
void quant_update_emulated(const QTensorView& q, float alpha, const Direction& d);
void quant_update_indices_emulated(const QTensorView& q, const uint32_t* idx, uint64_t m, float alpha, const Direction& d);

// The host-side checks of the quantized update (scales valid, alpha / scale finite: the CPU's
// errors), for callers of quant_update_launch; q's scales and zeros must be host memory.
void quant_update_check(const QTensorView& q, float alpha);
// The scale checks alone (ZOTUNE_NON_FINITE / ZOTUNE_INVALID_ARGUMENT as the CPU's check_scales).
void quant_check_scales(const QTensorView& q);

// The update on device memory (data allocated to a multiple of 4 bytes: 4-bit stores shared with
// another thread are 32-bit atomics) on `stream` (a cudaStream_t). No validation.
void quant_update_launch(const QTensorView& dev_q, float alpha, const Direction& d, bool reference, void* stream);
// The quantized update with weight decay on device memory (the CPU's zoUpdate path): y = dequantize(q),
// then (after the caller's fp32 update of y) q = quantize(x) onto its unchanged grid (ScaleMode Keep;
// One for formats without scales), stochastically rounded with Philox (seed, id, srQuantize) when sr.
void dequantize_launch(const QTensorView& dev_q, float* y, void* stream);
void requantize_launch(const QTensorView& dev_q, const float* x, bool sr, uint64_t seed, uint32_t id, void* stream);
// Sets *nonfinite (an int of device memory) to 1 when x[0, n) holds Inf or NaN: requantize_launch
// does not look (the CPU's quantize refuses such input before writing a code).
void nonfinite_launch(const float* x, uint64_t n, int* nonfinite, void* stream);

}  // namespace cuda
}  // namespace zt
