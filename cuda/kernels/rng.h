// Philox random fills on the GPU. The element map and float construction are those of
// native/common/philox.h (compiled with -fmad=false), so every value equals the CPU's bit for bit.
#pragma once
#include <stdint.h>

#include "../../native/cpu/rng.h"  // Dist: the distribution codes shared with the CPU ops

namespace zt {
namespace cuda {

// out[j] = draw(key, first + j) for j in [0, n), generated in device memory on the current GPU
// and copied into the host array `out`. Returns the kernel time in milliseconds (CUDA events).
float rng_fill_host(float* out, uint64_t n, RngKey key, uint64_t first, Dist dist, uint64_t bernoulli_threshold);

// The same fill with the kernel's per-thread code run on the host, one loop iteration per GPU
// thread: checks the thread -> element map on machines without a GPU (not for speed).
void rng_fill_emulated(float* out, uint64_t n, RngKey key, uint64_t first, Dist dist, uint64_t bernoulli_threshold);

}  // namespace cuda
}  // namespace zt
