// ZO perturbation of fp32 weights on the GPU: w[j] = fma(alpha, z(first + j), w[j]) with z the
// direction of native/common/direction.h, bit-identical to the CPU's perturb / perturbIndices
// (native/cpu/perturb.h). Plain C++ header: the N-API glue includes it.
#pragma once
#include <stdint.h>

#include "../../native/common/direction.h"

namespace zt {
namespace cuda {

// Dense, w a host array of n floats copied to the device and back. reference: the plain kernel
// (one thread per element, direction_at) instead of the fast one (quads of whole Philox blocks,
// 16-byte loads and stores). Returns the kernel time in milliseconds (CUDA events).
float perturb_host(float* w, uint64_t n, const Direction& d, uint64_t first, float alpha, bool reference);
// The fast kernel's per-thread code run on the host, one loop iteration per GPU thread. keep (the
// device model's updates with weight decay): w[j] = fma(alpha, z, w[j] * keep), perturb.h's
// perturbed_decayed (keep 1: the plain perturbation, bit for bit).
void perturb_emulated(float* w, uint64_t n, const Direction& d, uint64_t first, float alpha, float keep = 1.0f);

// Index subset: w[idx[j]] = fma(alpha, z(first + idx[j]), w[idx[j]]), one thread per index.
float perturb_indices_host(float* w, uint64_t n, const uint32_t* idx, uint64_t m, const Direction& d, uint64_t first,
                           float alpha);
void perturb_indices_emulated(float* w, uint64_t n, const uint32_t* idx, uint64_t m, const Direction& d, uint64_t first,
                              float alpha);

// Throws (before any GPU work) as the CPU does: ZOTUNE_OUT_OF_RANGE for an index >= n,
// ZOTUNE_INVALID_ARGUMENT for a repeated one (threads would race on it).
void check_indices(const uint32_t* idx, uint64_t m, uint64_t n, const char* fn);

// The perturbation launched on device memory (w 16-byte aligned) on `stream` (a cudaStream_t).
void perturb_launch(float* w, uint64_t n, const Direction& d, uint64_t first, float alpha, bool reference, void* stream,
                    float keep = 1.0f);

// Benchmark of the in-place perturbation of n parameters held in device memory (allocated through
// the pool, never copied to or from the host), for the GPU host (bench/gpu/perturb.js):
//   kind 0: fp32 weights (this file's kernel); 1: bf16, 2: int8 and 3: int4 weights with one scale
//   per 128 columns (quant.h's quantized update: the value moves by alpha z, stochastically rounded).
// Quantized tensors are [n / 4096, 4096]. The copy ceiling is a device-to-device cudaMemcpy of the
// same weight bytes in the same run (on OOM, of 2 GiB). Times are CUDA-event milliseconds over
// `iters` launches after one warm-up.
struct DeviceBench {
  uint64_t n;              // parameters perturbed
  uint64_t bytes;          // bytes read and written once each (weights, plus scales read)
  uint64_t copy_bytes;     // bytes of the copy ceiling's cudaMemcpy
  float best_ms, mean_ms;  // the perturbation
  float copy_ms;           // best copy
};
DeviceBench perturb_device_bench(uint64_t n, int kind, const Direction& d, int iters);

}  // namespace cuda
}  // namespace zt
