#include <cuda_runtime.h>

#include "../../native/common/status.h"
#include "device.h"
#include "pool.h"
#include "rng.h"
#include "timed_call.h"

namespace zt {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// Word streams: counter c holds the 4 words of the elements 32 (c >> 3) + 8 w + (c & 7), w = 0..3
// (the lane-major map).
ZT_HD void fill_words_counter(float* out, uint64_t first, uint64_t n, uint64_t c, RngKey key, Dist dist,
                              uint64_t threshold) {
  uint32_t w[4];
  philox_block(key, c, w);
  float v[4];
  if (dist == Dist::Uniform) {
    for (int k = 0; k < 4; ++k) v[k] = uniform_open(w[k]);
  } else {
    for (int k = 0; k < 4; ++k) v[k] = (uint64_t)w[k] < threshold ? 1.0f : 0.0f;
  }
  uint64_t e = ((c >> 3) << 5) | (c & 7);
  for (int k = 0; k < 4; ++k, e += 8)
    if (e - first < n) out[e - first] = v[k];  // unsigned: e < first wraps past n
}

// Normal stream: counter c holds the 4 words of the elements 64 (c >> 3) + 8 w + 32 h + (c & 7),
// word w's Box-Muller pair giving output h (philox.h normal_at).
ZT_HD void fill_normals_counter(float* out, uint64_t first, uint64_t n, uint64_t c, RngKey key) {
  uint32_t w[4];
  philox_block(key, c, w);
  const uint64_t base = ((c >> 3) << 6) | (c & 7);
  for (int k = 0; k < 4; ++k) {
    float v[2];
    box_muller(w[k], &v[0], &v[1]);
    for (int h = 0; h < 2; ++h) {
      const uint64_t e = base + 8 * k + 32 * h;
      if (e - first < n) out[e - first] = v[h];  // unsigned: e < first wraps past n
    }
  }
}

// Bit stream (Rademacher): counter c holds the 128 bits of the elements
// 1024 (c >> 3) + 256 w + 8 k + (c & 7) for word w, bit k; a set bit is -1.
ZT_HD void fill_bits_counter(float* out, uint64_t first, uint64_t n, uint64_t c, RngKey key) {
  uint32_t w[4];
  philox_block(key, c, w);
  uint64_t base = ((c >> 3) << 10) | (c & 7);
  for (int j = 0; j < 4; ++j)
    for (int k = 0; k < 32; ++k) {
      uint64_t e = base + 256 * j + 8 * k;
      if (e - first < n) out[e - first] = ((w[j] >> k) & 1u) ? -1.0f : 1.0f;
    }
}

// The counters covering elements [first, first + n): 8 per block of 32 (words), 64 (normals) or
// 1024 (bits).
struct Counters {
  uint64_t c0, count;
};
Counters counters_for(uint64_t first, uint64_t n, Dist dist) {
  const int shift = dist == Dist::Rademacher ? 10 : dist == Dist::Normal ? 6 : 5;
  const uint64_t last = first + n - 1;
  return {(first >> shift) << 3, ((last >> shift) - (first >> shift) + 1) * 8};
}

// One thread per counter.
__global__ void fill_kernel(float* out, uint64_t first, uint64_t n, Counters cs, RngKey key, Dist dist,
                            uint64_t threshold) {
  uint64_t t = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= cs.count) return;
  if (dist == Dist::Rademacher)
    fill_bits_counter(out, first, n, cs.c0 + t, key);
  else if (dist == Dist::Normal)
    fill_normals_counter(out, first, n, cs.c0 + t, key);
  else
    fill_words_counter(out, first, n, cs.c0 + t, key, dist, threshold);
}

}  // namespace

float rng_fill_host(float* out, uint64_t n, RngKey key, uint64_t first, Dist dist, uint64_t threshold) {
  if (n == 0) return 0.0f;
  require_device();
  const Counters cs = counters_for(first, n, dist);
  const uint64_t blocks = (cs.count + kThreads - 1) / kThreads;
  if (blocks > 0x7fffffffu) fail(Code::OutOfRange, "rngFill: too many elements for one launch");

  DeviceBuffer<float> dev(n);  // before the call: freed after its stream drains
  TimedCall call;
  call.begin();
  fill_kernel<<<(unsigned)blocks, kThreads, 0, call.stream>>>(dev.ptr, first, n, cs, key, dist, threshold);
  check_launch("fill_kernel");
  call.end("rngFill kernel launch");
  call.to_host(out, dev.ptr, dev.bytes());
  return call.finish("rngFill");
}

void rng_fill_emulated(float* out, uint64_t n, RngKey key, uint64_t first, Dist dist, uint64_t threshold) {
  if (n == 0) return;
  const Counters cs = counters_for(first, n, dist);
  for (uint64_t t = 0; t < cs.count; ++t) {
    if (dist == Dist::Rademacher)
      fill_bits_counter(out, first, n, cs.c0 + t, key);
    else if (dist == Dist::Normal)
      fill_normals_counter(out, first, n, cs.c0 + t, key);
    else
      fill_words_counter(out, first, n, cs.c0 + t, key, dist, threshold);
  }
}

}  // namespace cuda
}  // namespace zt
