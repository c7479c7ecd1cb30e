// Work items that generate whole Philox blocks ("quads") and the vector IO of their runs, shared by
// the perturbation and quantized-update kernels. Plain ZT_HD code: the same per-thread bodies run
// on the GPU and, one loop iteration per thread, on the host (the ...Emulated ops).
//
// A quad is 4 consecutive counters of one stream block: item t covers block B = t >> 1, lanes
// 4u .. 4u + 3 (u = t & 1), so its elements come in runs of 4 consecutive indices (one float4):
//   normal stream (philox.h normal_at): counter 8B + 4u + l gives elements 64B + 32h + 8k + 4u + l
//     (word k, Box-Muller output h): 8 runs of 4;
//   bit stream (rademacher_at): counter 8B + 4u + l gives elements 1024B + 256k + 8b + 4u + l
//     (word k, bit b): 128 runs of 4.
#pragma once
#include "../../native/common/direction.h"

#if !defined(__CUDA_ARCH__)
#include <string.h>
#endif

namespace zt {
namespace cuda {

static constexpr int kNormalShift = 6, kBitShift = 10;  // log2 of the block sizes

// Work items covering elements [first, first + n) (n > 0) of a stream with blocks of 2^shift.
struct Quads {
  uint64_t b0, items;
};
static inline Quads quads_for(uint64_t first, uint64_t n, int shift) {
  const uint64_t b0 = first >> shift;
  return {b0, (((first + n - 1) >> shift) - b0 + 1) * 2};
}

// The 32 Gaussian direction values of quad (B, u): z[h][k][l] is element 64B + 32h + 8k + 4u + l.
ZT_HD void gauss_quad(const Direction& d, uint64_t B, unsigned u, float z[2][4][4]) {
  uint32_t w[4][4], s[4][4] = {};
  for (int l = 0; l < 4; ++l) philox_block(dir_key(d), (B << 3) + 4 * u + l, w[l]);
  if (d.bits)
    for (int l = 0; l < 4; ++l) philox_block(dir_sr_key(d), (B << 3) + 4 * u + l, s[l]);
  for (int k = 0; k < 4; ++k)
    for (int l = 0; l < 4; ++l) {
      float n0, n1;
      box_muller(w[l][k], &n0, &n1);
      const uint64_t e = (B << 6) + 8 * k + 4 * u + l;
      z[0][k][l] = gauss_direction_word(d, e, n0, s[l][k]);
      z[1][k][l] = gauss_direction_word(d, e + 32, n1, s[l][k]);
    }
}

// The bit-stream words of quad (B, u): bit b of w[l][k] is element 1024B + 256k + 8b + 4u + l.
ZT_HD void bit_quad(const Direction& d, uint64_t B, unsigned u, uint32_t w[4][4]) {
  for (int l = 0; l < 4; ++l) philox_block(dir_key(d), (B << 3) + 4 * u + l, w[l]);
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
